"""Timelines of long recordings: windows, voice activity, streaming, files, CLI, resume."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import soxr
from conftest import write_tiny_corpus
from typer.testing import CliRunner

from emovox import timeline as timeline_module
from emovox.bundle import default_bundle_path, load_bundle
from emovox.cli import app
from emovox.errors import AudioError, BundleError
from emovox.inference import frames as frames_module
from emovox.recognizer import Recognizer
from emovox.synth import synth_voice
from emovox.timeline import (
    ResultsFile,
    load_timeline,
    plot_timeline,
    save_timeline,
    timeline_complete,
)
from emovox.vad import FRAME_SECONDS, VoiceActivityStream, resolve_vad, speech_segments

SR = 16_000
HAS_SILERO = importlib.util.find_spec("silero_vad") is not None
needs_silero = pytest.mark.skipif(not HAS_SILERO, reason="silero-vad is not installed")

# Seconds of each part of the test recording: (kind, duration).
LAYOUT = [("silence", 2.0), ("voice", 3.0), ("noise", 5.0), ("voice", 2.5), ("silence", 3.5)]


def _recording(sr: int = SR) -> np.ndarray:
    """Synthetic voice separated by digital silence and by quiet noise."""
    rng = np.random.default_rng(7)
    parts = []
    for k, (kind, seconds) in enumerate(LAYOUT):
        n = round(seconds * sr)
        if kind == "voice":
            parts.append(synth_voice(seconds, sr, f0=140 + 40 * k, seed=k, vowels="aoiea"))
        elif kind == "noise":
            parts.append((0.002 * rng.standard_normal(n)).astype(np.float32))
        else:
            parts.append(np.zeros(n, np.float32))
    return np.concatenate(parts)


def _spans(kind: str) -> list[tuple[float, float]]:
    spans, t = [], 0.0
    for part, seconds in LAYOUT:
        if part == kind:
            spans.append((t, t + seconds))
        t += seconds
    return spans


DURATION = sum(seconds for _, seconds in LAYOUT)


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> Recognizer:
    """The packaged default model, or a tiny one trained here when it is not built yet."""
    try:
        return Recognizer(load_bundle(default_bundle_path()), n_jobs=1)
    except BundleError:
        pass
    from emovox.config import load_config
    from emovox.experiment import train_bundle

    root = tmp_path_factory.mktemp("tiny-corpus")
    write_tiny_corpus(root, {"angry": (220.0, 0.45, 0.6), "sad": (95.0, 0.05, 0.15)})
    config = load_config(data={
        "name": "tiny", "corpora": [{"path": str(root / "manifest.csv"), "kind": "manifest"}],
        "labels": {"name": "two", "classes": ["angry", "sad"]},
        "features": {"name": "mfcc_stats"}, "model": {"name": "logreg"},
        "protocol": {"kind": "speaker_folds", "n_folds": 3}, "cache_dir": None, "n_jobs": 1,
        "output_dir": str(root / "runs")})
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    return Recognizer(bundle, n_jobs=1)


@pytest.fixture(scope="module")
def wav16(tmp_path_factory):
    path = tmp_path_factory.mktemp("audio") / "long16k.wav"
    sf.write(path, _recording(), SR)
    return path


@pytest.fixture(scope="module")
def wav22(tmp_path_factory):
    """The same recording at 22.05 kHz, in stereo (exercises resampling and mixing)."""
    path = tmp_path_factory.mktemp("audio") / "long22k.wav"
    mono = soxr.resample(_recording(), SR, 22_050)
    sf.write(path, np.stack([mono, 0.9 * mono], axis=1), 22_050, subtype="FLOAT")
    return path


def _espeak(tmp_path, text: str):
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path / "espeak.wav"
    subprocess.run([exe, "-w", str(path), text], check=True, capture_output=True)
    signal, sr = sf.read(path, dtype="float32")
    return soxr.resample(signal, sr, SR).astype(np.float32)


# ----------------------------------------------------------------------------- windows


@pytest.mark.parametrize(("window", "hop"), [(2.0, 1.0), (1.5, 0.5), (2.0, 2.0)])
def test_windows_cover_the_audio(recognizer, window, hop):
    signal = synth_voice(10.3, SR, seed=3)
    frame = recognizer.predict_timeline(signal, window=window, hop=hop, vad=None,
                                        sample_rate=SR)
    starts = frame.index.get_level_values("start").to_numpy()
    ends = frame.index.get_level_values("end").to_numpy()
    assert starts[0] == 0.0
    assert np.allclose(np.diff(starts), hop)
    assert np.allclose((ends - starts)[:-1], window)
    assert ends[-1] == pytest.approx(10.3, abs=1e-3)  # the last window reaches the end
    assert np.all(starts[1:] <= ends[:-1])  # no gaps
    assert 10.3 - ends[-2] <= hop + 1e-6  # the last full window is within a hop of the end
    assert frame["speech"].all() and frame["speech_ratio"].isna().all()
    assert frame["emotion"].notna().all()
    probabilities = frame[recognizer.classes].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1.0)
    assert frame.attrs["duration"] == pytest.approx(10.3)


def test_recording_shorter_than_a_window_gives_one_window(recognizer):
    frame = recognizer.predict_timeline(synth_voice(0.8, SR), window=2.0, vad=None,
                                        sample_rate=SR)
    assert list(frame.index) == [("<signal>", 0.0, 0.8)]


def test_bad_parameters_and_audio(recognizer, tmp_path):
    signal = synth_voice(3.0, SR)
    with pytest.raises(ValueError, match="hop"):
        recognizer.predict_timeline(signal, window=1.0, hop=2.0, sample_rate=SR)
    with pytest.raises(ValueError, match="sample_rate"):
        recognizer.predict_timeline(signal)
    with pytest.raises(ValueError, match="unknown VAD"):
        recognizer.predict_timeline(signal, vad="webrtc", sample_rate=SR)
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(AudioError, match="empty"):
        recognizer.predict_timeline(empty)


# ----------------------------------------------------------------------------- VAD


def test_energy_vad_finds_the_voice_and_not_the_noise():
    segments = speech_segments(_recording(), SR, method="energy")
    voices = _spans("voice")
    assert len(segments) == len(voices)
    for (start, end), (v_start, v_end) in zip(segments, voices, strict=True):
        assert abs(start - v_start) < 0.3 and abs(end - v_end) < 0.3


@needs_silero
def test_silero_vad_finds_speech_without_torchaudio(tmp_path):
    import torch

    speech = _espeak(tmp_path, "Hello there. This recording should be found as speech.")
    signal = np.concatenate([np.zeros(2 * SR, np.float32), speech,
                             np.zeros(3 * SR, np.float32)])
    threads = torch.get_num_threads()
    segments = speech_segments(signal, SR, method="silero")
    assert torch.get_num_threads() == threads  # silero's import does not change it
    assert "torchaudio" not in sys.modules  # tensors from soundfile, not its readers
    end_of_speech = 2.0 + len(speech) / SR
    assert segments and segments[0][0] >= 1.8 and segments[-1][1] <= end_of_speech + 0.3
    covered = sum(e - s for s, e in segments)
    assert covered > 0.6 * len(speech) / SR


def test_silero_falls_back_to_energy_when_missing(monkeypatch):
    import emovox.vad as vad

    monkeypatch.setattr(vad, "silero_available", lambda: False)
    with pytest.warns(UserWarning, match="energy"):
        assert resolve_vad("silero") == "energy"
    assert resolve_vad(None) is None


@pytest.mark.parametrize("method", ["energy", pytest.param("silero", marks=needs_silero)])
def test_vad_stream_does_not_depend_on_the_pieces(method):
    signal = soxr.resample(_recording(), SR, 22_050).astype(np.float32)

    def decide(size):
        stream = VoiceActivityStream(method, 22_050)
        for start in range(0, len(signal), size):
            stream.feed(signal[start:start + size])
            assert stream.final_seconds <= (start + size) / 22_050 + 1e-9
        stream.finish()
        return stream.speech_mask(), stream.segments()

    whole_mask, whole_segments = decide(len(signal))
    for size in (4_321, 22_050 * 3):
        mask, segments = decide(size)
        assert np.array_equal(mask, whole_mask)
        assert segments == whole_segments
    assert len(whole_mask) == pytest.approx(DURATION / FRAME_SECONDS, abs=2)


def test_timeline_respects_the_vad(recognizer, wav16):
    frame = recognizer.predict_timeline(wav16, vad="energy")
    assert frame.attrs["vad"] == "energy"
    starts = frame.index.get_level_values("start").to_numpy()
    ends = frame.index.get_level_values("end").to_numpy()
    quiet = _spans("noise") + _spans("silence")
    inside_quiet = np.array([any(s >= q0 and e <= q1 for q0, q1 in quiet)
                             for s, e in zip(starts, ends, strict=True)])
    assert inside_quiet.sum() >= 6
    assert not frame["speech"][inside_quiet].any()
    assert frame["emotion"][inside_quiet].isna().all()
    assert (frame["speech_ratio"][inside_quiet] < 0.2).all()  # padding may reach in
    inside_voice = np.array([any(s >= v0 and e <= v1 for v0, v1 in _spans("voice"))
                             for s, e in zip(starts, ends, strict=True)])
    assert inside_voice.sum() >= 2
    assert frame["speech"][inside_voice].all()
    assert frame["emotion"][inside_voice].notna().all()
    for (start, end), (v0, v1) in zip(frame.attrs["speech_segments"], _spans("voice"),
                                      strict=True):
        assert abs(start - v0) < 0.3 and abs(end - v1) < 0.3

    kept = recognizer.predict_timeline(wav16, vad="energy", keep_nonspeech=False)
    assert kept["speech"].all() and len(kept) == frame["speech"].sum()


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("vad", ["energy", None, pytest.param("silero", marks=needs_silero)])
def test_chunked_streaming_equals_one_piece(recognizer, wav22, vad):
    whole = recognizer.predict_timeline(wav22, vad=vad, chunk_seconds=1000.0)
    chunked = recognizer.predict_timeline(wav22, vad=vad, chunk_seconds=3.7)
    pd.testing.assert_frame_equal(chunked, whole, rtol=1e-4, atol=1e-6)  # BLAS order
    assert chunked.attrs["speech_segments"] == whole.attrs["speech_segments"]
    signal, sr = sf.read(wav22, dtype="float32")
    in_memory = recognizer.predict_timeline(signal, vad=vad, sample_rate=sr, name=str(wav22))
    pd.testing.assert_frame_equal(in_memory, whole, rtol=1e-4, atol=1e-6)


def test_reads_and_buffers_are_bounded(recognizer, wav22, monkeypatch):
    reads, buffers = [], []
    original_read = sf.SoundFile.read
    original_classify = timeline_module._encode_windows

    def spy_read(self, frames=-1, *args, **kwargs):
        reads.append(frames)
        return original_read(self, frames, *args, **kwargs)

    def spy_classify(engine, encoder, label, sr, buffer, *args, **kwargs):
        buffers.append(buffer.size)
        return original_classify(engine, encoder, label, sr, buffer, *args, **kwargs)

    monkeypatch.setattr(sf.SoundFile, "read", spy_read)
    monkeypatch.setattr(timeline_module, "_encode_windows", spy_classify)
    # Encoder cells (frame-level features) shorter than this test recording.
    cell = 1.0
    monkeypatch.setattr(frames_module, "CELL_SECONDS", cell)
    chunk, window = 2.5, 2.0
    recognizer.predict_timeline(wav22, window=window, vad="energy", chunk_seconds=chunk)
    sr = 22_050
    assert reads and all(0 < n <= round(chunk * sr) + round(window * sr) for n in reads)
    lookahead = VoiceActivityStream("energy", sr).lookahead_frames * FRAME_SECONDS
    held = cell if recognizer.backend.frame_seconds is not None else 0.0
    assert max(buffers) <= round((chunk + window + lookahead + FRAME_SECONDS + 2 * held) * sr)
    assert max(buffers) < DURATION * sr / 2  # never the whole recording


def test_iter_timeline_yields_as_it_goes(recognizer, wav16, monkeypatch):
    monkeypatch.setattr(frames_module, "CELL_SECONDS", 2.0)  # cells shorter than the file
    pieces = list(recognizer.iter_timeline(wav16, vad="energy", chunk_seconds=4.0))
    assert len(pieces) >= 3
    assert "speech_segments" in pieces[-1].attrs
    joined = pd.concat([p for p in pieces if len(p)])
    whole = recognizer.predict_timeline(wav16, vad="energy")
    pd.testing.assert_frame_equal(joined, whole, check_flags=False, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_saved_timeline_parses_back(recognizer, wav16, tmp_path, suffix):
    frame = recognizer.predict_timeline(wav16, vad="energy")
    path = save_timeline(frame, tmp_path / f"timeline{suffix}")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    loaded = load_timeline(path)
    assert list(loaded.index) == list(frame.index)
    pd.testing.assert_frame_equal(loaded, frame, check_exact=False, rtol=1e-9,
                                  check_dtype=False)
    with pytest.raises(ValueError, match="unknown timeline format"):
        save_timeline(frame, tmp_path / "timeline.txt")


def test_plot_timeline(recognizer, wav16, tmp_path):
    frame = recognizer.predict_timeline(wav16, vad="energy")
    png = plot_timeline(frame, tmp_path / "plots" / "timeline.png")
    assert png.read_bytes()[:4] == b"\x89PNG"
    flat = load_timeline(save_timeline(frame, tmp_path / "t.csv"))  # attrs lost: from flags
    assert plot_timeline(flat, tmp_path / "again.png").stat().st_size > 1000


# ----------------------------------------------------------------------------- CLI


def _bundle_args(recognizer, tmp_path) -> list[str]:
    if recognizer.bundle.path is not None:
        return ["--bundle", str(recognizer.bundle.path)]
    from emovox.bundle import save_bundle

    return ["--bundle", str(save_bundle(recognizer.bundle, tmp_path / "bundle"))]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_timeline_output_parses(recognizer, wav16, tmp_path, fmt):
    runner = CliRunner()
    png = tmp_path / "timeline.png"
    out = runner.invoke(app, ["predict", str(wav16), "--timeline", "--window", "2", "--hop",
                              "1", "--vad", "energy", "--format", fmt, "--plot", str(png),
                              *_bundle_args(recognizer, tmp_path)])
    assert out.exit_code == 0, out.output
    if fmt == "csv":
        frame = pd.read_csv(__import__("io").StringIO(out.stdout))
    else:
        frame = pd.DataFrame.from_records(json.loads(out.stdout))
    assert list(frame.columns[:5]) == ["file", "start", "end", "emotion", "confidence"]
    assert list(frame.columns[-2:]) == ["speech", "speech_ratio"]
    assert frame["start"].iloc[0] == 0 and frame["end"].iloc[-1] == pytest.approx(DURATION)
    assert frame["speech"].any() and not frame["speech"].all()
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_cli_timeline_refuses_bad_options(recognizer, wav16, tmp_path):
    runner = CliRunner()
    bundle = _bundle_args(recognizer, tmp_path)
    out = runner.invoke(app, ["predict", str(wav16), "--timeline", "--window", "1", "--hop",
                              "3", *bundle])
    assert out.exit_code == 2 and "hop" in out.output
    out = runner.invoke(app, ["predict", str(wav16), "--plot", str(tmp_path / "x.png"),
                              *bundle])
    assert out.exit_code == 2 and "--timeline" in out.output
    out = runner.invoke(app, ["predict", str(wav16), "--resume", *bundle])
    assert out.exit_code == 2 and "--output" in out.output


@pytest.fixture()
def folder(tmp_path):
    """Three good recordings of different lengths and two bad files."""
    root = tmp_path / "folder"
    root.mkdir()
    for k, seconds in enumerate((4.2, 5.5, 3.1)):
        sf.write(root / f"good{k}.wav", synth_voice(seconds, SR, seed=k), SR)
    (root / "empty.wav").write_bytes(b"")
    (root / "text.wav").write_text("not audio at all\n")
    return root


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_cli_folder_reports_bad_files_and_resumes(recognizer, folder, tmp_path, monkeypatch,
                                                  fmt):
    runner = CliRunner()
    bundle = _bundle_args(recognizer, tmp_path)
    output = tmp_path / f"out.{fmt}"
    command = ["predict", str(folder), "--timeline", "--no-vad", "--format", fmt, "-o",
               str(output), *bundle]
    out = runner.invoke(app, command)
    assert out.exit_code == 1, out.output  # two files failed
    assert "2 files failed" in out.output
    assert "empty.wav" in out.output and "text.wav" in out.output

    def read(path):
        if fmt == "csv":
            return pd.read_csv(path)
        return pd.DataFrame.from_records(json.loads(path.read_text()))

    complete = read(output)
    assert sorted(set(complete["file"])) == [str(folder / f"good{k}.wav") for k in range(3)]
    assert len(complete) == 4 + 5 + 3

    # Stop "during" the last good file: keep its first rows only.
    last = str(folder / "good2.wav")
    partial = complete[(complete["file"] != last) | (complete["start"] < 1)]
    if fmt == "csv":
        output.write_text(partial.to_csv(index=False, float_format="%.4f"))
    else:
        output.write_text(partial.to_json(orient="records", indent=2, double_precision=4))
    seen = []
    original = Recognizer.predict_timeline

    def spy(self, source, *args, **kwargs):
        seen.append(str(source))
        return original(self, source, *args, **kwargs)

    monkeypatch.setattr(Recognizer, "predict_timeline", spy)
    out = runner.invoke(app, [*command, "--resume"])
    assert out.exit_code == 1, out.output  # two files failed
    assert "2 files already done, skipped" in out.output
    assert sorted(seen) == sorted([last, str(folder / "empty.wav"), str(folder / "text.wav")])
    resumed = read(output)
    pd.testing.assert_frame_equal(
        resumed.sort_values(["file", "start"]).reset_index(drop=True),
        complete.sort_values(["file", "start"]).reset_index(drop=True))

    seen.clear()
    out = runner.invoke(app, [*command, "--resume"])
    assert out.exit_code == 1 and "3 files already done" in out.output
    assert sorted(seen) == [str(folder / "empty.wav"), str(folder / "text.wav")]


def test_cli_whole_file_predictions_resume(recognizer, folder, tmp_path):
    runner = CliRunner()
    output = tmp_path / "out.csv"
    command = ["predict", str(folder), "--format", "csv", "-o", str(output), "--jobs", "1",
               *_bundle_args(recognizer, tmp_path)]
    out = runner.invoke(app, command)
    assert out.exit_code == 1, out.output  # two files failed
    assert "2 files failed" in out.output
    first = pd.read_csv(output)
    assert len(first) == 3
    # A run cut mid-line: the partial line is dropped and that file redone.
    text = output.read_text()
    output.write_text(text[: text.rstrip("\n").rfind("\n") + 12])
    out = runner.invoke(app, [*command, "--resume"])
    assert out.exit_code == 1, out.output  # two files failed
    assert "2 files already done, skipped" in out.output
    again = pd.read_csv(output)
    pd.testing.assert_frame_equal(again.sort_values("file").reset_index(drop=True),
                                  first.sort_values("file").reset_index(drop=True))


def test_results_file_refuses_other_settings(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("file,start,end,emotion\nx.wav,0,1,sad\n")
    with pytest.raises(ValueError, match="other settings"):
        ResultsFile(path, "csv", ["file", "start", "end", "emotion", "confidence"],
                    resume=True)
    fresh = ResultsFile(path, "csv", ["file", "start", "end", "emotion"], resume=False)
    assert not fresh.done and path.read_text() == "file,start,end,emotion\n"


def test_timeline_complete_checks_the_end(wav16):
    rows = pd.DataFrame({"end": [2.0, DURATION]})
    assert timeline_complete(str(wav16), rows)
    assert not timeline_complete(str(wav16), rows.iloc[:1])
    assert not timeline_complete("/nonexistent.wav", rows)


def test_no_warnings_from_a_timeline(recognizer, wav16):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recognizer.predict_timeline(wav16, vad="energy")
