"""Voice embeddings: who is speaking, as a vector (the GE2E speaker encoder).

The encoder is the GE2E model (a 3-layer LSTM over 40 mel bands, 256-dimensional
L2-normalised embeddings of 1.6 s of speech) whose weights ship as ``pretrained.pt``
in the PyPI package ``resemblyzer`` (Apache-2.0). Only the weights file is read: the
package's own Python code is never imported (it needs ``webrtcvad`` and an old
``scipy.ndimage`` path at import time), so the network and its mel front end are
written here, following the package's ``hparams.py`` and ``audio.py``.

Embeddings of the same voice have cosine similarity near 1; different voices lower.
:mod:`emovox.diarization` clusters them.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path

import numpy as np

from emovox.errors import ConfigError

#: Rate the encoder analyses, in Hz.
SAMPLE_RATE = 16_000
#: Mel analysis of the encoder: 25 ms windows every 10 ms, 40 bands (not log).
_N_FFT, _HOP, _N_MELS = 400, 160, 40
#: Frames of one embedding (1.6 s), the length the encoder was trained on.
PARTIAL_FRAMES = 160
#: SHA-256 of ``resemblyzer/pretrained.pt`` (version 0.1.4), checked before it loads.
GE2E_SHA256 = "39373b86598fa3da9fcddee6142382efe09777e8d37dc9c0561f41f0070f134e"
#: Loudness the encoder's training audio was raised to (dBFS, never lowered).
_TARGET_DBFS = -30.0

_lock = threading.Lock()
_shared: VoiceEncoder | None = None


def weights_path() -> Path:
    """Where the installed ``resemblyzer`` package keeps the GE2E weights.

    Found without importing the package (``find_spec`` of a top-level package does
    not run its code).

    Raises
    ------
    ConfigError
        ``resemblyzer`` is not installed, or its weights file is missing.
    """
    spec = importlib.util.find_spec("resemblyzer")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / "pretrained.pt"
        if path.is_file():
            return path
    raise ConfigError("speaker separation needs the GE2E weights of the `resemblyzer` "
                      "package: pip install resemblyzer==0.1.4")


class VoiceEncoder:
    """The GE2E speaker encoder on the CPU (PyTorch).

    Parameters
    ----------
    path : Path, optional
        A ``pretrained.pt`` checkpoint (default: :func:`weights_path`).
    threads : int, optional
        PyTorch intra-op threads while embedding (default: leave the setting alone).
    """

    def __init__(self, path: Path | None = None, threads: int | None = None) -> None:
        import torch

        if path is None:  # the packaged weights: pinned like the emotion encoder's
            from emovox.weights import verify_file

            path = weights_path()
            verify_file(path, GE2E_SHA256, "the GE2E speaker encoder of resemblyzer 0.1.4")
        # weights_only: tensors and plain containers, never a pickled callable.
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = state.get("model_state", state)
        self.lstm = torch.nn.LSTM(_N_MELS, 256, 3, batch_first=True)
        self.linear = torch.nn.Linear(256, 256)
        self.lstm.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("lstm.")})
        self.linear.load_state_dict({k[7:]: v for k, v in state.items()
                                     if k.startswith("linear.")})
        self.lstm.eval()
        self.threads = threads
        import librosa

        # The mel filter bank of librosa.feature.melspectrogram (power 2, Slaney).
        self._mel_basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_N_FFT, n_mels=_N_MELS
                                              ).astype(np.float32)

    def mel(self, signal: np.ndarray) -> np.ndarray:
        """Mel frames of a 16 kHz signal, shape (n_frames, 40), one every 10 ms."""
        import librosa

        signal = np.asarray(signal, dtype=np.float32)
        rms = float(np.sqrt(np.mean(signal.astype(np.float64) ** 2))) if signal.size else 0.0
        if rms > 0:  # raise quiet audio to the training loudness (never lower it)
            signal = signal * max(1.0, 10 ** ((_TARGET_DBFS - 20 * np.log10(rms)) / 20))
        power = np.abs(librosa.stft(signal, n_fft=_N_FFT, hop_length=_HOP)) ** 2
        return (self._mel_basis @ power).T.astype(np.float32)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Embeddings of equal-length stacks of mel frames.

        Parameters
        ----------
        frames : np.ndarray, shape (n, n_frames, 40)

        Returns
        -------
        np.ndarray, shape (n, 256), float32, rows of unit length.
        """
        import torch

        if not len(frames):
            return np.zeros((0, 256), np.float32)
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                _, (hidden, _) = self.lstm(torch.from_numpy(np.ascontiguousarray(frames)))
                raw = torch.relu(self.linear(hidden[-1])).numpy()
        finally:
            if self.threads:
                torch.set_num_threads(previous)
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-9)


def shared_encoder() -> VoiceEncoder:
    """One encoder per process (loading takes ~0.1 s; the weights are read-only)."""
    global _shared
    with _lock:
        if _shared is None:
            # One thread: the LSTM's small per-step products lose more to threading
            # than they gain (measured 0.66 s vs 1.87 s per 100 windows with 2).
            _shared = VoiceEncoder(threads=1)
        return _shared
