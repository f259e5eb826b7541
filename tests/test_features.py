"""Tests of emovox.features: extractors, cache and batch extraction (synthetic audio only)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf

from emovox.errors import AudioError, ConfigError
from emovox.features import (
    ExtractionResult,
    FeatureCache,
    FeatureExtractor,
    available_extractors,
    extract_many,
    file_key,
    get_extractor,
    process_file,
)
from emovox.features import cache as cache_module
from emovox.features.cache import resolve_cache_dir
from emovox.features.spectral import MfccChromaMel

SR = 16_000
ALL_NAMES = [
    "compare", "egemaps", "logmel_sequence", "mfcc_chroma_mel", "mfcc_sequence", "mfcc_stats",
]


# ---------------------------------------------------------------------- test audio
def _tone(seconds: float, f0: float = 220.0, amp: float = 0.3, vibrato: bool = True,
          seed: int = 0) -> np.ndarray:
    """Harmonic tone (5 partials) with optional 5 Hz vibrato and a little noise."""
    t = np.arange(int(seconds * SR)) / SR
    freq = f0 * (1 + (0.01 * np.sin(2 * np.pi * 5 * t) if vibrato else np.zeros_like(t)))
    phase = 2 * np.pi * np.cumsum(freq) / SR
    y = sum(np.sin(k * phase) / k for k in range(1, 6))
    y = y + 0.01 * np.random.default_rng(seed).standard_normal(t.size)
    return (amp * y / np.max(np.abs(y))).astype(np.float32)


def _noise_bursts(seconds: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = 0.2 * rng.standard_normal(int(seconds * SR))
    envelope = (np.arange(y.size) // (SR // 4)) % 2  # 250 ms on, 250 ms off
    return (y * envelope + 0.001 * rng.standard_normal(y.size)).astype(np.float32)


def _write(path: Path, signal: np.ndarray, sample_rate: int = SR) -> Path:
    sf.write(path, signal, sample_rate, subtype="FLOAT")
    return path


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("audio")
    long = np.concatenate([_tone(2.0, 220.0), _noise_bursts(1.5), _tone(1.5, 330.0, seed=2)])
    files = {
        "tone": _write(folder / "tone.wav", _tone(3.0)),
        "short": _write(folder / "short.wav", _tone(1.0, 300.0)),
        "long": _write(folder / "long.wav", long),
        "a4": _write(folder / "a4.wav", _tone(2.0, 440.0, vibrato=False)),
        "noise": _write(folder / "noise.wav", _noise_bursts(2.0)),
    }
    (folder / "empty.wav").write_bytes(b"")
    (folder / "text.wav").write_text("this is not audio\n")
    _write(folder / "silent.wav", np.zeros(SR, dtype=np.float32))
    files.update(empty=folder / "empty.wav", text=folder / "text.wav",
                 silent=folder / "silent.wav", missing=folder / "missing.wav")
    return files


def _read(path: Path) -> np.ndarray:
    signal, rate = sf.read(path, dtype="float32")
    assert rate == SR
    return signal


class _CountCalls:
    """Wrap an extractor class's ``_compute`` to count (or forbid) calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cls: type[FeatureExtractor],
                 forbid: bool = False) -> None:
        self.calls = 0
        original = cls._compute

        def wrapped(ext: FeatureExtractor, signal: np.ndarray) -> np.ndarray:
            self.calls += 1
            if forbid:
                raise AssertionError("features recomputed despite a cache hit")
            return original(ext, signal)

        monkeypatch.setattr(cls, "_compute", wrapped)


# ---------------------------------------------------------------------- registry and specs
def test_available_extractors() -> None:
    names = available_extractors()
    assert set(ALL_NAMES) <= set(names) and names == sorted(names)


