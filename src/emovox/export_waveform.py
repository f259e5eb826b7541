"""The preprocessing of a portable ONNX export, as torch modules traced into its graph.

A ``"whisper_waveform"`` export (:func:`emovox.export.export_onnx`) takes the 16 kHz
mono waveform and holds everything between it and the encoder, so a caller in any
language only resamples:

- **loudness scaling** (for loudness-normalised bundles): ITU-R BS.1770-4 integrated
  loudness exactly as pyloudnorm measures it (:func:`emovox.preprocess.integrated_loudness`):
  K-weighting (pyloudnorm's two biquads), mean squares of 400 ms blocks every 100 ms
  (the whole signal as one block when shorter), absolute gate -70 LUFS, relative gate
  -10 LU, then a gain of ``10 ** ((target - L) / 20)`` (1 when every block is gated out);
- **the analysed window**: ``offset``, ``duration`` and ``max_seconds`` cut *after* the
  loudness is measured on the whole input, as the native extractor does;
- **Whisper's log-mel**: a Conv1d with a windowed DFT basis (a cos and a sin row per
  frequency bin) on the reflect-padded signal, power, mel filters, log and floor
  per recording (:func:`emovox.inference.frontend.whisper_log_mel_numpy`).

The K-weighting is a 4th-order IIR filter; ONNX has no recursive filter, and an FIR
of its impulse response needs ~1500 taps per sample. It is run exactly (to 1e-10 of
the impulse response) by blocks: the signal is cut into chunks of
:data:`CHUNK` samples; within a chunk the output is a Toeplitz product with the
impulse response's first ``CHUNK`` taps, and everything earlier reaches the chunk
through the filter's 4-dimensional state (a balanced realisation, found from the
impulse response's Hankel matrix), carried from chunk to chunk by a short
convolution over chunks. About 75 multiply-adds per sample instead of 1500.

Torch is imported only when a graph is built.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np

from emovox.inference.frontend import HOP_LENGTH, N_FFT, SAMPLE_RATE, mel_filters
from emovox.preprocess import BLOCK_SECONDS

#: BS.1770-4 gating as pyloudnorm applies it: block overlap, the -0.691 dB offset of the
#: loudness of a block, the absolute gate (LUFS) and the relative gate (LU).
BLOCK_OVERLAP = 0.75
LOUDNESS_OFFSET_DB = -0.691
ABSOLUTE_GATE_LUFS = -70.0
RELATIVE_GATE_LU = -10.0
#: Samples per chunk of the block-recursive K-weighting filter.
CHUNK = 64
#: Past chunks whose filter state still reaches a chunk (the rest is below 1e-10).
STATE_CHUNKS = 40
#: Order of the K-weighting filter (two biquads).
FILTER_ORDER = 4


def k_weighting_impulse_response(n: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The first ``n`` samples of pyloudnorm's K-weighting filter's impulse response.

    Parameters
    ----------
    n : int
        Number of samples.
    sample_rate : int
        Rate in Hz (pyloudnorm designs the biquads for it).

    Returns
    -------
    np.ndarray, float64, shape (n,)
    """
    import pyloudnorm
    from scipy.signal import lfilter

    response = np.zeros(n)
    response[0] = 1.0
    meter = pyloudnorm.Meter(sample_rate)
    for stage in meter._filters.values():  # high shelf, then high pass (RLB)
        response = stage.passband_gain * lfilter(stage.b, stage.a, response)
    return response


