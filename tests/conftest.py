"""Shared test helpers: the real corpora (when present) and synthetic audio files.

Use in tests as fixtures (``corpora_root``, ``write_tone``) or import the plain
functions (``from conftest import corpora_root, requires_corpora, write_tone``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

REPO_ROOT = Path(__file__).resolve().parents[1]
CORPORA_SKIP_REASON = (
    "real corpora not found: set EMOVOX_CORPORA or place them at ../shared/corpora"
)


def skip_without_weights(weights_path, reason: str) -> None:
    """Skip the calling test module, saying ``reason``, when ``weights_path()`` finds
    no weights (their package is a dependency: only a broken install lacks them)."""
    from emovox.errors import ConfigError

    try:
        weights_path()
    except ConfigError:
        pytest.skip(reason, allow_module_level=True)


def corpora_root() -> Path | None:
    """Folder of the real corpora, or ``None`` when it is not available.

    Looks at the ``EMOVOX_CORPORA`` environment variable first, then at
    ``<repo>/../shared/corpora``.

    Returns
    -------
    Path or None
    """
    env = os.environ.get("EMOVOX_CORPORA")
    candidate = Path(env).expanduser() if env else REPO_ROOT.parent / "shared" / "corpora"
    return candidate.resolve() if candidate.is_dir() else None


#: Skip marker for tests that read the real corpora (they also get the ``corpora`` mark).
requires_corpora = pytest.mark.skipif(corpora_root() is None, reason=CORPORA_SKIP_REASON)


def real_corpus(relative: str) -> Path:
    """A sub-folder of the real corpora (``"emodb/wav"``); skips the test when absent.

    Parameters
    ----------
    relative : str
        Path under the corpora root.

    Returns
    -------
    Path
    """
    root = corpora_root()
    if root is None:
        pytest.skip(CORPORA_SKIP_REASON)
    path = root / relative
    if not path.exists():
        pytest.skip(f"real corpus folder {path} not found")
    return path


def tone_signal(
    duration: float = 0.5,
    sample_rate: int = 16_000,
    channels: int = 1,
    frequency: float = 150.0,
    amplitude: float = 0.3,
    seed: int = 0,
) -> np.ndarray:
    """A voiced-like synthetic signal: harmonics of a slowly gliding f0, with an envelope.

    Parameters
    ----------
    duration : float
        Seconds.
    sample_rate : int
        Hz.
    channels : int
        1 gives shape ``(n,)``; more gives ``(n, channels)`` (slightly different gains).
    frequency : float
        Mean fundamental frequency in Hz.
    amplitude : float
        Peak amplitude (before the envelope), below 1.
    seed : int
        Seed of the small noise component (the output is deterministic).

    Returns
    -------
    np.ndarray, float32
    """
    n = max(1, round(duration * sample_rate))
    t = np.arange(n) / sample_rate
    f0 = frequency * (1.0 + 0.05 * np.sin(2 * np.pi * 3.0 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    signal = np.zeros(n)
    for harmonic in range(1, 9):
        if harmonic * frequency * 1.1 >= sample_rate / 2:
            break
        signal += np.sin(harmonic * phase) / harmonic
    envelope = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02 + 1e-3)
    rng = np.random.default_rng(seed)
    signal = signal * envelope + 0.01 * rng.standard_normal(n)
    signal = amplitude * signal / np.max(np.abs(signal))
    if channels > 1:
        signal = np.stack([signal * (1.0 - 0.1 * c) for c in range(channels)], axis=1)
    return signal.astype(np.float32)


def write_tone(
    path: str | Path,
    duration: float = 0.5,
    sample_rate: int = 16_000,
    subtype: str | None = "PCM_16",
    channels: int = 1,
    format: str | None = None,
    **signal_options: float,
) -> Path:
    """Write a short synthetic voiced signal with soundfile and return its path.

    Parameters
    ----------
    path : str or Path
        Output file; parent folders are created.
    duration : float
        Seconds.
    sample_rate : int
        Hz.
    subtype : str, optional
        soundfile subtype (``"PCM_16"``, ``"PCM_24"``, ``"FLOAT"`` ...).
    channels : int
        Number of channels.
    format : str, optional
        soundfile format (``"WAV"``, ``"FLAC"``, ``"AIFF"`` ...); default from the
        extension. Pass ``"AIFF"`` with a ``.wav`` name to write a misnamed file.
    **signal_options
        ``frequency``, ``amplitude``, ``seed`` for :func:`tone_signal`.

    Returns
    -------
    Path
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = tone_signal(duration, sample_rate, channels, **signal_options)
    sf.write(str(path), signal, sample_rate, subtype=subtype, format=format)
    return path


# Classes differ in pitch and loudness, as aroused and calm speech do.
SYNTHETIC_STYLE = {"angry": (220.0, 0.45, 0.6), "sad": (95.0, 0.05, 0.15),
                   "happy": (180.0, 0.35, 0.4)}


