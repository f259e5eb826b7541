"""Who spoke when: the voices of a recording, separated (speaker diarization).

One pass over the recording, read in chunks (memory does not grow with its length
beyond one small vector per second of speech):

1. the voice activity detector of the timelines (:mod:`emovox.vad`) finds the speech;
2. windows of 1.6 s every 0.8 s (:func:`emovox.inference.windows.stream_windows`)
   that are mostly speech get a voice embedding (:mod:`emovox.speakers`, GE2E);
3. the embeddings are clustered (:func:`cluster`): into ``N`` speakers when the number
   is given, otherwise the number with the clearest separation (silhouette), or one
   speaker when no split separates the voices;
4. each instant of speech belongs to the speaker of the nearest window centre, which
   cuts the speech segments into speaker turns.

Speakers are named ``S1``, ``S2``, ... in the order they are first heard. The
detector that found the speech is kept, so a timeline can reuse its decisions.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emovox.audio import open_blocks, resample
from emovox.errors import AudioError
from emovox.inference.windows import DEFAULT_CHUNK_SECONDS, stream_windows
from emovox.speakers import PARTIAL_FRAMES, SAMPLE_RATE, VoiceEncoder, shared_encoder
from emovox.vad import VadOptions, VoiceActivityStream, resolve_vad

#: Seconds of speech per voice embedding (the encoder's 160 frames) and between two.
EMBED_WINDOW, EMBED_HOP = 1.6, 0.8
#: Windows embedded together (one LSTM batch).
EMBED_BATCH = 256
#: Share of an embedding window that must be speech.
MIN_EMBED_SPEECH = 0.5
#: Most speakers ``auto`` looks for.
MAX_SPEAKERS = 8
#: Below this silhouette (cosine) no split separates voices: one speaker.
MIN_SILHOUETTE = 0.12
#: Most embeddings clustered together; the others join the nearest centroid
#: (bounds the N x N distances of long recordings).
MAX_CLUSTERED = 2000


def check_speakers(speakers: int | str) -> int | str:
    """``"auto"`` or a number of speakers >= 1 (``"2"`` is read as 2).

    Raises
    ------
    ValueError
        Anything else.
    """
    if isinstance(speakers, str) and speakers.strip().lower() == "auto":
        return "auto"
    try:
        number = int(speakers)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(speakers, float) and not float(speakers).is_integer()):
        raise ValueError(f"speakers must be 'auto' or a number >= 1, got {speakers!r}")
    return number


@dataclass
class Diarization:
    """The speakers of one recording and when each speaks.

    Attributes
    ----------
    turns : list of (float, float, str)
        ``(start, end, speaker)`` in seconds: the speech, cut where the voice
        changes, in time order, never overlapping.
    speakers : list of str
        Labels in the order they are first heard.
    duration : float
        Seconds of audio.
    seconds : float
        Time the pass took.
    embeddings : int
        Voice embeddings computed.
    detector : VoiceActivityStream or None
        The finished detector (None when speech was not detected, ``vad=None``).
    """

    turns: list[tuple[float, float, str]]
    speakers: list[str]
    duration: float
    seconds: float = 0.0
    embeddings: int = 0
    detector: VoiceActivityStream | None = field(default=None, repr=False)

    def speaker_of(self, start: float, end: float, nearest: bool = True) -> str | None:
        """The speaker whose turns cover most of ``[start, end)``.

        With no turn there, the speaker of the nearest turn (``nearest``) or None.
        """
        best, cover = None, 0.0
        for a, b, speaker in self._turns_near(start, end):
            overlap = min(b, end) - max(a, start)
            if overlap > cover:
                best, cover = speaker, overlap
        if best is not None or not nearest or not self.turns:
            return best
        centre = (start + end) / 2
        return min(self.turns, key=lambda t: max(t[0] - centre, centre - t[1], 0.0))[2]

    def speech_seconds(self) -> dict[str, float]:
        """Seconds of speech of each speaker."""
        totals = dict.fromkeys(self.speakers, 0.0)
        for a, b, speaker in self.turns:
            totals[speaker] += b - a
        return totals

    def attrs(self) -> dict[str, Any]:
        """What a timeline's ``attrs`` carry of it (plain JSON-able values)."""
        return {"speakers": list(self.speakers),
                "speaker_turns": [(a, b, s) for a, b, s in self.turns],
                "diarization_seconds": round(self.seconds, 3)}

    def _turns_near(self, start: float, end: float) -> list[tuple[float, float, str]]:
        starts = self._starts()
        first = max(0, int(np.searchsorted(starts, start, side="right")) - 1)
        last = int(np.searchsorted(starts, end, side="left"))
        return self.turns[first:last]

    def _starts(self) -> np.ndarray:
        cached = getattr(self, "_start_cache", None)
        if cached is None or len(cached) != len(self.turns):
            cached = np.array([t[0] for t in self.turns], dtype=float)
            self._start_cache = cached
        return cached


