"""Fuzz emovox.audio decoding with arbitrary bytes (atheris, coverage-guided).

Each input is written to a file and read with :func:`emovox.audio.audio_info`,
:func:`emovox.audio.load_audio`, :func:`emovox.audio.check_durations` and
:func:`emovox.audio.stream_mono` (blocks of a minute, as timelines read). The only
acceptable failure is an :class:`~emovox.errors.AudioError` with a one-line message
naming the file; any other exception (or a crash, or memory past ``-rss_limit_mb``)
is a finding. The first input byte also picks the read options (offset, duration,
duration limit), so those paths are fuzzed too.

Run (see fuzz/README.md)::

    .venv/bin/python fuzz/fuzz_decode.py -max_total_time=300 /tmp/fuzz-decode

An empty corpus folder is first filled with valid seed files in every container and
sample format soundfile writes, so mutations start from real headers.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris
import numpy as np
import soundfile as sf

# Only emovox: instrumenting torch and scikit-learn would take minutes and add noise.
with atheris.instrument_imports(include=["emovox"]):
    from emovox.audio import audio_info, check_durations, load_audio, stream_mono
    from emovox.errors import AudioError

#: (format, subtype) of the seed files: every container soundfile writes, common depths.
SEED_FORMATS = [
    ("WAV", "PCM_U8"), ("WAV", "PCM_16"), ("WAV", "PCM_24"), ("WAV", "PCM_32"),
    ("WAV", "FLOAT"), ("WAV", "DOUBLE"), ("WAV", "ULAW"), ("WAV", "IMA_ADPCM"),
    ("WAVEX", "PCM_16"), ("RF64", "PCM_16"), ("W64", "PCM_16"), ("AIFF", "PCM_16"),
    ("AIFF", "FLOAT"), ("AU", "PCM_16"), ("CAF", "PCM_16"), ("FLAC", "PCM_16"),
    ("FLAC", "PCM_24"), ("OGG", "VORBIS"), ("MP3", "MPEG_LAYER_III"), ("NIST", "PCM_16"),
    ("IRCAM", "PCM_16"), ("VOC", "PCM_16"), ("MAT5", "DOUBLE"), ("PAF", "PCM_16"),
    ("SVX", "PCM_16"), ("HTK", "PCM_16"), ("SDS", "PCM_16"), ("XI", "DPCM_16"),
]
#: Seconds per block of :func:`stream_mono`, as timelines read long recordings.
STREAM_SECONDS = 60.0
#: Blocks of a stream decoded per input (bounds the time of one input).
STREAM_BLOCKS = 8
#: Read options chosen by the first byte: (offset, duration, max_duration).
OPTIONS = [(0.0, None, None), (0.0, None, 600.0), (0.05, 0.2, None), (1.0, None, None),
           (0.0, 0.5, 1.0)]
WORK = Path(tempfile.mkdtemp(prefix="emovox-fuzz-decode-"))


def _branches(name: str, values: list[str]) -> Callable[[str], int]:
    """An instrumented function with one branch per value.

    libsndfile's C code is not instrumented, so without this every container looks
    like the same Python path and libFuzzer keeps a seed or two; a branch per format
    and encoding reached keeps one seed (and its mutations) per format.
    """
    source = f"def {name}(value):\n" + "".join(
        f"    if value == {value!r}:\n        return {i}\n" for i, value in enumerate(values))
    namespace: dict[str, Callable[[str], int]] = {}
    exec(compile(source + "    return -1\n", f"<{name}>", "exec"), namespace)
    return atheris.instrument_func(namespace[name])


reached_format = _branches("reached_format", sorted(sf.available_formats()))
reached_subtype = _branches("reached_subtype", sorted(sf.available_subtypes()))
TARGET = WORK / "input.wav"  # the extension never matters: content decides


def write_seeds(folder: Path) -> int:
    """Write one short tone per seed format into ``folder``; returns how many."""
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(4000) / 16000
    tone = 0.4 * np.sin(2 * np.pi * 220 * t)
    written = 0
    for channels in (1, 2):
        data = tone if channels == 1 else np.stack([tone, -tone], axis=1)
        for fmt, subtype in SEED_FORMATS:
            buffer = io.BytesIO()
            try:
                sf.write(buffer, data, 16000, format=fmt, subtype=subtype)
            except (sf.LibsndfileError, ValueError, TypeError, RuntimeError):
                continue  # a combination this libsndfile does not write
            # First byte: the read options (0: defaults); the file follows.
            seed = folder / f"{fmt}_{subtype}_{channels}ch"
            seed.write_bytes(b"\x00" + buffer.getvalue())
            written += 1
    return written


def check_message(error: AudioError) -> None:
    """An AudioError must name the file and fit on one line."""
    message = str(error)
    if str(TARGET) not in message or "\n" in message or "\r" in message:
        raise AssertionError(f"badly formed AudioError: {message!r}")


def stream(block_frames: int) -> None:
    """Decode the file as a timeline does: :func:`stream_mono` block by block."""
    try:
        for count, block in enumerate(stream_mono(TARGET, block_frames), start=1):
            if block.dtype != np.float32 or block.ndim != 1 or not block.size:
                raise AssertionError(f"stream_mono yielded {block.dtype} {block.shape}")
            if count >= STREAM_BLOCKS:
                break
    except AudioError as error:
        check_message(error)


def test_one_input(data: bytes) -> None:
    """Decode ``data``; anything but an AudioError is a finding."""
    offset, duration, max_duration = OPTIONS[data[0] % len(OPTIONS)] if data else OPTIONS[0]
    TARGET.write_bytes(data[1:])
    try:
        info = audio_info(TARGET)
        reached_format(info.format)
        reached_subtype(info.subtype)
    except AudioError as error:
        check_message(error)
    else:
        stream(max(1, round(STREAM_SECONDS * info.samplerate)))
    _, failures = check_durations([TARGET], 600.0)
    for _, reason in failures:
        if str(TARGET) not in reason or "\n" in reason:
            raise AssertionError(f"badly formed failure reason: {reason!r}")
    try:
        signal = load_audio(TARGET, offset=offset, duration=duration,
                            max_duration=max_duration)
    except AudioError as error:
        check_message(error)
        return
    if signal.dtype != np.float32 or signal.ndim != 1 or not np.all(np.isfinite(signal)):
        raise AssertionError(f"load_audio returned {signal.dtype} {signal.shape} "
                             "or non-finite samples")


def main() -> None:
    """Seed an empty corpus folder (first positional argument), then fuzz."""
    folders = [a for a in sys.argv[1:] if not a.startswith("-")]
    if folders and not any(Path(folders[0]).glob("*")):
        count = write_seeds(Path(folders[0]))
        print(f"wrote {count} seed files to {folders[0]}", file=sys.stderr)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
