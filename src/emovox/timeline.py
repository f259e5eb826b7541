"""Emotion over time in long recordings: sliding windows over the speech, streamed.

A recording is cut into windows of ``window`` seconds every ``hop`` seconds. The
first window starts at 0; the last one ends at the end of the audio (it is shorter
than ``window`` when the hops do not fall exactly on the end). A voice activity
detector (:mod:`emovox.vad`) measures the share of each window that is speech;
windows with at least ``min_speech`` of it are classified by the recognizer's model,
the others are kept with ``speech=False`` and no emotion, or dropped. With Whisper
features and a model that adapts to the speaker, the speech is encoded once and each
window pools the encoder frames inside it (:mod:`emovox.inference.frames`); otherwise
each window is encoded on its own.

Files are read in chunks of ``chunk_seconds`` with :meth:`soundfile.SoundFile.read`,
keeping only the samples of windows not yet classified (and of the encoder's current
cell), so an hour-long recording never sits in memory whole. The detector carries its
state across chunks and the encoder's cells do not move with them, so the result
does not depend on the chunk size.

Results are DataFrames indexed by ``(file, start, end)`` in seconds, with the columns
``emotion``, ``confidence``, one probability per class, ``speech`` (bool) and
``speech_ratio`` (share of the window that is speech; NaN without a detector).
"""

from __future__ import annotations

import io
import json
import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from emovox.audio import audio_info, open_blocks
from emovox.cores import beside, usable_cores
from emovox.errors import AudioError, StoppedError
from emovox.fileio import atomic_write_text
from emovox.inference.engine import Encoded, SpeakerAdapters, flat
from emovox.inference.frames import WindowEncoder, merged_spans, overlaps_any
from emovox.inference.rows import INDEX_NAMES
from emovox.inference.windows import (
    DEFAULT_CHUNK_SECONDS,
    DEFAULT_HOP,
    DEFAULT_MIN_SPEECH,
    DEFAULT_WINDOW,
    check_window,
    stream_windows,
    window_count,
)
from emovox.vad import VadOptions, VoiceActivityStream, resolve_vad

if TYPE_CHECKING:
    from emovox.adaptation import FeatureAdapter
    from emovox.diarization import Diarization
    from emovox.inference.engine import Backend, Engine

__all__ = [
    "DEFAULT_CHUNK_SECONDS",
    "DEFAULT_HOP",
    "DEFAULT_MIN_SPEECH",
    "DEFAULT_WINDOW",
    "ResultsFile",
    "check_window",
    "iter_timeline",
    "load_timeline",
    "plot_timeline",
    "save_timeline",
    "timeline",
    "timeline_complete",
    "window_count",
]

#: Columns after the class probabilities.
SPEECH_COLUMNS = ("speech", "speech_ratio")
#: A conversation's windows encoded again at its speaker turns go to two cores only
#: when each gets at least this many.
MIN_WINDOWS_APART = 16

# ----------------------------------------------------------------------------- timeline


