"""load_audio / check_signal: good audio of any common shape is read, bad input gets a
clear one-line AudioError naming the file.

Every file is synthesised in ``tmp_path``; no corpus audio is needed.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from emovox import audio
from emovox.audio import (
    DEFAULT_SAMPLE_RATE,
    audio_info,
    check_signal,
    load_audio,
    open_blocks,
    resample,
)
from emovox.errors import AudioError, EmovoxError

SR = DEFAULT_SAMPLE_RATE


def tone(freq: float = 440.0, seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    """A sine tone as float64 (soundfile converts to the file's subtype)."""
    t = np.arange(round(seconds * sr)) / sr
    return amp * np.sin(2 * np.pi * freq * t)


def write(path: Path, data: np.ndarray, sr: int = SR, **kwargs) -> Path:
    sf.write(path, data, sr, **kwargs)
    return path


def peak_frequency(signal: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(signal.size)))
    return float(np.fft.rfftfreq(signal.size, 1 / sr)[np.argmax(spectrum)])


def assert_clear_error(excinfo: pytest.ExceptionInfo, path: Path | str, *keywords: str) -> None:
    """The error names the file, fits on one line and says what is wrong."""
    error = excinfo.value
    message = str(error)
    assert isinstance(error, AudioError)
    assert isinstance(error, EmovoxError) and isinstance(error, ValueError)
    assert Path(path).name in message, message
    assert "\n" not in message and "\r" not in message, message
    assert message.count(str(path)) == 1, f"path repeated in: {message}"
    lowered = message.lower()
    assert any(k.lower() in lowered for k in keywords), f"none of {keywords} in: {message}"


def wav_bytes(data: np.ndarray, sr: int = SR, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, data, sr, format="WAV", subtype=subtype)
    return buffer.getvalue()


# --------------------------------------------------------------------------- bad files


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "empty")


def test_header_only_wav(tmp_path: Path) -> None:
    path = tmp_path / "header_only.wav"
    path.write_bytes(wav_bytes(tone())[:44])  # canonical PCM header, no sample data
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "no audio samples", "truncated")


def test_half_a_frame(tmp_path: Path) -> None:
    path = tmp_path / "half_frame.wav"
    stereo = np.stack([tone(), tone()], axis=1)
    path.write_bytes(wav_bytes(stereo)[: 44 + 3])  # a 16-bit stereo frame is 4 bytes
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "no audio samples", "truncated")


def test_header_cut_in_the_middle(tmp_path: Path) -> None:
    path = tmp_path / "cut_header.wav"
    path.write_bytes(wav_bytes(tone())[:20])
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "not a readable audio")


def test_truncated_data_keeps_what_is_there(tmp_path: Path) -> None:
    path = tmp_path / "truncated.wav"
    path.write_bytes(wav_bytes(tone(seconds=1.0))[: 44 + 2 * 8000])  # header says 1 s
    signal = load_audio(path)
    assert signal.size == 8000


def test_truncated_to_too_short(tmp_path: Path) -> None:
    path = tmp_path / "truncated_short.wav"
    path.write_bytes(wav_bytes(tone(seconds=1.0))[: 44 + 2 * 480])  # 30 ms left
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "too short")


def test_text_file_named_wav(tmp_path: Path) -> None:
    path = tmp_path / "x.wav"
    path.write_text("this is not audio\n" * 20)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "not a readable audio")


def test_random_bytes(tmp_path: Path) -> None:
    path = tmp_path / "noise.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "not a readable audio")


def test_audio_info_on_non_audio(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("hello")
    with pytest.raises(AudioError) as excinfo:
        audio_info(path)
    assert_clear_error(excinfo, path, "not a readable audio")


def test_silent_file(tmp_path: Path) -> None:
    path = write(tmp_path / "silent.wav", np.zeros(SR))
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "silent")


def test_too_short_file(tmp_path: Path) -> None:
    path = write(tmp_path / "short.wav", tone(seconds=0.02))
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "too short")
    # ...but a caller may lower the limit.
    assert load_audio(path, min_duration=0.01).size == 320


def test_nan_samples(tmp_path: Path) -> None:
    data = tone()
    data[1000:1010] = np.nan
    path = write(tmp_path / "nan.wav", data, subtype="FLOAT")
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "NaN")


def test_infinite_samples(tmp_path: Path) -> None:
    data = tone()
    data[5] = np.inf
    path = write(tmp_path / "inf.wav", data, subtype="DOUBLE")
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "infinite")