def write_tiny_corpus(root: Path, styles: dict[str, tuple[float, float, float]],
                      speakers: int = 3, takes: int = 3, rate: int = 16000) -> Path:
    """Synthetic 1 s voices, ``speakers`` x emotions of ``styles`` x ``takes``, and their
    manifest (``path, emotion, speaker, gender``); returns the manifest's path.

    ``styles`` maps an emotion to ``(f0, f0_range, loudness)`` of :func:`synth_voice`.
    """
    import pandas as pd

    from emovox.synth import synth_voice

    rows = []
    for s in range(speakers):
        for emotion, (f0, swing, loud) in styles.items():
            for take in range(takes):
                path = root / f"s{s}_{emotion}_{take}.wav"
                sf.write(path, synth_voice(1.0, rate, f0=f0 * (1 + 0.05 * s), f0_range=swing,
                                           loudness=loud, seed=10 * s + take), rate)
                rows.append({"path": path.name, "emotion": emotion, "speaker": f"s{s}",
                             "gender": "male"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """Manifest (CSV) of 6 synthetic speakers x 3 emotions x 4 takes of 1.2 s."""
    import pandas as pd

    from emovox.synth import synth_voice

    root = tmp_path_factory.mktemp("synthetic-corpus")
    rows = []
    for s in range(6):
        for emotion, (f0, swing, loud) in SYNTHETIC_STYLE.items():
            for take in range(4):
                seed = 100 * s + 10 * take + len(emotion)
                signal = synth_voice(1.2, f0=f0 * (1 + 0.08 * (s - 3)), f0_range=swing,
                                     loudness=loud, seed=seed, vowels="aoiea"[take:take + 3])
                path = root / f"s{s}_{emotion}_{take}.wav"
                sf.write(path, signal, 16000)
                rows.append({"path": path.name, "emotion": emotion, "speaker": f"s{s}",
                             "gender": "male" if s % 2 else "female"})
    manifest = root / "manifest.csv"
    pd.DataFrame(rows).to_csv(manifest, index=False)
    return manifest


@pytest.fixture(scope="session")
def normalised_bundle(synthetic_corpus: Path, tmp_path_factory) -> Path:
    """A speaker-normalised MFCC + logistic-regression bundle of the synthetic corpus
    (its folder; tests that move a file in it put it back)."""
    from emovox.bundle import save_bundle
    from emovox.config import load_config
    from emovox.experiment import train_bundle

    config = load_config(data={
        "name": "adapted", "corpora": [{"path": str(synthetic_corpus), "kind": "manifest"}],
        "labels": {"name": "three", "classes": ["angry", "happy", "sad"]},
        "features": {"name": "mfcc_stats"}, "model": {"name": "logreg"},
        "normalization": "speaker", "cache_dir": None, "n_jobs": 1})
    bundle, _ = train_bundle(config, evaluate=False, progress=False)
    return save_bundle(bundle, tmp_path_factory.mktemp("bundles") / "normalised")

@pytest.fixture(name="corpora_root")
def _corpora_root_fixture() -> Path:
    """The real corpora folder; skips the test when it is absent."""
    root = corpora_root()
    if root is None:
        pytest.skip(CORPORA_SKIP_REASON)
    return root


@pytest.fixture(name="write_tone")
def _write_tone_fixture():
    """The :func:`write_tone` helper."""
    return write_tone


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give real-corpora tests the ``corpora`` mark, and skip ``corpora`` tests without data."""
    available = corpora_root() is not None
    for item in items:
        uses_corpora = item.get_closest_marker("corpora") is not None or any(
            mark.kwargs.get("reason") == CORPORA_SKIP_REASON
            for mark in item.iter_markers("skipif")
        )
        if not uses_corpora:
            continue
        item.add_marker(pytest.mark.corpora)
        if not available:
            item.add_marker(pytest.mark.skip(reason=CORPORA_SKIP_REASON))


@pytest.fixture(scope="module")
def crema_twelve() -> list[str]:
    """Twelve real CREMA-D utterances (2-3 s), four of each of three speakers."""
    folder = real_corpus("crema-d/AudioWAV")
    return [str(path) for speaker in ("1001", "1002", "1003")
            for path in sorted(folder.glob(f"{speaker}_*"))[:4]]


@pytest.fixture(scope="module")
def crema_calls(crema_twelve: list[str], tmp_path_factory) -> list[str]:
    """Three two-speaker recordings (~20 s) made of the CREMA-D utterances above:
    speakers 1001 and 1002, 1002 and 1003, 1003 and 1001, taking turns with 0.4 s
    pauses (in a temporary folder, never kept)."""
    from emovox.audio import load_audio

    folder = tmp_path_factory.mktemp("calls")
    by_speaker = {s: [load_audio(p, 16_000) for p in crema_twelve if f"/{s}_" in p]
                  for s in ("1001", "1002", "1003")}
    pause = np.zeros(6_400, np.float32)
    calls = []
    for a, b in (("1001", "1002"), ("1002", "1003"), ("1003", "1001")):
        parts = [x for pair in zip(by_speaker[a], by_speaker[b], strict=True)
                 for y in pair for x in (y, pause)]
        path = folder / f"call-{a}-{b}.flac"
        sf.write(path, np.concatenate(parts), 16_000)
        calls.append(str(path))
    return calls
