"""Windows of a recording encoded once: stretches of speech in, pooled window features out.

A timeline's windows overlap (2 s every 1 s by default), so encoding each window on its
own encodes every second twice, and a window that is half silence spends half its
encoder time on the silence. When the model's features are the mean over time of
frame-level features (Whisper encoder states, :attr:`Backend.frame_seconds`), the
engine instead encodes each stretch of speech once (:class:`WindowEncoder`), in
pieces of at most :data:`MAX_PIECE_SECONDS`, and gives each window the mean of the
frames that fall inside it (a frame belongs to the window that holds its centre).
Each piece is a unit of the model's preprocessing (the loudness scaling applies to it
whole), and the encoder hears every frame in the context of its piece, as it heard
whole utterances in training; silence is not encoded at all.

Measured on 10 min of corpus utterances with pauses (docs/RESULTS.md): about half the
encoder time of window-by-window encoding, and higher window and utterance UAR.

Only models that adapt to the speaker use it: pooled windows differ from whole
utterances by a shift that the speaker's statistics remove (measured on conversations:
unadapted turn UAR 0.73 / 0.76 with windows encoded alone, 0.65 / 0.61 pooled). In a
conversation the timeline passes the speaker turns as the speech, so no piece holds two
voices (:mod:`emovox.timeline`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from emovox.inference.engine import Backend, Encoded

#: Longest stretch encoded at once, in seconds: long enough for the context of an
#: utterance, short enough that attention (quadratic in length) stays cheap.
MAX_PIECE_SECONDS = 10.0
#: Cells of the fixed grid a recording is encoded by: a stretch of speech is cut where
#: it crosses a cell boundary (measured: 30 s cells cut few utterances and score as
#: well as uncut stretches; 10 s cells cut more and lose 0.02 window UAR).
CELL_SECONDS = 30.0


def speech_pieces(spans: Sequence[tuple[int, int]], speech: Sequence[tuple[int, int]] | None,
                  max_samples: int) -> list[tuple[int, int]]:
    """The stretches to encode: ``speech`` inside ``spans``, cut to at most ``max_samples``.

    Parameters
    ----------
    spans : sequence of (int, int)
        Sample ranges that need features (the windows to classify), in any order;
        overlapping ones are merged.
    speech : sequence of (int, int), or None
        Sample ranges of speech, in order and not overlapping (touching ranges stay
        separate pieces); None: all of ``spans`` is speech.
    max_samples : int
        Longest piece; a longer stretch is cut into equal parts.

    Returns
    -------
    list of (int, int)
        Sample ranges, in order and not overlapping.
    """
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    merged = [(int(a), int(b)) for a, b in merged_spans(spans)]
    stretches: list[tuple[int, int]] = []
    if speech is None:
        stretches = merged
    else:
        for a, b in speech:  # intersect: both lists are sorted
            for start, end in merged:
                lo, hi = max(a, start), min(b, end)
                if hi > lo:
                    stretches.append((lo, hi))
    pieces = []
    for start, end in stretches:
        n = math.ceil((end - start) / max_samples)
        bounds = np.linspace(start, end, n + 1).round().astype(int)
        pieces += [(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    return pieces


def pool_windows(frames: Sequence[np.ndarray], starts: Sequence[float],
                 windows: Sequence[tuple[float, float]], frame_seconds: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the frames whose centre lies in each window.

    Parameters
    ----------
    frames : sequence of np.ndarray, each shape (n_i, dim)
        Frame-level features of consecutive, non-overlapping pieces.
    starts : sequence of float
        Start of each piece, in seconds (frame k of a piece covers ``start + [k,
        k + 1) * frame_seconds``).
    windows : sequence of (float, float)
        ``[start, end)`` of each window, in seconds.
    frame_seconds : float
        Frame step.

    Returns
    -------
    features : np.ndarray, float32, shape (n_usable, dim)
        Pooled features of the windows that hold at least one frame, in order.
    usable : np.ndarray of bool, shape (len(windows),)
        Which windows hold a frame.
    """
    usable = np.zeros(len(windows), dtype=bool)
    if not frames:
        return np.zeros((0, 0), np.float32), usable
    centres = np.concatenate([start + (np.arange(len(f)) + 0.5) * frame_seconds
                              for f, start in zip(frames, starts, strict=True)])
    order = np.argsort(centres, kind="stable")
    centres = centres[order]
    stacked = np.concatenate(frames)
    if not np.array_equal(order, np.arange(order.size)):
        stacked = stacked[order]
    bounds = np.asarray(windows, dtype=float).reshape(-1, 2)
    first = np.searchsorted(centres, bounds[:, 0], side="left")
    last = np.searchsorted(centres, bounds[:, 1], side="left")
    usable = last > first
    # A slice mean per window: cheaper than a cumulative sum over every frame, and
    # summed like the graph's own mean (float32).
    features = np.stack([stacked[a:b].mean(axis=0) for a, b in zip(first[usable],
                                                                   last[usable], strict=True)]
                        ) if usable.any() else np.zeros((0, stacked.shape[1]), np.float32)
    return features.astype(np.float32, copy=False), usable


