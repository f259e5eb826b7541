"""Figures for exploring recordings and reporting results, rendered headless.

Every figure is drawn on its own :class:`~matplotlib.figure.Figure` attached to an
explicit Agg canvas, so nothing here needs a display, touches pyplot's global state
or switches the backend of the program that imports emovox (a notebook keeps its
inline backend). Each PNG is written to a temporary file in the destination folder
and moved into place with :func:`os.replace`, so a reader never sees half a file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from emovox.audio import DEFAULT_SAMPLE_RATE, check_signal, load_audio
from emovox.fileio import atomic_write

if TYPE_CHECKING:
    import pandas as pd
    from numpy.typing import ArrayLike

__all__ = [
    "format_confusion_matrix",
    "save_confusion_matrix",
    "save_fold_scores",
    "save_per_class_recall",
    "save_recording_figure",
]

#: Resolution of saved PNGs.
DPI = 120
#: Number of MFCC coefficients shown in the recording figure.
N_MFCC = 20
#: Number of mel bands of the recording figure's spectrogram.
N_MELS = 64
#: Waveforms longer than this many samples are drawn as a min/max envelope.
_MAX_WAVEFORM_POINTS = 20_000

SCORE_LABELS = {"uar": "UAR", "wa": "WA", "macro_f1": "macro-F1"}
_SCORE_COLOURS = {"uar": "tab:blue", "wa": "tab:orange", "macro_f1": "tab:green"}


# --------------------------------------------------------------------------- recording


def save_recording_figure(
    path_or_signal: str | os.PathLike[str] | np.ndarray,
    out_png: str | os.PathLike[str],
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    title: str | None = None,
) -> Path:
    """Save the exploratory figure of one recording.

    Four stacked panels share the time axis: waveform, mel spectrogram (dB),
    MFCCs and chromagram, each image panel with its colour bar.

    Parameters
    ----------
    path_or_signal : str, PathLike or np.ndarray
        An audio file (read with :func:`emovox.audio.load_audio`, resampled to
        ``sample_rate``) or a signal already at ``sample_rate`` (mono, or
        ``(samples, channels)`` which is averaged to mono).
    out_png : str or PathLike
        Destination PNG; its folder is created if needed.
    sample_rate : int
        Analysis rate in Hz (the rate of ``path_or_signal`` when it is an array).
    title : str, optional
        Heading shown above the file name and duration.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    AudioError
        The file or signal cannot be used (unreadable, silent, too short...).
    """
    import librosa
    import librosa.display

    if isinstance(path_or_signal, np.ndarray):
        name = "signal"
        signal = check_signal(path_or_signal, sample_rate, source=name)
    else:
        name = Path(path_or_signal).name
        signal = load_audio(path_or_signal, sample_rate=sample_rate)
    sr = sample_rate
    duration = signal.size / sr
    n_fft = 1 << max(8, math.ceil(math.log2(0.025 * sr)))  # >= 25 ms window
    win_length = min(n_fft, round(0.025 * sr))
    hop = max(1, round(0.010 * sr))  # 10 ms frames

    # Chroma needs finer frequency resolution at low pitches than the mel spectrogram,
    # but the window may not be longer than the signal.
    chroma_fft = max(n_fft, min(2048, 1 << int(math.log2(signal.size))))
    power = np.abs(librosa.stft(signal, n_fft=n_fft, hop_length=hop, win_length=win_length)) ** 2
    mel = librosa.feature.melspectrogram(S=power, sr=sr, n_mels=N_MELS, fmax=sr / 2)
    mel_db = librosa.power_to_db(mel, ref=np.max, top_db=80.0)
    mfcc = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=N_MFCC)
    # c0 (log energy) is an order of magnitude larger than the rest; standardising each
    # coefficient over time keeps all of them readable on one colour scale.
    mfcc = (mfcc - mfcc.mean(axis=1, keepdims=True)) / (mfcc.std(axis=1, keepdims=True) + 1e-8)
    chroma = librosa.feature.chroma_stft(
        y=signal, sr=sr, n_fft=chroma_fft, hop_length=hop, tuning=0.0
    )

    fig = _new_figure(figsize=(11, 10.5))
    grid = fig.add_gridspec(4, 2, width_ratios=[60, 1], height_ratios=[1, 1.4, 1.1, 1])
    ax_wave = fig.add_subplot(grid[0, 0])
    axes = [ax_wave] + [fig.add_subplot(grid[i, 0], sharex=ax_wave) for i in (1, 2, 3)]
    fig.add_subplot(grid[0, 1]).set_axis_off()  # keeps the time axes aligned
    ax_wave, ax_mel, ax_mfcc, ax_chroma = axes

    _draw_waveform(ax_wave, signal, sr)
    ax_wave.set_title("Waveform", loc="left")
    ax_wave.set_ylabel("amplitude")

    common = {"sr": sr, "hop_length": hop, "x_axis": "time"}
    img = librosa.display.specshow(
        mel_db, y_axis="mel", fmax=sr / 2, cmap="magma", ax=ax_mel, **common
    )
    ax_mel.set_title(f"Mel spectrogram ({N_MELS} bands)", loc="left")
    ax_mel.set_ylabel("frequency (Hz)")
    fig.colorbar(img, cax=fig.add_subplot(grid[1, 1]), format="%+.0f dB")

    img = librosa.display.specshow(mfcc, cmap="coolwarm", vmin=-3, vmax=3, ax=ax_mfcc, **common)
    ax_mfcc.set_title(f"MFCC ({N_MFCC} coefficients, each standardised over time)", loc="left")
    ax_mfcc.set_ylabel("coefficient")
    ax_mfcc.set_yticks(np.arange(0, N_MFCC, 5) + 0.5, [str(k) for k in range(0, N_MFCC, 5)])
    fig.colorbar(img, cax=fig.add_subplot(grid[2, 1]), label="z-score")

    img = librosa.display.specshow(
        chroma, y_axis="chroma", cmap="viridis", vmin=0, vmax=1, ax=ax_chroma, **common
    )
    ax_chroma.set_title("Chromagram", loc="left")
    ax_chroma.set_ylabel("pitch class")
    fig.colorbar(img, cax=fig.add_subplot(grid[3, 1]))

    for ax in axes[:-1]:
        ax.tick_params(labelbottom=False)
        ax.set_xlabel("")
    ax_chroma.set_xlabel("time (s)")
    ax_wave.set_xlim(0, duration)

    heading = f"{name} — {duration:.2f} s at {sr / 1000:g} kHz"
    fig.suptitle(heading if title is None else f"{title}\n{heading}", fontsize=13)
    return _save(fig, out_png)


def _draw_waveform(ax, signal: np.ndarray, sr: int) -> None:
    """Plot a waveform, as a min/max envelope when it has too many samples to draw."""
    if signal.size <= _MAX_WAVEFORM_POINTS:
        ax.plot(np.arange(signal.size) / sr, signal, color="tab:blue", linewidth=0.6)
    else:
        per_bin = math.ceil(signal.size / (_MAX_WAVEFORM_POINTS // 2))
        bins = math.ceil(signal.size / per_bin)
        padded = np.pad(signal, (0, bins * per_bin - signal.size), mode="edge")
        blocks = padded.reshape(bins, per_bin)
        edges = np.minimum(np.arange(bins + 1) * per_bin, signal.size) / sr
        times = np.repeat(edges, 2)[1:-1]  # each block spans [start, end] of its samples
        ax.fill_between(
            times,
            np.repeat(blocks.min(axis=1), 2),
            np.repeat(blocks.max(axis=1), 2),
            color="tab:blue",
            linewidth=0.4,
        )
    peak = float(np.max(np.abs(signal)))
    ax.set_ylim(-1.05 * peak, 1.05 * peak)
    ax.axhline(0.0, color="0.6", linewidth=0.5)
    ax.grid(True, alpha=0.3)


# --------------------------------------------------------------------------- confusion


def save_confusion_matrix(
    matrix: ArrayLike,
    classes: Sequence[str],
    out_png: str | os.PathLike[str],
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Save a confusion matrix as an annotated heatmap.

    Each cell shows the count and, below it, the share of its row (the recall of
    the true class for diagonal cells).

    Parameters
    ----------
    matrix : array_like, shape (n_classes, n_classes)
        Counts, true classes in rows and predicted classes in columns.
    classes : sequence of str
        Class names in the order of the rows and columns.
    out_png : str or PathLike
        Destination PNG; its folder is created if needed.
    normalize : bool
        Colour cells by row-normalised share (True) or by raw count (False).
    title : str, optional
        Figure title; default names the UAR and accuracy of the matrix.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    ValueError
        The matrix is not square, does not match ``classes`` or has negative cells.
    """
    counts, names = _check_confusion(matrix, classes)
    shares = _row_shares(counts)
    n = len(names)
    values = np.nan_to_num(shares) if normalize else counts
    vmax = 1.0 if normalize else max(float(counts.max()), 1.0)

    longest = max(len(c) for c in names)
    cells = max(3.0, 0.85 * n)  # inches of heatmap; the margins hold labels and colour bar
    label_room = 0.6 + 0.075 * longest
    fig = _new_figure(figsize=(cells + label_room + 1.6, cells + label_room + 0.6))
    ax = fig.add_subplot()
    # aspect="auto": constrained layout mis-places rotated labels around equal-aspect
    # axes; the figure size above keeps the cells close to square instead.
    img = ax.imshow(values, cmap="Blues", vmin=0.0, vmax=vmax, aspect="auto")
    bar = fig.colorbar(img, ax=ax, fraction=0.05, pad=0.03)
    bar.set_label("share of true class" if normalize else "count")
    if normalize:
        bar.ax.yaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")

    integral = _is_integral(counts)
    fontsize = 10 if n <= 8 else 8 if n <= 14 else 6
    for i in range(n):
        for j in range(n):
            count = _format_count(counts[i, j], integral)
            share = "—" if math.isnan(shares[i, j]) else f"{100 * shares[i, j]:.1f}%"
            dark = values[i, j] > 0.55 * vmax
            ax.text(
                j,
                i,
                f"{count}\n{share}",
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if dark else "black",
                fontweight="bold" if i == j else "normal",
            )

    ax.set_xticks(range(n), names)
    ax.set_yticks(range(n), names)
    if longest > 4 or n > 6:
        ax.tick_params(axis="x", labelrotation=40)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(n + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)

    if title is None:
        uar, accuracy = _uar_accuracy(counts, shares)
        title = f"Confusion matrix — UAR {100 * uar:.1f}%, accuracy {100 * accuracy:.1f}%"
    ax.set_title(title)
    return _save(fig, out_png)