def diarize(
    source: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    *,
    speakers: int | str = "auto",
    vad: str | None = "silero",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    name: str | None = None,
    vad_options: VadOptions | None = None,
    encoder: VoiceEncoder | None = None,
    max_speakers: int = MAX_SPEAKERS,
) -> Diarization:
    """Separate the voices of a recording: who spoke when.

    Parameters
    ----------
    source : str, PathLike or np.ndarray
        An audio file, or samples of shape (n,) or (n, channels).
    sample_rate : int, optional
        Rate of an array ``source`` in Hz.
    speakers : int or "auto"
        How many speakers there are, or ``"auto"`` to find it (1 to ``max_speakers``).
    vad : {"silero", "energy"} or None
        Voice activity detector (None: all of the audio is speech).
    chunk_seconds : float
        Seconds of audio read at a time.
    name : str, optional
        How errors name the recording.
    vad_options : VadOptions, optional
        Detector and smoothing parameters.
    encoder : VoiceEncoder, optional
        The voice encoder (default: one shared by the process).
    max_speakers : int
        Most speakers ``auto`` considers.

    Returns
    -------
    Diarization

    Raises
    ------
    AudioError
        Unreadable or empty audio.
    ValueError
        Invalid ``speakers``.
    """
    began = time.perf_counter()
    speakers = check_speakers(speakers)
    method = resolve_vad(vad)
    label, sr, blocks = open_blocks(source, sample_rate, chunk_seconds, name)
    detector = VoiceActivityStream(method, sr, vad_options) if method else None
    encoder = encoder or shared_encoder()
    vectors, centres, pending = [], [], []
    read = 0
    for ready in stream_windows(blocks, sr, EMBED_WINDOW, EMBED_HOP, detector):
        read = ready.samples_read
        kept = []
        for start, end in ready.windows:
            seconds = (end - start) / sr
            if seconds < EMBED_HOP:  # a sliver at the end: its speech is in the last window
                continue
            if detector is not None and (detector.speech_seconds(start / sr, end / sr)
                                         < MIN_EMBED_SPEECH * seconds):
                continue
            pending.append(_mel(encoder, ready.buffer[start - ready.offset:
                                                      end - ready.offset], sr))
            kept.append((start + end) / 2 / sr)
        centres += kept
        # The LSTM pays per time step: large batches (bounded: 6.5 MB) run it fastest.
        if len(pending) >= EMBED_BATCH or (ready.last and pending):
            vectors.append(encoder.embed_frames(np.stack(pending)))
            pending = []
    if read == 0:
        raise AudioError(label, "no audio samples (empty or truncated file)")
    duration = read / sr
    segments = detector.segments() if detector is not None else [(0.0, duration)]
    embeddings = np.concatenate(vectors) if vectors else np.zeros((0, 256), np.float32)
    labels = cluster(embeddings, speakers, max_speakers)
    turns = speaker_turns(segments, np.asarray(centres), labels)
    names = list(dict.fromkeys(s for _, _, s in turns))
    if isinstance(speakers, int):  # the speakers given but never heard still exist
        names += [f"S{k}" for k in range(1, speakers + 1) if f"S{k}" not in names]
    return Diarization(turns, names, duration, time.perf_counter() - began,
                       len(embeddings), detector)


def _mel(encoder: VoiceEncoder, signal: np.ndarray, sr: int) -> np.ndarray:
    """The encoder's mel frames of one window (padded with silence to 1.6 s)."""
    x = resample(np.asarray(signal, np.float32), sr, SAMPLE_RATE) if sr != SAMPLE_RATE \
        else signal
    mel = encoder.mel(x)[:PARTIAL_FRAMES]
    return np.pad(mel, ((0, PARTIAL_FRAMES - len(mel)), (0, 0)))


