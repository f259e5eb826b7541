"""Pooled hidden states of a local Hugging Face speech encoder: the ``hf_encoder`` extractor.

Any checkpoint folder written by ``save_pretrained`` (model *and* feature extractor)
of a Whisper, wav2vec 2.0, HuBERT, WavLM or similar encoder is run through
``transformers`` (``AutoFeatureExtractor`` + ``AutoModel``) **offline**: the module
sets ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` before importing
``transformers`` and loads with ``local_files_only=True``, so nothing is ever
downloaded. ``transformers`` is imported on the first extraction in each process,
not when this module is imported (importing it only registers the extractor); it is
an optional dependency: ``pip install transformers``.

Whisper without 30 s padding
----------------------------
``WhisperFeatureExtractor`` pads every input to 30 s and Hugging Face's
``WhisperEncoder`` refuses any other length (it adds all 1500 positional
embeddings). Here the log-mel is computed by the checkpoint's own feature extractor
with ``padding="longest"`` (no padding for one clip; the audio gets at most 160
zero samples so the number of mel frames is even), and the encoder runs with its
positional table temporarily cut to the clip's ``mel_frames / 2`` positions (and
``config.max_source_positions`` set to match), exactly as
:mod:`emovox.features.encoders` does for the built-in tiny.en model. A 3 s clip
costs 150 encoder frames instead of 1500, and every frame covers real audio. Only
the encoder is kept; the decoder weights are dropped after loading.

Output layout
-------------
The model has ``num_hidden_layers + 1`` hidden states of width ``hidden_size``
(Whisper: ``encoder_layers + 1`` and ``d_model``), read from ``config.json``: index 0
the input embeddings (after the convolutional front end), index k the output of
transformer block k (for Whisper the last one after the final LayerNorm). As for
``whisper_encoder``, the selected states are pooled over frames and concatenated
layer-major: ``(n_sel * hidden_size,)`` for ``"mean"``, ``(n_sel * 2 *
hidden_size,)`` for ``"mean_std"`` (per state the mean, then the standard
deviation).

Cache identity
--------------
:meth:`HFEncoderExtractor.key` hashes the spec together with the checkpoint's
identity (``config.json`` and ``preprocessor_config.json`` contents, and the name,
size and mtime of every weight file) and the installed ``transformers`` version, so
replacing or retraining a checkpoint in the same folder never reuses stale features.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from emovox.audio import DEFAULT_SAMPLE_RATE
from emovox.errors import ConfigError
from emovox.features.base import (
    FEATURE_CODE_VERSION,
    FeatureExtractor,
    check_float,
    check_int,
    register_extractor,
)
from emovox.features.whisper import pool_hidden_states

__all__ = ["SUPPORTED_MODEL_TYPES", "HFEncoderExtractor", "checkpoint_identity"]

#: ``model_type`` values of ``config.json`` this extractor accepts (audio encoders
#: whose base model takes a 16 kHz waveform through a feature extractor).
SUPPORTED_MODEL_TYPES = (
    "whisper", "wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio",
    "unispeech", "unispeech-sat", "sew", "sew-d",
)
#: Files whose name, size and mtime identify the weights of a checkpoint.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".msgpack", ".h5")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                 "pytorch_model.bin.index.json")
_POOLINGS = ("mean", "mean_std")
_INSTALL = "pip install transformers"


def _transformers_version() -> str | None:
    try:
        return metadata.version("transformers")
    except metadata.PackageNotFoundError:
        return None


def _read_json(path: Path, owner: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ConfigError(f"{owner}: cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{owner}: {path} is not a JSON object")
    return data


def checkpoint_identity(folder: str | Path) -> str:
    """Hash identifying a checkpoint folder's configuration and weights.

    Parameters
    ----------
    folder : str or Path
        A ``save_pretrained`` folder.

    Returns
    -------
    str
        16 hex digits of the SHA-256 of ``config.json`` and
        ``preprocessor_config.json`` (contents) and of the name, size and mtime (ns)
        of every weight file (``*.safetensors``, ``*.bin``, ``*.pt``...).
    """
    folder = Path(folder)
    digest = hashlib.sha256()
    for name in ("config.json", "preprocessor_config.json"):
        path = folder / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES
                               or path.name.endswith(".index.json")):
            st = path.stat()
            digest.update(f"\0{path.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


@register_extractor
class HFEncoderExtractor(FeatureExtractor):
    """Time-pooled hidden states of a local Hugging Face speech encoder checkpoint.

    See the module docstring for the loading (offline only), Whisper's unpadded
    input, the output layout and the cache identity.

    Parameters
    ----------
    path : str
        Folder written by ``model.save_pretrained`` and
        ``feature_extractor.save_pretrained`` (``config.json``,
        ``preprocessor_config.json`` and ``model.safetensors`` or
        ``pytorch_model.bin``). Nothing is downloaded.
    layers : "last", "all" or list of int
        Hidden states used: ``"last"`` = the last one, ``"all"`` = every one
        (``num_hidden_layers + 1``), or explicit indices (0 = embeddings), in the
        order given.
    pooling : {"mean", "mean_std"}
        Mean over frames, or mean then standard deviation (ddof 0).
    max_seconds : float
        Longer audio is cropped to its first ``max_seconds`` (Whisper: at most its
        positional table, 30 s).
    threads : int
        PyTorch threads during an extraction (restored afterwards).
    sample_rate : int
        Must be 16000 (the rate of these encoders).
    offset : float
        Seconds skipped at the start of each recording.
    duration : float or None
        Seconds analysed; ``None``: to the end (then cropped to ``max_seconds``).

    Raises
    ------
    ConfigError
        Missing folder, not a checkpoint of a supported encoder, bad parameters, or
        ``transformers`` not installed (one line each).

    Examples
    --------
    >>> ext = HFEncoderExtractor("models/wavlm-base-plus", layers="all")  # doctest: +SKIP
    >>> ext.output_shape  # doctest: +SKIP
    (9984,)
    """

    name: ClassVar[str] = "hf_encoder"
    kind: ClassVar[Literal["functional", "sequence"]] = "functional"

    def __init__(
        self,
        path: str | os.PathLike[str] = "",
        *,
        layers: str | Sequence[int] = "all",
        pooling: str = "mean",
        max_seconds: float = 30.0,
        threads: int = 1,
        sample_rate: int = DEFAULT_SAMPLE_RATE,
        offset: float = 0.0,
        duration: float | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike) or not str(path):
            raise ConfigError(f"{self.name}: path must be the folder of a Hugging Face "
                              f"checkpoint, got {path!r}")
        self.path = str(path)
        folder = Path(self.path).expanduser()
        config = self._check_folder(folder)
        self.model_type: str = config["model_type"]
        if self.model_type == "whisper":
            n_layers, width = config.get("encoder_layers"), config.get("d_model")
        else:
            n_layers, width = config.get("num_hidden_layers"), config.get("hidden_size")
        if not isinstance(n_layers, int) or not isinstance(width, int):
            raise ConfigError(f"{self.name}: {folder / 'config.json'} does not give the "
                              "number of layers and the hidden size")
        self.n_states = n_layers + 1
        self.hidden_size = width
        self.layers = self._check_layers(layers)
        if pooling not in _POOLINGS:
            raise ConfigError(f"{self.name}: pooling must be one of {_POOLINGS}, got {pooling!r}")
        self.pooling = pooling
        max_seconds = check_float(self, "max_seconds", max_seconds, minimum=0.0, strict=True)
        assert max_seconds is not None
        self.max_seconds = max_seconds
        self.threads = check_int(self, "threads", threads, minimum=1)
        self._init_window(sample_rate, offset, duration)
        if self.sample_rate != DEFAULT_SAMPLE_RATE:
            raise ConfigError(f"{self.name}: sample_rate must be {DEFAULT_SAMPLE_RATE}, "
                              f"got {self.sample_rate}")
        preprocessor = _read_json(folder / "preprocessor_config.json", self.name)
        rate = preprocessor.get("sampling_rate", self.sample_rate)
        if rate != self.sample_rate:
            raise ConfigError(f"{self.name}: the checkpoint's feature extractor expects "
                              f"{rate} Hz audio; only {self.sample_rate} Hz is supported")
        if self.model_type == "whisper":
            positions = config.get("max_source_positions", 1500)
            limit = positions * 2 * preprocessor.get("hop_length", 160) / self.sample_rate
            if self.max_seconds > limit:
                raise ConfigError(f"{self.name}: max_seconds must be <= {limit:g} for this "
                                  f"Whisper checkpoint, got {self.max_seconds:g}")
        self._identity = checkpoint_identity(folder)

    # ------------------------------------------------------------------ checks
    def _check_folder(self, folder: Path) -> dict[str, Any]:
        if importlib.util.find_spec("transformers") is None:
            raise ConfigError(f"{self.name} needs the transformers package: {_INSTALL}")
        if not folder.exists():
            raise ConfigError(f"{self.name}: checkpoint folder {folder} does not exist")
        if not folder.is_dir():
            raise ConfigError(f"{self.name}: {folder} is not a folder (give the checkpoint "
                              "folder written by save_pretrained)")
        if not (folder / "config.json").is_file():
            raise ConfigError(f"{self.name}: {folder} is not a Hugging Face checkpoint "
                              "(no config.json)")
        if not any((folder / name).is_file() for name in _WEIGHT_FILES):
            raise ConfigError(f"{self.name}: {folder} has no weights (model.safetensors or "
                              "pytorch_model.bin)")
        if not (folder / "preprocessor_config.json").is_file():
            raise ConfigError(f"{self.name}: {folder} has no preprocessor_config.json (save "
                              "the feature extractor with save_pretrained into it too)")
        config = _read_json(folder / "config.json", self.name)
        if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"{self.name}: {folder} holds a {config.get('model_type')!r} "
                              f"model; supported: {', '.join(SUPPORTED_MODEL_TYPES)}")
        return config

    def _check_layers(self, layers: str | Sequence[int]) -> str | list[int]:
        top = self.n_states - 1
        if isinstance(layers, str):
            if layers not in ("last", "all"):
                raise ConfigError(f"{self.name}: layers must be 'last', 'all' or a list of "
                                  f"integers in 0..{top}, got {layers!r}")
            return layers
        if not isinstance(layers, Sequence) or len(layers) == 0:
            raise ConfigError(f"{self.name}: layers must be 'last', 'all' or a non-empty "
                              f"list of integers in 0..{top}, got {layers!r}")
        out = [check_int(self, "layers[]", v, minimum=0, maximum=top) for v in layers]
        if len(set(out)) != len(out):
            raise ConfigError(f"{self.name}: layers has repeated entries: {out}")
        return out

    # ------------------------------------------------------------------ identity
    @property
    def checkpoint_id(self) -> str:
        """:func:`checkpoint_identity` of the folder, taken when the extractor was built."""
        return self._identity

    def key(self) -> str:
        """Stable identifier of the spec, the checkpoint's identity and the code versions.

        Returns
        -------
        str
            ``"hf_encoder-<16 hex digits>"``; changes with any parameter, with the
            checkpoint's config or weight files, with the ``transformers`` version and
            with :data:`~emovox.features.base.FEATURE_CODE_VERSION`.
        """
        payload = json.dumps(
            {"spec": self.spec(), "checkpoint": self._identity,
             "transformers": _transformers_version(),
             "feature_code_version": FEATURE_CODE_VERSION},
            sort_keys=True, separators=(",", ":"),
        )
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:16]}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, FeatureExtractor):
            return NotImplemented
        return type(self) is type(other) and self.key() == other.key()

    def __hash__(self) -> int:
        return hash(self.key())

    # ------------------------------------------------------------------ shapes
    @property
    def layer_indices(self) -> list[int]:
        """Indices of the hidden states used, in output order."""
        if self.layers == "last":
            return [self.n_states - 1]
        if self.layers == "all":
            return list(range(self.n_states))
        return list(self.layers)

    @property
    def output_shape(self) -> tuple[int]:
        per_layer = self.hidden_size * (2 if self.pooling == "mean_std" else 1)
        return (len(self.layer_indices) * per_layer,)

    def feature_names(self) -> list[str]:
        """Names of the output values, e.g. ``"L12_mean_17"``, in output order."""
        stats = ("mean", "std") if self.pooling == "mean_std" else ("mean",)
        return [f"L{layer}_{stat}_{i}" for layer in self.layer_indices for stat in stats
                for i in range(self.hidden_size)]

    # ------------------------------------------------------------------ extraction
    def hidden_states(self, signal: np.ndarray) -> np.ndarray:
        """All hidden states of the encoder for one 16 kHz recording, frame by frame.

        Parameters
        ----------
        signal : np.ndarray, shape (n,)
            Mono float audio at 16 kHz; cropped to ``max_seconds``.

        Returns
        -------
        np.ndarray, float32, shape (n_states, frames, hidden_size)
        """
        from emovox.features.encoders import torch_threads

        audio = np.asarray(signal, dtype=np.float32).reshape(-1)
        audio = audio[: round(self.max_seconds * self.sample_rate)]
        loaded = _load(Path(self.path).expanduser(), self._identity)
        with torch_threads(self.threads):
            return loaded.hidden_states(audio, self.sample_rate)

    def _compute(self, signal: np.ndarray) -> np.ndarray:
        states = self.hidden_states(signal)
        return pool_hidden_states(states[self.layer_indices], self.pooling)


# ---------------------------------------------------------------------- per-process model
@dataclass
class _Loaded:
    """A checkpoint loaded in this process: its feature extractor and (encoder) model."""

    feature_extractor: Any
    model: Any
    is_whisper: bool
    lock: threading.Lock

    def hidden_states(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        import torch

        with self.lock, torch.inference_mode():
            if self.is_whisper:
                states = self._whisper_states(audio, sample_rate)
            else:
                inputs = self.feature_extractor(audio, sampling_rate=sample_rate,
                                                return_tensors="pt")
                out = self.model(**inputs, output_hidden_states=True, return_dict=True)
                states = out.hidden_states
            return torch.stack([s[0] for s in states]).float().numpy()

    def _whisper_states(self, audio: np.ndarray, sample_rate: int) -> tuple[Any, ...]:
        hop = int(getattr(self.feature_extractor, "hop_length", 160))
        if (audio.size // hop) % 2:  # encoder frames = mel frames / 2: make it even
            audio = np.concatenate([audio, np.zeros(hop, dtype=np.float32)])
        mel = self.feature_extractor(audio, sampling_rate=sample_rate, padding="longest",
                                     return_tensors="pt")["input_features"]
        with _short_positions(self.model, mel.shape[-1] // 2):
            out = self.model(mel, output_hidden_states=True, return_dict=True)
        return out.hidden_states


@contextmanager
def _short_positions(encoder: Any, n_positions: int) -> Iterator[None]:
    """Let Hugging Face's WhisperEncoder run on ``n_positions`` frames (not 1500)."""
    import torch

    full, configured = encoder.embed_positions, encoder.config.max_source_positions
    if n_positions > full.num_embeddings:
        raise ValueError(f"input of {n_positions} encoder frames is longer than the "
                         f"{full.num_embeddings} positions of the encoder")
    encoder.embed_positions = torch.nn.Embedding.from_pretrained(
        full.weight[:n_positions].detach(), freeze=True)
    encoder.config.max_source_positions = n_positions
    try:
        yield
    finally:
        encoder.embed_positions = full
        encoder.config.max_source_positions = configured