def chunked_filter_matrices(chunk: int = CHUNK, state_chunks: int = STATE_CHUNKS,
                            sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """The matrices that run the K-weighting filter chunk by chunk.

    With ``u_k`` the k-th chunk of input and ``h`` the impulse response,
    ``y_k = toeplitz @ u_k + observe @ s_k`` where the state entering chunk k is
    ``s_k = sum_{d=1..D} carry[d-1] @ (gather @ u_{k-d})``. ``h[n] = C A^(n-1) B``
    (n >= 1) with a balanced realisation of order 4 from the Hankel matrix of ``h``
    (Ho-Kalman); ``observe[i] = C A^i``, ``gather[:, j] = A^(chunk-1-j) B``,
    ``carry[d] = A^(d chunk)``.

    Returns
    -------
    dict of np.ndarray (float64)
        ``toeplitz`` (chunk, chunk), ``observe`` (chunk, 4), ``gather`` (4, chunk),
        ``carry`` (D, 4, 4).
    """
    from scipy.linalg import toeplitz

    span = 2048  # the response is below 1e-12 after ~1500 samples
    h = k_weighting_impulse_response(2 * span + chunk, sample_rate)
    hankel = np.lib.stride_tricks.sliding_window_view(h[1:2 * span], span)  # [i, j]: h[1+i+j]
    left, sing, right = np.linalg.svd(hankel)
    root = np.sqrt(sing[:FILTER_ORDER])
    observability = left[:, :FILTER_ORDER] * root  # rows C A^i
    controllability = root[:, None] * right[:FILTER_ORDER]  # columns A^j B
    A = np.linalg.lstsq(observability[:-1], observability[1:], rcond=None)[0]
    observe = observability[:chunk]
    gather = controllability[:, :chunk][:, ::-1]
    step = np.linalg.matrix_power(A, chunk)
    carry = np.stack([np.linalg.matrix_power(step, d) for d in range(state_chunks)])
    lower = toeplitz(h[:chunk], np.zeros(chunk))
    return {"toeplitz": lower, "observe": np.ascontiguousarray(observe),
            "gather": np.ascontiguousarray(gather), "carry": carry}


def dft_basis() -> np.ndarray:
    """Rows ``hann * cos`` then ``-hann * sin`` for the 201 bins of a 400-sample frame.

    Returns
    -------
    np.ndarray, float64, shape (2 * (N_FFT // 2 + 1), N_FFT)
    """
    n = np.arange(N_FFT)
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * n / N_FFT)  # periodic Hann, as torch's
    angle = 2.0 * np.pi * np.arange(N_FFT // 2 + 1)[:, None] * n / N_FFT
    return np.concatenate([np.cos(angle) * window, -np.sin(angle) * window])


def loudness_spec(target_lufs: float) -> dict[str, Any]:
    """The in-graph loudness scaling, spelled out for ``preprocessing.json``."""
    return {
        "target_lufs": target_lufs,
        "standard": "ITU-R BS.1770-4 integrated loudness as pyloudnorm 0.1 measures it",
        "k_weighting": "pyloudnorm's high shelf and high pass biquads for 16 kHz, run "
                       "exactly (impulse response to 1e-10) by chunks of "
                       f"{CHUNK} samples",
        "blocks": f"{BLOCK_SECONDS:g} s blocks every {BLOCK_SECONDS * (1 - BLOCK_OVERLAP):g}"
                  " s, round((n - block) / hop) + 1 of them, the last zero-padded; a "
                  "recording shorter than a block is one block",
        "gates": f"absolute {ABSOLUTE_GATE_LUFS:g} LUFS (>=), relative {RELATIVE_GATE_LU:g}"
                 " LU (>)",
        "gain": "10 ** ((target_lufs - L) / 20); 1 when every block is gated out",
        "python": "emovox.preprocess.normalize_loudness(signal, 16000, target_lufs)",
    }


_CLASSES: dict[str, Any] = {}


def waveform_classes() -> Any:
    """The torch modules of the in-graph preprocessing, defined on first use.

    ``LogMel()``, ``KWeighting()``, ``Loudness(target_lufs)``, ``WaveformFront(
    target_lufs, start, length)`` (loudness on the whole input, then the analysed
    window, then the log-mel) and ``WaveformModel(front, model)``.
    """
    if _CLASSES:
        return SimpleNamespace(**_CLASSES)
    import torch
    from torch import nn
    from torch.nn import functional as F  # noqa: N812
    from torch.onnx.operators import shape_as_tensor

    def buffer(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32)

    class LogMel(nn.Module):
        """Whisper's log-mel of a batch of equal-length signals, (b, n) -> (b, 80, n // 160)."""

        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("basis", buffer(dft_basis())[:, None, :])
            self.register_buffer("mel", buffer(mel_filters()))
            self.bins = N_FFT // 2 + 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            padded = F.pad(x[:, None], (N_FFT // 2, N_FFT // 2), mode="reflect")
            spectrum = F.conv1d(padded, self.basis, stride=HOP_LENGTH)[:, :, :-1]
            power = spectrum[:, :self.bins] ** 2 + spectrum[:, self.bins:] ** 2
            log_spec = torch.clamp(self.mel @ power, min=1e-10).log10()
            # The floor is per recording (Whisper's max over its whole spectrogram).
            log_spec = torch.maximum(log_spec, log_spec.amax(dim=(1, 2), keepdim=True) - 8.0)
            return (log_spec + 4.0) / 4.0

    class KWeighting(nn.Module):
        """pyloudnorm's K-weighting filter, by chunks (see the module docstring)."""

        def __init__(self) -> None:
            super().__init__()
            m = chunked_filter_matrices()
            self.register_buffer("toeplitz_t", buffer(m["toeplitz"].T))
            self.register_buffer("observe_t", buffer(m["observe"].T))
            self.register_buffer("gather_t", buffer(m["gather"].T))
            # conv1d weight (out, in, lag): lag D-1-d holds carry[d] (conv1d correlates).
            self.register_buffer("carry", buffer(m["carry"][::-1].transpose(1, 2, 0)))
            self.chunks_back = m["carry"].shape[0]

        def forward(self, x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
            chunks = torch.div(n + CHUNK - 1, CHUNK, rounding_mode="floor")
            u = F.pad(x, (0, CHUNK))[:, : chunks * CHUNK]
            u = u.reshape(x.shape[0], -1, CHUNK)  # (b, m, chunk)
            state_in = (u @ self.gather_t).transpose(1, 2)  # (b, 4, m): state from chunk k
            # The state entering chunk k gathers chunks k-1, k-2, ... (causal conv).
            state = F.conv1d(F.pad(state_in, (self.chunks_back, 0)), self.carry)[:, :, :-1]
            y = u @ self.toeplitz_t + state.transpose(1, 2) @ self.observe_t
            return y.reshape(x.shape[0], -1)[:, :n]  # the ringing past n is not audio

    class Loudness(nn.Module):
        """Integrated loudness (LUFS) of each row and the gain to ``target_lufs``."""

        def __init__(self, target_lufs: float) -> None:
            super().__init__()
            self.weighting = KWeighting()
            self.target = float(target_lufs)
            self.block = round(BLOCK_SECONDS * SAMPLE_RATE)
            self.hop = round(BLOCK_SECONDS * (1 - BLOCK_OVERLAP) * SAMPLE_RATE)
            self.per_block = self.block // self.hop

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            n = shape_as_tensor(x)[1]
            squares = self.weighting(x, n) ** 2
            hops = torch.div(n + self.hop - 1, self.hop, rounding_mode="floor")
            squares = F.pad(squares, (0, self.block + self.hop))[
                :, : (hops + self.per_block) * self.hop]
            sums = squares.reshape(x.shape[0], -1, self.hop).sum(dim=2)
            blocks = sums[:, : -self.per_block + 1]
            for lag in range(1, self.per_block):  # block j = hop sums j .. j+3
                end = lag - self.per_block + 1
                blocks = blocks + sums[:, lag: end if end < 0 else None]
            length = torch.clamp(n, max=self.block)  # shorter: one block of the whole
            count = torch.round((n - length).float() / self.hop).long() + 1
            z = blocks[:, :count] / length.float()
            level = LOUDNESS_OFFSET_DB + 10.0 * torch.log10(z)
            absolute = (level >= ABSOLUTE_GATE_LUFS).float()
            kept = absolute.sum(dim=1)
            mean = (z * absolute).sum(dim=1) / kept
            relative = LOUDNESS_OFFSET_DB + 10.0 * torch.log10(mean) + RELATIVE_GATE_LU
            gated = ((level > relative[:, None]) & (level > ABSOLUTE_GATE_LUFS)).float()
            loudness = LOUDNESS_OFFSET_DB + 10.0 * torch.log10(
                (z * gated).sum(dim=1) / gated.sum(dim=1))
            gain = torch.where(kept > 0, torch.pow(10.0, (self.target - loudness) / 20.0),
                               torch.ones_like(loudness))
            return gain, torch.where(kept > 0, loudness, torch.full_like(loudness, -math.inf))

    class WaveformFront(nn.Module):
        """Loudness (optional) on the whole input, the analysed window, the log-mel."""

        def __init__(self, target_lufs: float | None, start: int, length: int) -> None:
            super().__init__()
            self.loudness = None if target_lufs is None else Loudness(target_lufs)
            self.start, self.length = int(start), int(length)
            self.log_mel = LogMel()

        def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(log-mel, loudness in LUFS: NaN without loudness scaling)."""
            loudness = torch.full_like(waveform[:, 0], math.nan)
            if self.loudness is not None:
                gain, loudness = self.loudness(waveform)
                waveform = waveform * gain[:, None]
            window = waveform[:, self.start: self.start + self.length]
            return self.log_mel(window), loudness

    class WaveformModel(nn.Module):
        """``front`` (waveform -> log-mel) then ``model`` (log-mel -> outputs).

        The attribute names prefix the graph's node names (``/front/...``), which
        int8 quantisation uses to leave the preprocessing in float32.
        """

        def __init__(self, front: nn.Module, model: nn.Module) -> None:
            super().__init__()
            self.front = front
            self.model = model

        def forward(self, waveform: torch.Tensor) -> Any:
            return self.model(self.front(waveform)[0])

    _CLASSES.update(LogMel=LogMel, KWeighting=KWeighting, Loudness=Loudness,
                    WaveformFront=WaveformFront, WaveformModel=WaveformModel)
    return SimpleNamespace(**_CLASSES)


def front_end_onnx(target_lufs: float | None, start: int = 0,
                   length: int = 30 * SAMPLE_RATE, opset: int = 17) -> Any:
    """The in-graph preprocessing alone as an ONNX model (to check it, or reuse it).

    Input ``waveform`` float32 ``[batch, samples]``; outputs ``mel`` ``[batch, 80,
    frames]`` (the log-mel of the analysed window) and ``loudness`` ``[batch]``
    (integrated loudness in LUFS, ``-inf`` when gated out; NaN without
    ``target_lufs``).

    Parameters
    ----------
    target_lufs : float or None
        Loudness target (None: no loudness scaling).
    start, length : int
        The analysed window, in samples.
    opset : int
        ONNX opset.

    Returns
    -------
    onnx.ModelProto
    """
    import torch

    from emovox.export import _torch_to_onnx

    module = waveform_classes().WaveformFront(target_lufs, start, length).eval()
    example = torch.zeros(1, 3 * SAMPLE_RATE)
    example[0, ::7] = 0.1  # not silent
    proto = _torch_to_onnx(module, example, "waveform", ["mel", "loudness"], {1: "samples"},
                           opset, dynamo=False, dynamic_batch=True)
    proto.graph.output[0].type.tensor_type.shape.dim[2].dim_param = "frames"  # traced: 300
    return proto
