"""Figures are written as valid PNGs, atomically, and the text table is complete."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from matplotlib.figure import Figure

from emovox import plots
from emovox.errors import AudioError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SR = 16_000
CLASSES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]


def assert_png(path: Path, min_width: int = 400, min_height: int = 250) -> np.ndarray:
    """A readable, non-blank PNG of reasonable size, alone in its folder (no temp files)."""
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    height, width = image.shape[:2]
    assert min_width <= width <= 4000 and min_height <= height <= 4000, image.shape
    assert float(np.ptp(image[..., :3])) > 0.1, "image is blank"
    leftovers = [p.name for p in path.parent.iterdir() if p != path and p.suffix != ".wav"]
    assert leftovers == [], f"temporary files left behind: {leftovers}"
    return image


def assert_no_open_pyplot_figures() -> None:
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def voiced(seconds: float) -> np.ndarray:
    """A harmonic signal with a gliding pitch and a syllable-like envelope."""
    t = np.arange(int(seconds * SR)) / SR
    phase = 2 * np.pi * np.cumsum(150 + 40 * np.sin(2 * np.pi * t)) / SR
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    return (0.25 * harmonics * envelope + noise).astype(np.float32)


@pytest.fixture
def matrix() -> np.ndarray:
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 6, (len(CLASSES), len(CLASSES))) + np.diag(np.arange(10, 18))
    counts[1] = 0  # a class without test samples
    return counts


# --------------------------------------------------------------------------- recording


def test_recording_figure_from_file(tmp_path: Path) -> None:
    wav = tmp_path / "03-01-05-02-01-01-12.wav"
    sf.write(wav, voiced(0.6), 22_050)  # resampled to 16 kHz on reading
    out = plots.save_recording_figure(wav, tmp_path / "rec.png")
    assert out == tmp_path / "rec.png"
    assert_png(out, min_width=800, min_height=800)
    assert_no_open_pyplot_figures()


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. librosa's "n_fft too large"
def test_recording_figure_from_shortest_array_with_title(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "dir" / "signal.png"  # folders are created
    returned = plots.save_recording_figure(voiced(0.1), str(out), title="Synthetic vowel")
    assert returned == out
    assert_png(out, min_width=800, min_height=800)


@pytest.mark.parametrize("seconds", [0.5, 8.3])  # drawn as a line / as a min-max envelope
def test_waveform_spans_the_whole_signal(seconds: float) -> None:
    signal = voiced(seconds)[:-7]  # a length that does not divide evenly
    ax = Figure().add_subplot()
    plots._draw_waveform(ax, signal, SR)
    x0, x1 = ax.dataLim.intervalx
    assert x0 == pytest.approx(0.0, abs=1e-3)
    assert x1 == pytest.approx(signal.size / SR, abs=1e-3)
    y0, y1 = ax.dataLim.intervaly
    assert y0 == pytest.approx(signal.min(), abs=1e-6)
    assert y1 == pytest.approx(signal.max(), abs=1e-6)


def test_recording_figure_refuses_bad_audio(tmp_path: Path) -> None:
    wav = tmp_path / "silent.wav"
    sf.write(wav, np.zeros(SR), SR)
    with pytest.raises(AudioError, match="silent"):
        plots.save_recording_figure(wav, tmp_path / "silent.png")
    assert not (tmp_path / "silent.png").exists()


# --------------------------------------------------------------------------- confusion


def test_confusion_matrix_png(tmp_path: Path, matrix: np.ndarray) -> None:
    out = plots.save_confusion_matrix(matrix, CLASSES, tmp_path / "cm.png")
    assert_png(out)
    assert_no_open_pyplot_figures()


def test_confusion_matrix_counts_with_title(tmp_path: Path) -> None:
    out = plots.save_confusion_matrix(
        [[5, 1], [2, 7]], ["a", "b"], tmp_path / "cm2.png", normalize=False, title="Fold 1"
    )
    assert_png(out, min_width=300, min_height=300)


def test_confusion_matrix_rejects_mismatch(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="3 class names"):
        plots.save_confusion_matrix(np.eye(2), ["a", "b", "c"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="square"):
        plots.save_confusion_matrix(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="non-negative"):
        plots.format_confusion_matrix([[1, -1], [0, 1]], ["a", "b"])
    assert list(tmp_path.iterdir()) == []


def test_format_confusion_matrix(matrix: np.ndarray) -> None:
    text = plots.format_confusion_matrix(matrix, CLASSES)
    lines = text.splitlines()
    assert not text.endswith("\n")
    header = lines[0]
    for name in CLASSES:
        assert name in header
    body = [line for line in lines if line.split() and line.split()[0] in CLASSES]
    assert [line.split()[0] for line in body] == CLASSES
    for line, row in zip(body, matrix, strict=True):
        cells = line.split("|")[0].split()[1:]
        assert [int(c) for c in cells] == row.tolist()
    # Aligned: the header and every row have the same length, the bar in one column.
    table = [header, *body]
    assert len({len(line) for line in table}) == 1
    assert len({line.index("|") for line in table}) == 1
    # Recall of each class, "—" for the class without samples, and the summary line.
    recall = 100 * matrix[0, 0] / matrix[0].sum()
    assert f"{recall:.1f}%" in body[0]
    assert body[1].rstrip().endswith("—")
    assert "UAR" in lines[-1] and f"n = {matrix.sum()}" in lines[-1]


def test_format_confusion_matrix_non_integer_counts() -> None:
    text = plots.format_confusion_matrix([[0.5, 0.25], [0.0, 1.0]], ["x", "y"])
    assert "0.50" in text and "0.25" in text


# --------------------------------------------------------------------------- scores


def test_fold_scores_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    per_fold = pd.DataFrame(
        {
            "fold": [f"actor_{k:02d}" for k in range(1, 6)],
            "uar": rng.uniform(0.4, 0.7, 5),
            "wa": rng.uniform(0.4, 0.7, 5),
            "macro_f1": rng.uniform(0.4, 0.7, 5),
            "n_test": 60,  # extra columns are ignored
        }
    )
    out = plots.save_fold_scores(per_fold, tmp_path / "folds.png")
    assert_png(out)
    assert_no_open_pyplot_figures()


def test_fold_scores_missing_column(tmp_path: Path) -> None:
    per_fold = pd.DataFrame({"fold": [1, 2], "uar": [0.5, 0.6], "wa": [0.5, 0.6]})
    with pytest.raises(ValueError, match="macro_f1"):
        plots.save_fold_scores(per_fold, tmp_path / "folds.png")


def test_per_class_recall_png(tmp_path: Path) -> None:
    recall = dict(zip(CLASSES, np.linspace(0.2, 0.9, len(CLASSES)), strict=True))
    recall["calm"] = float("nan")  # class absent from the test set
    out = plots.save_per_class_recall(recall, tmp_path / "recall.png")
    assert_png(out)


def test_per_class_recall_empty(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no per-class recall"):
        plots.save_per_class_recall({}, tmp_path / "recall.png")


# --------------------------------------------------------------------------- atomic saving


def test_overwrite_replaces_file(tmp_path: Path) -> None:
    out = tmp_path / "recall.png"
    out.write_bytes(b"old")
    plots.save_per_class_recall({"a": 0.5, "b": 0.7}, out)
    assert_png(out, min_width=300, min_height=200)


def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "recall.png"
    out.write_bytes(b"previous figure")

    def broken_savefig(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="disk full"):
        plots.save_per_class_recall({"a": 0.5}, out)
    assert out.read_bytes() == b"previous figure"
    assert [p.name for p in tmp_path.iterdir()] == ["recall.png"]
