"""Reading audio: any format soundfile decodes, to mono float32 at one rate, with checks.

Every problem becomes an :class:`~emovox.errors.AudioError` whose message names the
file and says what is wrong in one line, so a batch can report it and move on.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from emovox.errors import AudioError

#: Sample rate every feature extractor and model in emovox works at.
DEFAULT_SAMPLE_RATE = 16_000
#: Shortest utterance worth classifying, in seconds.
MIN_DURATION = 0.1
#: Level (dBFS, RMS after removing the DC offset) that some frame of a signal must
#: exceed for it not to count as silence. Measured on 30 EmoDB, CREMA-D and RAVDESS files
#: as 16-bit with a DC offset: scaled to a -50 dBFS peak their loudest frame is at
#: -62 dBFS or above (all pass; at a -70 dBFS peak they still do), while +-1 LSB of
#: 16-bit noise is -92 dBFS.
SILENCE_RMS_DB = -85.0
#: Frame length (s) of the silence check: a short sound in a long silent file counts.
SILENCE_FRAME_SECONDS = 0.05


def check_signal(
    signal: np.ndarray,
    sample_rate: int,
    source: str | Path = "<signal>",
    min_duration: float = MIN_DURATION,
    max_duration: float | None = None,
) -> np.ndarray:
    """Validate a decoded signal and return it as contiguous mono float32.

    Parameters
    ----------
    signal : np.ndarray, shape (n,) or (n, channels)
        Samples; multi-channel audio is averaged to mono.
    sample_rate : int
        Sampling rate of ``signal`` in Hz.
    source : str or Path
        Name used in error messages.
    min_duration, max_duration : float
        Allowed duration range in seconds (``max_duration=None``: no limit).

    Returns
    -------
    np.ndarray, shape (n,), float32

    Raises
    ------
    AudioError
        Empty, too short, too long, non-finite or silent signals.
    """
    signal = to_mono_float32(signal, source)
    if sample_rate <= 0:
        raise AudioError(source, f"invalid sample rate {sample_rate}")
    if signal.size == 0:
        raise AudioError(source, "no audio samples (empty or truncated file)")
    duration = signal.size / sample_rate
    if duration < min_duration:
        raise AudioError(
            source, f"too short: {duration:.3f} s, need at least {min_duration:g} s of audio"
        )
    if max_duration is not None and duration > max_duration:
        raise AudioError(
            source,
            f"too long: {duration:.1f} s, limit is {max_duration:g} s "
            "(split it, or use a timeline for long recordings)",
        )
    if not np.all(np.isfinite(signal)):
        raise AudioError(source, "contains NaN or infinite samples")
    if is_silent(signal, sample_rate):
        raise AudioError(source, f"silent: no sound above {SILENCE_RMS_DB:g} dBFS (RMS "
                                 "without DC offset); a constant signal carries no speech")
    return signal


def to_mono_float32(signal: np.ndarray, source: str | Path = "<signal>") -> np.ndarray:
    """Samples as contiguous mono float32: integer PCM scaled to [-1, 1), channels
    averaged. The one conversion of decoded blocks and arrays (no other checks).

    Parameters
    ----------
    signal : np.ndarray, shape (n,) or (n, channels)
        Samples of any numeric type.
    source : str or Path
        Name used in error messages.

    Raises
    ------
    AudioError
        Not 1-D or 2-D, no channels, channels-first, or not numeric.
    """
    signal = np.asarray(signal)
    if signal.ndim not in (1, 2):
        raise AudioError(source, f"expected 1-D or 2-D audio, got {signal.ndim}-D array")
    if not np.issubdtype(signal.dtype, np.floating):
        # Integer PCM arrays: scale to [-1, 1) by their type's range; unsigned PCM
        # (e.g. 8-bit WAV) is centred on the middle of its range, not on 0.
        if np.issubdtype(signal.dtype, np.unsignedinteger):
            half = float(np.iinfo(signal.dtype).max) / 2.0 + 0.5
            signal = (signal.astype(np.float64) - half) / half
        elif np.issubdtype(signal.dtype, np.integer):
            signal = signal.astype(np.float64) / float(np.iinfo(signal.dtype).max + 1)
        else:
            raise AudioError(source, f"unsupported sample type {signal.dtype}")
    if signal.ndim == 2:
        frames, channels = signal.shape
        if channels == 0:
            raise AudioError(source, f"no audio channels (array shape {signal.shape})")
        if 0 < frames < channels:
            raise AudioError(
                source,
                f"array shape {signal.shape} looks channels-first; "
                "expected (samples, channels), transpose it",
            )
        signal = signal.mean(axis=1) if channels > 1 else signal[:, 0]
    with np.errstate(over="ignore"):  # huge values become inf, refused below
        signal = np.ascontiguousarray(signal, dtype=np.float32)
    return signal


def is_silent(signal: np.ndarray, sample_rate: int,
              threshold_db: float = SILENCE_RMS_DB) -> bool:
    """Whether no frame of a mono signal has energy above ``threshold_db``.

    Each frame of :data:`SILENCE_FRAME_SECONDS` has its mean (the DC offset, or a slow
    drift) removed first, so a constant or offset-only signal is silent however large
    its samples, while quiet speech is not. Judging frames rather than the whole
    signal keeps a short utterance in a long quiet recording from being averaged away.

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Finite mono samples, full scale 1.0.
    sample_rate : int
        Rate in Hz (sets the frame length).
    threshold_db : float
        Frame RMS, in dB relative to full scale, that counts as sound.

    Returns
    -------
    bool
    """
    x = np.asarray(signal).reshape(-1)
    frame = max(2, round(SILENCE_FRAME_SECONDS * sample_rate))
    # Mean square rather than RMS: no square root per frame.
    limit = 10.0 ** (threshold_db / 10.0)
    # Blocks of whole frames: memory stays small for long files, and real audio is
    # usually found to be sound in the first block.
    block = frame * max(1, 2**20 // frame)
    for start in range(0, x.size, block):
        part = x[start:start + block].astype(np.float64)
        whole = part.size - part.size % frame
        frames = [part[:whole].reshape(-1, frame)] if whole else []
        if whole < part.size:  # the last, shorter frame
            frames.append(part[whole:][None])
        for rows in frames:
            residual = rows - rows.mean(axis=1, keepdims=True)
            if float(np.max(np.mean(residual**2, axis=1))) > limit:
                return False
    return True


def resample(signal: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    """Resample a mono signal with soxr (high quality); a no-op when the rates match."""
    if orig_sr == target_sr:
        return signal
    return soxr.resample(signal, orig_sr, target_sr, quality="HQ").astype(np.float32)


def audio_info(path: str | Path) -> sf._SoundFileInfo:
    """Return soundfile's header information, turning decoder errors into AudioError."""
    path = Path(path)
    _check_file(path)
    try:
        return sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, TypeError) as error:
        raise AudioError(path, f"not a readable audio file ({_short(error)})") from None