def format_confusion_matrix(matrix: ArrayLike, classes: Sequence[str]) -> str:
    """Render a confusion matrix as an aligned plain-text table.

    Rows are true classes, columns predicted classes; a last column gives each
    true class's recall, and a last line the UAR and accuracy.

    Parameters
    ----------
    matrix : array_like, shape (n_classes, n_classes)
        Counts, true classes in rows and predicted classes in columns.
    classes : sequence of str
        Class names in the order of the rows and columns.

    Returns
    -------
    str
        The table, lines separated by ``"\\n"``, without a trailing newline.

    Raises
    ------
    ValueError
        The matrix is not square, does not match ``classes`` or has negative cells.
    """
    counts, names = _check_confusion(matrix, classes)
    shares = _row_shares(counts)
    integral = _is_integral(counts)
    corner = "true \\ predicted"
    recalls = ["—" if math.isnan(s) else f"{100 * s:.1f}%" for s in np.diag(shares)]

    header = [corner, *names, "recall"]
    rows = [
        [name, *(_format_count(v, integral) for v in counts[i]), recalls[i]]
        for i, name in enumerate(names)
    ]
    widths = [max(len(row[k]) for row in [header, *rows]) for k in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        middle = "  ".join(c.rjust(w) for c, w in zip(cells[1:-1], widths[1:-1], strict=True))
        return f"{first}  {middle}  | {cells[-1].rjust(widths[-1])}"

    ruler = "-" * len(line(header))
    uar, accuracy = _uar_accuracy(counts, shares)
    footer = f"UAR {100 * uar:.1f}%  accuracy {100 * accuracy:.1f}%  n = " + _format_count(
        counts.sum(), integral
    )
    return "\n".join([line(header), ruler, *(line(r) for r in rows), ruler, footer])


def _check_confusion(matrix: ArrayLike, classes: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    counts = np.asarray(matrix, dtype=float)
    names = [str(c) for c in classes]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {counts.shape}")
    if counts.shape[0] != len(names):
        raise ValueError(
            f"confusion matrix is {counts.shape[0]}x{counts.shape[1]} "
            f"but {len(names)} class names were given"
        )
    if len(names) == 0:
        raise ValueError("confusion matrix is empty")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("confusion matrix cells must be finite and non-negative")
    return counts, names


def _row_shares(counts: np.ndarray) -> np.ndarray:
    """Each cell divided by its row total (NaN for rows without samples)."""
    totals = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, counts / np.where(totals > 0, totals, 1), np.nan)


def _uar_accuracy(counts: np.ndarray, shares: np.ndarray) -> tuple[float, float]:
    recalls = np.diag(shares)
    present = ~np.isnan(recalls)
    uar = float(recalls[present].mean()) if present.any() else float("nan")
    total = counts.sum()
    accuracy = float(np.trace(counts) / total) if total > 0 else float("nan")
    return uar, accuracy


def _is_integral(counts: np.ndarray) -> bool:
    return bool(np.all(counts == np.round(counts)))


def _format_count(value: float, integral: bool) -> str:
    return str(round(value)) if integral else f"{value:.2f}"


# --------------------------------------------------------------------------- scores


def save_fold_scores(per_fold: pd.DataFrame, out_png: str | os.PathLike[str]) -> Path:
    """Save the scores of each cross-validation fold as grouped bars.

    One group of bars per fold (UAR, WA, macro-F1); a dashed line in each score's
    colour marks its mean over the folds.

    Parameters
    ----------
    per_fold : pandas.DataFrame
        One row per fold with columns ``fold``, ``uar``, ``wa`` and ``macro_f1``
        (scores in [0, 1]); other columns are ignored.
    out_png : str or PathLike
        Destination PNG; its folder is created if needed.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    ValueError
        Columns are missing or there are no rows.
    """
    scores = list(SCORE_LABELS)
    missing = [c for c in ("fold", *scores) if c not in per_fold.columns]
    if missing:
        raise ValueError(f"per-fold table lacks column(s) {', '.join(missing)}")
    if len(per_fold) == 0:
        raise ValueError("per-fold table has no rows")
    folds = [str(f) for f in per_fold["fold"]]
    values = {s: per_fold[s].to_numpy(dtype=float) for s in scores}

    n = len(folds)
    width = 0.8 / len(scores)
    x = np.arange(n)
    fig = _new_figure(figsize=(min(max(6.5, 1.5 + 1.1 * n), 20.0), 4.8))
    ax = fig.add_subplot()
    for k, score in enumerate(scores):
        colour = _SCORE_COLOURS[score]
        vals = values[score]
        mean = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
        ax.bar(
            x + (k - (len(scores) - 1) / 2) * width,
            np.nan_to_num(vals),
            width,
            color=colour,
            alpha=0.85,
            label=f"{SCORE_LABELS[score]} (mean {mean:.3f})",
        )
        if not math.isnan(mean):
            ax.axhline(mean, color=colour, linestyle="--", linewidth=1.3)
    top = max(1.0, float(np.nanmax([np.nanmax(v) for v in values.values()] + [0.0])))
    ax.set_ylim(0, top * 1.18)
    ax.set_xticks(x, folds)
    longest = max(len(f) for f in folds)
    if longest > 6 or (n > 12 and longest > 3):
        ax.tick_params(axis="x", labelrotation=45)
    ax.set_xlabel("fold")
    ax.set_ylabel("score")
    ax.set_title(f"Scores per fold ({n} folds; dashed: mean)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", ncols=len(scores), frameon=False, fontsize=9)
    return _save(fig, out_png)


def save_per_class_recall(recall: Mapping[str, float], out_png: str | os.PathLike[str]) -> Path:
    """Save each class's recall as horizontal bars, with their mean (the UAR) dashed.

    Parameters
    ----------
    recall : mapping of str to float
        Recall in [0, 1] per class, drawn in the mapping's order; NaN marks a
        class without test samples.
    out_png : str or PathLike
        Destination PNG; its folder is created if needed.

    Returns
    -------
    Path
        ``out_png``.

    Raises
    ------
    ValueError
        ``recall`` is empty.
    """
    if not recall:
        raise ValueError("no per-class recall to plot")
    names = [str(c) for c in recall]
    values = np.array([float(v) for v in recall.values()])
    present = np.isfinite(values)

    fig = _new_figure(figsize=(7.5, max(2.8, 0.45 * len(names) + 1.6)))
    ax = fig.add_subplot()
    y = np.arange(len(names))
    ax.barh(y, np.where(present, values, 0.0), color="tab:blue", alpha=0.85, height=0.65)
    for yi, value, ok in zip(y, values, present, strict=True):
        text = f"{100 * value:.1f}%" if ok else "n/a"
        ax.text((value if ok else 0.0) + 0.01, yi, text, va="center", fontsize=9)
    if present.any():
        mean = float(values[present].mean())
        ax.axvline(
            mean,
            color="tab:red",
            linestyle="--",
            linewidth=1.3,
            label=f"UAR (mean recall) {100 * mean:.1f}%",
        )
        ax.legend(loc="lower right", fontsize=9, framealpha=0.9)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    right = max(1.0, float(values[present].max()) if present.any() else 1.0)
    ax.set_xlim(0, right * 1.12)
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{100 * v:.0f}%")
    ax.set_xlabel("recall")
    ax.set_title("Recall per class")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    return _save(fig, out_png)


# --------------------------------------------------------------------------- saving


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot, no display, no global backend)."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out_png: str | os.PathLike[str]) -> Path:
    """Write ``fig`` as PNG atomically (see :mod:`emovox.fileio`)."""
    try:
        return atomic_write(out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=DPI))
    finally:
        fig.clear()  # release the artists; the figure was never registered with pyplot