def iter_timeline(
    engine: Engine,
    source: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    *,
    window: float = DEFAULT_WINDOW,
    hop: float = DEFAULT_HOP,
    vad: str | None = "silero",
    min_speech: float = DEFAULT_MIN_SPEECH,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    keep_nonspeech: bool = True,
    name: str | None = None,
    vad_options: VadOptions | None = None,
    speakers: int | str | None = None,
    voices: str | None = None,
    progress: bool = False,
) -> Iterator[pd.DataFrame]:
    """Classify windows of a recording chunk by chunk, yielding each batch of rows.

    Parameters
    ----------
    engine : Engine
        The model (any runtime) and its adaptation rule.
    source : str, PathLike or np.ndarray
        An audio file, or samples of shape (n,) or (n, channels).
    sample_rate : int, optional
        Rate of ``source`` when it is an array (required then).
    window, hop : float
        Window length and the step between window starts, in seconds
        (``0 < hop <= window``).
    vad : {"silero", "energy"} or None
        Voice activity detector (``"silero"`` falls back to ``"energy"``, with a
        warning, when silero-vad is not installed); None classifies every window.
    min_speech : float
        Share of a window that must be speech for it to be classified.
    chunk_seconds : float
        Seconds of audio read and processed at a time.
    keep_nonspeech : bool
        Keep windows with too little speech as rows with ``speech=False`` and no
        emotion (True), or leave them out (False).
    name : str, optional
        Value of the ``file`` index level (default: the path, or ``"<signal>"``).
    vad_options : VadOptions, optional
        Detector and smoothing parameters.
    speakers : int or str, optional
        A conversation: separate the voices (:func:`emovox.diarization.diarize`, in a
        thread beside the emotion pass; ``"auto"`` finds how many, ``"2-4"`` finds it
        within a range), add a ``speaker`` column, and adapt to each speaker with their
        own statistics. None (default): one voice, no ``speaker`` column.
    voices : {"campplus", "ge2e"}, optional
        With ``speakers``: the voice encoder that tells them apart (default CAM++;
        GE2E costs about half and errs more, see :mod:`emovox.diarization`).
    progress : bool
        Progress bars over the recording (stderr), for each pass that takes a while.

    Yields
    ------
    pandas.DataFrame
        Rows of the windows completed by each chunk, in time order (see the module
        documentation for the columns). With a speaker-normalised model adapting as
        a ``batch`` (asked for, or ``auto`` in a conversation), the statistics are
        those of the whole recording's speech (each speaker's, in a conversation), so
        every row comes in one frame after the last chunk; with ``stream`` (``auto``
        for one voice) they are running statistics and rows come chunk by chunk.
        The last frame yielded (possibly empty) carries ``attrs`` with
        ``duration``, ``vad`` (the detector used),
        ``speech_segments`` (list of ``(start, end)``), ``window``, ``hop`` and
        ``min_speech``; ``speech_segments`` is None without a detector. With
        ``speakers`` also ``speakers`` (labels), ``speaker_turns`` (list of ``(start,
        end, speaker)``) and ``diarization_seconds`` (time the voice pass took, in a
        thread beside the emotion pass).

    Raises
    ------
    AudioError
        Unreadable or empty audio, naming it.
    ValueError
        Invalid parameters.
    """
    check_window(window, hop, min_speech, chunk_seconds)
    method = resolve_vad(vad)
    label, sr, blocks = open_blocks(source, sample_rate, chunk_seconds, name,
                                    progress="emotion over time" if progress else None)
    conversation = speakers is not None
    diarizing: Future[Diarization] | None = None
    # Set when this timeline ends, however: work beside it stops at its next block
    # (a Ctrl-C, or a caller that stopped reading, should not wait for a voice pass).
    stop = threading.Event()
    if conversation:
        # The speech is found once, in a first pass both passes share. Then, on two
        # cores, who speaks when (the voice encoder) runs in a thread beside the
        # emotion encoder: neither needs the other until the windows are answered (but
        # for the windows over a change of voice, encoded again at the end), and both
        # runtimes release the GIL. On one core that would only add work: the voices
        # come first, as before.
        from emovox.diarization import diarize
        from emovox.vad import detect_speech

        detector = None
        if method is not None:
            _, _, first = open_blocks(source, sample_rate, chunk_seconds, name,
                                      progress="finding speech" if progress else None)
            detector = detect_speech(first, method, sr, vad_options)
        options = {"speakers": speakers, "vad": method, "chunk_seconds": chunk_seconds,
                   "name": label, "vad_options": vad_options, "encoder": voices,
                   "detector": detector, "stop": stop}
        if usable_cores() < 2:  # one core: the voices first, no window encoded twice
            diarizing = Future()
            diarizing.set_result(diarize(source, sample_rate, progress=progress, **options))
        else:
            diarizing = beside(diarize, source, sample_rate, thread_name="emovox-diarize",
                               **options)
    else:
        detector = VoiceActivityStream(method, sr, vad_options) if method else None

    def reread() -> Iterator[np.ndarray]:
        return open_blocks(source, sample_rate, chunk_seconds, name)[2]

    try:
        yield from _answered_timeline(
            engine, blocks, label, sr, method, detector, diarizing, reread, stop,
            window=window, hop=hop, min_speech=min_speech, keep_nonspeech=keep_nonspeech)
    finally:
        stop.set()
        if diarizing is not None:
            wait([diarizing])  # a block's work at most, once stopped


