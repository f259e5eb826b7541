"""Conversations (issue 14): who spoke when, per-speaker adaptation, the summary.

The conversation is built here from two synthetic voices (emovox.synth) of clearly
different pitch and timbre: a low voice, and a higher one whose formants are raised a
third (synthesised at 12 kHz, played at 16 kHz). The energy detector is used: silero
rejects synthetic voices.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from emovox.conversation import UNCLASSIFIED, speaker_summary, strongest_moments
from emovox.diarization import check_speakers, cluster, diarize, speaker_turns
from emovox.errors import ConfigError
from emovox.speakers import weights_path
from emovox.synth import synth_voice

try:
    weights_path()
except ConfigError:  # the package is a dependency; a broken install skips, saying why
    pytest.skip("speaker separation needs the weights of the resemblyzer package",
                allow_module_level=True)

RATE = 16_000


def _voice(low: bool, seconds: float, seed: int) -> np.ndarray:
    if low:
        return synth_voice(seconds, f0=95, vowels="aouao", seed=seed)
    return synth_voice(seconds * 0.75, sample_rate=12_000, f0=170, vowels="ieiei", seed=seed)


@pytest.fixture(scope="module")
def conversation() -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Ten alternating turns of 2-4 s with 0.5 s pauses, and who speaks in each."""
    rng = np.random.default_rng(0)
    parts, truth, t = [], [], 0.0
    for k in range(10):
        x = _voice(k % 2 == 0, float(rng.uniform(2, 4)), k)
        parts += [np.zeros(RATE // 2, np.float32), x]
        t += 0.5
        truth.append((t, t + len(x) / RATE, "low" if k % 2 == 0 else "high"))
        t += len(x) / RATE
    return np.concatenate([*parts, np.zeros(RATE // 2, np.float32)]), truth


def _consistent(found: dict[tuple[float, float], str | None],
                truth: list[tuple[float, float, str]]) -> float:
    """Share of turns labelled right under the best one-to-one renaming of labels."""
    true_names = sorted({s for _, _, s in truth})
    hyp_names = sorted({v for v in found.values() if v is not None})
    best = 0.0
    for perm in itertools.permutations(hyp_names, len(true_names)):
        mapping = dict(zip(true_names, perm, strict=True))
        right = sum(found[(a, b)] == mapping[s] for a, b, s in truth)
        best = max(best, right / len(truth))
    return best


@pytest.mark.parametrize("speakers", [2, "auto"])
def test_speaker_labels_consistent_over_time(conversation, speakers):
    signal, truth = conversation
    result = diarize(signal, RATE, speakers=speakers, vad="energy")
    assert result.speakers == ["S1", "S2"]
    found = {(a, b): result.speaker_of(a, b) for a, b, _ in truth}
    # Permutation-invariant: every turn of a voice carries that voice's one label.
    assert _consistent(found, truth) == 1.0
    # Turns never overlap and are in time order.
    ends = [b for _, b, _ in result.turns]
    starts = [a for a, _, _ in result.turns]
    assert all(e <= s + 1e-9 for e, s in zip(ends[:-1], starts[1:], strict=True))


def test_cluster_numbers_speakers_by_first_appearance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 16))
    X = np.vstack([b + 0.05 * rng.normal(size=(5, 16)), a + 0.05 * rng.normal(size=(5, 16))])
    labels = cluster(X, 2)
    assert labels.tolist() == [0] * 5 + [1] * 5
    assert cluster(X[:0], "auto").shape == (0,)


def test_speaker_turns_cut_halfway_between_windows():
    turns = speaker_turns([(0.0, 4.0)], np.array([0.8, 1.6, 2.4, 3.2]), np.array([0, 0, 1, 1]))
    assert turns == [(0.0, 2.0, "S1"), (2.0, 4.0, "S2")]


def test_check_speakers():
    assert check_speakers("auto") == "auto"
    assert check_speakers("3") == 3
    for bad in ("0", "x", -1, 2.5):
        with pytest.raises(ValueError):
            check_speakers(bad)


@pytest.fixture(scope="module")
def recognizer():
    from emovox.recognizer import Recognizer

    return Recognizer()


def test_adaptation_statistics_never_mix_two_speakers(conversation, recognizer, monkeypatch):
    from emovox.inference.engine import Engine

    signal, _ = conversation
    seen: list[tuple[object, list[tuple[float, float]]]] = []
    rows = Engine.rows

    def spy(self, encoded, index, adapter):
        seen.append((adapter, [(float(s), float(e)) for _, s, e in index]))
        return rows(self, encoded, index, adapter)

    monkeypatch.setattr(Engine, "rows", spy)
    frame = recognizer.predict_timeline(signal, sample_rate=RATE, vad="energy", speakers=2,
                                        chunk_seconds=7.0)
    assert recognizer.adapter is not None  # the default bundle is speaker-normalised
    who = {(s, e): w for (_, s, e), w in frame["speaker"].items()}
    by_adapter: dict[int, set[str]] = {}
    counted: dict[int, int] = {}
    for adapter, windows in seen:
        by_adapter.setdefault(id(adapter), set()).update(who[w] for w in windows)
        counted[id(adapter)] = counted.get(id(adapter), 0) + len(windows)
    # Each state saw one voice only, and each voice had its own state.
    assert all(len(voices) == 1 for voices in by_adapter.values())
    assert len(by_adapter) == 2
    # A state's statistics rest on exactly its speaker's windows.
    for adapter, _ in seen:
        voice = next(iter(by_adapter[id(adapter)]))
        n = int((frame["emotion"].notna() & (frame["speaker"] == voice)).sum())
        assert adapter.running.count == n == counted[id(adapter)]


def test_summary_adds_up_to_the_speech_time(conversation, recognizer):
    signal, _ = conversation
    frame = recognizer.predict_timeline(signal, sample_rate=RATE, vad="energy",
                                        speakers="auto")
    assert {"speaker"} <= set(frame.columns)
    summary = speaker_summary(frame)
    speech = sum(b - a for a, b in frame.attrs["speech_segments"])
    assert summary["speech_seconds"].sum() == pytest.approx(speech, abs=1e-6)
    shares = summary.drop(columns=["speech_seconds", "speech_share", "main_emotion"])
    assert np.allclose(shares.sum(axis=1), 1.0)
    assert summary["speech_share"].sum() == pytest.approx(1.0)
    assert UNCLASSIFIED in shares.columns
    seconds = summary.attrs["seconds"]
    assert seconds.to_numpy().sum() == pytest.approx(speech, abs=1e-6)
    moments = strongest_moments(frame, top=2)
    assert set(moments["speaker"]) <= set(summary.index)
    assert moments.groupby("speaker").size().max() <= 2


def test_timeline_without_speakers_is_unchanged(conversation, recognizer):
    signal, _ = conversation
    frame = recognizer.predict_timeline(signal[: 6 * RATE], sample_rate=RATE, vad="energy")
    assert "speaker" not in frame.columns
    with pytest.raises(ValueError, match="speaker"):
        speaker_summary(frame)


def test_plot_has_one_lane_per_speaker(conversation, recognizer, tmp_path):
    from emovox.timeline import plot_timeline

    signal, _ = conversation
    frame = recognizer.predict_timeline(signal, sample_rate=RATE, vad="energy", speakers=2)
    out = plot_timeline(frame, tmp_path / "conversation.png")
    assert out.stat().st_size > 10_000


def test_api_timeline_with_speakers(conversation, recognizer, tmp_path):
    pytest.importorskip("httpx", reason="FastAPI's TestClient needs httpx")
    import soundfile as sf
    from fastapi.testclient import TestClient

    from emovox.serve import create_app

    signal, _ = conversation
    path = tmp_path / "call.wav"
    sf.write(path, signal, RATE)
    with TestClient(create_app(recognizer)) as client:
        bad = client.post("/api/timeline?speakers=zero", files={"file": ("call.wav", b"x")})
        assert bad.status_code == 422 and bad.json()["field"] == "speakers"
        with path.open("rb") as handle:
            response = client.post("/api/timeline?speakers=2&vad=energy",
                                   files={"file": ("call.wav", handle, "audio/wav")})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [s["speaker"] for s in data["speakers"]] == ["S1", "S2"]
    assert {seg["speaker"] for seg in data["segments"] if seg["speech"]} == {"S1", "S2"}
    assert sum(s["speech_share"] for s in data["speakers"]) == pytest.approx(1.0, abs=1e-3)
    assert all(t["speaker"] in ("S1", "S2") for t in data["speaker_turns"])
