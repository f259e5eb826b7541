"""Bad (and odd but good) inputs through every front: the CLI, the Python API, the server.

Each input is made here, in a temporary folder: empty and truncated files, text and
random bytes named ``.wav``, NaN/inf samples, a DC offset with no sound, a few
samples, a recording past the duration limit, every bit depth soundfile writes, 1/2/6
channels, rates from 8 to 96 kHz, and odd file names. Every front must answer without
a traceback: a valid emotion for good inputs; for bad ones a one-line error naming the
input (the CLI: on stderr, and exit status EXIT_FAILED for the batch; the API: an
``AudioError`` or a ``(path, reason)`` failure; the server: a 4xx, never a 500).

The packaged model is loaded once for the module; the CLI's ``Recognizer`` is patched
to return it (one CLI run in a subprocess loads it for real).
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from emovox.cli import EXIT_FAILED
from emovox.errors import AudioError
from emovox.recognizer import MAX_FILE_SECONDS, Recognizer
from emovox.synth import synth_voice

SR = 16_000
REPO_ROOT = Path(__file__).resolve().parents[1]


def voice(seconds: float = 1.0, rate: int = SR, channels: int = 1) -> np.ndarray:
    """A synthetic voice, ``(n,)`` or ``(n, channels)``, resampled to ``rate``."""
    from emovox.audio import resample

    signal = resample(synth_voice(seconds).astype(np.float32), SR, rate)
    if channels == 1:
        return signal
    return np.stack([signal * (1.0 - 0.1 * c) for c in range(channels)], axis=1)


def wav_bytes(data: np.ndarray, rate: int = SR, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


#: What soundfile reads each subtype as (PCM_U8: built by hand, numpy's uint8).
NATIVE_DTYPE = {"PCM_16": "int16", "PCM_24": "int32", "PCM_32": "int32",
                "FLOAT": "float32", "DOUBLE": "float64"}


@dataclass
class Case:
    """One input: its file name and bytes, and what every front must answer.

    ``problem`` is None for a good input, else words one of which the error names.
    ``signal`` is the same input as samples for ``predict_signal`` (None: a file-only
    problem such as a broken header).
    """

    id: str
    name: str
    content: Callable[[], bytes]
    problem: tuple[str, ...] | None = None
    signal: Callable[[], tuple[np.ndarray, int]] | None = None
    #: Marks of the CLI tests only (a known CLI problem).
    cli_marks: list[pytest.MarkDecorator] = field(default_factory=list)

    def write(self, folder: Path) -> Path:
        path = folder / self.name
        path.write_bytes(self.content())
        return path


def _decoded(data: Callable[[], np.ndarray], rate: int = SR, subtype: str = "FLOAT"
             ) -> Callable[[], tuple[np.ndarray, int]]:
    """The samples of the file a case writes, as ``predict_signal`` would be given them."""
    def make() -> tuple[np.ndarray, int]:
        if subtype == "PCM_U8":
            samples = np.clip(np.round(data() * 127 + 128), 0, 255).astype(np.uint8)
            return samples, rate
        samples, file_rate = sf.read(io.BytesIO(wav_bytes(data(), rate, subtype)),
                                     dtype=NATIVE_DTYPE.get(subtype, "float32"))
        return samples, file_rate
    return make


def _nan_wav() -> bytes:
    data = voice()
    data[SR // 2] = np.nan
    return wav_bytes(data, subtype="FLOAT")


def _inf_wav() -> bytes:
    data = voice().astype(np.float64)
    data[100:110] = np.inf
    return wav_bytes(data, subtype="DOUBLE")


def _nan_signal() -> tuple[np.ndarray, int]:
    data = voice()
    data[SR // 2] = np.nan
    return data, SR


def _inf_signal() -> tuple[np.ndarray, int]:
    data = voice().astype(np.float64)
    data[100:110] = np.inf
    return data, SR


#: Past the whole-file limit at 1 kHz, 8 bits: 0.6 MB on disk.
HUGE_RATE, HUGE_SECONDS = 1_000, MAX_FILE_SECONDS + 60


def _huge() -> np.ndarray:
    rng = np.random.default_rng(0)
    return 0.1 * rng.standard_normal(int(HUGE_RATE * HUGE_SECONDS))


BAD = [
    Case("empty", "empty.wav", lambda: b"", ("empty", "no audio samples"),
         lambda: (np.zeros(0, np.float32), SR)),
    Case("header-only", "header_only.wav", lambda: wav_bytes(voice())[:44],
         ("no audio samples", "truncated")),
    Case("header-cut", "cut.wav", lambda: wav_bytes(voice())[:30], ("not a readable",)),
    Case("data-cut-short", "cut_data.wav", lambda: wav_bytes(voice())[:44 + 2 * 300],
         ("too short",)),
    Case("text", "notes.wav", lambda: b"this is not audio\n" * 50, ("not a readable",)),
    Case("random-bytes", "noise.wav", lambda: np.random.default_rng(1).bytes(8192),
         ("not a readable",)),
    Case("nan", "nan.wav", _nan_wav, ("nan",), _nan_signal),
    Case("inf", "inf.wav", _inf_wav, ("infinite",), _inf_signal),
    Case("dc-only", "dc.wav", lambda: wav_bytes(np.full(SR, 0.3)), ("silent",),
         _decoded(lambda: np.full(SR, 0.3), subtype="PCM_16")),
    Case("dc-only-stereo-float", "dc_stereo.wav",
         lambda: wav_bytes(np.full((SR, 2), -0.5), subtype="FLOAT"), ("silent",),
         lambda: (np.full((SR, 2), -0.5, np.float32), SR)),
    Case("zeros", "zeros.wav", lambda: wav_bytes(np.zeros(SR)), ("silent",),
         lambda: (np.zeros(SR, np.int16), SR)),
    Case("tiny", "tiny.wav", lambda: wav_bytes(voice()[SR // 2:SR // 2 + 5]), ("too short",),
         lambda: (voice()[SR // 2:SR // 2 + 5], SR)),
    Case("huge", "huge.wav", lambda: wav_bytes(_huge(), HUGE_RATE, "PCM_U8"), ("too long",),
         lambda: (_huge().astype(np.float32), HUGE_RATE)),
    Case("odd-name-bad", "-x émotion 日本 bad.wav", lambda: b"RIFF junk", ("not a readable",)),
    Case("brackets-bad", "[draft] notes.wav", lambda: b"not audio", ("not a readable",)),
]
GOOD = [
    *[Case(f"subtype-{s}", f"voice_{s.lower()}.wav",
           (lambda s=s: wav_bytes(voice(), subtype=s)),
           signal=_decoded(voice, subtype=s))
      for s in ("PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE")],
    *[Case(f"channels-{c}", f"voice_{c}ch.wav", (lambda c=c: wav_bytes(voice(channels=c))),
           signal=_decoded(lambda c=c: voice(channels=c), subtype="PCM_16"))
      for c in (1, 2, 6)],
    *[Case(f"rate-{r}", f"voice_{r}.wav", (lambda r=r: wav_bytes(voice(rate=r), r)),
           signal=_decoded(lambda r=r: voice(rate=r), r, "PCM_16"))
      for r in (8_000, 11_025, 22_050, 44_100, 48_000, 96_000)],
    Case("name-spaces", "my  recording  1.wav", lambda: wav_bytes(voice())),
    Case("name-unicode", "émotion 日本語 😀 ß.wav", lambda: wav_bytes(voice())),
    Case("name-leading-dash", "-n --help.wav", lambda: wav_bytes(voice())),
    Case("name-long", "x" * 240 + ".wav", lambda: wav_bytes(voice())),
    # Square brackets are rich markup to a console that is not told otherwise.
    Case("name-brackets", "[draft] take [red].wav", lambda: wav_bytes(voice())),
]
CASES = BAD + GOOD


def params(cases: list[Case], cli: bool = False) -> list:
    """pytest parameters of ``cases``, named by their id (with the CLI's marks)."""
    return [pytest.param(c, id=c.id, marks=c.cli_marks if cli else []) for c in cases]


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    """The packaged model, loaded once (seconds) for the whole module."""
    return Recognizer(n_jobs=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every case's file, written once."""
    root = tmp_path_factory.mktemp("bad-inputs")
    for case in CASES:
        case.write(root)
    return root


def assert_one_line_naming(message: str, name: str, words: tuple[str, ...]) -> None:
    """A single line that names the input and says what is wrong."""
    assert "\n" not in message.strip() and "Traceback" not in message, message
    assert name in message, f"{name!r} not named in {message!r}"
    assert any(w.lower() in message.lower() for w in words), f"none of {words} in {message!r}"


def assert_valid_answer(frame: pd.DataFrame, classes: list[str]) -> None:
    """One row: an emotion of the model, a confidence in [0, 1], probabilities summing
    to 1."""
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row["emotion"] in classes, row["emotion"]
    probabilities = row[classes].to_numpy(dtype=float)
    assert np.all(np.isfinite(probabilities)) and abs(probabilities.sum() - 1) < 1e-4
    assert 0.0 <= float(row["confidence"]) <= 1.0


# ----------------------------------------------------------------------------- the API


@pytest.mark.parametrize("case", params(CASES))
def test_api_predict_file(recognizer: Recognizer, folder: Path, case: Case) -> None:
    path = folder / case.name
    if case.problem is None:
        assert_valid_answer(recognizer.predict_file(path), recognizer.classes)
        return
    with pytest.raises(AudioError) as excinfo:
        recognizer.predict_file(path)
    assert_one_line_naming(str(excinfo.value), str(path), case.problem)


def test_api_predict_files_goes_on_past_bad_files(recognizer: Recognizer,
                                                  folder: Path) -> None:
    """One batch of every case: each good file answered, each bad one a failure."""
    paths = [str(folder / c.name) for c in CASES]
    frame = recognizer.predict_files(paths, progress=False)
    failures = dict(frame.attrs["failures"])
    for case, path in zip(CASES, paths, strict=True):
        if case.problem is None:
            assert path not in failures, failures.get(path)
            assert_valid_answer(frame.loc[[path]], recognizer.classes)
        else:
            assert path not in frame.index.get_level_values("file")
            assert_one_line_naming(failures[path], path, case.problem)


@pytest.mark.parametrize("case", params([c for c in CASES if c.signal is not None]))
def test_api_predict_signal(recognizer: Recognizer, case: Case) -> None:
    assert case.signal is not None
    samples, rate = case.signal()
    if case.problem is None:
        frame = recognizer.predict_signal(samples, rate, name=case.name)
        assert_valid_answer(frame, recognizer.classes)
        return
    with pytest.raises(AudioError) as excinfo:
        recognizer.predict_signal(samples, rate, name=case.name)
    assert_one_line_naming(str(excinfo.value), case.name, case.problem)


# ----------------------------------------------------------------------------- the CLI


@pytest.fixture
def cli(recognizer: Recognizer, monkeypatch: pytest.MonkeyPatch) -> Callable[..., object]:
    """Run ``emovox`` in-process with the module's model (not reloaded per run)."""
    from typer.testing import CliRunner

    from emovox import cli as cli_module
    from emovox import recognizer as recognizer_module

    monkeypatch.setattr(recognizer_module, "Recognizer", lambda *a, **k: recognizer)
    runner = CliRunner()

    def run(*args: str, cwd: Path) -> object:
        monkeypatch.chdir(cwd)
        return runner.invoke(cli_module.app, list(args))

    return run


@pytest.mark.parametrize("case", params(CASES, cli=True))
def test_cli_predict(cli: Callable[..., object], folder: Path, case: Case) -> None:
    """``emovox predict --format csv -- NAME`` (relative, so a leading dash is tested)."""
    result = cli("predict", "--format", "csv", "--", case.name, cwd=folder)
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    if case.problem is None:
        assert result.exit_code == 0, output
        rows = list(csv.DictReader(io.StringIO(result.stdout)))
        assert [r["file"] for r in rows] == [case.name]
        assert rows[0]["emotion"] in [*cli_classes(rows[0])], rows[0]
        return
    assert result.exit_code == EXIT_FAILED, output  # a failed batch
    lines = [line for line in result.stderr.splitlines() if case.name in line]
    assert lines, f"no line names {case.name!r} in:\n{result.stderr}"
    assert any(any(w.lower() in line.lower() for w in case.problem) for line in lines), (
        result.stderr)


def cli_classes(row: dict[str, str]) -> list[str]:
    """The class columns of a CSV row (those that hold a probability)."""
    skip = {"file", "start", "end", "emotion", "confidence"}
    return [k for k in row if k not in skip]


@pytest.mark.parametrize("case", [
    pytest.param(c, id=c.id)
    for c in GOOD if c.id.startswith("name-")])
def test_cli_table_shows_odd_names(cli: Callable[..., object], folder: Path,
                                   case: Case) -> None:
    """The default table output prints odd names without crashing or mangling them."""
    result = cli("predict", "--", case.name, cwd=folder)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert result.exit_code == 0, result.stdout + result.stderr
    if len(case.name) < 60:  # long names may be folded by the table
        assert case.name in result.stdout, result.stdout


def test_cli_subprocess_batch(folder: Path) -> None:
    """The real command, in its own process: every bad file listed on its own line
    and the good ones answered, without a traceback."""
    cases = [c for c in CASES if c.id in ("empty", "text", "dc-only", "huge", "tiny",
                                          "subtype-PCM_24", "name-unicode")]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    result = subprocess.run(
        [sys.executable, "-c", "from emovox.cli import main; main()", "predict",
         "--format", "csv", "--jobs", "1", "--", *[c.name for c in cases]],
        cwd=folder, capture_output=True, text=True, env=env, timeout=600, check=False)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_FAILED, result.stderr  # some files failed
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert sorted(r["file"] for r in rows) == sorted(c.name for c in cases
                                                     if c.problem is None), result.stderr
    for case in cases:
        if case.problem is not None:
            lines = [line for line in result.stderr.splitlines() if case.name in line]
            assert len(lines) == 1, result.stderr
            assert any(w.lower() in lines[0].lower() for w in case.problem), lines[0]


# -------------------------------------------------------------------------- the server


@pytest.fixture(scope="module")
def client(recognizer: Recognizer) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from emovox.serve.app import create_app

    app = create_app(recognizer, warm_up=False)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.mark.parametrize("case", params(CASES))
def test_server_predict(client: object, case: Case) -> None:
    response = client.post("/api/predict",
                           files={"file": (case.name, case.content(), "audio/wav")})
    body = response.json()
    if case.problem is None:
        assert response.status_code == 200, body
        assert body["file"] == case.name
        assert body["emotion"] in body["classes"]
        assert abs(sum(body["probabilities"].values()) - 1) < 1e-4
        return
    assert 400 <= response.status_code < 500, (response.status_code, body)
    assert_one_line_naming(body["detail"], case.name, case.problem)
