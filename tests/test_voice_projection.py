"""The voice projection: keeps what tells speakers apart, drops what emotion moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from emovox.diarization import cluster
from emovox.voice_projection import (
    EMBEDDING_SIZE,
    PROJECTION_ENV_VAR,
    fit_projection,
    packaged_projection_path,
    project,
    read_projection,
    save_projection,
    voice_projection,
)


def voices(n_speakers: int, per_speaker: int, nuisance: np.ndarray, seed: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings of speakers whose windows also move along shared "emotion" directions,
    more than the speakers differ (as GE2E embeddings of acted speech do)."""
    rng = np.random.default_rng(seed)
    means = rng.normal(0, 0.4, (n_speakers, EMBEDDING_SIZE))
    who = np.repeat(np.arange(n_speakers), per_speaker)
    emotion = rng.normal(0, 12.0, (len(who), len(nuisance))) @ nuisance
    X = means[who] + emotion + rng.normal(0, 0.1, (len(who), EMBEDDING_SIZE))
    return X.astype(np.float32), who


def test_the_projection_finds_new_speakers_that_emotion_hides() -> None:
    nuisance = np.linalg.qr(np.random.default_rng(0).normal(size=(EMBEDDING_SIZE, 3)))[0].T
    X, who = voices(30, 40, nuisance, seed=1)
    projection = fit_projection(X, [f"s{w}" for w in who])
    assert projection.shape == (EMBEDDING_SIZE, 29) and projection.dtype == np.float32
    # Three speakers never seen in fitting.
    test, truth = voices(3, 60, nuisance, seed=2)
    raw = adjusted_rand_score(truth, cluster(test, 3))
    projected = adjusted_rand_score(truth, cluster(project(test, projection), 3))
    assert projected > 0.9 > 0.5 > raw


def test_a_projection_needs_two_speakers() -> None:
    with pytest.raises(ValueError, match="two speakers"):
        fit_projection(np.zeros((5, EMBEDDING_SIZE)), ["a"] * 5)


def test_projection_files_are_checked_and_written_atomically(tmp_path: Path) -> None:
    good = save_projection(np.ones((EMBEDDING_SIZE, 4)), tmp_path / "p.npz", "test")
    assert read_projection(good).shape == (EMBEDDING_SIZE, 4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npz"]
    np.savez(tmp_path / "shape.npz", projection=np.ones((10, 4)))
    np.savez(tmp_path / "nan.npz", projection=np.full((EMBEDDING_SIZE, 2), np.nan))
    np.savez(tmp_path / "pickled.npz", projection=np.array([{"a": 1}], dtype=object))
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "shape.npz").read_bytes()[:60])
    for name in ("shape", "nan", "pickled", "junk", "cut"):
        with pytest.raises(ValueError) as error:
            read_projection(tmp_path / f"{name}.npz")
        message = str(error.value)
        assert f"{name}.npz" in message and "\n" not in message


def test_the_environment_chooses_the_projection(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    packaged = read_projection(packaged_projection_path())
    assert packaged.shape[0] == EMBEDDING_SIZE and packaged.shape[1] >= 2
    monkeypatch.delenv(PROJECTION_ENV_VAR, raising=False)
    assert np.array_equal(voice_projection(), packaged)
    monkeypatch.setenv(PROJECTION_ENV_VAR, "none")
    assert voice_projection() is None
    mine = save_projection(np.eye(EMBEDDING_SIZE)[:, :7], tmp_path / "mine.npz", "mine")
    monkeypatch.setenv(PROJECTION_ENV_VAR, str(mine))
    assert voice_projection().shape == (EMBEDDING_SIZE, 7)
    monkeypatch.setenv(PROJECTION_ENV_VAR, str(tmp_path / "missing.npz"))
    with pytest.raises(ValueError, match=r"missing\.npz"):
        voice_projection()