@pytest.mark.parametrize(
    ("spec", "shape"),
    [
        ("mfcc_chroma_mel", (180,)),
        ({"name": "mfcc_chroma_mel", "n_mfcc": 13, "n_mels": 64}, (13 + 12 + 64,)),
        ("mfcc_stats", (20 * 2 * 2,)),
        ({"name": "mfcc_stats", "n_mfcc": 13, "deltas": 2, "minmax": True}, (13 * 3 * 4,)),
        ("mfcc_sequence", (94, 40)),
        ({"name": "mfcc_sequence", "n_mfcc": 40, "duration": 2.5, "offset": 0.5}, (79, 40)),
        ({"name": "mfcc_sequence", "hop_length": 160, "n_mfcc": 13}, (301, 13)),
        ({"name": "logmel_sequence", "n_mels": 64}, (94, 64)),
        ("egemaps", (88,)),
        ("compare", (6373,)),
    ],
)
def test_output_shape_known_from_params(spec: str | dict, shape: tuple[int, ...]) -> None:
    ext = get_extractor(spec)
    assert ext.output_shape == shape
    assert ext.sample_rate == SR


@pytest.mark.parametrize("name", ALL_NAMES)
def test_spec_round_trips(name: str) -> None:
    ext = get_extractor(name)
    spec = ext.spec()
    assert spec["name"] == name
    assert set(spec) == {"name", *ext.params}
    rebuilt = get_extractor(json.loads(json.dumps(spec)))
    assert rebuilt == ext
    assert rebuilt.key() == ext.key()
    assert get_extractor(ext) is ext


def test_params_forms_and_keys() -> None:
    a = get_extractor({"name": "mfcc_sequence", "n_mfcc": 40, "duration": 2.5, "offset": 0.5})
    b = get_extractor("mfcc_sequence", n_mfcc=40, duration=2.5, offset=0.5)
    assert a == b and a.key() == b.key()
    assert a.params["duration"] == 2.5 and a.params["hop_length"] == 512
    # 3 and 3.0 are the same setting and must give the same key
    assert get_extractor("mfcc_sequence", duration=3).key() == get_extractor("mfcc_sequence").key()
    c = get_extractor(a, n_mfcc=13)
    assert c.n_mfcc == 13 and c.duration == 2.5
    keys = {get_extractor("logmel_sequence", n_mels=n).key() for n in (32, 64, 128)}
    keys |= {get_extractor(name).key() for name in ALL_NAMES}
    assert len(keys) == 3 + len(ALL_NAMES) - 1  # logmel n_mels=128 is the default
    assert a.key().startswith("mfcc_sequence-")


