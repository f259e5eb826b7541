"""Voice embeddings: who is speaking, as a vector. What diarization needs of a voice
encoder (:class:`SpeakerEncoder`), the encoders by name (:func:`voice_encoder`: CAM++
in :mod:`emovox.campplus`, the default; GE2E here), and the GE2E encoder.

GE2E is the model (a 3-layer LSTM over 40 mel bands, 256-dimensional
L2-normalised embeddings of 1.6 s of speech) whose weights ship as ``pretrained.pt``
in the PyPI package ``resemblyzer`` (Apache-2.0). Only the weights file is read: the
package's own Python code is never imported (it needs ``webrtcvad`` and an old
``scipy.ndimage`` path at import time), so the network and its mel front end are
written here, following the package's ``hparams.py`` and ``audio.py``.

Embeddings of the same voice have cosine similarity near 1; different voices lower.
:mod:`emovox.diarization` clusters them. GE2E costs about half of CAM++'s pass (which
embeds runs of windows, each frame once) and tells voices apart less well
(docs/RESULTS.md, issue 14).
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Protocol

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
#: Windows whose mel frames are taken together (one STFT and one matrix product).
MEL_BATCH = 32
#: Arithmetic the LSTM may run in.
PRECISIONS = ("auto", "float32", "bfloat16")
#: bfloat16 is used only when its embeddings are at least this close (cosine) to
#: float32's on the first windows.
_BF16_AGREEMENT = 0.99

_lock = threading.Lock()
_shared: VoiceEncoder | None = None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op threads set to ``threads`` for the block (None: untouched)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if threads:
            torch.set_num_threads(previous)


def signal_batch(signals: np.ndarray) -> np.ndarray:
    """``signals`` as float32 of shape (n, samples), the input of an encoder's
    ``features``.

    Raises
    ------
    ValueError
        Another shape.
    """
    signals = np.asarray(signals, dtype=np.float32)
    if signals.ndim != 2:
        raise ValueError(f"signals must have shape (n, samples), got {signals.shape}")
    return signals


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row of ``vectors`` scaled to unit length (an all-zero row stays zero), as
    voice encoders return their embeddings.

    Parameters
    ----------
    vectors : np.ndarray, shape (n, dim)

    Returns
    -------
    np.ndarray, shape (n, dim)
    """
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)


