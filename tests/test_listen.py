"""Live recognition: LiveRecognizer on blocks of synthetic audio, and ``emovox listen``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from typer.testing import CliRunner

from emovox import listen as listen_module
from emovox.bundle import save_bundle
from emovox.cli import app
from emovox.config import load_config
from emovox.experiment import train_bundle
from emovox.listen import NO_SOUNDDEVICE, ListenError, LiveRecognizer, input_device, render
from emovox.recognizer import Recognizer
from emovox.synth import synth_voice

STYLE = {"angry": (220.0, 0.45, 0.6), "sad": (95.0, 0.05, 0.15)}


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory):
    """A tiny MFCC + logistic regression bundle on 2 synthetic classes."""
    root = tmp_path_factory.mktemp("listen-corpus")
    rows = []
    for s in range(3):
        for emotion, (f0, swing, loud) in STYLE.items():
            for take in range(2):
                signal = synth_voice(1.0, f0=f0 * (1 + 0.05 * s), f0_range=swing,
                                     loudness=loud, seed=10 * s + take)
                sf.write(root / f"s{s}_{emotion}_{take}.wav", signal, 16000)
                rows.append({"path": f"s{s}_{emotion}_{take}.wav", "emotion": emotion,
                             "speaker": f"s{s}"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    config = load_config(data={
        "name": "tiny", "corpora": [{"path": str(root / "manifest.csv"), "kind": "manifest"}],
        "labels": {"name": "two", "classes": ["angry", "sad"]},
        "features": {"name": "mfcc_stats"}, "model": {"name": "logreg"},
        "protocol": {"kind": "speaker_folds", "n_folds": 3}, "cache_dir": None,
        "n_jobs": 1, "output_dir": str(root / "runs")})
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    return Recognizer(save_bundle(bundle, root / "bundle"), n_jobs=1)


def stream(seconds: float = 5.5) -> np.ndarray:
    """Half a second of silence, then a synthetic voice."""
    return np.concatenate([np.zeros(8000, np.float32), synth_voice(seconds - 0.5, seed=3)])


@pytest.mark.parametrize("block", [160, 1000, 16000, 40000, 88000])
def test_one_row_per_hop_once_the_window_is_full(recognizer, block):
    signal = stream()
    live = LiveRecognizer(recognizer, window=2.0, hop=1.0, vad="energy")
    rows = []
    for start in range(0, len(signal), block):
        rows += live.feed(signal[start:start + block])
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 2.0), (1.0, 3.0), (2.0, 4.0),
                                                      (3.0, 5.0)]
    for row in rows:
        assert row["emotion"] in ("angry", "sad")
        assert set(row["probabilities"]) == {"angry", "sad"}
        assert row["confidence"] == pytest.approx(max(row["probabilities"].values()))
        assert 0.0 <= row["speech_ratio"] <= 1.0
    assert live.seconds == pytest.approx(5.5)


def test_rows_match_predict_signal_and_do_not_depend_on_block_size(recognizer):
    signal = stream(4.0)
    whole = LiveRecognizer(recognizer, window=1.5, hop=0.5, vad=None).feed(signal)
    live = LiveRecognizer(recognizer, window=1.5, hop=0.5, vad=None)
    pieces = list(live.run(np.array_split(signal, 37)))
    assert len(whole) == len(pieces) == 6  # ends at 1.5, 2.0, ..., 4.0
    for a, b in zip(whole, pieces, strict=True):
        assert a["end"] == b["end"]
        assert a["probabilities"] == pytest.approx(b["probabilities"])
    expected = recognizer.predict_signal(signal[-24000:], 16000).iloc[0]
    assert whole[-1]["probabilities"]["sad"] == pytest.approx(expected["sad"])


def test_speech_indicator_and_sources(recognizer):
    silence = np.zeros(16000 * 3, np.float32)
    voice = synth_voice(3.0, seed=1)
    blocks = iter([silence[:20000], silence[20000:], np.stack([voice, voice], axis=1)])
    live = LiveRecognizer(recognizer, window=2.0, hop=1.0, vad="energy")
    rows = list(live.run(lambda: next(blocks, None)))  # a callable source, stereo block
    assert [r["end"] for r in rows] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert rows[0]["emotion"] is None and not rows[0]["speech"]  # digital silence
    assert np.isnan(rows[0]["confidence"])
    assert rows[1]["emotion"] is None and rows[2]["emotion"] is not None
    assert rows[-1]["speech"]
    for row in (rows[0], rows[-1]):
        assert render(row, live.classes) is not None
    assert render(None, live.classes, 0.5) is not None


def test_bad_windows_are_refused(recognizer):
    with pytest.raises(ValueError, match="hop"):
        LiveRecognizer(recognizer, window=1.0, hop=2.0)
    with pytest.raises(ValueError, match="> 0"):
        LiveRecognizer(recognizer, window=0.0, hop=0.0)


class NoDevice:
    """Stands in for sounddevice on a machine without an input device."""

    @staticmethod
    def query_devices(device=None, kind=None):
        raise ValueError("No input device matching")


def test_input_device_errors():
    with pytest.raises(ListenError, match="no audio input device"):
        input_device(NoDevice())


def test_cli_without_sounddevice(monkeypatch):
    def missing():
        raise ListenError(NO_SOUNDDEVICE)

    monkeypatch.setattr(listen_module, "require_sounddevice", missing)
    result = CliRunner().invoke(app, ["listen"])
    assert result.exit_code == 2
    assert "pip install sounddevice" in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_without_input_device(monkeypatch):
    monkeypatch.setattr(listen_module, "require_sounddevice", lambda: NoDevice())
    result = CliRunner().invoke(app, ["listen", "--seconds", "2"])
    assert result.exit_code == 2
    assert "no audio input device was found" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cli_refuses_bad_hop():
    result = CliRunner().invoke(app, ["listen", "--window", "1", "--hop", "2"])
    assert result.exit_code == 2
