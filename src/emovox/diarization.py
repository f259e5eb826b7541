"""Who spoke when: the voices of a recording, separated (speaker diarization).

One pass over the recording, read in chunks (memory does not grow with its length
beyond one small vector per second of speech):

1. the voice activity detector of the timelines (:mod:`emovox.vad`) finds the speech;
2. windows of 1.6 s every 0.8 s (:func:`emovox.inference.windows.stream_windows`)
   that are mostly speech get a voice embedding: CAM++ (:mod:`emovox.campplus`, the
   default, int8, each run of overlapping windows in one pass over its span) or GE2E
   (:mod:`emovox.speakers`, each window alone; cheaper, less exact);
3. the embeddings are clustered (:func:`cluster`: Ward on Euclidean distances, then
   centroid refinement): into ``N`` speakers when the number is given, otherwise the
   fewest with nearly the clearest separation (silhouette), or one speaker when no
   split separates them (each encoder's :class:`CountRule`). GE2E's embeddings are
   first projected onto the directions that tell speakers apart rather than emotions
   (:mod:`emovox.voice_projection`); CAM++'s need no projection;
4. each instant of speech belongs to the speaker of the nearest window centre, which
   cuts the speech segments into speaker turns.

Speakers are named ``S1``, ``S2``, ... in the order they are first heard. The
detector that found the speech is kept, so a timeline can reuse its decisions.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emovox.audio import open_blocks, resample
from emovox.errors import AudioError, StoppedError
from emovox.inference.windows import DEFAULT_CHUNK_SECONDS, stream_windows
from emovox.speakers import SAMPLE_RATE, SpeakerEncoder, voice_encoder
from emovox.vad import VadOptions, VoiceActivityStream, resolve_vad
from emovox.voice_projection import project, voice_projection

#: Seconds of speech per voice embedding (the encoder's 160 frames) and between two.
EMBED_WINDOW, EMBED_HOP = 1.6, 0.8
#: Windows handed to an encoder that embeds each window alone (GE2E) together. CAM++
#: embeds a run of overlapping windows in one pass instead (every frame once, context
#: masks over the 1.6 s around each frame, :meth:`~emovox.campplus.CampPlusEncoder.
#: embed_run`): on development conversations (seeds 1-3, 7, 8) DER with the count
#: given 0.053 / 0.068 / 0.101 -> 0.051 / 0.058 / 0.087 (two / three / four speakers)
#: for about three quarters of the pass. (A first try, the runs through the window
#: network with each run's mean as context, moved a run's embeddings together and
#: hurt the count: 0.054 / 0.141 -> 0.141 / 0.167 found, seeds 1-2.)
EMBED_BATCH = 256
#: The voice encoder diarization uses unless told otherwise. CAM++ against GE2E (with
#: its projection) on 54 development conversations of held-out voices (seeds 1-3;
#: docs/RESULTS.md, issue 14), DER with the number of speakers given, two / three /
#: four speakers: 0.060 / 0.051 / 0.092 against 0.189 / 0.141 / 0.253; found: 0.079 /
#: 0.176 / 0.146 against 0.191 / 0.275 / 0.387. Its int8 graph costs about 9-12 ms
#: per window (float32 21-24 ms) against GE2E's 3-4.5 ms.
DEFAULT_VOICES = "campplus"
#: Share of an embedding window that must be speech.
MIN_EMBED_SPEECH = 0.5
#: Most speakers ``auto`` looks for.
MAX_SPEAKERS = 8
#: Below this silhouette (cosine) no split separates voices: one speaker.
MIN_SILHOUETTE = 0.12
#: ``auto`` takes the fewest speakers whose silhouette is within this of the best:
#: silhouettes of 2-8 clusters differ by a few hundredths on conversations, and a
#: cluster more than the voices splits one voice by its emotion. Tuned with Ward
#: clustering on 108 development conversations (``benchmarks/conversations.py
#: --unseen --diarization-only --per-count 6 --counts 2 3 4``, seeds 1-6, never the
#: reported seed 0); DER with the count found, two / three / four speakers: 0 ->
#: 0.192 / 0.256 / 0.365, 0.01 -> 0.174 / 0.258 / 0.384, 0.02 -> 0.153 / 0.272 /
#: 0.384, 0.03 -> 0.157 / 0.280 / 0.393 (0.03 was the pick with average linkage).
SILHOUETTE_MARGIN = 0.02
#: ``auto`` with the voice projection: a recording whose projected embeddings spread
#: less than this (mean squared distance to their mean, per dimension) is one voice.
#: The projection whitens one speaker's spread (about 1 per dimension, emotions
#: included; two voices add their distance); on 108 development conversations (seeds
#: 1-6) and 18 one-speaker recordings (a held-out speaker's utterances of all
#: emotions, 1.5 min): one speaker found 0/18 -> 6/18 at the cost of one two-speaker
#: conversation (DER 0.153 -> 0.158); 1.2 found 11/18 but cost 0.153 -> 0.179.
ONE_VOICE_SPREAD = 1.1
#: ... unless a split is this clear (silhouette): voices far from the speech the
#: projection was fitted on (the tests' synthetic ones) spread little even when two;
#: the development one-speaker recordings scored 0.12-0.27 at best.
ONE_VOICE_SILHOUETTE = 0.3
#: CAM++ ``auto``: a recording whose best two-way split leaves centroids (of the unit
#: embeddings, in the raw space) at least this alike (cosine) is one voice. Windows
#: embedded in runs (:meth:`~emovox.campplus.CampPlusEncoder.embed_run`) share context,
#: so one voice's halves are more alike than when each window was embedded alone
#: (0.65 then); see :data:`COUNT_RULES`.
ONE_VOICE_COSINE = 0.7


@dataclass(frozen=True)
class CountRule:
    """How ``auto`` finds the number of speakers in one encoder's embeddings.

    Attributes
    ----------
    margin : float
        Silhouettes within this of the best count as equal (:func:`pick_count`).
    penalty : float
        Silhouette each speaker beyond two must buy (:func:`pick_count`).
    one_voice_spread : float or None
        One voice below this spread, in the voice projection (see ``one_voice`` of
        :func:`cluster`); used only when a projection applies.
    one_voice_cosine : float or None
        One voice when the two-way split's centroids are this alike (cosine).
    """

    margin: float
    penalty: float = 0.0
    one_voice_spread: float | None = None
    one_voice_cosine: float | None = None


#: Each encoder's rule, tuned on development conversations only (seeds 1-6 for GE2E;
#: 1-3, 7 and 8 for CAM++; never the held-out seeds 0, 4-6). CAM++ (int8, windows
#: embedded in runs; 30 conversations per count of two / three / four speakers, and
#: 45 one-voice recordings): the best silhouette less 0.01 per speaker beyond two, one
#: voice at a cosine of 0.7, DER with the count found 0.092 / 0.133 / 0.154, one voice
#: found as one 42/45. Penalty 0.0075 / 0.015 at 0.7: 0.104 / 0.079, 0.149 / 0.141,
#: 0.165 / 0.167; at 0.65 one voice 45/45 but two speakers 0.137; at 0.75 one voice
#: 26/45 (first version of the runs). Windows embedded alone with the rule before
#: (0.005, 0.65): 0.122 / 0.138 / 0.145, 43/45.
COUNT_RULES = {"ge2e": CountRule(SILHOUETTE_MARGIN, one_voice_spread=ONE_VOICE_SPREAD),
               "campplus": CountRule(0.0, penalty=0.01, one_voice_cosine=ONE_VOICE_COSINE)}
#: ``auto`` counts no speaker heard in fewer windows than this (about 4 s of speech).
#: Short recordings have few windows, and the silhouette of tiny clusters is high: a
#: 20 s call of two voices (15 windows) was found to hold eight. No effect on the
#: development conversations (2 min each; DER unchanged with 3 to 6).
MIN_SPEAKER_WINDOWS = 4
#: Most embeddings clustered together; the others join the nearest centroid
#: (bounds the N x N distances of long recordings).
MAX_CLUSTERED = 2000


def check_speakers(speakers: int | str) -> int | str:
    """``"auto"``, a number of speakers >= 1 (``"2"`` is read as 2), or a range
    ``"MIN-MAX"`` within which ``auto`` looks (``"2-4"``; ``"3-3"`` is read as 3).

    Returns
    -------
    int or str
        ``"auto"``, the number, or the range as ``"MIN-MAX"``.

    Raises
    ------
    ValueError
        Anything else.
    """
    problem = ValueError("speakers must be 'auto', a number >= 1 or a range such as "
                         f"'2-4', got {speakers!r}")
    if isinstance(speakers, str):
        text = speakers.strip().lower()
        if text == "auto":
            return "auto"
        if "-" in text:
            low, _, high = text.partition("-")
            try:
                fewest, most = int(low), int(high)
            except ValueError:
                raise problem from None
            if not 1 <= fewest <= most:
                raise problem
            return fewest if fewest == most else f"{fewest}-{most}"
    try:
        number = int(speakers)
    except (TypeError, ValueError):
        number = 0
    if number < 1 or (isinstance(speakers, float) and not float(speakers).is_integer()):
        raise problem
    return number


def speaker_range(speakers: int | str, max_speakers: int = MAX_SPEAKERS) -> tuple[int, int]:
    """The fewest and the most speakers a checked ``speakers`` value allows.

    Parameters
    ----------
    speakers : int or str
        A value of :func:`check_speakers`.
    max_speakers : int
        The most ``"auto"`` considers.

    Returns
    -------
    tuple of int
        ``(n, n)`` for a number, ``(1, max_speakers)`` for ``"auto"``, the range's
        bounds for ``"MIN-MAX"`` (its top no higher than ``max_speakers``, its bottom
        no higher than its top).
    """
    speakers = check_speakers(speakers)
    if isinstance(speakers, int):
        return speakers, speakers
    if speakers == "auto":
        return 1, max_speakers
    fewest, most = (int(v) for v in speakers.split("-"))
    most = min(most, max_speakers)
    return min(fewest, most), most


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
    encoder: SpeakerEncoder | str | None = None,
    max_speakers: int = MAX_SPEAKERS,
    progress: bool = False,
    detector: VoiceActivityStream | None = None,
    stop: threading.Event | None = None,
) -> Diarization:
    """Separate the voices of a recording: who spoke when.

    Parameters
    ----------
    source : str, PathLike or np.ndarray
        An audio file, or samples of shape (n,) or (n, channels).
    sample_rate : int, optional
        Rate of an array ``source`` in Hz.
    speakers : int or str
        How many speakers there are, ``"auto"`` to find it (1 to ``max_speakers``), or
        a range ``"MIN-MAX"`` (``"2-4"``) to find it within.
    vad : {"silero", "energy"} or None
        Voice activity detector (None: all of the audio is speech).
    chunk_seconds : float
        Seconds of audio read at a time.
    name : str, optional
        How errors name the recording.
    vad_options : VadOptions, optional
        Detector and smoothing parameters.
    encoder : SpeakerEncoder or str, optional
        The voice encoder, or the name of one shared by the process (see
        :data:`emovox.speakers.VOICE_ENCODERS`; default :data:`DEFAULT_VOICES`).
    max_speakers : int
        Most speakers ``auto`` considers.
    progress : bool
        Show a progress bar over the recording (stderr) when the pass takes a while.
    detector : VoiceActivityStream, optional
        A finished detector that has heard this recording
        (:func:`emovox.vad.detect_speech`, a first pass shared with a timeline): its
        decisions are used and ``vad`` is not run again.
    stop : threading.Event, optional
        Once set, the pass stops at its next block of audio, raising
        :class:`~emovox.errors.StoppedError` (a timeline whose caller went away).

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
    encoder = _resolve(encoder)
    heard = embed_windows(source, sample_rate, vad=vad, chunk_seconds=chunk_seconds,
                          name=name, vad_options=vad_options, encoder=encoder,
                          progress=progress, detector=detector, stop=stop)
    # GE2E: speaker directions only (emotion moves its raw embeddings as much as the
    # voice does). CAM++ ships no projection: one fitted on the corpora's 37 other
    # speakers lost to the raw embeddings (DER given 0.043 / 0.059 against 0.035 /
    # 0.058, two / three speakers, seed 1; 0.090 / 0.127 against 0.073 / 0.042, seed 2).
    projection = voice_projection(encoder.name, encoder.size)
    rule = COUNT_RULES.get(encoder.name, CountRule(SILHOUETTE_MARGIN))
    fewest, most = speaker_range(speakers, max_speakers)
    labels = cluster(project(heard.embeddings, projection),
                     speakers if isinstance(speakers, int) else "auto", most,
                     one_voice=rule.one_voice_spread if projection is not None else None,
                     one_voice_cosine=rule.one_voice_cosine, margin=rule.margin,
                     penalty=rule.penalty, min_speakers=fewest)
    turns = speaker_turns(heard.segments, heard.centres, labels)
    names = list(dict.fromkeys(s for _, _, s in turns))
    if isinstance(speakers, int):  # the speakers given but never heard still exist
        names += [f"S{k}" for k in range(1, speakers + 1) if f"S{k}" not in names]
    return Diarization(turns, names, heard.duration, time.perf_counter() - began,
                       len(heard.embeddings), heard.detector)