def test_missing_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "missing.wav"
    with pytest.raises(AudioError) as excinfo:
        load_audio(path)
    assert_clear_error(excinfo, path, "not found")


def test_folder_path(tmp_path: Path) -> None:
    folder = tmp_path / "clips.wav"
    folder.mkdir()
    with pytest.raises(AudioError) as excinfo:
        load_audio(folder)
    assert_clear_error(excinfo, folder, "folder")


def test_str_path_accepted(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", tone())
    assert load_audio(str(path)).shape == (SR,)


# --------------------------------------------------------------------------- good files


def test_mono_float32_at_default_rate(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", tone())
    signal = load_audio(path)
    assert signal.dtype == np.float32 and signal.ndim == 1 and signal.flags.c_contiguous
    assert signal.shape == (SR,)
    np.testing.assert_allclose(signal, tone(), atol=1e-4)


def test_stereo_is_averaged_to_mono(tmp_path: Path) -> None:
    left, right = tone(440, amp=0.6), tone(660, amp=0.2)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), subtype="FLOAT")
    signal = load_audio(path)
    assert signal.shape == (SR,)
    np.testing.assert_allclose(signal, (left + right) / 2, atol=1e-6)


# Offsets ride on a faint tone: an offset alone is silence (see the silence tests).
SOUND = tone(amp=0.01)


def test_constant_stereo_value(tmp_path: Path) -> None:
    data = np.column_stack([0.5 + SOUND, -0.1 + SOUND])
    path = write(tmp_path / "dc.wav", data, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.2 + SOUND, atol=1e-6)


def test_multichannel_is_averaged(tmp_path: Path) -> None:
    data = np.column_stack([v + SOUND for v in (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)])
    path = write(tmp_path / "six.wav", data, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), 0.35 + SOUND, atol=1e-6)


@pytest.mark.parametrize("file_sr", [8_000, 11_025, 22_050, 44_100, 48_000, 96_000])
def test_odd_sample_rates_are_resampled(tmp_path: Path, file_sr: int) -> None:
    path = write(
        tmp_path / f"tone_{file_sr}.wav", tone(1000.0, seconds=1.0, sr=file_sr), sr=file_sr
    )
    signal = load_audio(path)
    assert signal.dtype == np.float32
    assert abs(signal.size - SR) <= 1
    assert abs(peak_frequency(signal, SR) - 1000.0) <= 2.0
    # Resampling must not change the level of an in-band tone.
    rms = float(np.sqrt(np.mean(signal[800:-800] ** 2)))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_other_target_rate(tmp_path: Path) -> None:
    path = write(tmp_path / "tone.wav", tone(1000.0, sr=44_100), sr=44_100)
    signal = load_audio(path, sample_rate=22_050)
    assert abs(signal.size - 22_050) <= 1
    assert abs(peak_frequency(signal, 22_050) - 1000.0) <= 2.0


def test_resample_same_rate_is_identity() -> None:
    signal = tone().astype(np.float32)
    assert resample(signal, SR, SR) is signal


@pytest.mark.parametrize(
    ("fmt", "subtype", "atol"),
    [
        ("WAV", "PCM_U8", 1e-2),
        ("WAV", "PCM_16", 1e-4),
        ("WAV", "PCM_24", 1e-6),
        ("WAV", "PCM_32", 1e-6),
        ("WAV", "FLOAT", 1e-7),
        ("WAV", "DOUBLE", 1e-7),
        ("AIFF", "PCM_S8", 1e-2),
        ("FLAC", "PCM_S8", 1e-2),
        ("FLAC", "PCM_16", 1e-4),
        ("FLAC", "PCM_24", 1e-6),
    ],
)
def test_bit_depths(tmp_path: Path, fmt: str, subtype: str, atol: float) -> None:
    if subtype not in sf.available_subtypes(fmt):
        pytest.skip(f"libsndfile cannot write {fmt}/{subtype}")
    path = write(tmp_path / f"tone_{subtype}.{fmt.lower()}", tone(), format=fmt, subtype=subtype)
    signal = load_audio(path)
    assert signal.dtype == np.float32 and signal.shape == (SR,)
    np.testing.assert_allclose(signal, tone(), atol=atol)


def test_unsigned_8_bit_is_centred(tmp_path: Path) -> None:
    """8-bit WAV is unsigned; its midpoint (128) must decode to 0, not 0.5."""
    path = write(tmp_path / "dc_u8.wav", 0.25 + 10 * SOUND, subtype="PCM_U8")
    np.testing.assert_allclose(load_audio(path), 0.25 + 10 * SOUND, atol=1e-2)