def load_audio(
    path: str | Path,
    sample_rate: int = DEFAULT_SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
    min_duration: float = MIN_DURATION,
    max_duration: float | None = None,
) -> np.ndarray:
    """Read an audio file as mono float32 at ``sample_rate``.

    The format is detected from the content, not the extension, so a ``.wav`` that
    is really AIFF or FLAC is read correctly. Any bit depth soundfile supports
    (8/16/24/32-bit integer, float) is accepted.

    Parameters
    ----------
    path : str or Path
        Audio file.
    sample_rate : int
        Rate of the returned signal; the file is resampled with soxr if needed.
    offset : float
        Start reading this many seconds into the file.
    duration : float, optional
        Read at most this many seconds.
    min_duration, max_duration : float
        Allowed duration of the file (checked on the header before decoding when
        possible, so a huge file is refused without reading it).

    Returns
    -------
    np.ndarray, shape (n,), float32

    Raises
    ------
    AudioError
        With the path and the problem in a single line.
    """
    path = Path(path)
    if not (math.isfinite(offset) and offset >= 0):
        raise AudioError(path, f"invalid offset {offset!r} s: must be a number >= 0")
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise AudioError(path, f"invalid duration {duration!r} s: must be a number > 0")
    info = audio_info(path)
    if info.frames == 0 or info.samplerate <= 0:
        raise AudioError(path, "no audio samples (empty or truncated file)")
    total = info.frames / info.samplerate
    if max_duration is not None and total > max_duration:
        raise AudioError(
            path,
            f"too long: {total:.1f} s, limit is {max_duration:g} s "
            "(split it, or use a timeline for long recordings)",
        )
    start = round(offset * info.samplerate)
    if start >= info.frames:
        raise AudioError(path, f"offset {offset:g} s is past the end of the audio ({total:.3f} s)")
    stop = info.frames if duration is None else start + max(1, round(duration * info.samplerate))
    limit = None if max_duration is None else math.floor(max_duration * info.samplerate)
    try:
        signal, file_sr = _read_blocks(path, start, stop, limit)
    except (sf.LibsndfileError, RuntimeError, ValueError) as error:
        raise AudioError(path, f"cannot decode audio ({_short(error)})") from None
    signal = check_signal(signal, file_sr, path, min_duration=min_duration)
    return resample(signal, file_sr, sample_rate)


