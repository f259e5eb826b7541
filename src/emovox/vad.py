"""Voice activity detection: where in a recording someone speaks.

Two detectors share one frame grid (32 ms frames of the signal resampled to 16 kHz)
and one smoothing stage:

``"silero"``
    The Silero VAD network (package ``silero-vad``, MIT; its weights ship inside the
    wheel, so nothing is downloaded). It gives a speech probability per frame.
    Audio is handed to it as tensors decoded by soundfile: its own readers, which
    need torchaudio, are never used. The model is loaded once per process, on first
    use.
``"energy"``
    A fallback without dependencies, used when silero-vad is not installed. A frame
    is speech when its short-time level (dB re full scale, smoothed over 5 frames)
    rises ``margin_db`` above the local noise floor (the quietest smoothed level
    within ``floor_seconds / 2`` on either side, ignoring digitally silent frames)
    and above ``min_level_db``. It finds loud sounds, not speech as such: music,
    knocks and loud noise count as speech.

The per-frame scores go through the smoothing of silero-vad's
``get_speech_timestamps``: hysteresis (speech starts at ``threshold`` and ends
below ``neg_threshold``), pauses shorter than ``min_silence`` are closed, bursts
shorter than ``min_speech`` dropped, and segments padded by ``pad`` on each side.

:class:`VoiceActivityStream` runs this on audio fed in pieces. Each decision needs
only a bounded look-ahead, so the decisions for a long file fed in chunks are the
same as for the file in one piece, while memory holds one chunk of audio (plus a
few bytes per frame).

>>> import numpy as np
>>> from emovox.synth import synth_voice
>>> signal = np.concatenate([np.zeros(16000, "float32"), synth_voice(2.0)])
>>> speech_segments(signal, 16000, method="energy")
[(0.928, 3.0)]
"""

from __future__ import annotations

import importlib.util
import math
import threading
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import soxr
from scipy.ndimage import maximum_filter1d, minimum_filter1d, uniform_filter1d

#: Rate the detectors work at, in Hz.
VAD_SAMPLE_RATE = 16_000
#: Samples per frame at :data:`VAD_SAMPLE_RATE` (silero's window).
FRAME_SAMPLES = 512
#: Duration of one frame in seconds.
FRAME_SECONDS = FRAME_SAMPLES / VAD_SAMPLE_RATE
#: Detector names :func:`speech_segments` and :class:`VoiceActivityStream` accept.
VAD_METHODS = ("silero", "energy")

_SILERO_CONTEXT = 64  # samples of the previous frame silero prepends to each frame