def test_ogg_vorbis(tmp_path: Path) -> None:
    if "OGG" not in sf.available_formats():
        pytest.skip("libsndfile without OGG")
    path = write(tmp_path / "tone.ogg", tone(1000.0), format="OGG", subtype="VORBIS")
    signal = load_audio(path)
    assert abs(signal.size - SR) <= 1
    assert abs(peak_frequency(signal, SR) - 1000.0) <= 2.0


def test_ogg_opus_at_48k(tmp_path: Path) -> None:
    if "OPUS" not in sf.available_subtypes("OGG"):
        pytest.skip("libsndfile without Opus")
    path = write(
        tmp_path / "tone.opus", tone(1000.0, sr=48_000), sr=48_000, format="OGG", subtype="OPUS"
    )
    signal = load_audio(path)
    assert abs(signal.size - SR) <= 16
    assert abs(peak_frequency(signal, SR) - 1000.0) <= 2.0


@pytest.mark.parametrize("fmt", ["FLAC", "AIFF", "OGG"])
def test_wav_extension_with_other_content(tmp_path: Path, fmt: str) -> None:
    """The format comes from the bytes, not from the name."""
    path = write(tmp_path / f"really_{fmt.lower()}.wav", tone(1000.0), format=fmt)
    assert audio_info(path).format == fmt
    signal = load_audio(path)
    assert abs(signal.size - SR) <= 1
    assert abs(peak_frequency(signal, SR) - 1000.0) <= 2.0


def test_uppercase_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "LOUD.WAV", tone())
    assert load_audio(path).shape == (SR,)


# --------------------------------------------------------------------------- offset, duration


def ramp_file(tmp_path: Path, seconds: float = 2.0) -> tuple[Path, np.ndarray]:
    """A file whose every sample is distinct, to check which part was read."""
    data = np.linspace(-0.9, 0.9, int(seconds * SR))
    return write(tmp_path / "ramp.wav", data, subtype="FLOAT"), data


def test_offset_and_duration(tmp_path: Path) -> None:
    path, data = ramp_file(tmp_path)
    signal = load_audio(path, offset=0.5, duration=0.25)
    assert signal.size == 4000
    np.testing.assert_allclose(signal, data[8000:12000], atol=1e-6)


def test_offset_alone_reads_to_the_end(tmp_path: Path) -> None:
    path, data = ramp_file(tmp_path)
    signal = load_audio(path, offset=1.5)
    np.testing.assert_allclose(signal, data[24000:], atol=1e-6)


def test_duration_past_the_end_is_clipped(tmp_path: Path) -> None:
    path, data = ramp_file(tmp_path)
    signal = load_audio(path, offset=1.0, duration=10.0)
    np.testing.assert_allclose(signal, data[16000:], atol=1e-6)


def test_offset_and_duration_in_file_seconds_then_resampled(tmp_path: Path) -> None:
    path = write(tmp_path / "tone48k.wav", tone(1000.0, seconds=2.0, sr=48_000), sr=48_000)
    signal = load_audio(path, offset=0.5, duration=1.0)
    assert abs(signal.size - SR) <= 1


def test_window_too_short(tmp_path: Path) -> None:
    path, _ = ramp_file(tmp_path)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, offset=1.97)
    assert_clear_error(excinfo, path, "too short")


def test_offset_past_the_end(tmp_path: Path) -> None:
    path, _ = ramp_file(tmp_path)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, offset=5.0)
    assert_clear_error(excinfo, path, "past the end")


@pytest.mark.parametrize(
    ("offset", "duration"), [(-0.5, None), (float("nan"), None), (0.0, 0.0), (0.0, -1.0)]
)
def test_invalid_offset_or_duration(tmp_path: Path, offset: float, duration: float | None):
    path, _ = ramp_file(tmp_path)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, offset=offset, duration=duration)
    assert_clear_error(excinfo, path, "invalid offset", "invalid duration")


def test_max_duration_refused_from_header(tmp_path: Path, monkeypatch) -> None:
    """A long file is refused from its header, without decoding any sample."""
    path = write(
        tmp_path / "long.wav", np.zeros(60 * 8000, dtype=np.int16), sr=8000, subtype="PCM_U8"
    )  # 60 s, header-only check

    def no_decoding(*args, **kwargs):
        raise AssertionError("load_audio decoded a file it should refuse from its header")

    monkeypatch.setattr(audio.sf, "read", no_decoding)
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, max_duration=30.0)
    assert_clear_error(excinfo, path, "too long")
    assert "60.0 s" in str(excinfo.value) and "30 s" in str(excinfo.value)