def cluster(embeddings: np.ndarray, speakers: int | str = "auto",
            max_speakers: int = MAX_SPEAKERS) -> np.ndarray:
    """Speaker labels of voice embeddings.

    The recording's mean embedding is taken out, then average-linkage agglomerative
    clustering on cosine distances, then each embedding moves to its nearest cluster
    centroid (two rounds), which mends the early merges agglomeration cannot undo.

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, dim)
        Unit-length voice embeddings, in time order.
    speakers : int or "auto"
        Number of clusters, or ``"auto"``: the count from 2 to ``max_speakers`` with
        the highest silhouette, or 1 when that silhouette is below
        :data:`MIN_SILHOUETTE`.
    max_speakers : int
        Most clusters ``auto`` tries.

    Returns
    -------
    np.ndarray of int, shape (n,)
        0, 1, ... numbered in order of first appearance.
    """
    from sklearn.cluster import AgglomerativeClustering
    from sklearn.metrics import silhouette_score

    speakers = check_speakers(speakers)
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, int)
    X = np.asarray(embeddings, dtype=np.float64)
    # GE2E embeddings are non-negative and share a large common part (cosine ~0.5
    # between any two voices): taking out the recording's mean leaves what tells its
    # voices apart (measured: DER 0.34 -> 0.19 on two-speaker conversations).
    X = X - X.mean(axis=0) if n > 1 else X
    X = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    # Long recordings: cluster an even subsample, the rest joins the nearest centroid.
    sample = np.unique(np.linspace(0, n - 1, min(n, MAX_CLUSTERED)).round().astype(int))
    Xs = X[sample]
    counts = ([speakers] if isinstance(speakers, int)
              else list(range(2, min(max_speakers, len(Xs) - 1) + 1)))
    best, best_score = np.zeros(len(Xs), int), -1.0
    for k in counts:
        if k <= 1 or k > len(Xs):
            continue
        found = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average"
                                        ).fit_predict(Xs)
        found = _refine(Xs, found, k)
        score = (silhouette_score(Xs, found, metric="cosine")
                 if len(set(found)) > 1 and speakers == "auto" else 1.0)
        if score > best_score:
            best, best_score = found, score
    if speakers == "auto" and best_score < MIN_SILHOUETTE:
        best = np.zeros(len(Xs), int)
    centroids = _centroids(Xs, best)
    labels = np.argmax(X @ centroids.T, axis=1) if len(sample) < n else best
    # Number the speakers in order of first appearance.
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[v] for v in labels.tolist()], dtype=int)


def _centroids(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    out = np.stack([X[labels == k].mean(axis=0) for k in np.unique(labels)])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def _refine(X: np.ndarray, labels: np.ndarray, k: int, rounds: int = 2) -> np.ndarray:
    for _ in range(rounds):
        kept = np.unique(labels)
        moved = kept[np.argmax(X @ _centroids(X, labels).T, axis=1)]
        if np.array_equal(moved, labels) or len(np.unique(moved)) < min(k, len(kept)):
            break
        labels = moved
    return labels


def speaker_turns(segments: Sequence[tuple[float, float]], centres: np.ndarray,
                  labels: np.ndarray) -> list[tuple[float, float, str]]:
    """Speech segments cut into turns: each instant takes the label of the nearest
    embedding window centre.

    Parameters
    ----------
    segments : list of (float, float)
        Speech ``(start, end)`` in seconds.
    centres : np.ndarray, shape (n,)
        Centres of the embedded windows in seconds, increasing.
    labels : np.ndarray of int, shape (n,)
        Their speaker numbers (0 is ``S1``).

    Returns
    -------
    list of (float, float, str)
        Turns in time order; all speech is ``S1`` when nothing was embedded.
    """
    if not len(centres):
        return [(round(a, 3), round(b, 3), "S1") for a, b in segments if b > a]
    # Runs of equal labels over the windows; a run owns the time closer to its windows
    # than to any other run's (boundaries halfway between neighbouring centres).
    change = np.flatnonzero(np.diff(labels)) + 1
    firsts = np.concatenate([[0], change])
    bounds = [-math.inf, *((centres[change - 1] + centres[change]) / 2), math.inf]
    turns: list[tuple[float, float, str]] = []
    for a, b in segments:
        run = int(np.searchsorted(bounds, a, side="right")) - 1
        begin = a
        while begin < b:
            stop = min(b, bounds[run + 1])
            if stop - begin > 1e-6:
                speaker = f"S{int(labels[firsts[run]]) + 1}"
                if turns and turns[-1][2] == speaker and abs(turns[-1][1] - begin) < 1e-6:
                    turns[-1] = (turns[-1][0], round(stop, 3), speaker)
                else:
                    turns.append((round(begin, 3), round(stop, 3), speaker))
            begin = stop
            run += 1
    return turns