def _answered_timeline(engine: Engine, blocks: Iterator[np.ndarray], label: str, sr: int,
                       method: str | None, detector: VoiceActivityStream | None,
                       diarizing: Future[Diarization] | None,
                       reread: Callable[[], Iterator[np.ndarray]], stop: threading.Event,
                       *, window: float, hop: float, min_speech: float,
                       keep_nonspeech: bool) -> Iterator[pd.DataFrame]:
    """The emotion pass of :func:`iter_timeline` over ``blocks``; in a conversation
    (``diarizing``), the windows wait for its speakers before they are answered, and
    those over a change of voice are encoded again from ``reread()`` (unless the
    speakers were known before the first window)."""
    # This timeline's own adaptation state: concurrent timelines share none of it; in a
    # conversation, one state per speaker (never pooled across voices). Asked for
    # "batch", and by default in a conversation (held until the speakers are known
    # anyway), the batch is the whole recording (each speaker's windows): the rows
    # are answered after the last chunk, from statistics of all of the speech
    # (measured on conversations of unseen voices: turn UAR 0.64 -> 0.70 with two
    # speakers against running statistics, docs/RESULTS.md).
    conversation = diarizing is not None
    whole = engine.adapter is not None and (
        engine.adapt == "batch" or (engine.adapt == "auto" and conversation))
    kind = "batch" if whole else "stream"
    adapters = SpeakerAdapters(engine, kind) if conversation else None
    adapter = engine.adapter_for(kind) if not conversation else None

    def state(speaker: str | None) -> FeatureAdapter | None:
        return adapters[speaker] if adapters is not None and speaker is not None else adapter

    columns = ["emotion", "confidence", *engine.classes, *SPEECH_COLUMNS]
    if conversation:
        columns.append("speaker")
    held: list[_Windows] = []
    # Windows pooled from encoder frames differ from whole utterances by a shift (no
    # silence, more context) that speaker adaptation removes and the unadapted model
    # does not (measured: conversation turn UAR 0.73 -> 0.65 unadapted), so only an
    # adapting model gets them.
    encoder = WindowEncoder(engine.backend, sr,
                            frames=engine.adapter is not None and engine.adapt != "none")
    # Voices known before the first window (one core, or a short recording): every
    # piece is cut at the speaker turns from the start; otherwise the windows over a
    # change of voice are encoded again at the end (_encode_turns_apart).
    turns = None
    if diarizing is not None and diarizing.done() and diarizing.exception() is None:
        turns = _in_samples(diarizing.result().turns, sr)
    for ready in stream_windows(blocks, sr, window, hop, detector,
                                feed=not conversation, grid=encoder.grid):
        if not ready.last and not ready.windows:
            continue
        if ready.last and ready.samples_read == 0:
            raise AudioError(label, "no audio samples (empty or truncated file)")
        part = _encode_windows(engine, encoder, label, sr, ready.buffer, ready.offset,
                               ready.windows, detector, min_speech, keep_nonspeech, turns)
        if not (whole or conversation):
            frame = part.answered(engine, state, columns)
            if not ready.last:
                if len(frame):
                    yield frame
                continue
            parts = [frame]
        else:
            held.append(part)
            if not ready.last:
                continue
            diarization = diarizing.result() if diarizing is not None else None
            if diarization is not None and encoder.grid is not None and turns is None:
                _encode_turns_apart(held, diarization, reread, engine.backend, sr,
                                    window, hop, detector, stop)
            pieces = [_Windows.joined(held)] if whole else held
            parts = [p.spoken_by(diarization).answered(engine, state, columns)
                     for p in pieces]
        last = parts[-1]
        last.attrs.update({
            "duration": ready.samples_read / sr,
            "vad": method,
            "speech_segments": detector.segments() if detector is not None else None,
            "window": window,
            "hop": hop,
            "min_speech": min_speech,
        })
        if diarizing is not None:
            last.attrs.update(diarizing.result().attrs())
        yield from (f for f in parts[:-1] if len(f))
        yield last


def timeline(engine: Engine, source: str | os.PathLike[str] | np.ndarray,
             sample_rate: int | None = None, **options: Any) -> pd.DataFrame:
    """The whole timeline of a recording as one DataFrame.

    Parameters are those of :func:`iter_timeline`; the result carries its ``attrs``.
    """
    frames = list(iter_timeline(engine, source, sample_rate, **options))
    attrs = dict(frames[-1].attrs)
    nonempty = [f for f in frames if len(f)]
    frame = pd.concat(nonempty) if nonempty else frames[-1]
    frame.attrs = attrs
    return frame


