"""Sliding windows, written once: their checks, their count and their sample bounds.

The first window starts at 0 and one starts every ``hop`` seconds. With ``partial``
(a timeline), the last window ends at the end of the audio and may be shorter than
``window``; without (calibration), only whole windows are taken. Timelines, live
streams, calibration and the server's work bound all use these functions;
:func:`stream_windows` cuts a recording read in blocks (timelines, diarization).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Seconds per window.
DEFAULT_WINDOW = 2.0
#: Seconds between window starts.
DEFAULT_HOP = 1.0
#: Share of a window that must be speech for it to be classified.
DEFAULT_MIN_SPEECH = 0.5
#: Seconds of audio read at a time.
DEFAULT_CHUNK_SECONDS = 60.0


def check_window(window: float, hop: float, min_speech: float = DEFAULT_MIN_SPEECH,
                 chunk_seconds: float = DEFAULT_CHUNK_SECONDS) -> None:
    """Raise ValueError unless the window parameters make sense.

    Parameters
    ----------
    window : float
        Seconds per window, > 0.
    hop : float
        Seconds between window starts, in (0, window] (windows never leave gaps).
    min_speech : float
        Share of speech in [0, 1].
    chunk_seconds : float
        Seconds read at a time, > 0.
    """
    if not (isinstance(window, int | float) and math.isfinite(window) and window > 0):
        raise ValueError(f"window must be a number of seconds > 0, got {window!r}")
    if not (isinstance(hop, int | float) and math.isfinite(hop) and 0 < hop <= window):
        raise ValueError(f"hop must be > 0 and at most the window ({window:g} s), got {hop!r}")
    if not (math.isfinite(min_speech) and 0.0 <= min_speech <= 1.0):
        raise ValueError(f"min_speech must be a share in [0, 1], got {min_speech!r}")
    if not (math.isfinite(chunk_seconds) and chunk_seconds > 0):
        raise ValueError(f"chunk_seconds must be > 0, got {chunk_seconds!r}")


def window_samples(window: float, hop: float, sample_rate: int) -> tuple[int, int]:
    """Window and hop in samples (at least one each)."""
    return max(1, round(window * sample_rate)), max(1, round(hop * sample_rate))


def window_count(samples: int, sample_rate: int, window: float = DEFAULT_WINDOW,
                 hop: float = DEFAULT_HOP, partial: bool = True) -> int:
    """How many windows ``samples`` samples hold (with or without speech).

    Parameters
    ----------
    samples : int
        Length of the recording in samples.
    sample_rate : int
        Its rate in Hz.
    window, hop : float
        Window length and step between window starts in seconds (valid per
        :func:`check_window`).
    partial : bool
        Count a last, shorter window that ends at the end of the audio (a timeline's
        rows); otherwise only whole windows (at least one while there is audio).

    Returns
    -------
    int
    """
    win_n, hop_n = window_samples(window, hop, sample_rate)
    if partial:
        return max(0, math.ceil((samples - win_n) / hop_n)) + 1
    return max(0, (samples - win_n) // hop_n) + 1 if samples >= win_n else int(samples > 0)


def window_bounds(samples: int, sample_rate: int, window: float = DEFAULT_WINDOW,
                  hop: float = DEFAULT_HOP, partial: bool = True, first: int = 0
                  ) -> Iterator[tuple[int, int]]:
    """``(start, end)`` sample bounds of windows ``first, first + 1, ...``.

    Parameters are those of :func:`window_count`; a recording shorter than one
    window is one window of all of it.
    """
    win_n, hop_n = window_samples(window, hop, sample_rate)
    for k in range(first, window_count(samples, sample_rate, window, hop, partial)):
        yield k * hop_n, min(k * hop_n + win_n, samples)


@dataclass
class ReadyWindows:
    """Windows whose samples (and speech decisions) are all in, from :func:`stream_windows`.

    Attributes
    ----------
    buffer : np.ndarray
        Samples from ``offset`` on (the windows' samples are ``buffer[start - offset:
        end - offset]``).
    offset : int
        File sample index of ``buffer[0]``.
    windows : list of (int, int)
        ``(start, end)`` sample bounds, in order.
    samples_read : int
        Samples read so far.
    last : bool
        The end of the audio (this batch closes the stream; it may be empty).
    """

    buffer: np.ndarray
    offset: int
    windows: list[tuple[int, int]]
    samples_read: int
    last: bool


def stream_windows(blocks: Iterable[np.ndarray], sample_rate: int, window: float,
                   hop: float, detector: Any = None, feed: bool = True,
                   grid: int | None = None) -> Iterator[ReadyWindows]:
    """Cut blocks of samples into windows as soon as they are complete.

    Only the samples of windows not yet handed out are kept, so memory does not grow
    with the recording. With a voice activity ``detector`` (an
    :class:`~emovox.vad.VoiceActivityStream`) a window is handed out once the
    detector's decisions over it are final.

    Parameters
    ----------
    blocks : iterable of np.ndarray
        Mono samples in order.
    sample_rate : int
        Their rate in Hz.
    window, hop : float
        Window length and the step between window starts, in seconds.
    detector : VoiceActivityStream, optional
        Fed with every block (when ``feed``) and finished at the end.
    feed : bool
        False when ``detector`` has already heard the whole audio (a first pass).
    grid : int, optional
        Cells of this many samples, encoded whole (:mod:`emovox.inference.frames`): a
        window is handed out only once the cell holding its end is all read (and
        decided), and the buffer keeps the samples from the start of the cell of the
        first window not handed out.

    Yields
    ------
    ReadyWindows
        One per block that completed windows, then a last one (``last=True``) with the
        windows that end at the end of the audio.
    """
    win_n, hop_n = window_samples(window, hop, sample_rate)
    buffer = np.zeros(0, np.float32)
    offset = read = k = 0  # k: next window to hand out
    for block in blocks:
        buffer = np.concatenate([buffer, block]) if buffer.size else block
        read += block.size
        if detector is not None and feed:
            detector.feed(block)
        known = read if detector is None else min(read, detector.final_seconds * sample_rate)
        if grid is not None:  # the last whole cell
            known = known // grid * grid
        ready = []
        while True:
            start = k * hop_n
            end = start + win_n
            if end > read or (detector is not None and end / sample_rate
                              > detector.final_seconds) or (grid is not None and
                                                            -(-end // grid) * grid > known):
                break
            ready.append((start, end))
            k += 1
        if ready:
            yield ReadyWindows(buffer, offset, ready, read, False)
            keep = k * hop_n if grid is None else k * hop_n // grid * grid
            drop = max(0, keep - offset)
            buffer, offset = buffer[drop:], offset + drop
    if detector is not None and read:
        detector.finish()
    yield ReadyWindows(buffer, offset,
                       list(window_bounds(read, sample_rate, window, hop, first=k)), read, True)