def test_unknown_extractor_name() -> None:
    with pytest.raises(ConfigError, match=r"unknown feature extractor 'mfcc'.*mfcc_sequence"):
        get_extractor("mfcc")
    with pytest.raises(ConfigError, match="needs a 'name'"):
        get_extractor({"n_mfcc": 40})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "mfcc_sequence", "n_mfc": 40}, r"unknown parameter\(s\) 'n_mfc'.*n_mfcc"),
        ({"name": "mfcc_sequence", "n_mfcc": 0}, "n_mfcc must be >= 1"),
        ({"name": "mfcc_sequence", "n_mfcc": "40"}, "n_mfcc must be an integer"),
        ({"name": "mfcc_sequence", "n_mfcc": 40.0}, "n_mfcc must be an integer"),
        ({"name": "mfcc_sequence", "duration": -1}, "duration must be >= 0.1"),
        ({"name": "mfcc_stats", "duration": 0.01}, "duration must be >= 0.1"),
        ({"name": "mfcc_sequence", "duration": None}, "sequences need a fixed length"),
        ({"name": "logmel_sequence", "offset": -0.5}, "offset must be >= 0"),
        ({"name": "logmel_sequence", "fmax": 9000.0}, "fmax <= sample_rate/2"),
        ({"name": "mfcc_stats", "deltas": 3}, "deltas must be <= 2"),
        ({"name": "mfcc_stats", "minmax": "yes"}, "minmax must be true or false"),
        ({"name": "egemaps", "sample_rate": 0}, "sample_rate must be >= 1000"),
        ({"name": "compare", "feature_set": "x"}, r"unknown parameter\(s\) 'feature_set'"),
    ],
)
def test_bad_parameters_fail_early(spec: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        get_extractor(spec)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------------- extraction
@pytest.mark.parametrize("name", ALL_NAMES)
def test_extract_file_shape_dtype_and_determinism(name: str, audio: dict[str, Path]) -> None:
    ext = get_extractor(name)
    first = ext.extract_file(audio["tone"])
    assert first.shape == ext.output_shape
    assert first.dtype == np.float32
    assert np.all(np.isfinite(first))
    np.testing.assert_array_equal(ext.extract_file(audio["tone"]), first)


def test_extract_file_matches_extract_signal(audio: dict[str, Path]) -> None:
    signal = _read(audio["long"])
    for spec in ("mfcc_chroma_mel", "mfcc_stats", {"name": "mfcc_sequence", "offset": 0.7},
                 {"name": "mfcc_chroma_mel", "offset": 1.0, "duration": 2.0}):
        ext = get_extractor(spec)
        np.testing.assert_array_equal(ext.extract_file(audio["long"]),
                                      ext.extract_signal(signal, SR))


def test_extract_signal_resamples_and_mixes_down() -> None:
    ext = get_extractor("mfcc_chroma_mel")
    mono = _tone(2.0, 440.0, vibrato=False)
    at_22k = librosa.resample(mono, orig_sr=SR, target_sr=22050)
    stereo = np.stack([at_22k, at_22k], axis=1)
    chroma = ext.extract_signal(stereo, 22050)[40:52]
    assert int(np.argmax(chroma)) == 9  # still A


def test_mfcc_chroma_mel_reproduces_the_classic_recipe(audio: dict[str, Path]) -> None:
    y = _read(audio["tone"])
    stft = np.abs(librosa.stft(y))
    expected = np.concatenate([
        np.mean(librosa.feature.mfcc(y=y, sr=SR, n_mfcc=40).T, axis=0),
        np.mean(librosa.feature.chroma_stft(S=stft, sr=SR).T, axis=0),
        np.mean(librosa.feature.melspectrogram(y=y, sr=SR).T, axis=0),
    ])
    got = get_extractor("mfcc_chroma_mel").extract_file(audio["tone"])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_sequences_and_stats_match_librosa(audio: dict[str, Path]) -> None:
    y = _read(audio["tone"])  # exactly 3 s: no padding, no cropping
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=40)
    np.testing.assert_allclose(get_extractor("mfcc_sequence").extract_signal(y, SR), mfcc.T,
                               rtol=1e-4, atol=1e-3)
    mel = librosa.feature.melspectrogram(y=y, sr=SR, n_mels=64, fmin=50.0, fmax=7000.0)
    np.testing.assert_allclose(
        get_extractor("logmel_sequence", n_mels=64, fmin=50, fmax=7000).extract_signal(y, SR),
        librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None).T, rtol=1e-4, atol=1e-3)
    m20 = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20)
    rows = np.concatenate([m20, librosa.feature.delta(m20, mode="nearest")])
    np.testing.assert_allclose(get_extractor("mfcc_stats").extract_signal(y, SR),
                               np.concatenate([rows.mean(1), rows.std(1)]), rtol=1e-4, atol=1e-3)


def test_chroma_of_a4_peaks_at_a(audio: dict[str, Path]) -> None:
    chroma = get_extractor("mfcc_chroma_mel").extract_file(audio["a4"])[40:52]
    assert int(np.argmax(chroma)) == 9  # C, C#, D, D#, E, F, F#, G, G#, A


def test_logmel_of_louder_copy_is_larger() -> None:
    ext = get_extractor("logmel_sequence", n_mels=64)
    quiet = _tone(3.0, amp=0.05)
    quiet_db = ext.extract_signal(quiet, SR)
    loud_db = ext.extract_signal(4 * quiet, SR)
    assert np.mean(loud_db - quiet_db) == pytest.approx(20 * np.log10(4), abs=0.5)


def test_egemaps_pitch_of_a_220_hz_tone(audio: dict[str, Path]) -> None:
    ext = get_extractor("egemaps")
    names = ext.feature_names()
    assert len(names) == 88
    features = ext.extract_file(audio["tone"])
    f0 = features[names.index("F0semitoneFrom27.5Hz_sma3nz_amean")]
    assert f0 == pytest.approx(12 * np.log2(220 / 27.5), abs=1.0)  # 36 semitones


def test_sequence_pads_short_file_with_zero_frames(audio: dict[str, Path]) -> None:
    ext = get_extractor("mfcc_sequence")  # 3 s window
    features = ext.extract_file(audio["short"])  # 1 s of audio
    valid = 1 + SR // ext.hop_length  # frames of 1 s of audio
    assert features.shape == (94, 40)
    assert np.all(features[valid:] == 0)
    assert np.all(np.any(features[:valid] != 0, axis=1))