@dataclass
class _Windows:
    """Windows of a recording, encoded but not yet answered.

    ``frame`` has one row per kept window (positions 0..n-1, no emotion yet),
    ``index`` their ``(file, start, end)``, ``encoded`` the features of the usable
    speech windows, ``feature_rows`` their positions in ``frame``, ``feature_spans``
    their file sample ranges and ``who`` each row's speaker (None outside a
    conversation).
    """

    frame: pd.DataFrame
    index: list[tuple[str, float, float]]
    encoded: Encoded
    feature_rows: list[int]
    feature_spans: list[tuple[int, int]]
    who: list[str | None]

    @staticmethod
    def joined(parts: Sequence[_Windows]) -> _Windows:
        """Consecutive parts of one recording as one (for one adaptation batch)."""
        offsets = np.cumsum([0, *(len(p.index) for p in parts)])
        # Parts without usable windows may hold shapeless empty arrays: leave them out.
        found = [p.encoded for p in parts if len(p.encoded.features)] or [parts[-1].encoded]
        encoded = Encoded(
            np.concatenate([flat(e.features) for e in found]),
            None if any(e.plain is None for e in found)
            else np.concatenate([e.plain for e in found]),  # type: ignore[misc]
            np.concatenate([p.encoded.usable for p in parts]))
        return _Windows(pd.concat([p.frame for p in parts], ignore_index=True),
                        [row for p in parts for row in p.index], encoded,
                        [int(o) + r for p, o in zip(parts, offsets, strict=False)
                         for r in p.feature_rows],
                        [span for p in parts for span in p.feature_spans],
                        [w for p in parts for w in p.who])

    def spoken_by(self, diarization: Diarization | None) -> _Windows:
        """The windows with their speakers (of the turn covering most of each window;
        a window of speech outside every turn takes the nearest turn's), or unchanged
        without ``diarization``."""
        if diarization is None:
            return self
        who = [diarization.speaker_of(start, end, nearest=bool(speech))
               for (_, start, end), speech in zip(self.index, self.frame["speech"],
                                                  strict=True)]
        return replace(self, frame=self.frame.assign(speaker=pd.Series(who, dtype=object)),
                       who=who)

    def answered(self, engine: Engine,
                 state: Callable[[str | None], FeatureAdapter | None],
                 columns: list[str]) -> pd.DataFrame:
        """The rows with their emotions, each speaker's adapted with ``state(speaker)``."""
        scores = ["confidence", *engine.classes]
        emotion = self.frame["emotion"].to_numpy(dtype=object, copy=True)
        values = self.frame[scores].to_numpy(dtype=float, copy=True)
        groups: dict[str | None, list[int]] = {}
        for position, row in enumerate(self.feature_rows):  # time order kept per group
            groups.setdefault(self.who[row], []).append(position)
        for speaker, positions in groups.items():  # silent or too short: no emotion
            rows = [self.feature_rows[p] for p in positions]
            answer = engine.rows(self.encoded.take(positions), pd.MultiIndex.from_tuples(
                [self.index[i] for i in rows], names=list(INDEX_NAMES)), state(speaker))
            # Filled in by position: pandas' label alignment cost more than the head.
            emotion[rows] = answer["emotion"].to_numpy()
            values[rows] = answer[scores].to_numpy(dtype=float)
        frame = self.frame.assign(
            emotion=pd.Series(emotion, index=self.frame.index, dtype=object),
            **dict(zip(scores, values.T, strict=True)))
        frame.index = pd.MultiIndex.from_tuples(self.index, names=list(INDEX_NAMES))
        return frame[columns]


def _encode_windows(engine: Engine, encoder: WindowEncoder, label: str, sr: int,
                    buffer: np.ndarray, offset: int, windows: list[tuple[int, int]],
                    detector: VoiceActivityStream | None, min_speech: float,
                    keep_nonspeech: bool, turns: list[tuple[int, int]] | None = None
                    ) -> _Windows:
    """The kept ``windows`` (file sample ranges, inside ``buffer`` which starts at
    ``offset``) with the features of their speech (by ``encoder``), in pieces cut at
    the speaker ``turns`` (sample ranges) when they are given."""
    classes = engine.classes
    index_rows, ratios, speech, spans, speech_rows = [], [], [], [], []
    for start, end in windows:
        if detector is not None:
            ratio = detector.speech_seconds(start / sr, end / sr) / ((end - start) / sr)
            is_speech = ratio >= min_speech - 1e-9
        else:
            ratio, is_speech = math.nan, True
        if not (is_speech or keep_nonspeech):
            continue
        row = len(index_rows)
        index_rows.append((label, round(start / sr, 3), round(end / sr, 3)))
        ratios.append(min(ratio, 1.0))
        speech.append(is_speech)
        if is_speech:  # only speech reaches the encoder
            spans.append((start, end))
            speech_rows.append(row)
    # The speech under the windows encoded once (in pieces cut at the detector's
    # pauses and the encoder's cells), or each window alone (features that are not a
    # mean over frames, or a model that does not adapt).
    stretches = turns
    if stretches is None and detector is not None:
        stretches = _in_samples(detector.segments(), sr)
    encoded = encoder.encode(buffer, offset, spans, stretches)
    feature_rows = [row for row, ok in zip(speech_rows, encoded.usable, strict=True) if ok]
    feature_spans = [span for span, ok in zip(spans, encoded.usable, strict=True) if ok]
    frame = pd.DataFrame({"emotion": pd.Series([None] * len(index_rows), dtype=object),
                          "confidence": np.nan, **dict.fromkeys(classes, np.nan)},
                         index=range(len(index_rows)))
    frame["speech"] = np.asarray(speech, dtype=bool)
    frame["speech_ratio"] = np.asarray(ratios, dtype=float)
    return _Windows(frame, index_rows, encoded, feature_rows, feature_spans,
                    [None] * len(index_rows))