@dataclass(frozen=True)
class VadOptions:
    """Parameters of the detectors and of the smoothing of their decisions.

    Parameters
    ----------
    threshold : float
        Frame score (0-1) at or above which speech starts.
    neg_threshold : float
        Score under which speech ends (hysteresis); ``threshold - 0.15`` when None.
    min_speech : float
        Speech bursts shorter than this many seconds are dropped.
    min_silence : float
        Pauses shorter than this many seconds inside speech are closed.
    pad : float
        Seconds added to each side of every speech segment.
    margin_db : float
        Energy detector: level above the local noise floor that counts as speech.
    min_level_db : float
        Energy detector: frames quieter than this (dB re full scale) are never speech.
    floor_seconds : float
        Energy detector: length of the centred window the noise floor is taken over.
    """

    threshold: float = 0.5
    neg_threshold: float | None = None
    min_speech: float = 0.25
    min_silence: float = 0.3
    pad: float = 0.1
    margin_db: float = 10.0
    min_level_db: float = -50.0
    floor_seconds: float = 4.0

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold!r}")
        if self.neg_threshold is not None and not 0.0 <= self.neg_threshold <= self.threshold:
            raise ValueError(
                f"neg_threshold must be in [0, threshold], got {self.neg_threshold!r}")
        for name in ("min_speech", "min_silence", "pad"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {value!r}")
        if not (math.isfinite(self.floor_seconds) and self.floor_seconds > 0):
            raise ValueError(f"floor_seconds must be > 0, got {self.floor_seconds!r}")

    @property
    def exit_threshold(self) -> float:
        """Score under which speech ends."""
        if self.neg_threshold is not None:
            return self.neg_threshold
        return max(self.threshold - 0.15, 0.01)


# ----------------------------------------------------------------------------- choice


def silero_available() -> bool:
    """Whether the ``silero-vad`` package can be imported."""
    return importlib.util.find_spec("silero_vad") is not None


def resolve_vad(method: str | None) -> str | None:
    """The detector to use for ``method``: ``"silero"`` falls back to ``"energy"``.

    Parameters
    ----------
    method : {"silero", "energy"} or None
        Requested detector; ``None`` means no detection (everything is speech).

    Returns
    -------
    str or None
        ``method``, or ``"energy"`` (with a warning) when ``"silero"`` was asked for
        and silero-vad is not installed.

    Raises
    ------
    ValueError
        Unknown name.
    """
    if method is None:
        return None
    if method not in VAD_METHODS:
        raise ValueError(f"unknown VAD {method!r}: use one of {', '.join(VAD_METHODS)} or None")
    if method == "silero" and not silero_available():
        warnings.warn("silero-vad is not installed: using the energy-based VAD instead "
                      "(pip install silero-vad)", stacklevel=2)
        return "energy"
    return method


# ----------------------------------------------------------------------------- silero


class _SileroNet:
    """The Silero VAD network, stepped with explicit state (one model, many streams).

    silero-vad's scripted model keeps its recurrent state inside the module, so two
    streams sharing it would mix their states. Its parts are used here instead: the
    short-time spectrum (an FFT of the windowed frames: half the time of the model's
    own DFT convolution, which also computes an unused phase) and the convolutional
    encoder run on all the frames of a piece at once, and the LSTM cell's weights drive
    a :class:`torch.nn.LSTM` over the sequence, with the state carried by the caller.
    This is checked against the packaged model's own frame-by-frame output when loaded;
    if the model's layout ever differs, the packaged model is stepped frame by frame
    instead (slower, same numbers).
    """

    _instance: _SileroNet | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        import torch

        threads = torch.get_num_threads()
        try:
            # silero_vad.model calls torch.set_num_threads(1) when imported; undo that
            # so the rest of the process keeps its thread count.
            from silero_vad import load_silero_vad

            with warnings.catch_warnings():  # its own use of deprecated loaders
                warnings.simplefilter("ignore", DeprecationWarning)
                self.model = load_silero_vad(onnx=False)
        finally:
            torch.set_num_threads(threads)
        self.model.eval()
        self.lock = threading.Lock()
        self.lstm: Any = None
        try:
            core = self.model._model
            cell = core.decoder.rnn
            lstm = torch.nn.LSTM(cell.weight_ih.shape[1], cell.weight_hh.shape[1])
            with torch.no_grad():
                lstm.weight_ih_l0.copy_(cell.weight_ih)
                lstm.weight_hh_l0.copy_(cell.weight_hh)
                lstm.bias_ih_l0.copy_(cell.bias_ih)
                lstm.bias_hh_l0.copy_(cell.bias_hh)
            stft = core.stft
            # Its DFT basis is the window times cosines / sines: row 0 is the window.
            self.window = stft.forward_basis_buffer[0, 0].clone()
            self.hop = int(stft.hop_length)
            self.padding = [int(n) for n in stft.padding.padding]
            self.core, self.head, self.lstm = core, core.decoder.decoder, lstm.eval()
            if not self._fast_path_matches():
                self.lstm = None
        except Exception:  # any layout change: step the packaged model instead
            self.lstm = None

    @classmethod
    def get(cls) -> _SileroNet:
        """The process-wide instance, loaded on first use."""
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def initial_state(self) -> Any:
        """State of a new stream."""
        return None

    def scores(self, frames: np.ndarray, context: np.ndarray, state: Any) -> tuple[
            np.ndarray, Any]:
        """Speech probability of each frame.

        Parameters
        ----------
        frames : np.ndarray, shape (n, 512), float32
            Consecutive frames at 16 kHz.
        context : np.ndarray, shape (64,)
            Last samples before ``frames[0]`` (zeros at the start of a stream).
        state : object
            Returned by the previous call for this stream (or :meth:`initial_state`).

        Returns
        -------
        probabilities : np.ndarray, shape (n,), float32
        state : object
        """
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny operations: threads cost more than they give
        try:
            with torch.inference_mode():
                if self.lstm is not None:
                    return self._fast(torch, frames, context, state)
                return self._stepwise(torch, frames, context, state)
        finally:
            torch.set_num_threads(threads)

    def _fast(self, torch: Any, frames: np.ndarray, context: np.ndarray,
              state: Any) -> tuple[np.ndarray, Any]:
        x = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        previous = torch.cat([torch.from_numpy(context[None].astype(np.float32)),
                              x[:-1, -_SILERO_CONTEXT:]])
        padded = torch.nn.functional.pad(torch.cat([previous, x], 1)[:, None], self.padding,
                                         mode="reflect")[:, 0]
        windows = padded.unfold(1, self.window.numel(), self.hop) * self.window
        spectrum = torch.fft.rfft(windows, dim=2).abs().transpose(1, 2)
        encoded = self.core.encoder(spectrum)
        hidden, state = self.lstm(encoded.squeeze(-1).unsqueeze(1), state)
        out = self.head(hidden.squeeze(1).unsqueeze(-1))
        return out.reshape(-1).numpy().astype(np.float32), state

    def _stepwise(self, torch: Any, frames: np.ndarray, context: np.ndarray,
                  state: Any) -> tuple[np.ndarray, Any]:
        with self.lock:  # the packaged model holds one stream's state at a time
            self.model.reset_states()
            if state is not None:
                self.model._state, self.model._context = state
                self.model._last_sr, self.model._last_batch_size = VAD_SAMPLE_RATE, 1
            out = np.empty(len(frames), dtype=np.float32)
            for i, frame in enumerate(frames):
                out[i] = self.model(torch.from_numpy(frame.copy()), VAD_SAMPLE_RATE).item()
            return out, (self.model._state, self.model._context)

    def _fast_path_matches(self) -> bool:
        import torch

        rng = np.random.default_rng(0)
        t = np.arange(40 * FRAME_SAMPLES) / VAD_SAMPLE_RATE
        probe = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 2 * t) > 0)
                 + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        frames = probe.reshape(-1, FRAME_SAMPLES)
        zeros = np.zeros(_SILERO_CONTEXT, np.float32)
        with torch.inference_mode():
            first, state = self._fast(torch, frames[:25], zeros, None)
            second, _ = self._fast(torch, frames[25:], frames[24, -_SILERO_CONTEXT:], state)
            reference, _ = self._stepwise(torch, frames, zeros, None)
        return bool(np.allclose(np.concatenate([first, second]), reference, atol=1e-4))