_MODELS: dict[tuple[str, str], _Loaded] = {}
_MODELS_LOCK = threading.Lock()


def _load(folder: Path, identity: str) -> _Loaded:
    """This process's copy of the checkpoint, loaded offline on first use."""
    key = (str(folder.resolve()), identity)
    loaded = _MODELS.get(key)
    if loaded is not None:
        return loaded
    with _MODELS_LOCK:
        loaded = _MODELS.get(key)
        if loaded is None:
            loaded = _MODELS[key] = _load_uncached(folder)
    return loaded


def _load_uncached(folder: Path) -> _Loaded:
    os.environ["HF_HUB_OFFLINE"] = "1"  # read by huggingface_hub when it is imported
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        from transformers import AutoFeatureExtractor, AutoModel
    except ImportError as error:
        raise ConfigError(f"hf_encoder needs the transformers package ({error}): "
                          f"{_INSTALL}") from None
    try:
        feature_extractor = AutoFeatureExtractor.from_pretrained(folder, local_files_only=True)
        model, info = AutoModel.from_pretrained(folder, local_files_only=True,
                                                output_loading_info=True)
    except Exception as error:  # OSError, ValueError, SafetensorError...: all one line
        text = str(error).strip()
        first = text.splitlines()[0] if text else type(error).__name__
        raise ConfigError(f"hf_encoder: cannot load the checkpoint {folder}: {first}") from None
    is_whisper = model.config.model_type == "whisper"
    if is_whisper:
        model = model.get_encoder()  # the decoder is dropped with the full model
    missing = [k for k in info.get("missing_keys", [])
               if "masked_spec_embed" not in k and not (is_whisper and "decoder" in k)]
    if missing:
        raise ConfigError(f"hf_encoder: {folder} lacks {len(missing)} weights of the model "
                          f"(e.g. {missing[0]!r}); it would run with random weights")
    model.eval()
    model.requires_grad_(False)
    return _Loaded(feature_extractor, model, is_whisper, threading.Lock())