def _in_samples(spans: Sequence[Sequence[Any]], sr: int) -> list[tuple[int, int]]:
    """``(start, end, ...)`` in seconds (segments, speaker turns) as sample ranges."""
    return [(round(span[0] * sr), round(span[1] * sr)) for span in spans]


def _encode_turns_apart(parts: Sequence[_Windows], diarization: Diarization,
                        reread: Callable[[], Iterator[np.ndarray]], backend: Backend,
                        sr: int, window: float, hop: float,
                        detector: VoiceActivityStream | None, stop: threading.Event
                        ) -> None:
    """Encode again, in ``parts``, the windows over speech that holds a change of
    voice, its pieces cut at every change (``reread()``: the recording read again).

    The emotion pass encodes the detector's speech before the speakers are known; a
    piece holding two voices has one loudness gain and one attention context for both.
    Cut at the turns, on conversations of unseen voices (16 per count, seeds 0 and
    4-6), per-speaker turn UAR was 0.739 / 0.734 (two / three speakers) against 0.731
    / 0.705 uncut (docs/RESULTS.md). Only the windows over the segments the turns cut
    are encoded again, in two halves on two cores when there are two, and each gets
    exactly the features a pass cut at the turns from the start would give.
    """
    cut = set(_in_samples(diarization.turns, sr))
    segments = (detector.segments() if detector is not None
                else [(0.0, diarization.duration)])
    changed = merged_spans([span for span in _in_samples(segments, sr) if span not in cut])
    where = {span: (k, position) for k, part in enumerate(parts)
             for position, span in enumerate(part.feature_spans)
             if overlaps_any(changed, span)}
    if not where:
        return
    turns = sorted(cut)

    def encode(group: list[tuple[int, int]]) -> None:
        encoder = WindowEncoder(backend, sr, only=group)
        left = set(group)
        for ready in stream_windows(reread(), sr, window, hop, detector, feed=False,
                                    grid=encoder.grid):
            if stop.is_set():
                raise StoppedError("encoding at the speaker turns stopped")
            wanted = [w for w in ready.windows if w in left]
            if not wanted:
                continue
            again = encoder.encode(ready.buffer, ready.offset, wanted, turns)
            for j, span in enumerate(w for w, ok in zip(wanted, again.usable, strict=True)
                                     if ok):
                k, position = where[span]
                parts[k].encoded.features[position] = again.features[j]
                if parts[k].encoded.plain is not None and again.plain is not None:
                    parts[k].encoded.plain[position] = again.plain[j]
            left.difference_update(wanted)
            if not left:
                break

    spans = sorted(where)
    half = len(spans) // 2
    if usable_cores() < 2 or half < MIN_WINDOWS_APART:
        encode(spans)
        return
    later = beside(encode, spans[half:], thread_name="emovox-turns")
    try:
        encode(spans[:half])
    except BaseException:  # the second half stops at its next block
        stop.set()
        wait([later])
        raise
    later.result()


# ----------------------------------------------------------------------------- files