# ----------------------------------------------------------------------------- stream


class VoiceActivityStream:
    """Speech decisions for audio fed in consecutive pieces.

    Feed the samples in order with :meth:`feed`, then call :meth:`finish`. After each
    call, decisions are final up to :attr:`final_seconds` (all of the audio after
    :meth:`finish`), and equal to what the whole signal fed at once would give.

    Parameters
    ----------
    method : {"silero", "energy"}
        Detector (see the module documentation). Use :func:`resolve_vad` to fall back
        to ``"energy"`` when silero-vad is missing.
    sample_rate : int
        Rate of the fed samples in Hz; they are resampled to 16 kHz (streaming soxr).
    options : VadOptions, optional
        Detector and smoothing parameters.
    **overrides
        Fields of :class:`VadOptions` replacing those of ``options``.
    """

    def __init__(self, method: str, sample_rate: int, options: VadOptions | None = None,
                 **overrides: Any) -> None:
        if method not in VAD_METHODS:
            raise ValueError(f"unknown VAD {method!r}: use one of {', '.join(VAD_METHODS)}")
        if sample_rate <= 0:
            raise ValueError(f"invalid sample rate {sample_rate}")
        self.method = method
        self.sample_rate = int(sample_rate)
        self.options = replace(options or VadOptions(), **overrides)
        self._resampler = (None if self.sample_rate == VAD_SAMPLE_RATE else
                           soxr.ResampleStream(self.sample_rate, VAD_SAMPLE_RATE, 1,
                                               dtype="float32", quality="HQ"))
        self._pending = np.zeros(0, np.float32)  # 16 kHz samples short of a full frame
        self._raw: list[np.ndarray] = []  # per-frame raw values, one array per piece
        self._n_frames = 0
        self._finished = False
        self._mask = np.zeros(0, bool)
        self._final_frames = 0
        self._cumulative = np.zeros(1)
        self._net = _SileroNet.get() if method == "silero" else None
        self._state = self._net.initial_state() if self._net is not None else None
        self._context = np.zeros(_SILERO_CONTEXT, np.float32)
        self.fed_samples = 0

    # --------------------------------------------------------------- feeding
    @property
    def lookahead_frames(self) -> int:
        """Frames after a frame that its final decision depends on."""
        o = self.options
        frames = sum(_frames(s) for s in (o.min_silence, o.min_speech, o.pad)) + 1
        if self.method == "energy":
            frames += 2 * _SMOOTH_RADIUS + _frames(o.floor_seconds / 2)
        return frames

    def feed(self, samples: np.ndarray) -> None:
        """Add the next samples (mono, at :attr:`sample_rate`)."""
        if self._finished:
            raise RuntimeError("feed() after finish()")
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self.fed_samples += samples.size
        if self._resampler is not None:
            samples = self._resampler.resample_chunk(samples, last=False)
        self._add(samples, last=False)

    def finish(self) -> None:
        """Mark the end of the audio: every decision becomes final."""
        if self._finished:
            return
        tail = (self._resampler.resample_chunk(np.zeros(0, np.float32), last=True)
                if self._resampler is not None else np.zeros(0, np.float32))
        self._finished = True
        self._add(tail, last=True)

    def _add(self, samples: np.ndarray, last: bool) -> None:
        data = np.concatenate([self._pending, samples]) if self._pending.size else samples
        n = data.size // FRAME_SAMPLES
        if last and data.size % FRAME_SAMPLES:
            data = np.pad(data, (0, FRAME_SAMPLES - data.size % FRAME_SAMPLES))
            n += 1
        frames = data[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        self._pending = np.array(data[n * FRAME_SAMPLES:], dtype=np.float32)
        if n:
            self._raw.append(self._frame_values(frames))
            self._n_frames += n
        self._decide()

    def _frame_values(self, frames: np.ndarray) -> np.ndarray:
        if self._net is not None:
            values, self._state = self._net.scores(frames, self._context, self._state)
            self._context = frames[-1, -_SILERO_CONTEXT:].copy()
            return values
        power = np.mean(frames.astype(np.float64) ** 2, axis=1)
        return (10.0 * np.log10(power + 1e-12)).astype(np.float32)

    def _decide(self) -> None:
        raw = np.concatenate(self._raw) if self._raw else np.zeros(0, np.float32)
        self._raw = [raw]
        scores = _energy_scores(raw, self.options) if self.method == "energy" else raw
        self._mask = _smooth(scores, self.options)
        final = self._n_frames if self._finished else self._n_frames - self.lookahead_frames
        self._final_frames = max(self._final_frames, final, 0)
        self._cumulative = np.concatenate(
            [[0.0], np.cumsum(self._mask[: self._final_frames])]) * FRAME_SECONDS

    # --------------------------------------------------------------- results
    @property
    def final_seconds(self) -> float:
        """Time up to which the decisions are final (the whole audio once finished)."""
        if self._finished:
            return math.inf
        return self._final_frames * FRAME_SECONDS

    @property
    def duration(self) -> float:
        """Seconds of audio fed so far."""
        return self.fed_samples / self.sample_rate

    def speech_mask(self) -> np.ndarray:
        """Final decisions, one bool per 32 ms frame."""
        return self._mask[: self._final_frames].copy()

    def speech_seconds(self, start: float, end: float) -> float:
        """Seconds of speech within ``[start, end)``; ``end`` must be final."""
        if end > self.final_seconds + 1e-9:
            raise ValueError(f"decisions after {self.final_seconds:.3f} s are not final yet")
        mask = self._mask[: self._final_frames]
        return max(0.0, _integral(self._cumulative, mask, end)
                   - _integral(self._cumulative, mask, start))

    def segments(self) -> list[tuple[float, float]]:
        """Final speech segments ``(start, end)`` in seconds, clipped to the audio."""
        starts, ends = _runs(self._mask[: self._final_frames])
        limit = self.duration
        out = []
        for s, e in zip(starts, ends, strict=True):
            begin, stop = float(s * FRAME_SECONDS), float(min(e * FRAME_SECONDS, limit))
            if stop > begin:
                out.append((round(begin, 3), round(stop, 3)))
        return out


def speech_segments(signal: np.ndarray, sample_rate: int, method: str = "silero",
                    options: VadOptions | None = None, **overrides: Any) -> list[
                        tuple[float, float]]:
    """Speech segments of an in-memory signal.

    Parameters
    ----------
    signal : np.ndarray, shape (n,) or (n, channels)
        Audio samples (float, or integer PCM); channels are averaged.
    sample_rate : int
        Rate of ``signal`` in Hz.
    method : {"silero", "energy"}
        Detector; ``"silero"`` falls back to ``"energy"`` (with a warning) when
        silero-vad is not installed.
    options : VadOptions, optional
        Detector and smoothing parameters.
    **overrides
        Fields of :class:`VadOptions` replacing those of ``options``.

    Returns
    -------
    list of (float, float)
        ``(start, end)`` of each speech segment in seconds, in order.
    """
    from emovox.audio import check_signal

    x = check_signal(signal, sample_rate, "<signal>", min_duration=0.0)
    resolved = resolve_vad(method)
    assert resolved is not None
    return detect_speech([x], resolved, sample_rate, options, **overrides).segments()


def detect_speech(blocks: Iterable[np.ndarray], method: str, sample_rate: int,
                  options: VadOptions | None = None, **overrides: Any
                  ) -> VoiceActivityStream:
    """A detector that has heard all of a recording: every decision final.

    A first pass whose decisions later passes share (``feed=False`` in
    :func:`emovox.inference.windows.stream_windows`), as a conversation's diarization
    and emotion passes do.

    Parameters
    ----------
    blocks : iterable of np.ndarray
        Mono samples in order (:func:`emovox.audio.open_blocks`).
    method : {"silero", "energy"}
        Detector.
    sample_rate : int
        Rate of ``blocks`` in Hz.
    options : VadOptions, optional
        Detector and smoothing parameters.
    **overrides
        Fields of :class:`VadOptions` replacing those of ``options``.

    Returns
    -------
    VoiceActivityStream
        Finished (also when no samples came).
    """
    stream = VoiceActivityStream(method, sample_rate, options, **overrides)
    for block in blocks:
        stream.feed(block)
    stream.finish()
    return stream


# ----------------------------------------------------------------------------- helpers

_SMOOTH_RADIUS = 2  # energy detector: frames on each side of the level's moving average
_DIGITAL_SILENCE_DB = -90.0


def _frames(seconds: float) -> int:
    return math.ceil(seconds / FRAME_SECONDS - 1e-9)


def _energy_scores(level_db: np.ndarray, options: VadOptions) -> np.ndarray:
    """Speech scores in [0, 1] from frame levels: 0.5 at ``margin_db`` above the floor."""
    if level_db.size == 0:
        return level_db
    smooth = uniform_filter1d(level_db.astype(np.float64), 2 * _SMOOTH_RADIUS + 1,
                              mode="nearest")
    informative = np.where(level_db > _DIGITAL_SILENCE_DB, smooth, np.inf)
    floor = minimum_filter1d(informative, 2 * _frames(options.floor_seconds / 2) + 1,
                             mode="nearest")
    floor = np.minimum(floor, smooth)
    scores = np.clip(0.5 + (smooth - floor - options.margin_db) / 12.0, 0.0, 1.0)
    scores[smooth < options.min_level_db] = 0.0
    return scores.astype(np.float32)


def _smooth(scores: np.ndarray, options: VadOptions) -> np.ndarray:
    """Hysteresis, then close short pauses, drop short bursts, pad (bool per frame)."""
    n = scores.size
    if n == 0:
        return np.zeros(0, bool)
    code = np.where(scores >= options.threshold, 1,
                    np.where(scores < options.exit_threshold, 0, -1))
    last = np.maximum.accumulate(np.where(code >= 0, np.arange(n), -1))
    mask = np.where(last >= 0, code[np.maximum(last, 0)], 0).astype(bool)

    gap = _frames(options.min_silence)
    starts, ends = _runs(~mask)
    short = (starts > 0) & (ends < n) & (ends - starts < gap)  # pauses inside speech
    mask |= _cover(n, starts[short], ends[short])
    shortest = _frames(options.min_speech)
    starts, ends = _runs(mask)
    brief = ends - starts < shortest
    mask &= ~_cover(n, starts[brief], ends[brief])
    pad = _frames(options.pad)
    if pad:
        mask = maximum_filter1d(mask.astype(np.uint8), 2 * pad + 1, mode="constant") > 0
    return mask


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) indices of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def _cover(n: int, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Bool array of length ``n``, True inside the given runs."""
    delta = np.zeros(n + 1, np.int64)
    np.add.at(delta, starts, 1)
    np.add.at(delta, ends, -1)
    return np.cumsum(delta[:n]) > 0


def _integral(cumulative: np.ndarray, mask: np.ndarray, t: float) -> float:
    """Seconds of speech in ``[0, t)`` given per-frame decisions."""
    if t <= 0 or mask.size == 0:
        return 0.0
    position = t / FRAME_SECONDS
    k = min(int(position), mask.size)
    value = float(cumulative[k])
    if k < mask.size:
        value += float(mask[k]) * (position - k) * FRAME_SECONDS
    return value