def stream_mono(path: str | Path, block_frames: int) -> Iterator[np.ndarray]:
    """Decode a file block by block as mono float32, for recordings of any length.

    Parameters
    ----------
    path : str or Path
        Audio file (its header was checked with :func:`audio_info`).
    block_frames : int
        Frames per block (the last block may be shorter).

    Yields
    ------
    np.ndarray, shape (n,), float32

    Raises
    ------
    AudioError
        Undecodable data, or NaN / infinite samples, naming the file.
    """
    try:
        with sf.SoundFile(str(path)) as handle:
            while len(block := handle.read(block_frames, dtype="float32", always_2d=True)):
                # Averaged here, not by to_mono_float32: a last block of fewer frames
                # than channels is not a channels-first array.
                mono = block.mean(axis=1) if block.shape[1] > 1 else block[:, 0]
                if not np.all(np.isfinite(mono)):
                    raise AudioError(path, "contains NaN or infinite samples")
                yield np.ascontiguousarray(mono, dtype=np.float32)
    except (sf.LibsndfileError, RuntimeError) as error:
        raise AudioError(path, f"cannot decode audio ({_short(error)})") from None


#: Most samples (frames x channels) decoded at a time by :func:`load_audio`.
_READ_BLOCK_SAMPLES = 1 << 22