def save_timeline(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write a timeline as CSV or JSON (by the extension), atomically.

    Parameters
    ----------
    frame : pandas.DataFrame
        Indexed by ``(file, start, end)``.
    path : str or PathLike
        ``.csv`` (one row per window, with a header) or ``.json`` (a list of records,
        NaN written as null).

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        Another extension.
    """
    path = Path(path)
    kind = path.suffix.lower()
    flat = frame.reset_index()
    if kind == ".csv":
        text = flat.to_csv(index=False)
    elif kind == ".json":
        text = flat.to_json(orient="records", double_precision=15, indent=1) + "\n"
    else:
        raise ValueError(f"{path}: unknown timeline format {kind!r}; use .csv or .json")
    atomic_write_text(path, text)
    return path


def load_timeline(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Read a timeline written by :func:`save_timeline` (or ``emovox predict --timeline``).

    Returns
    -------
    pandas.DataFrame
        Indexed by ``(file, start, end)``; ``speech`` is bool, windows without an
        emotion have NaN there.
    """
    path = Path(path)
    if path.suffix.lower() == ".json":
        flat = pd.DataFrame.from_records(json.loads(path.read_text()))
    else:
        flat = pd.read_csv(path)
    missing = {"file", "start", "end", "emotion"} - set(flat.columns)
    if missing:
        raise ValueError(f"{path}: not a timeline (missing {', '.join(sorted(missing))})")
    if "speech" in flat:
        flat["speech"] = flat["speech"].astype(bool)
    for column in flat.columns.difference(["file", "emotion", "speech"]):
        flat[column] = pd.to_numeric(flat[column])
    flat["file"] = flat["file"].astype(str)
    flat["emotion"] = flat["emotion"].astype(object).where(flat["emotion"].notna(), None)
    return flat.set_index(["file", "start", "end"])


class ResultsFile:
    """Predictions written file by file to a CSV or JSON file, so a batch can resume.

    Each file's rows are added as soon as they exist (CSV: appended and flushed;
    JSON: the whole list is rewritten atomically, at most every ``json_interval``
    seconds and on :meth:`close`). When resuming, the rows already there are read back,
    files whose rows are complete are reported by :meth:`is_done`, and the rows of an
    incomplete file (a run stopped while writing it) are removed so it is redone.

    Parameters
    ----------
    path : str or PathLike
        Output file.
    fmt : {"csv", "json"}
        Its format: CSV with a header, or a JSON list of records.
    columns : list of str
        Columns of every row, index levels (``file, start, end``) first.
    resume : bool
        Keep and build on an existing file (True) or start it afresh (False).
    complete : callable, optional
        ``complete(file, rows)`` tells whether the rows found for ``file`` are all of
        them (e.g. a timeline reaching the end of the audio); default: any row is.
    digits : int
        Decimals of the floats written.
    json_interval : float
        Minimum seconds between two rewrites of a JSON output.

    Raises
    ------
    ValueError
        The existing file cannot be read, or has other columns (other settings).
    """

    def __init__(self, path: str | os.PathLike[str], fmt: str, columns: Sequence[str],
                 resume: bool = False,
                 complete: Callable[[str, pd.DataFrame], bool] | None = None,
                 digits: int = 4, json_interval: float = 2.0) -> None:
        if fmt not in {"csv", "json"}:
            raise ValueError(f"results format must be csv or json, not {fmt!r}")
        self.path = Path(path)
        self.fmt = fmt
        self.columns = list(columns)
        self.digits = digits
        self.json_interval = json_interval
        self.done: set[str] = set()
        self.rows_written = 0
        self._records: list[dict[str, Any]] = []
        self._dirty = False
        self._last_write = 0.0
        self._repaired = False
        existing = self._read_existing() if resume and self.path.exists() else None
        if existing is None or existing.empty:
            self._rewrite(pd.DataFrame(columns=self.columns))
        else:
            keep = []
            for file, rows in existing.groupby("file", sort=False):
                if complete is None or complete(str(file), rows):
                    self.done.add(str(file))
                    keep.append(rows)
            kept = pd.concat(keep) if keep else pd.DataFrame(columns=self.columns)
            if len(kept) != len(existing) or self._repaired:
                self._rewrite(kept)
            elif self.fmt == "json":
                self._records = self._to_records(kept)
        self._resolved = {_resolve(f) for f in self.done}

    def is_done(self, file: str | os.PathLike[str]) -> bool:
        """Whether ``file`` is complete in the output (same path, or the same file)."""
        return str(file) in self.done or _resolve(str(file)) in self._resolved

    def add(self, frame: pd.DataFrame) -> None:
        """Write the rows of ``frame`` (indexed by ``file, start, end``)."""
        flat = frame.reset_index()
        if list(flat.columns) != self.columns:
            raise ValueError(f"rows have columns {list(flat.columns)}, expected {self.columns}")
        if flat.empty:
            return
        self.rows_written += len(flat)
        if self.fmt == "csv":
            text = flat.to_csv(index=False, header=False, float_format=f"%.{self.digits}f")
            with self.path.open("a", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            return
        self._records += self._to_records(flat)
        self._dirty = True
        if time.monotonic() - self._last_write >= self.json_interval:
            self.flush()

    def flush(self) -> None:
        """Rewrite a JSON output now (CSV rows are always written already)."""
        if self.fmt == "json" and self._dirty:
            atomic_write_text(self.path, json.dumps(self._records, indent=2) + "\n")
            self._dirty = False
            self._last_write = time.monotonic()

    def close(self) -> None:
        """Write what is pending."""
        self.flush()

    def _to_records(self, flat: pd.DataFrame) -> list[dict[str, Any]]:
        return json.loads(flat.to_json(orient="records", double_precision=self.digits))

    def _rewrite(self, flat: pd.DataFrame) -> None:
        if self.fmt == "csv":
            atomic_write_text(self.path, flat[self.columns].to_csv(
                index=False, float_format=f"%.{self.digits}f"))
        else:
            self._records = self._to_records(flat[self.columns]) if len(flat) else []
            self._dirty = True
            self.flush()

    def _read_existing(self) -> pd.DataFrame:
        text = self.path.read_text(encoding="utf-8")
        try:
            if self.fmt == "csv":
                if text and not text.endswith("\n"):  # a run stopped mid-line
                    text = text[: text.rfind("\n") + 1]
                    self._repaired = True
                if not text.strip():
                    return pd.DataFrame(columns=self.columns)
                frame = pd.read_csv(io.StringIO(text), keep_default_na=False,
                                    na_values=[""], dtype={"file": str})
            else:
                records = json.loads(text) if text.strip() else []
                if not isinstance(records, list):
                    raise ValueError("not a list of records")
                frame = pd.DataFrame.from_records(records, columns=self.columns
                                                  if not records else None)
        except (ValueError, pd.errors.ParserError) as error:
            raise ValueError(f"{self.path}: cannot resume from it ({error})") from None
        if list(frame.columns) != self.columns:
            raise ValueError(f"{self.path}: was written with other settings (columns "
                             f"{list(frame.columns)}); choose another output or start afresh")
        return frame


def _resolve(file: str) -> str:
    try:
        return str(Path(file).resolve())
    except (OSError, RuntimeError):
        return file


def timeline_complete(file: str, rows: pd.DataFrame) -> bool:
    """Whether a file's timeline rows reach the end of its audio (for :class:`ResultsFile`)."""
    try:
        duration = audio_info(file).duration
    except AudioError:
        return False
    return bool(len(rows)) and float(pd.to_numeric(rows["end"]).max()) >= duration - 2e-3


# ----------------------------------------------------------------------------- plot

#: Colour of each canonical emotion in timeline plots.
EMOTION_COLOURS = {
    "angry": "#d62728", "disgust": "#8c9a2b", "fearful": "#9467bd", "happy": "#f2b701",
    "neutral": "#9e9e9e", "sad": "#1f77b4", "calm": "#17becf", "surprised": "#e377c2",
    "boredom": "#8c564b",
}


def plot_timeline(frame: pd.DataFrame, out_png: str | os.PathLike[str],
                  title: str | None = None, file: str | None = None) -> Path:
    """Save the class probabilities over time as a stacked area, speech shaded below.

    The upper panel stacks the probabilities of each window at its centre (a hatched
    background shows through where a window was not classified); the lower strip
    marks the speech the detector found (``attrs["speech_segments"]`` when present,
    otherwise the windows flagged as speech). A timeline with speakers gets one panel
    per speaker (each with that speaker's windows only) and a strip of who spoke when.

    Parameters
    ----------
    frame : pandas.DataFrame
        A timeline (:func:`timeline`, :meth:`Recognizer.predict_timeline` or
        :func:`load_timeline`).
    out_png : str or PathLike
        Destination PNG (written atomically; its folder is created).
    title : str, optional
        Heading; default names the file.
    file : str, optional
        Which file to draw when ``frame`` holds several.

    Returns
    -------
    Path

    Raises
    ------
    ValueError
        Not a timeline, empty, or several files without ``file``.
    """
    from emovox.plots import _new_figure, _save

    if "speech" not in frame.columns or list(frame.index.names) != ["file", "start", "end"]:
        raise ValueError("not a timeline: expected a (file, start, end) index and a speech "
                         "column")
    files = list(dict.fromkeys(frame.index.get_level_values("file")))
    if not files:
        raise ValueError("the timeline has no windows to plot")
    if file is None:
        if len(files) > 1:
            raise ValueError(f"the timeline holds {len(files)} files: choose one with file=")
        file = files[0]
    rows = frame.xs(file, level="file").sort_index()
    starts = rows.index.get_level_values("start").to_numpy(float)
    ends = rows.index.get_level_values("end").to_numpy(float)
    classes = [c for c in rows.columns
               if c not in ("emotion", "confidence", "speaker", *SPEECH_COLUMNS)]
    probabilities = np.nan_to_num(rows[classes].to_numpy(float))
    centres = (starts + ends) / 2
    duration = float(frame.attrs.get("duration", ends.max()))
    segments = frame.attrs.get("speech_segments") if len(files) == 1 else None
    if segments is None:
        segments = _merge([(s, e) for s, e, flag in zip(starts, ends, rows["speech"],
                                                         strict=True) if flag])
    # A conversation: one lane per speaker, each showing only that speaker's windows.
    who = rows["speaker"].to_numpy(object) if "speaker" in rows.columns else None
    lanes: list[str | None] = ([str(s) for s in dict.fromkeys(
        frame.attrs.get("speakers") or []) or dict.fromkeys(who[pd.notna(who)])]
        if who is not None else [])
    lanes = lanes or [None]
    turns = frame.attrs.get("speaker_turns") if len(files) == 1 and lanes[0] else None

    fig = _new_figure(figsize=(min(18.0, 7.0 + duration / 60.0), 1.0 + 3.6 * len(lanes)
                               if len(lanes) == 1 else 1.4 + 2.2 * len(lanes)))
    grid = fig.add_gridspec(len(lanes) + 1, 1, height_ratios=[5] * len(lanes) + [1])
    axes = [fig.add_subplot(grid[0])]
    axes += [fig.add_subplot(grid[k], sharex=axes[0]) for k in range(1, len(lanes))]
    strip = fig.add_subplot(grid[len(lanes)], sharex=axes[0])
    from matplotlib.patches import Patch, Rectangle
    from matplotlib.ticker import MultipleLocator

    unclassified = {"hatch": "////", "edgecolor": "0.78", "linewidth": 0}
    speaker_colours = dict(zip(lanes, ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3",
                                       "#937860", "#da8bc3", "#8c8c8c"] * 4, strict=False))
    for ax, lane in zip(axes, lanes, strict=True):
        ax.add_patch(Rectangle((0, 0), 1, 1, transform=ax.transAxes, fill=False, zorder=0,
                               **unclassified))
        values_of = probabilities if lane is None else np.where(
            (who == lane)[:, None], probabilities, 0.0)
        bottom = np.zeros(len(centres))
        palette = iter(["#2ca02c", "#ff7f0e", "#7f7f7f", "#bcbd22", "#aec7e8", "#98df8a"])
        for name, values in zip(classes, values_of.T, strict=True):
            colour = EMOTION_COLOURS.get(name) or next(palette, None)
            ax.fill_between(centres, bottom, bottom + values, step="mid", color=colour,
                            linewidth=0, label=name)
            bottom = bottom + values
        ax.set_ylim(0, 1)
        ax.set_xlim(0, duration)
        ax.set_ylabel("probability" if lane is None else f"{lane}\nprobability")
        ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
        ax.tick_params(labelbottom=False)
    ax = axes[0]
    handles, _labels = ax.get_legend_handles_labels()
    handles.append(Patch(facecolor="white", label="not classified", **unclassified))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False,
              fontsize=9)
    window = frame.attrs.get("window")
    detail = f"windows of {window:g} s every {frame.attrs['hop']:g} s" if window else ""
    ax.set_title(title or f"{Path(str(file)).name} — emotion over time"
                 + (f", {len(lanes)} speaker(s)" if lanes[0] else "")
                 + (f" ({detail})" if detail else ""), loc="left")

    if turns:  # who spoke when, one colour per speaker
        for begin, stop, speaker in turns:
            strip.axvspan(begin, stop, color=speaker_colours.get(str(speaker), "tab:green"),
                          alpha=0.8, linewidth=0)
        strip.legend(handles=[Patch(color=c, label=s) for s, c in speaker_colours.items()],
                     loc="upper left", bbox_to_anchor=(1.01, 1.3), frameon=False, fontsize=9,
                     ncols=min(4, len(lanes)))
        segments = []
    for begin, stop in segments:
        strip.axvspan(begin, stop, color="tab:green", alpha=0.6, linewidth=0)
    strip.set_yticks([])
    strip.set_ylabel("speaker" if turns else "speech", rotation=0, ha="right", va="center")
    strip.set_xlabel("time (s)" if duration <= 120 else "time (h:mm:ss)")
    if duration > 120:
        step = next((s for s in (30, 60, 120, 300, 600, 900, 1800) if duration / s <= 10), 3600)
        strip.xaxis.set_major_locator(MultipleLocator(step))
        strip.xaxis.set_major_formatter(lambda v, _pos: _clock(v))
    return _save(fig, out_png)


def _merge(spans: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for begin, stop in sorted(spans):
        if merged and begin <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], stop))
        else:
            merged.append((begin, stop))
    return merged


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
