"""The CLI says what happened: output formats, folders, exit codes, calibration,
recipe checks, progress, and no processes left behind by a killed run."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import soundfile as sf
from conftest import write_tiny_corpus
from typer.testing import CliRunner

from emovox.adaptation import MIN_ADAPT_VECTORS
from emovox.bundle import save_bundle
from emovox.cli import EXIT_FAILED, EXIT_USAGE, app
from emovox.config import load_config
from emovox.experiment import train_bundle
from emovox.synth import synth_voice

SR = 16_000
STYLES = {"angry": (220.0, 0.45, 0.6), "sad": (95.0, 0.05, 0.15)}


def _voice(path: Path, seconds: float = 1.0, seed: int = 0, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, synth_voice(seconds, SR, seed=seed), SR, **kwargs)
    return path


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A tiny two-emotion corpus (3 speakers) and an experiment config over it."""
    root = tmp_path_factory.mktemp("tiny-corpus")
    write_tiny_corpus(root, STYLES)
    config = root / "tiny.yaml"
    config.write_text(f"""name: tiny
corpora: [{{path: {root / 'manifest.csv'}, kind: manifest}}]
labels: {{name: two, classes: [angry, sad]}}
features: mfcc_stats
model: logreg
protocol: {{kind: speaker_folds, n_folds: 3}}
cache_dir: null
n_jobs: 1
output_dir: {root / 'runs'}
""")
    return config


def _bundle(recipe: Path, folder: Path, normalization: str) -> list[str]:
    config = load_config(recipe, [f"normalization={normalization}"])
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    return ["--bundle", str(save_bundle(bundle, folder)), "--jobs", "1"]


@pytest.fixture(scope="module")
def plain(recipe, tmp_path_factory) -> list[str]:
    """``--bundle`` arguments of a model trained without speaker normalisation."""
    return _bundle(recipe, tmp_path_factory.mktemp("bundles") / "plain", "none")


@pytest.fixture(scope="module")
def normalised(recipe, tmp_path_factory) -> list[str]:
    """``--bundle`` arguments of a speaker-normalised model (it can be calibrated)."""
    return _bundle(recipe, tmp_path_factory.mktemp("bundles") / "speaker", "speaker")