def _read_blocks(path: Path, start: int, stop: int,
                 limit: int | None) -> tuple[np.ndarray, int]:
    """Decode frames ``[start, stop)`` block by block: ``(frames, channels)``, rate.

    A header's frame count is not trusted for memory: a damaged file (e.g. an MP3
    whose Xing header claims 9e9 frames, found by fuzzing) would have soundfile
    allocate all of them up front. Blocks stop at the real end of the data, and past
    ``limit`` decoded frames (a stream longer than its header says) with a "too long"
    AudioError.
    """
    blocks: list[np.ndarray] = []
    decoded = 0
    with sf.SoundFile(str(path)) as handle:
        if start:
            handle.seek(start)
        size = max(1, _READ_BLOCK_SAMPLES // max(1, handle.channels))
        while decoded < stop - start:
            wanted = min(size, stop - start - decoded)
            block = handle.read(wanted, dtype="float32", always_2d=True)
            blocks.append(block)
            decoded += len(block)
            if limit is not None and decoded > limit:
                raise AudioError(path, f"too long: the audio goes on past the limit of "
                                       f"{limit / handle.samplerate:g} s")
            if len(block) < wanted:  # the real end of the data
                break
        rate, channels = handle.samplerate, handle.channels
    if not blocks:
        return np.zeros((0, channels), dtype=np.float32), rate
    return np.concatenate(blocks), rate


def _check_file(path: Path) -> None:
    if not path.exists():
        raise AudioError(path, "file not found")
    if path.is_dir():
        raise AudioError(path, "is a folder, not an audio file")
    if path.stat().st_size == 0:
        raise AudioError(path, "empty file (0 bytes)")


def _short(error: Exception) -> str:
    """First line of an exception's text, without the path soundfile repeats."""
    # A LibsndfileError's str() is "Error opening '<path>': <reason>"; keep the reason.
    text = error.error_string if isinstance(error, sf.LibsndfileError) else str(error)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if text.startswith("Error opening"):
        text = text.split(": ", 1)[1] if ": " in text else ""
    return text.strip(" :") or type(error).__name__


def check_durations(
    paths: Iterable[str | Path], max_seconds: float
) -> tuple[dict[str, float], list[tuple[str, str]]]:
    """Read each file's header: durations of usable files, ``(path, reason)`` of the rest.

    A broken file, or one longer than ``max_seconds``, is refused here without being
    decoded, so a batch can report it and go on.

    Returns
    -------
    durations : dict
        Path -> seconds, for files that may be decoded.
    failures : list of (str, str)
        Path and a one-line reason (which names the file).
    """
    failures: list[tuple[str, str]] = []
    durations: dict[str, float] = {}
    for path in map(str, paths):
        try:
            duration = audio_info(path).duration
        except AudioError as error:
            failures.append((path, str(error)))
            continue
        if duration > max_seconds:
            failures.append((path, f"{path}: too long for a whole-file prediction "
                                   f"({duration:.0f} s, limit {max_seconds:.0f} s)"))
        else:
            durations[path] = duration
    return durations, failures


def open_blocks(source: str | os.PathLike[str] | np.ndarray, sample_rate: int | None,
                chunk_seconds: float, name: str | None = None, progress: str | None = None
                ) -> tuple[str, int, Iterator[np.ndarray]]:
    """A recording (a file, or samples in memory) as mono float32 blocks.

    Parameters
    ----------
    source : str, PathLike or np.ndarray
        An audio file, or samples of shape (n,) or (n, channels).
    sample_rate : int, optional
        Rate of an array ``source`` in Hz (required then).
    chunk_seconds : float
        Seconds per block.
    name : str, optional
        How errors and results name it (default: the path, or ``"<signal>"``).
    progress : str, optional
        Show a progress bar (seconds of audio read, on stderr) with this description,
        once the reading has taken a second.

    Returns
    -------
    (str, int, iterator of np.ndarray)
        The name, the rate in Hz and the blocks (files are decoded as they are read).

    Raises
    ------
    AudioError
        An unusable file (checked now) or non-finite samples (when reached).
    ValueError
        An array without a valid ``sample_rate``.
    """
    if isinstance(source, np.ndarray):
        if sample_rate is None or sample_rate <= 0:
            raise ValueError("sample_rate (Hz) is needed for an in-memory signal")
        label = name or "<signal>"
        mono = to_mono_float32(source, label)
        chunk = max(1, round(chunk_seconds * sample_rate))
        blocks = _array_blocks(mono, chunk, label)
        return label, int(sample_rate), _tracked(blocks, int(sample_rate),
                                                 len(mono) / sample_rate, progress)
    path = Path(source)
    info = audio_info(path)  # AudioError naming the file when it is unusable
    if info.samplerate <= 0:
        raise AudioError(path, f"invalid sample rate {info.samplerate}")
    chunk = max(1, round(chunk_seconds * info.samplerate))
    return name or str(source), int(info.samplerate), _tracked(
        stream_mono(path, chunk), int(info.samplerate), info.duration, progress)


def _tracked(blocks: Iterator[np.ndarray], sample_rate: int, seconds: float,
             description: str | None) -> Iterator[np.ndarray]:
    """``blocks``, with a progress bar over their seconds when ``description`` is set."""
    if description is None:
        return blocks

    def tracked() -> Iterator[np.ndarray]:
        from tqdm.auto import tqdm

        with tqdm(total=round(seconds, 1), unit="s", desc=description, delay=1.0,
                  leave=False, bar_format="{desc}: {percentage:3.0f}%|{bar}| "
                                          "{n:.0f}/{total:.0f} s of audio [{elapsed}<{remaining}]"
                  ) as bar:
            for block in blocks:
                yield block
                bar.update(min(len(block) / sample_rate, bar.total - bar.n))

    return tracked()


def _array_blocks(mono: np.ndarray, chunk: int, source: str) -> Iterator[np.ndarray]:
    for start in range(0, len(mono), chunk):
        block = mono[start:start + chunk]
        if not np.all(np.isfinite(block)):
            raise AudioError(source, "contains NaN or infinite samples")
        yield block