def test_max_duration_allows_shorter(tmp_path: Path) -> None:
    path = write(tmp_path / "ok.wav", tone(seconds=2.0))
    assert load_audio(path, max_duration=2.5).size == 2 * SR


# --------------------------------------------------------------------------- check_signal


def test_check_signal_float_passthrough() -> None:
    data = tone().astype(np.float32)
    out = check_signal(data, SR)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data)


def test_check_signal_accepts_lists_and_float64() -> None:
    out = check_signal(list(tone(seconds=0.2)), SR)
    assert out.dtype == np.float32 and out.shape == (3200,)


def test_check_signal_scales_int16() -> None:
    data = np.full(SR, 16384, dtype=np.int16)
    data[0] = -32768
    out = check_signal(data, SR)
    assert out.dtype == np.float32
    assert out[1] == pytest.approx(0.5)
    assert out[0] == pytest.approx(-1.0)


def test_check_signal_scales_int32() -> None:
    data = np.full(SR, 2**30, dtype=np.int32)
    data[::2] = -(2**29)
    out = check_signal(data, SR)
    np.testing.assert_allclose(out[1::2], 0.5)
    np.testing.assert_allclose(out[::2], -0.25)


def test_check_signal_centres_uint8() -> None:
    data = np.full(SR, 128, dtype=np.uint8)
    data[::2] = 192
    out = check_signal(data, SR)
    np.testing.assert_allclose(out[1::2], 0.0, atol=1e-7)
    np.testing.assert_allclose(out[::2], 0.5, atol=1e-2)


def test_check_signal_averages_channels_last() -> None:
    data = np.column_stack([0.4 + SOUND, np.zeros(SR)])
    np.testing.assert_allclose(check_signal(data, SR), 0.2 + SOUND / 2, atol=1e-6)


def test_check_signal_names_source() -> None:
    with pytest.raises(AudioError) as excinfo:
        check_signal(np.zeros(SR), SR, source="clip_07.wav")
    assert_clear_error(excinfo, "clip_07.wav", "silent")


@pytest.mark.parametrize(
    ("data", "keyword"),
    [
        (np.zeros((10, 10, 10)), "3-D"),
        (np.float32(0.5), "0-D"),
        (np.zeros((SR, 0)), "no audio channels"),
        (np.zeros(0), "no audio samples"),
        (np.stack([tone(), tone()]), "channels-first"),
        (tone() > 0, "unsupported sample type"),
        (np.array(["a"] * SR), "unsupported sample type"),
        (tone().astype(np.complex64), "unsupported sample type"),
        (np.zeros(SR), "silent"),
        (np.full(SR, 1e-5), "silent"),
        (np.full(SR, 0.3), "silent"),  # a DC offset is no sound, however large
        (np.full((SR, 2), -0.9), "silent"),
        (np.full(SR, 200, dtype=np.uint8), "silent"),
        (0.3 + tone(amp=1e-5), "silent"),  # -100 dBFS under the offset
        (np.linspace(0.0, 1e-3, SR), "silent"),  # a slow drift, no sound
        (tone(seconds=0.05), "too short"),
        (np.r_[tone(), np.nan], "NaN"),
        (np.r_[tone(), -np.inf], "infinite"),
        (np.r_[tone(), 1e300], "infinite"),  # overflows float32
    ],
)
def test_check_signal_refuses(data: np.ndarray, keyword: str) -> None:
    with pytest.raises(AudioError) as excinfo:
        check_signal(data, SR, source="mem.wav")
    assert_clear_error(excinfo, "mem.wav", keyword)


def test_check_signal_invalid_rate() -> None:
    with pytest.raises(AudioError) as excinfo:
        check_signal(tone(), 0, source="mem.wav")
    assert_clear_error(excinfo, "mem.wav", "sample rate")


def test_check_signal_max_duration() -> None:
    with pytest.raises(AudioError) as excinfo:
        check_signal(tone(seconds=3.0), SR, source="mem.wav", max_duration=2.0)
    assert_clear_error(excinfo, "mem.wav", "too long")


def test_check_signal_no_warnings() -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AudioError):
            check_signal(np.zeros((2, 0)), SR)
        with pytest.raises(AudioError):
            check_signal(np.r_[tone(), 1e300], SR)


# --------------------------------------------------------------------------- silence