class WindowEncoder:
    """The windows of one recording, batch after batch, each stretch of speech encoded once.

    With a backend that has frame-level features, the recording is cut on a fixed grid
    of cells (:data:`CELL_SECONDS`); each cell's speech is encoded once, in pieces of
    at most :data:`MAX_PIECE_SECONDS` (:func:`speech_pieces`), and each window gets the
    mean of the frames inside it (:func:`pool_windows`). A cell is encoded whole, so
    the features do not depend on how the recording was read in blocks, as long as
    every cell a batch's windows touch is in its buffer (:func:`stream_windows` with
    ``grid=encoder.grid`` hands windows out that way). The frames of the last cells
    are kept for the next batch. Otherwise each window is encoded on its own.

    Parameters
    ----------
    backend : Backend
        The model runtime.
    sample_rate : int
        Rate of the buffers given to :meth:`encode`.
    frames : bool
        Use the backend's frames when it has them (False: every window on its own).
    only : sequence of (int, int), optional
        Sample ranges: a cell's pieces that overlap none of them are not encoded. For
        encoding some windows of a recording again (these ranges): their frames are
        all there, the rest of their cells costs nothing.
    """

    def __init__(self, backend: Backend, sample_rate: int, frames: bool = True,
                 only: Sequence[tuple[int, int]] | None = None) -> None:
        self.backend = backend
        self.sample_rate = int(sample_rate)
        self._only = None if only is None else merged_spans(only)
        self.frame_seconds = backend.frame_seconds if frames else None
        #: Samples per cell (None: windows are encoded one by one).
        self.grid: int | None = None
        if self.frame_seconds is not None:
            self.grid = round(min(CELL_SECONDS, backend.max_seconds) * self.sample_rate)
            self.longest = max(1, math.floor(min(MAX_PIECE_SECONDS, backend.max_seconds)
                                             * self.sample_rate))
        self._cells: dict[int, tuple[list[np.ndarray], list[float]]] = {}

    def encode(self, buffer: np.ndarray, offset: int, windows: Sequence[tuple[int, int]],
               speech: Sequence[tuple[int, int]] | None = None) -> Encoded:
        """Features (and plain probabilities) of windows of the recording.

        Parameters
        ----------
        buffer : np.ndarray, shape (n,)
            Mono samples from file sample ``offset`` on: every window, and (frame-level
            backends) every cell they touch, from its start to its end or to the end of
            the audio.
        offset : int
            File sample index of ``buffer[0]``.
        windows : sequence of (int, int)
            File sample ranges of the windows to encode, in order.
        speech : sequence of (int, int), optional
            File sample ranges of speech, in order and not overlapping; None: all
            audio is encoded.

        Returns
        -------
        Encoded
            One row per usable window, ``usable`` over ``windows``.
        """
        sr = self.sample_rate
        if self.grid is None or not windows:
            return self.backend.encode([buffer[a - offset:b - offset] for a, b in windows], sr)
        first, last = windows[0][0] // self.grid, (windows[-1][1] - 1) // self.grid
        for cell in [c for c in self._cells if c < first]:
            del self._cells[cell]
        frames: list[np.ndarray] = []
        starts: list[float] = []
        for cell in range(first, last + 1):
            if cell not in self._cells:
                self._cells[cell] = self._encode_cell(buffer, offset, cell, speech)
            frames += self._cells[cell][0]
            starts += self._cells[cell][1]
        features, usable = pool_windows(frames, starts, [(a / sr, b / sr) for a, b in windows],
                                        self.frame_seconds)  # type: ignore[arg-type]
        encoded = self.backend.encode_pooled(features)
        encoded.usable = usable
        return encoded

    def _encode_cell(self, buffer: np.ndarray, offset: int, cell: int,
                     speech: Sequence[tuple[int, int]] | None
                     ) -> tuple[list[np.ndarray], list[float]]:
        """Frames of one cell's pieces, and the start of each in seconds."""
        assert self.grid is not None
        begin, end = cell * self.grid, min((cell + 1) * self.grid, offset + buffer.size)
        if begin < offset:
            raise ValueError(f"cell {cell} starts at sample {begin}, before the buffer "
                             f"({offset}); read with stream_windows(grid=...)")
        pieces = speech_pieces([(begin, end)], speech, self.longest)
        if self._only is not None:
            pieces = [p for p in pieces if overlaps_any(self._only, p)]
        frames, kept = self.backend.encode_frames(
            [buffer[a - offset:b - offset] for a, b in pieces], self.sample_rate)
        return frames, [pieces[i][0] / self.sample_rate for i in np.flatnonzero(kept)]


def merged_spans(spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """Non-empty ranges sorted and merged where they overlap or touch.

    Returns
    -------
    np.ndarray of int64, shape (n, 2)
    """
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        elif end > start:
            merged.append([start, end])
    return np.asarray(merged, dtype=np.int64).reshape(-1, 2)


def overlaps_any(merged: np.ndarray, span: tuple[int, int]) -> bool:
    """Whether ``span`` overlaps one of the ranges of ``merged`` (sorted and disjoint,
    as :func:`merged_spans` gives them)."""
    k = int(np.searchsorted(merged[:, 1], span[0], side="right"))
    return k < len(merged) and merged[k, 0] < span[1]