def test_sequence_crops_long_file(audio: dict[str, Path], tmp_path: Path) -> None:
    ext = get_extractor("logmel_sequence", n_mels=64)
    long = _read(audio["long"])
    head = _write(tmp_path / "head.wav", long[: 3 * SR])
    np.testing.assert_array_equal(ext.extract_file(audio["long"]), ext.extract_file(head))
    assert np.all(np.any(ext.extract_file(audio["long"]) != 0, axis=1))  # no padding


def test_offset_shifts_content(audio: dict[str, Path], tmp_path: Path) -> None:
    long = _read(audio["long"])
    shifted = get_extractor("mfcc_sequence", offset=1.0).extract_file(audio["long"])
    tail = _write(tmp_path / "tail.wav", long[SR:])
    unshifted = get_extractor("mfcc_sequence")
    np.testing.assert_array_equal(shifted, unshifted.extract_file(tail))
    assert not np.allclose(shifted, unshifted.extract_file(audio["long"]))


def test_offset_past_the_end(audio: dict[str, Path]) -> None:
    ext = get_extractor("mfcc_sequence", offset=10.0)
    with pytest.raises(AudioError, match=r"tone\.wav: offset 10 s is past the end"):
        ext.extract_file(audio["tone"])
    with pytest.raises(AudioError, match="offset 10 s"):
        ext.extract_signal(_tone(1.0), SR)


def test_functional_duration_limits_the_window(audio: dict[str, Path]) -> None:
    long = _read(audio["long"])
    ext = get_extractor("mfcc_stats", duration=1.0)
    np.testing.assert_array_equal(
        ext.extract_file(audio["long"]), get_extractor("mfcc_stats").extract_signal(long[:SR], SR)
    )


# ---------------------------------------------------------------------- batch and cache
def test_extract_many_reports_bad_files_and_continues(audio: dict[str, Path]) -> None:
    paths = [audio["tone"], audio["empty"], audio["text"], audio["short"], audio["missing"],
             audio["silent"], audio["noise"]]
    res = extract_many(paths, "mfcc_chroma_mel", n_jobs=1, progress=False)
    assert isinstance(res, ExtractionResult)
    assert res.ok.tolist() == [True, False, False, True, False, False, True]
    assert res.features.shape == (3, 180)
    ext = get_extractor("mfcc_chroma_mel")
    np.testing.assert_array_equal(res.features[1], ext.extract_file(audio["short"]))
    assert [p for p, _ in res.failures] == [str(paths[i]) for i in (1, 2, 4, 5)]
    for path, reason in res.failures:
        assert reason.startswith(path + ": ") and "\n" not in reason
    reasons = [r for _, r in res.failures]
    assert "empty file" in reasons[0]
    assert "not a readable audio file" in reasons[1]
    assert "file not found" in reasons[2]
    assert "silent" in reasons[3]
    assert res.ok_paths == [str(paths[i]) for i in (0, 3, 6)]
    assert res.seconds > 0