def run(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------ output format
def test_output_format_follows_the_output_extension(plain, tmp_path):
    wav = _voice(tmp_path / "a.wav")
    out = run("predict", wav, "-o", tmp_path / "out.csv", *plain)
    assert out.exit_code == 0, out.output
    assert list(pd.read_csv(tmp_path / "out.csv")["file"]) == [str(wav)]
    out = run("predict", wav, "-o", tmp_path / "out.json", *plain)
    assert out.exit_code == 0, out.output
    assert json.loads((tmp_path / "out.json").read_text())[0]["file"] == str(wav)
    # Another extension keeps the table (and says where it went).
    out = run("predict", wav, "-o", tmp_path / "out.txt", *plain)
    assert out.exit_code == 0 and "as a table" in out.output
    assert "emotion" in (tmp_path / "out.txt").read_text()


def test_a_format_contradicting_the_extension_is_refused(plain, tmp_path):
    wav = _voice(tmp_path / "a.wav")
    out = run("predict", wav, "-f", "csv", "-o", tmp_path / "out.json", *plain)
    assert out.exit_code == EXIT_USAGE
    assert "contradicts" in out.output and len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.json").exists()
    out = run("predict", wav, "-f", "json", "-o", tmp_path / "out.json", *plain)
    assert out.exit_code == 0, out.output


# ------------------------------------------------------------------ folders
@pytest.mark.parametrize("name", ["empty", "x.wav", "only-text"])
def test_a_folder_without_audio_is_an_error(plain, tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    if name == "only-text":
        (folder / "notes.txt").write_text("no audio here\n")
    out = run("predict", folder, *plain)
    assert out.exit_code == EXIT_FAILED
    assert f"no audio files in {folder}" in out.output
    if name == "only-text":
        assert "skipped 1 file that is not audio: notes.txt" in out.output


def test_folders_take_audio_by_content_and_list_what_they_skip(plain, tmp_path):
    folder = tmp_path / "mixed"
    _voice(folder / "good.wav")
    # An MP3 named .m4a: decoded when given alone, so taken from a folder too.
    _voice(folder / "sub" / "phone.m4a", format="MP3", subtype="MPEG_LAYER_III")
    (folder / "notes.txt").write_text("not audio\n")
    (folder / "data.csv").write_text("a,b\n1,2\n")
    (folder / "sub" / "loop").symlink_to(folder)  # a link back up the tree
    out = run("predict", folder, "-f", "csv", *plain)
    assert out.exit_code == 0, out.output
    files = pd.read_csv(io.StringIO(out.stdout))["file"].tolist()
    assert files == [str(folder / "good.wav"), str(folder / "sub" / "phone.m4a")]
    assert "skipped 2 files that are not audio: data.csv, notes.txt" in out.output
    assert "skipped 1 symlink loop: sub/loop" in out.output


def test_failed_files_exit_non_zero_and_are_listed(plain, tmp_path):
    folder = tmp_path / "batch"
    _voice(folder / "good.wav")
    (folder / "broken.wav").write_text("not audio at all\n")  # named like audio: tried
    (folder / "empty.wav").write_bytes(b"")
    for extra in ([], ["-o", str(tmp_path / "out.csv")]):
        out = run("predict", folder, *extra, *plain)
        assert out.exit_code == EXIT_FAILED, out.output
        assert "2 files failed" in out.output
        assert "broken.wav" in out.output and "empty.wav" in out.output
    assert len(pd.read_csv(tmp_path / "out.csv")) == 1  # the good file is still written
    out = run("predict", folder / "good.wav", *plain)
    assert out.exit_code == 0, out.output


def test_exit_codes_are_documented():
    out = run("predict", "--help")
    assert out.exit_code == 0
    text = " ".join(out.output.split())
    assert "Exit status: 0" in text and "1 when some could not be" in text
    assert "2 for usage errors" in text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "exit status" in readme.lower()


def test_usage_errors_exit_2(plain, tmp_path):
    assert run("predict", *plain).exit_code == EXIT_USAGE
    out = run("predict", _voice(tmp_path / "a.wav"), "-f", "xml", *plain)
    assert out.exit_code == EXIT_USAGE and "--format" in out.output


@pytest.mark.parametrize("args, said", [
    (["--timeline", "--voices", "ge2e"], "add --speakers"),
    (["--timeline", "--speakers", "2", "--voices", "xvector"], "--voices must be"),
    (["--speakers", "2"], "add --timeline"),
    (["--plot", "p.png"], "add --timeline"),
])
def test_speaker_options_need_their_context(plain, tmp_path, args, said):
    out = run("predict", _voice(tmp_path / "a.wav"), *args, *plain)
    assert out.exit_code == EXIT_USAGE and said in out.output, out.output


# ------------------------------------------------------------------ calibration
@pytest.fixture()
def takes(tmp_path) -> list[Path]:
    """Ten recordings of one synthetic speaker, and one to predict."""
    return [_voice(tmp_path / f"take{n}.wav", 1.2, seed=40 + n) for n in range(11)]


def test_calibrate_takes_several_files(normalised, takes):
    calibration = takes[:MIN_ADAPT_VECTORS]
    half = MIN_ADAPT_VECTORS // 2
    for options in (["--calibrate", ",".join(map(str, calibration))],
                    ["--calibrate", ",".join(map(str, calibration[:half])),
                     "--calibrate", ",".join(map(str, calibration[half:]))],
                    [a for path in calibration for a in ("--calibrate", str(path))]):
        out = run("predict", takes[-1], *options, "-f", "csv", *normalised)
        assert out.exit_code == 0, out.output
        assert (f"adapted to the speaker of {MIN_ADAPT_VECTORS} of {MIN_ADAPT_VECTORS} "
                "calibration files") in out.output
        assert "predicting 1 file(s): take10.wav" in out.output
        assert pd.read_csv(io.StringIO(out.stdout))["file"].tolist() == [str(takes[-1])]


def test_too_little_calibration_is_not_claimed(normalised, takes, tmp_path):
    few = ",".join(map(str, takes[:3]))
    out = run("predict", takes[-1], "--calibrate", few, "-f", "csv", *normalised)
    assert out.exit_code == 0, out.output
    assert "calibration not applied: 3 usable file(s)" in out.output
    assert f"at least {MIN_ADAPT_VECTORS} files" in out.output
    assert "adapted to" not in out.output
    # One recording too short for 8 windows: named, with the seconds it needs.
    short = _voice(tmp_path / "short.wav", 3.0, seed=7)
    out = run("predict", takes[-1], "--calibrate", short, "-f", "csv", *normalised)
    assert out.exit_code == 0, out.output
    text = " ".join(out.output.split())
    assert f"calibration not applied: {short} is 3.0 s long" in text
    assert f"at least 9 s ({MIN_ADAPT_VECTORS} windows)" in text
    assert "adapted to" not in out.output
    # Long enough: adapted, and said so.
    long = _voice(tmp_path / "long.wav", 10.0, seed=8)
    out = run("predict", takes[-1], "--calibrate", long, "-f", "csv", *normalised)
    assert out.exit_code == 0, out.output
    assert f"adapted to the speaker of {long} (9 windows)" in " ".join(out.output.split())


# ------------------------------------------------------------------ recipes
@pytest.fixture()
def no_features(monkeypatch):
    """Fail the test if any feature is extracted."""
    import emovox.experiment

    def refuse(*args, **kwargs):
        raise AssertionError("features were loaded before the recipe was validated")

    monkeypatch.setattr(emovox.experiment, "extract_many", refuse)
    monkeypatch.setattr(emovox.experiment, "load_corpora", refuse)


@pytest.mark.parametrize("command", ["train", "experiment"])
def test_recipe_values_are_checked_before_any_feature_loads(recipe, no_features, tmp_path,
                                                           command):
    extra = ["--no-evaluate", "-o", str(tmp_path / "b")] if command == "train" else []
    out = run(command, recipe, "protocol.n_folds=abc", *extra)
    assert out.exit_code != 0
    assert "n_folds" in str(out.exception) + out.output
    out = run(command, recipe, "protocol.n_fold=3", *extra)
    assert out.exit_code != 0 and "n_fold" in str(out.exception) + out.output
    out = run(command, recipe, "model.name=logregg", *extra)
    message = str(out.exception) + out.output
    assert out.exit_code != 0 and "unknown model 'logregg'" in message
    for name in ("logreg", "svm", "cnn_small_b", "lstm", "cnn2d_mfcc"):  # networks too
        assert name in message


def test_one_line_config_errors_from_the_entry_point(recipe):
    done = subprocess.run([sys.executable, "-c", "from emovox.cli import main; main()",
                           "train", str(recipe), "protocol.n_folds=abc"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == EXIT_USAGE
    assert "n_folds" in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------------ progress
def test_train_shows_progress_over_folds_and_the_final_fit(recipe, tmp_path):
    out = run("train", recipe, "-o", tmp_path / "bundle")
    assert out.exit_code == 0, out.output
    assert "logreg folds" in out.output and "3/3" in out.output
    assert "final logreg on 18 utterances" in out.output


# ------------------------------------------------------------------ killed runs
def _session(sid: int) -> list[int]:
    """Live processes of session ``sid`` (zombies excluded)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[3]) == sid:
            found.append(int(stat.parent.name))
    return found


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return condition()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL, signal.SIGINT])
def test_a_killed_predict_leaves_no_process_behind(plain, tmp_path, how):
    folder = tmp_path / "many"
    for n in range(40):
        _voice(folder / f"f{n}.wav", 2.0, seed=n)
    bundle = plain[plain.index("--bundle") + 1]
    # Its own session, so every process it starts can be found (and cleaned up).
    proc = subprocess.Popen(
        [sys.executable, "-c", "from emovox.cli import main; main()", "predict", str(folder),
         "--bundle", bundle, "--jobs", "2"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        assert _wait_for(lambda: len(_session(proc.pid)) >= 3 or proc.poll() is not None,
                         240), "no worker processes started"
        assert proc.poll() is None, "predict finished before it could be killed"
        os.kill(proc.pid, how)
        proc.wait(timeout=60)
        assert _wait_for(lambda: not _session(proc.pid), 30), (
            f"left behind after {how.name}: {_session(proc.pid)}")
    finally:
        for pid in _session(proc.pid):
            os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