def test_quiet_sounds_are_not_silence() -> None:
    """Energy without DC decides: a faint tone on an offset, a short burst in a long
    silence, and 16-bit noise of a few LSB above the threshold all pass."""
    check_signal(0.5 + tone(amp=1e-3), SR)
    burst = np.zeros(60 * SR)
    burst[SR:SR + SR // 5] = tone(seconds=0.2, amp=3e-3)  # -50 dBFS, 0.2 s in 60 s
    check_signal(burst, SR)
    noise = np.random.default_rng(0).integers(-8, 9, SR).astype(np.int16)
    check_signal(noise, SR)


def test_one_lsb_of_noise_is_silence() -> None:
    noise = np.random.default_rng(0).integers(-1, 2, SR).astype(np.int16)
    assert audio.is_silent(noise / 32768.0, SR)
    with pytest.raises(AudioError, match="silent"):
        check_signal(noise, SR)


@pytest.mark.corpora
@pytest.mark.parametrize("corpus", ["emodb/wav", "crema-d/AudioWAV",
                                    "ravdess/Audio_Speech_Actors_01-24"])
def test_real_speech_at_minus_50_dbfs_is_not_silence(corpus: str, tmp_path: Path) -> None:
    """Corpus speech written as a 16-bit file peaking at -50 dBFS, with a DC offset, is
    read as speech (the corpus files are read, never copied)."""
    from conftest import real_corpus

    files = sorted(p for p in real_corpus(corpus).rglob("*") if p.is_file())[:: 97][:4]
    for source in files:
        speech = load_audio(source)
        quiet = speech / np.max(np.abs(speech)) * 10 ** (-50 / 20) + 0.01
        path = write(tmp_path / f"quiet_{source.stem}.wav", quiet, subtype="PCM_16")
        assert load_audio(path).size == speech.size


def test_a_header_claiming_billions_of_frames_is_read_as_what_is_there(tmp_path: Path) -> None:
    """Found by fuzz/fuzz_decode.py: an MP3 whose Xing header claims 2^32-1 MPEG frames
    made soundfile allocate ~10^12 samples (MemoryError). Decoding in blocks reads the
    data really there; a duration limit refuses it from the header."""
    if "MP3" not in sf.available_formats():
        pytest.skip("libsndfile without MP3")
    buffer = io.BytesIO()
    sf.write(buffer, tone(), SR, format="MP3", subtype="MPEG_LAYER_III")
    data = bytearray(buffer.getvalue())
    xing = data.find(b"Xing")
    assert xing >= 0 and data[xing + 7] & 1  # the frame-count field is present
    data[xing + 8:xing + 12] = b"\xff\xff\xff\xff"
    path = tmp_path / "lying.mp3"
    path.write_bytes(bytes(data))
    assert audio_info(path).frames > 10**9
    signal = load_audio(path)
    assert abs(signal.size - SR) < SR // 4  # about the 1 s really encoded
    with pytest.raises(AudioError) as excinfo:
        load_audio(path, max_duration=600)
    assert_clear_error(excinfo, path, "too long")


def test_decoding_stops_past_the_duration_limit(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Decoding goes block by block and refuses a stream as soon as it passes the limit
    (for a stream longer than its header says)."""
    path = write(tmp_path / "long.wav", tone(seconds=3.0))
    monkeypatch.setattr(audio, "_READ_BLOCK_SAMPLES", 4000)
    with pytest.raises(AudioError) as excinfo:
        audio._read_blocks(path, 0, 3 * SR, limit=2 * SR)
    assert_clear_error(excinfo, path, "too long")
    signal, rate = audio._read_blocks(path, 0, 3 * SR, limit=None)
    assert signal.shape == (3 * SR, 1) and rate == SR


def test_open_blocks_shows_progress_on_slow_reads_and_yields_the_same(capsys):
    """A bar over seconds of audio appears once reading takes a second; the blocks
    are those read without it."""
    import time

    signal = np.random.default_rng(0).normal(0, 0.1, 16_000 * 8).astype(np.float32)
    _, _, plain = open_blocks(signal, 16_000, 2.0)
    _, rate, tracked = open_blocks(signal, 16_000, 2.0, progress="who speaks when")
    got = []
    for block in tracked:
        got.append(block)
        time.sleep(0.4)  # a slow pass: four blocks, 1.6 s
    assert rate == 16_000
    assert all(np.array_equal(a, b) for a, b in zip(plain, got, strict=True))
    err = capsys.readouterr().err
    assert "who speaks when" in err and "s of audio" in err