def test_unexpected_exception_becomes_one_line_failure(
    audio: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    original = MfccChromaMel._compute

    def flaky(ext: MfccChromaMel, signal: np.ndarray) -> np.ndarray:
        if signal.size < 2 * SR:
            raise RuntimeError("boom\n  second line")
        return original(ext, signal)

    monkeypatch.setattr(MfccChromaMel, "_compute", flaky)
    res = extract_many([audio["short"], audio["tone"]], "mfcc_chroma_mel", n_jobs=1,
                       progress=False)
    assert res.ok.tolist() == [False, True]
    reason = f"{audio['short']}: RuntimeError: boom second line"
    assert res.failures == [(str(audio["short"]), reason)]


def test_extract_many_of_nothing() -> None:
    res = extract_many([], "mfcc_sequence", n_jobs=1, progress=False)
    assert res.features.shape == (0, 94, 40) and res.ok.shape == (0,) and res.failures == []


def test_cache_hit_does_not_recompute(
    audio: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = [audio["tone"], audio["short"], audio["empty"]]
    with monkeypatch.context() as patch:
        counter = _CountCalls(patch, MfccChromaMel)
        first = extract_many(paths, "mfcc_chroma_mel", cache_dir=tmp_path, n_jobs=1,
                             progress=False)
    assert counter.calls == 2 and first.n_cached == 0
    _CountCalls(monkeypatch, MfccChromaMel, forbid=True)
    second = extract_many(paths, "mfcc_chroma_mel", cache_dir=tmp_path, n_jobs=1,
                          progress=False)
    assert second.n_cached == 2
    assert second.ok.tolist() == first.ok.tolist() == [True, True, False]
    np.testing.assert_array_equal(second.features, first.features)
    assert process_file(audio["tone"], "mfcc_chroma_mel", tmp_path).shape == (180,)


def test_cache_layout_and_separate_entries_per_params(
    audio: dict[str, Path], tmp_path: Path
) -> None:
    a = get_extractor("logmel_sequence", n_mels=32)
    b = get_extractor("logmel_sequence", n_mels=64)
    for ext in (a, b):
        extract_many([audio["tone"]], ext, cache_dir=tmp_path, n_jobs=1, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([a.key(), b.key()])
    for ext in (a, b):
        folder = tmp_path / ext.key()
        assert json.loads((folder / "spec.json").read_text())["spec"] == ext.spec()
        key = file_key(audio["tone"])
        entry = folder / key[:2] / f"{key}.npy"
        assert [p for p in folder.rglob("*.npy")] == [entry]
        assert np.load(entry).shape == ext.output_shape


def test_changed_file_misses_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path / "clip.wav", _tone(1.0))
    cache_dir = tmp_path / "cache"
    counter = _CountCalls(monkeypatch, MfccChromaMel)
    before = extract_many([path], "mfcc_chroma_mel", cache_dir=cache_dir, n_jobs=1,
                          progress=False)
    old_key = file_key(path)
    stat = path.stat()
    _write(path, _tone(1.5, 330.0))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    assert file_key(path) != old_key
    after = extract_many([path], "mfcc_chroma_mel", cache_dir=cache_dir, n_jobs=1,
                         progress=False)
    assert counter.calls == 2 and after.n_cached == 0
    assert not np.allclose(before.features, after.features)


def test_writes_are_atomic_and_leave_no_temp_files(
    audio: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    extract_many([audio["tone"], audio["short"]], "mfcc_stats", cache_dir=tmp_path, n_jobs=1,
                 progress=False)
    names = [p.name for p in tmp_path.rglob("*") if p.is_file()]
    assert len(names) == 3 and not [n for n in names if n.startswith(".")]

    def failing_save(fh: object, array: np.ndarray, allow_pickle: bool = False) -> None:
        fh.write(b"\x93NUMPY partial")  # type: ignore[attr-defined]
        raise OSError("No space left on device")

    monkeypatch.setattr(cache_module.np, "save", failing_save)
    other = tmp_path / "other"
    with pytest.warns(RuntimeWarning, match="could not write feature cache"):
        res = extract_many([audio["tone"]], "mfcc_stats", cache_dir=other, n_jobs=1,
                           progress=False)
    assert res.ok.all()  # the features survive a failed cache write
    assert [p.name for p in other.rglob("*") if p.is_file()] == ["spec.json"]


def test_corrupt_cache_entry_is_recomputed(
    audio: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ext = get_extractor("mfcc_chroma_mel")
    good = extract_many([audio["tone"]], ext, cache_dir=tmp_path, n_jobs=1, progress=False)
    key = file_key(audio["tone"])
    entry = FeatureCache(tmp_path).entry_path(ext, key)
    counter = _CountCalls(monkeypatch, MfccChromaMel)
    for damage in (b"garbage", entry.read_bytes()[:100], b""):
        entry.write_bytes(damage)
        res = extract_many([audio["tone"]], ext, cache_dir=tmp_path, n_jobs=1, progress=False)
        np.testing.assert_array_equal(res.features, good.features)
        np.testing.assert_array_equal(np.load(entry), good.features[0])
    assert counter.calls == 3
    np.save(entry, np.zeros(10, dtype=np.float32))  # wrong shape: also a miss
    assert FeatureCache(tmp_path).load(audio["tone"], ext) is None


def test_encoder_state_subset_is_served_from_the_all_states_entry(
    audio: dict[str, Path], tmp_path: Path
) -> None:
    """Some states of an encoder (alone, preprocessed or fused) are columns of the
    cached entry holding all of them; nothing is extracted."""
    cache = FeatureCache(tmp_path)
    tiny = {"name": "whisper_encoder", "layers": "all"}
    base = {**tiny, "model": "base"}
    loud = {"name": "preprocessed", "loudness_lufs": -23.0}
    rng = np.random.default_rng(0)
    every = {name: rng.normal(size=get_extractor(spec).output_shape).astype(np.float32)
             for name, spec in [("tiny", tiny), ("base", base)]}
    for name, spec in [("tiny", tiny), ("base", base)]:
        cache.save(audio["tone"], get_extractor({**loud, "features": spec}), every[name])
    blocks = {name: every[name].reshape(-1, 384 if name == "tiny" else 512)
              for name in every}
    some = get_extractor({**loud, "features": {**tiny, "layers": [3, 1]}})
    np.testing.assert_array_equal(cache.load(audio["tone"], some),
                                  blocks["tiny"][[3, 1]].ravel())
    fused = get_extractor({"name": "fused", "parts": [
        {**loud, "features": {**tiny, "layers": [2]}}, {**loud, "features": base}]})
    assert cache.load(audio["tone"], fused) is None  # no fused entry holds it yet
    cache.save(audio["tone"], fused.cache_superset()[0],
               np.concatenate([every["tiny"], every["base"]]))
    np.testing.assert_array_equal(cache.load(audio["tone"], fused),
                                  np.concatenate([blocks["tiny"][2], every["base"]]))
    assert get_extractor(tiny).cache_superset() is None
    assert cache.load(audio["tone"], get_extractor({**tiny, "layers": [1]})) is None


def test_default_cache_dir(
    audio: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EMOVOX_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_cache_dir("default") == tmp_path / "home" / ".cache" / "emovox" / "features"
    assert resolve_cache_dir(None) is None
    monkeypatch.setenv("EMOVOX_CACHE", str(tmp_path / "env"))
    assert resolve_cache_dir("default") == tmp_path / "env"
    extract_many([audio["short"]], "mfcc_stats", cache_dir="default", n_jobs=1, progress=False)
    assert len(list((tmp_path / "env").rglob("*.npy"))) == 1


def test_progress_bar_is_shown(audio: dict[str, Path], capsys: pytest.CaptureFixture) -> None:
    extract_many([audio["short"]], "mfcc_stats", n_jobs=1)
    assert "mfcc_stats" in capsys.readouterr().err


def test_parallel_matches_inline(audio: dict[str, Path], tmp_path: Path) -> None:
    paths = [audio["tone"], audio["text"], audio["short"], audio["noise"]]
    inline = extract_many(paths, "mfcc_sequence", n_jobs=1, progress=False)
    parallel = extract_many(paths, "mfcc_sequence", cache_dir=tmp_path, n_jobs=2,
                            progress=False)
    assert parallel.ok.tolist() == inline.ok.tolist() == [True, False, True, True]
    assert parallel.failures == inline.failures
    np.testing.assert_allclose(parallel.features, inline.features, rtol=1e-5, atol=1e-4)
    assert len(list(tmp_path.rglob("*.npy"))) == 3  # written by the workers


def test_mfcc_frame_mean_is_the_published_216_frame_input(tmp_path):
    import soundfile as sf

    from emovox.features import get_extractor

    extractor = get_extractor("mfcc_frame_mean")
    assert extractor.output_shape == (216,)
    t = np.arange(int(3.5 * 22050)) / 22050
    signal = (0.3 * np.sin(2 * np.pi * 180 * t)).astype(np.float32)
    path = tmp_path / "tone.wav"
    sf.write(path, signal, 22050)
    features = extractor.extract_file(path)
    assert features.shape == (216,)
    frames = get_extractor("mfcc_sequence", n_mfcc=13, sample_rate=44100, offset=0.5,
                           duration=2.5).extract_file(path)
    assert np.allclose(features, frames.mean(axis=1), atol=1e-5)