class SpeakerEncoder(Protocol):
    """What diarization needs of a voice encoder (GE2E here, CAM++ in
    :mod:`emovox.campplus`). An encoder may also offer ``embed_run(signal, bounds)``,
    the windows ``signal[a:b]`` of one 16 kHz signal embedded in one pass (CAM++);
    diarization then embeds each run of overlapping speech windows with it."""

    #: Its name (``voices=``), and the size of an embedding.
    name: str
    size: int

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Unit-length embeddings of windows of 16 kHz audio, one row each, in order."""


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
    precision : {"auto", "float32", "bfloat16"}
        Arithmetic of the LSTM. ``"auto"``: bfloat16 where this CPU has bfloat16
        instructions and the embeddings agree (:meth:`pick_precision`, decided once,
        at the first batch), else float32.
    """

    #: Name of the encoder (``--voices``), and the size of an embedding.
    name, size = "ge2e", 256

    def __init__(self, path: Path | None = None, threads: int | None = None,
                 precision: str = "auto") -> None:
        import torch

        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.precision = precision

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
        return self.features(np.asarray(signal, dtype=np.float32)[None])[0]

    def features(self, signals: np.ndarray) -> np.ndarray:
        """Mel frames of equal-length 16 kHz signals, each raised to the training
        loudness on its own.

        One STFT and one mel product for the whole batch: a small matrix product per
        window costs more in BLAS thread wake-ups than in arithmetic (measured: 14 ms
        vs 2.5 ms per window on a loaded two-core machine).

        Parameters
        ----------
        signals : np.ndarray, shape (n, samples)

        Returns
        -------
        np.ndarray, shape (n, n_frames, 40), float32
        """
        import librosa

        signals = signal_batch(signals)
        rms = np.sqrt(np.mean(signals.astype(np.float64) ** 2, axis=1)) if signals.shape[1] \
            else np.zeros(len(signals))
        # Raise quiet audio to the training loudness (never lower it).
        gain = np.ones(len(signals))
        loud = rms > 0
        gain[loud] = np.maximum(1.0, 10 ** ((_TARGET_DBFS - 20 * np.log10(rms[loud])) / 20))
        power = np.abs(librosa.stft(signals * gain[:, None].astype(np.float32),
                                    n_fft=_N_FFT, hop_length=_HOP)) ** 2
        n, bins, frames = power.shape
        flat = power.transpose(1, 0, 2).reshape(bins, n * frames)
        return (self._mel_basis @ flat).reshape(_N_MELS, n, frames).transpose(1, 2, 0
                                                                            ).astype(np.float32)

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of windows of 16 kHz audio, each on its own (its first 1.6 s;
        shorter ones padded with silence).

        Parameters
        ----------
        windows : sequence of np.ndarray

        Returns
        -------
        np.ndarray, shape (len(windows), 256), float32, rows of unit length.
        """
        width = PARTIAL_FRAMES * SAMPLE_RATE // 100
        signals = [np.pad(x[:width], (0, width - len(x[:width]))) for x in windows]
        if not signals:
            return np.zeros((0, self.size), np.float32)
        frames = [self.features(np.stack(signals[k:k + MEL_BATCH]))[:, :PARTIAL_FRAMES]
                  for k in range(0, len(signals), MEL_BATCH)]
        return self.embed_frames(np.concatenate(frames))

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Embeddings of equal-length stacks of mel frames.

        Parameters
        ----------
        frames : np.ndarray, shape (n, n_frames, 40)

        Returns
        -------
        np.ndarray, shape (n, 256), float32, rows of unit length.
        """
        if not len(frames):
            return np.zeros((0, 256), np.float32)
        with torch_threads(self.threads):
            if self.precision == "auto":
                self.precision = self.pick_precision(frames)
            return self._embed(frames, self.precision)

    def _embed(self, frames: np.ndarray, precision: str) -> np.ndarray:
        import torch

        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16,
                                                    enabled=precision == "bfloat16"):
            _, (hidden, _) = self.lstm(torch.from_numpy(np.ascontiguousarray(frames)))
            raw = torch.relu(self.linear(hidden[-1])).float().numpy()
        return unit_rows(raw)

    def pick_precision(self, frames: np.ndarray, windows: int = 24) -> str:
        """``"bfloat16"`` when this CPU has bfloat16 matrix instructions and the
        embeddings agree with float32's, else ``"float32"``.

        The LSTM is nearly all of a diarization's cost and its matrix products are
        compute-bound: CPUs with bfloat16 instructions (AVX512-BF16, AMX) run it about
        twice as fast (cosine to float32 >= 0.999 on speech), others emulate it
        slowly. Decided from the CPU's flags, not by timing both: a timed choice
        flipped with the machine's load, so the same file could be diarised
        differently from one run to the next.

        Parameters
        ----------
        frames : np.ndarray, shape (n, n_frames, 40)
            Mel frames of real windows (what will be embedded).
        windows : int
            Windows in the agreement check (``frames`` tiled when fewer).

        Returns
        -------
        str
        """
        if not cpu_has_bfloat16():
            return "float32"
        sample = np.resize(frames, (windows, *frames.shape[1:]))
        try:
            exact = self._embed(sample, "float32")
            half = self._embed(sample, "bfloat16")
        except (RuntimeError, TypeError):  # no bfloat16 kernels in this build
            return "float32"
        agree = float(np.min(np.sum(exact * half, axis=1)))
        return "bfloat16" if agree >= _BF16_AGREEMENT else "float32"


def cpu_has_bfloat16() -> bool:
    """Whether the CPU reports bfloat16 matrix instructions (``avx512_bf16`` or
    ``amx_bf16`` in Linux's /proc/cpuinfo; False where that cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return False
    flags = {flag for line in text.splitlines() if line.startswith("flags")
             for flag in line.split(":", 1)[-1].split()}
    return bool(flags & {"avx512_bf16", "amx_bf16"})


#: Voice encoders diarization can use, by name (:func:`voice_encoder`).
VOICE_ENCODERS = ("campplus", "ge2e")


def voice_encoder(name: str) -> SpeakerEncoder:
    """The process's shared voice encoder of that name (``"campplus"``: CAM++,
    :mod:`emovox.campplus`; ``"ge2e"``: GE2E, this module).

    Raises
    ------
    ValueError
        An unknown name.
    """
    if name == "ge2e":
        return shared_encoder()
    if name == "campplus":
        from emovox.campplus import shared_campplus

        return shared_campplus()
    raise ValueError(f"voices must be one of {', '.join(VOICE_ENCODERS)}, got {name!r}")


def shared_encoder() -> VoiceEncoder:
    """One encoder per process (loading takes ~0.1 s; the weights are read-only)."""
    global _shared
    with _lock:
        if _shared is None:
            # One thread: the LSTM's small per-step products lose more to threading
            # than they gain (measured 0.66 s vs 1.87 s per 100 windows with 2).
            _shared = VoiceEncoder(threads=1)
        return _shared