@dataclass
class Heard:
    """The voice embeddings of one recording's speech, from :func:`embed_windows`.

    Attributes
    ----------
    embeddings : np.ndarray, shape (n, 256)
        Unit-length voice embeddings of the windows that are mostly speech.
    centres : np.ndarray, shape (n,)
        Their windows' centres in seconds, increasing.
    segments : list of (float, float)
        The speech ``(start, end)`` in seconds.
    duration : float
        Seconds of audio.
    detector : VoiceActivityStream or None
        The finished speech detector.
    """

    embeddings: np.ndarray
    centres: np.ndarray
    segments: list[tuple[float, float]]
    duration: float
    detector: VoiceActivityStream | None = field(default=None, repr=False)


def embed_windows(
    source: str | os.PathLike[str] | np.ndarray,
    sample_rate: int | None = None,
    *,
    vad: str | None = "silero",
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    name: str | None = None,
    vad_options: VadOptions | None = None,
    encoder: SpeakerEncoder | str | None = None,
    window: float = EMBED_WINDOW,
    hop: float = EMBED_HOP,
    progress: bool = False,
    detector: VoiceActivityStream | None = None,
    stop: threading.Event | None = None,
) -> Heard:
    """Voice embeddings of a recording's speech: one per window that is mostly speech.

    Parameters are those of :func:`diarize`, and ``window`` and ``hop`` in seconds.

    Returns
    -------
    Heard

    Raises
    ------
    AudioError
        Unreadable or empty audio.
    """
    label, sr, blocks = open_blocks(source, sample_rate, chunk_seconds, name,
                                    progress="who speaks when" if progress else None)
    heard_before = detector is not None
    if heard_before and detector.sample_rate != sr:
        raise ValueError(f"{label}: the detector heard {detector.sample_rate} Hz audio, "
                         f"the recording is {sr} Hz")
    if detector is None and (method := resolve_vad(vad)):
        detector = VoiceActivityStream(method, sr, vad_options)
    encoder = _resolve(encoder)
    # CAM++ embeds a run of overlapping windows in one pass (each frame once).
    runs = getattr(encoder, "embed_run", None)
    vectors, centres, signals = [], [], []
    read = 0
    for ready in stream_windows(blocks, sr, window, hop, detector, feed=not heard_before):
        if stop is not None and stop.is_set():
            raise StoppedError(f"{label}: voice pass stopped")
        read = ready.samples_read
        speech: list[tuple[int, int]] = []
        for start, end in ready.windows:
            seconds = (end - start) / sr
            if seconds < min(hop, window):  # a sliver at the end: in the last window
                continue
            if detector is not None and (detector.speech_seconds(start / sr, end / sr)
                                         < MIN_EMBED_SPEECH * seconds):
                continue
            centres.append((start + end) / 2 / sr)
            speech.append((start - ready.offset, end - ready.offset))
        if runs is not None:
            vectors += [_embed_run(runs, ready.buffer, run, sr) for run in _runs(speech)]
            continue
        signals += [resample(np.asarray(ready.buffer[a:b], np.float32), sr, SAMPLE_RATE)
                    for a, b in speech]
        # Embedded a batch at a time: bounded memory, and GE2E's LSTM pays per time
        # step, so large batches.
        if len(signals) >= EMBED_BATCH or (ready.last and signals):
            vectors.append(encoder.embed(signals))
            signals = []
    if read == 0:
        raise AudioError(label, "no audio samples (empty or truncated file)")
    duration = read / sr
    segments = detector.segments() if detector is not None else [(0.0, duration)]
    embeddings = (np.concatenate(vectors) if vectors
                  else np.zeros((0, encoder.size), np.float32))
    return Heard(embeddings, np.asarray(centres, dtype=float), segments, duration, detector)


