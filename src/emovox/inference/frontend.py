"""Whisper's front end, written once: its constants, its mel filters and its log-mel.

:func:`whisper_log_mel_numpy` is the NumPy implementation used by ONNX inference (no
torch); :func:`emovox.features.encoders.whisper_log_mel` is the torch one, built from
the same constants and filters, and a test holds the two equal.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Whisper's audio rate, STFT size and hop, mel bands and longest input.
SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
N_MELS = 80
MAX_MEL_FRAMES = 3000
#: Seconds per encoder frame: its first convolution keeps the 10 ms mel hop, the second
#: halves the frame rate.
ENCODER_FRAME_SECONDS = 2 * HOP_LENGTH / SAMPLE_RATE

_MEL_BANK: dict[str, Any] = {}


def mel_filters() -> np.ndarray:
    """Whisper's mel filters, float64, shape (80, 201).

    Whisper's ``mel_filters.npz`` was made with exactly this call (Slaney mel scale,
    Slaney area normalisation).
    """
    bank = _MEL_BANK.get("dense")
    if bank is None:
        import librosa

        bank = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS)
        bank = _MEL_BANK.setdefault("dense", bank.astype(np.float64))
    return bank


def _sparse_mel_filters() -> Any:
    # Sparse (391 non-zeros): a dense BLAS product of this small size is slowed down a
    # hundredfold by OpenBLAS threads when the cores are busy.
    bank = _MEL_BANK.get("sparse")
    if bank is None:
        from scipy import sparse

        bank = _MEL_BANK.setdefault("sparse", sparse.csr_array(mel_filters()))
    return bank


def whisper_log_mel_numpy(signal: np.ndarray) -> np.ndarray:
    """Whisper's log-mel spectrogram in NumPy, equal to ``encoders.whisper_log_mel``.

    Centred 400-sample periodic Hann frames (reflect padding of 200 samples), hop 160,
    power spectrum, 80 Slaney mel bands, ``log10(max(mel, 1e-10))``, floor at
    ``max - 8``, then ``(x + 4) / 4``; the last STFT frame is dropped, so ``n`` samples
    give ``n // 160`` frames. Computed in float64, returned as float32.

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono audio at 16 kHz, ``n > 200``.

    Returns
    -------
    np.ndarray, float32, shape (80, n // 160)

    Raises
    ------
    ValueError
        Too short a signal for the reflect padding.
    """
    audio = np.asarray(signal, dtype=np.float64).reshape(-1)
    if audio.size <= N_FFT // 2:
        raise ValueError(f"signal too short for Whisper's front end: {audio.size} samples")
    padded = np.pad(audio, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP_LENGTH][:-1]
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2  # (frames, 201)
    log_spec = np.log10(np.maximum(np.asarray(_sparse_mel_filters() @ power.T), 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def log_mel_spec() -> dict[str, Any]:
    """The log-mel recipe, spelled out for ``preprocessing.json`` of ONNX exports."""
    return {
        "sample_rate": SAMPLE_RATE,
        "n_fft": N_FFT,
        "hop_length": HOP_LENGTH,
        "window": "periodic Hann of n_fft samples (torch.hann_window(400))",
        "center": True,
        "pad_mode": "reflect (n_fft // 2 samples at each end)",
        "power": 2.0,
        "drop_last_frame": True,
        "n_mels": N_MELS,
        "mel_filters": "librosa.filters.mel(sr=16000, n_fft=400, n_mels=80): Slaney mel "
                       "scale, Slaney area normalisation (Whisper's mel_filters.npz)",
        "log": "log10(max(mel, 1e-10))",
        "floor": "x = max(x, max(x) - 8.0), max over the whole spectrogram",
        "scale": "(x + 4.0) / 4.0",
        "frames": "n_samples // 160 (no padding to 30 s)",
        "max_frames": MAX_MEL_FRAMES,
        "layout": "[1, n_mels, frames], float32",
        "reference_implementation": "emovox.inference.frontend.whisper_log_mel_numpy "
                                    "(= emovox.features.encoders.whisper_log_mel)",
    }