def _runs(bounds: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Windows (in order) grouped into runs that overlap or touch."""
    grouped: list[list[tuple[int, int]]] = []
    for a, b in bounds:
        if grouped and a <= grouped[-1][-1][1]:
            grouped[-1].append((a, b))
        else:
            grouped.append([(a, b)])
    return grouped


def _embed_run(embed_run: Any, buffer: np.ndarray, run: list[tuple[int, int]],
               sample_rate: int) -> np.ndarray:
    """One run of windows of ``buffer`` embedded in one pass over its span, at the
    encoder's 16 kHz."""
    first, last = run[0][0], run[-1][1]
    span = resample(np.asarray(buffer[first:last], np.float32), sample_rate, SAMPLE_RATE)
    scale = SAMPLE_RATE / sample_rate
    return embed_run(span, [(round((a - first) * scale), round((b - first) * scale))
                            for a, b in run])


def _resolve(encoder: SpeakerEncoder | str | None) -> SpeakerEncoder:
    """An encoder object from an object, a name, or None (the default)."""
    if encoder is None or isinstance(encoder, str):
        return voice_encoder(encoder or DEFAULT_VOICES)
    return encoder


def cluster(embeddings: np.ndarray, speakers: int | str = "auto",
            max_speakers: int = MAX_SPEAKERS, one_voice: float | None = None,
            one_voice_cosine: float | None = None, margin: float = SILHOUETTE_MARGIN,
            penalty: float = 0.0, min_speakers: int = 1) -> np.ndarray:
    """Speaker labels of voice embeddings.

    The recording's mean embedding is taken out, then Ward agglomerative clustering on
    Euclidean distances, then each embedding moves to its nearest cluster centroid
    (two rounds), which mends the early merges agglomeration cannot undo.

    Euclidean, not cosine: the voice projection (:mod:`emovox.voice_projection`, LDA)
    whitens one speaker's spread (about unit variance along every direction, whatever
    the emotion, measured on held-out voices), so plain distances there weigh every
    direction by how well it tells speakers apart, and Ward's variance criterion fits
    clusters of equal spread. Measured on 108 development conversations (seeds 1-6,
    held-out voices, count given), DER 0.153 / 0.202 / 0.258 with average-linkage
    cosine clustering -> 0.152 / 0.164 / 0.221 (two / three / four speakers).

    Parameters
    ----------
    embeddings : np.ndarray, shape (n, dim)
        Voice embeddings (raw or projected), in time order.
    speakers : int or "auto"
        Number of clusters, or ``"auto"``: the fewest from 2 (or ``min_speakers``) to
        ``max_speakers`` whose silhouette, less ``penalty`` per cluster beyond two, is
        within ``margin`` of the highest (:func:`pick_count`), among splits whose every
        cluster holds :data:`MIN_SPEAKER_WINDOWS`, or 1 (unless ``min_speakers`` is 2
        or more) when the highest silhouette is below :data:`MIN_SILHOUETTE`.
    max_speakers : int
        Most clusters ``auto`` tries.
    one_voice : float, optional
        ``auto``: when the embeddings' mean squared distance to their mean per
        dimension is below this (:data:`ONE_VOICE_SPREAD` in the voice projection,
        where one voice's spread is known; None: no such test), one speaker unless
        the best split's silhouette reaches :data:`ONE_VOICE_SILHOUETTE`.
    one_voice_cosine : float, optional
        ``auto``: one speaker when the centroids of the two-cluster split (means of
        the unit-length embeddings, before the recording's mean is taken out) have
        at least this cosine (:data:`ONE_VOICE_COSINE` for CAM++).
    margin : float
        ``auto``: silhouettes within this of the best count as equal.
    penalty : float
        ``auto``: silhouette each cluster beyond two must buy.
    min_speakers : int
        ``auto``: the fewest clusters it may find (with 2 or more, never one voice).

    Returns
    -------
    np.ndarray of int, shape (n,)
        0, 1, ... numbered in order of first appearance.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import pairwise_distances, silhouette_score

    speakers = check_speakers(speakers)
    n = len(embeddings)
    if n == 0:
        return np.zeros(0, int)
    X = np.asarray(embeddings, dtype=np.float64)
    # Voice embeddings share a large common part (GE2E's are non-negative, cosine ~0.5
    # between any two voices): taking out the recording's mean leaves what tells its
    # voices apart (measured with GE2E: DER 0.34 -> 0.19 on two-speaker conversations).
    X = X - X.mean(axis=0) if n > 1 else X
    # No more spread than one voice: only a clear split counts as two voices.
    floor = (ONE_VOICE_SILHOUETTE if one_voice is not None
             and np.mean(np.sum(X ** 2, axis=1)) / X.shape[1] < one_voice
             else MIN_SILHOUETTE)
    # Long recordings: cluster an even subsample, the rest joins the nearest centroid.
    sample = np.unique(np.linspace(0, n - 1, min(n, MAX_CLUSTERED)).round().astype(int))
    Xs = X[sample]
    counts = ([speakers] if isinstance(speakers, int)
              else list(range(max(2, min_speakers), min(max_speakers, len(Xs) - 1) + 1)))
    tree = linkage(Xs, method="ward") if len(Xs) > 1 else None  # one tree, cut per count
    # The cosine distances once for every count's silhouette (not once per count).
    distances = None
    if speakers == "auto" and len(Xs) > 1:
        distances = pairwise_distances(Xs, metric="cosine")
        np.fill_diagonal(distances, 0.0)  # exactly: the precomputed metric checks it
    tried: list[tuple[float, np.ndarray]] = []
    halves = None  # the two-way split
    for k in counts:
        if k <= 1 or k > len(Xs):
            continue
        found = _refine(Xs, fcluster(tree, k, criterion="maxclust") - 1, k)
        halves = found if k == 2 else halves
        if speakers == "auto" and np.bincount(found).min() < MIN_SPEAKER_WINDOWS:
            continue  # a "speaker" heard in a few windows is a stray, not a voice
        if speakers != "auto":
            score = 1.0  # the count is given: nothing to choose
        elif len(set(found)) > 1:
            score = silhouette_score(distances, found, metric="precomputed")
        else:
            score = -1.0
        tried.append((score, found))
    one_allowed = speakers != "auto" or min_speakers <= 1
    if not one_allowed:  # told there are several: no floor, at least the fewest
        floor = -math.inf
        if not tried and 2 <= min_speakers <= len(Xs):  # too few windows to choose
            k = min_speakers
            tried = [(1.0, _refine(Xs, fcluster(tree, k, criterion="maxclust") - 1, k))]
    best = pick_count(tried, margin, floor, penalty) if tried else np.zeros(len(Xs), int)
    # Two halves as alike as one voice's emotions are: one voice (CAM++).
    if (speakers == "auto" and one_allowed and one_voice_cosine is not None
            and halves is not None
            and _split_alike(np.asarray(embeddings)[sample], halves) >= one_voice_cosine):
        best = np.zeros(len(Xs), int)
    labels = _nearest(X, _centroids(Xs, best)) if len(sample) < n else best
    # Number the speakers in order of first appearance.
    order = {old: new for new, old in enumerate(dict.fromkeys(labels.tolist()))}
    return np.array([order[v] for v in labels.tolist()], dtype=int)


def pick_count(tried: Sequence[tuple[float, np.ndarray]],
               margin: float = SILHOUETTE_MARGIN,
               floor: float = MIN_SILHOUETTE, penalty: float = 0.0) -> np.ndarray:
    """The labels of the fewest clusters whose silhouette is near the best.

    The silhouette of a voice split by its emotion is barely below that of the
    voices (a few hundredths): the simpler answer wins (Occam), either among
    near-equal scores (``margin``) or by a cost per cluster (``penalty``), which is
    what stops ``auto`` from finding eight speakers in two.

    Parameters
    ----------
    tried : sequence of (float, np.ndarray)
        ``(silhouette, labels)`` of each number of clusters tried.
    margin : float
        Scores within ``margin`` of the best count as equal.
    floor : float
        Below this best silhouette no split separates voices: all labels 0.
    penalty : float
        Subtracted from a score per cluster beyond two before comparing.

    Returns
    -------
    np.ndarray of int
        The chosen labels.
    """
    if max(score for score, _ in tried) < floor:
        return np.zeros(len(tried[0][1]), int)
    scored = [(score - penalty * max(len(np.unique(labels)) - 2, 0), labels)
              for score, labels in tried]
    best = max(score for score, _ in scored)
    near = [labels for score, labels in scored if score >= best - margin]
    return min(near, key=lambda labels: len(np.unique(labels)))


def _split_alike(embeddings: np.ndarray, labels: np.ndarray) -> float:
    """Cosine between the centroids of a two-way split of unit-length embeddings
    (1.0 when the split left one cluster)."""
    if len(np.unique(labels)) < 2:
        return 1.0
    unit = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
    a, b = _centroids(unit, labels)
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def _centroids(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.stack([X[labels == k].mean(axis=0) for k in np.unique(labels)])


def _nearest(X: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of each row's nearest centroid (Euclidean)."""
    # |x - c|^2 = |x|^2 - 2 x.c + |c|^2; |x|^2 is the same for every centroid.
    return np.argmin(-2 * X @ centroids.T + np.sum(centroids ** 2, axis=1), axis=1)


def _refine(X: np.ndarray, labels: np.ndarray, k: int, rounds: int = 2) -> np.ndarray:
    for _ in range(rounds):
        kept = np.unique(labels)
        moved = kept[_nearest(X, _centroids(X, labels))]
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
