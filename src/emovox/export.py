"""ONNX export of model bundles, and ONNX Runtime inference with the same outputs.

:func:`export_onnx` writes a folder that runs without emovox's training code, without
PyTorch and without scikit-learn::

    OUT_DIR/
      model.onnx          one self-contained graph (no ``.onnx.data`` side file)
      preprocessing.json  how to turn audio into the graph's input, the classes, the
                          label set, the training summary and a reference check
      MODEL_CARD.md       the bundle's model card

Three kinds of graph are read, named by ``graph.kind`` in ``preprocessing.json``;
the first two are written for Whisper bundles (``graph_input``):

``"whisper_waveform"`` (the default: a portable model)
    The *whole* model in one graph, preprocessing included. Input ``waveform``, float32
    ``[batch, samples]``: 16 kHz mono samples of whole recordings (rows of equal length
    form a batch; a timeline's 2 s windows run together). In the graph: the loudness
    scaling of loudness-normalised bundles (ITU-R BS.1770 integrated loudness as
    pyloudnorm measures it, gain to the bundle's target; within 1e-5 dB of pyloudnorm),
    the analysed window (``offset``, ``duration``, ``max_seconds``: cut after the
    loudness is measured on the whole input), Whisper's log-mel, the Whisper tiny.en
    encoder, pooling of the selected hidden states over frames and the bundle's
    classifier (a ``StandardScaler`` + ``LogisticRegression`` pipeline is folded in as
    tensor operations; other scikit-learn models are converted with skl2onnx and
    joined to the encoder graph), to ``probabilities`` ``[batch, n_classes]``. A caller
    in any language decodes, averages channels to mono, resamples to 16 kHz and refuses
    silent or too short audio (``preprocessing.caller``); only a bundle that trims
    silence leaves that step to it too. See :mod:`emovox.export_waveform`.
``"whisper_log_mel"`` (``graph_input="log_mel"``, and earlier exports)
    As above from the log-mel on: input ``mel``, float32 ``[1, 80, frames]`` (Whisper's
    log-mel of the analysed window, unpadded, ``frames = n_samples // 160 <= 3000``);
    loudness scaling (``preprocessing.signal``) and the log-mel
    (``preprocessing.log_mel``, :func:`whisper_log_mel_numpy`) run in Python first.
``"features"``
    For any other features (ComParE, eGeMAPS, MFCC statistics, sequences...): the
    classifier only. Input ``features``, float32 ``[batch, dim]`` (the flattened
    output of the emovox extractor named in ``features``), output ``probabilities``.
    scikit-learn models are converted with skl2onnx, PyTorch networks with
    ``torch.onnx.export`` (with their standardisation folded in).

``int8=True`` (``emovox export --onnx DIR --int8``) quantises the graph's MatMul weights
to int8 (ONNX Runtime dynamic quantisation; the preprocessing and the classifier head
stay float32): faster on CPUs, with probabilities that move (docs/RESULTS.md).

:class:`~emovox.recognizer.OnnxRecognizer` (also importable from here) runs such a
folder on ONNX Runtime (:mod:`emovox.inference.onnx_backend`) with every verb and the
DataFrame results of :class:`emovox.recognizer.Recognizer`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import numpy as np

from emovox import __version__
from emovox.errors import BundleError
from emovox.export_adaptation import (
    LINEAR_HEAD_FILE,
    linear_head_probabilities,
    write_adaptation,
    write_linear_head,
)
from emovox.fileio import atomic_folder
from emovox.inference.frontend import (
    ENCODER_FRAME_SECONDS,
    MAX_MEL_FRAMES,
    N_FFT,
    N_MELS,
    SAMPLE_RATE,
    log_mel_spec,
    whisper_log_mel_numpy,
)
from emovox.inference.onnx_backend import (
    CARD_FILE,
    FORMAT,
    FORMAT_VERSION,
    MODEL_FILE,
    SPEC_FILE,
    missing_onnx,
)
from emovox.inference.packaged import bundle_digest
from emovox.logs import quiet_root_logger
from emovox.normalization import DEFAULT_PRIOR_WEIGHT
from emovox.recognizer import MAX_FILE_SECONDS, OnnxRecognizer

if TYPE_CHECKING:  # the bundle module loads skops and scikit-learn: not needed to predict
    from emovox.bundle import Bundle

#: ONNX opset of the exported graphs.
OPSET = 17
#: Largest difference between native and ONNX probabilities accepted by the export check.
CHECK_TOLERANCE = 1e-3
#: Largest difference between the float32 and int8 graphs' probabilities accepted.
INT8_CHECK_TOLERANCE = 0.1
#: What a Whisper graph takes: the waveform (portable) or the log-mel.
GRAPH_INPUTS = ("waveform", "log_mel")
#: Name prefixes of graph nodes int8 quantisation leaves in float32: the in-graph
#: preprocessing (filters, DFT, mel) and the classifier head (tiny, and the answer).
FLOAT_NODES = ("/front/", "/model/head/", "/head/")

__all__ = [
    "OnnxRecognizer",
    "export_onnx",
    "whisper_log_mel_numpy",
]


def export_onnx(
    bundle: Bundle | str | Path | None,
    out_dir: str | Path,
    *,
    opset: int = OPSET,
    dynamo: bool = False,
    check: bool = True,
    graph_input: str = "waveform",
    int8: bool = False,
) -> Path:
    """Export a bundle to a self-contained ONNX model and a JSON preprocessing spec.

    Parameters
    ----------
    bundle : Bundle, str, Path or None
        A loaded bundle, a bundle folder, a packaged model's name, or ``None`` for the
        packaged default model.
    out_dir : str or Path
        Folder to write (replaced atomically if it exists).
    opset : int
        ONNX opset of the graph.
    dynamo : bool
        Use PyTorch's ``torch.export``-based exporter (needs ``onnxscript``; about ten
        times slower) instead of the TorchScript one, for the graphs made from torch
        modules.
    check : bool
        Run the native model and the ONNX graph on a synthetic voice and refuse the
        export when their probabilities differ by more than ``CHECK_TOLERANCE``; the
        reference probabilities are stored in the spec either way. An ``int8`` export
        is checked against the float32 graph with :data:`INT8_CHECK_TOLERANCE`.
    graph_input : {"waveform", "log_mel"}
        For Whisper bundles: the graph takes the 16 kHz waveform and holds the loudness
        scaling, the analysed window and the log-mel (``"whisper_waveform"``, the
        default), or takes the log-mel computed outside (``"whisper_log_mel"``, the
        format of earlier exports). Ignored for other features.
    int8 : bool
        Quantise the graph's MatMul weights to int8 (ONNX Runtime dynamic
        quantisation: :func:`quantize_int8`); faster on CPUs, probabilities move.

    Returns
    -------
    Path
        ``out_dir``.

    Raises
    ------
    BundleError
        A model that cannot be exported, or an export that fails the check.
    ImportError
        ``onnx`` (and, for scikit-learn models, ``skl2onnx``) missing.
    """
    try:
        import onnx
    except ImportError as error:
        raise missing_onnx("onnx", error) from None
    from emovox.bundle import Bundle, load_bundle

    if graph_input not in GRAPH_INPUTS:
        raise BundleError(f"graph_input must be one of {GRAPH_INPUTS}, got {graph_input!r}")

    from emovox.inference.packaged import resolve_model

    bundle = resolve_model(bundle, "torch")  # type: ignore[assignment]  # exports are of bundles
    bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
    source = bundle
    adapted = None
    if bundle.unadapted_model is not None:
        # The graph sees one recording at a time: it holds the model for no adaptation,
        # and outputs its pooled features so a batch can be adapted (export_adaptation).
        adapted = bundle
        bundle = dataclasses.replace(bundle, model=bundle.unadapted_model, reference=None,
                                     unadapted_model=None)
    extractor = bundle.extractor()
    width = math.prod(extractor.output_shape)
    model = bundle.model
    order = [list(model.classes_).index(c) for c in bundle.classes]
    network = type(model).__name__ == "NeuralClassifier"
    # Loudness normalisation / trimming of a Whisper bundle run before the encoder (in
    # the graph for a waveform input); the graph is built for the encoders they feed
    # (one, or each part of a fused bundle). Other preprocessed features are computed
    # whole by the extractor named in the spec.
    signal_steps = None
    encoders: list[Any] | None = None
    found = None if network else _whisper_parts(extractor)
    if found is not None:
        encoders, signal_steps = found
        extractor = encoders[0]  # the window and rate, equal for every part

    calibrated = type(model).__name__ == "CalibratedClassifier"
    if (bundle.reference is not None or calibrated) and (
            extractor.name != "whisper_encoder" or network):
        raise BundleError("only Whisper + logistic-regression bundles can be exported "
                          "with speaker normalisation or calibration")
    adapted_head = None
    if adapted is not None and extractor.name == "whisper_encoder" and not network:
        adapted_head = _fold_linear(adapted.model)
        if adapted_head is not None:
            _check_folded(adapted.model, adapted_head, list(range(len(adapted.model.classes_))),
                          width)
    waveform = graph_input == "waveform"
    target_lufs = signal_steps["loudness_lufs"] if signal_steps is not None else None
    if extractor.name == "whisper_encoder" and not network:
        front = _front_settings(extractor, target_lufs) if waveform else None
        assert encoders is not None  # a whisper_encoder extractor comes from them
        proto, contains, plain_head = _whisper_graph(bundle, encoders, order, opset, dynamo,
                                                     front=front, matmul_convs=int8)
        if waveform:
            kind = "whisper_waveform"
            input_spec = {"name": "waveform", "dtype": "float32", "shape": ["batch", "samples"],
                          "description": "16 kHz mono samples of whole recordings, one per "
                                         "row (a batch: rows of equal length); the graph "
                                         "scales loudness, cuts the analysed window and "
                                         "computes the log-mel (preprocessing.in_graph)"}
        else:
            kind = "whisper_log_mel"
            input_spec = {"name": "mel", "dtype": "float32", "shape": [1, N_MELS, "frames"],
                          "description": "Whisper log-mel of the analysed window "
                                         "(preprocessing.log_mel), frames <= 3000"}
    else:
        plain_head = None
        if network:
            proto, contains = _network_graph(model, order, width, opset, dynamo)
        else:
            proto, contains = _sklearn_graph(model, order, width, opset)
        kind = "features"
        input_spec = {"name": "features", "dtype": "float32", "shape": ["batch", width],
                       "description": f"the {extractor.name} features of each recording, "
                                      f"shape {list(extractor.output_shape)} flattened "
                                      "(row-major); computed by the emovox extractor in "
                                      "'features'"}
    if int8 and kind == "features":
        raise BundleError("int8 export is for Whisper graphs only (a features graph is a "
                          "small classifier: nothing to gain)")
    proto.doc_string = f"emovox {__version__}: {contains}"
    _dedupe_opsets(proto)
    onnx.checker.check_model(proto)
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    audio = {"sample_rate": extractor.sample_rate,
             "channels": "mono: average of the channels",
             "resampling": "soxr HQ to sample_rate",
             "offset": extractor.offset, "duration": extractor.duration,
             "min_seconds": 0.1, "max_file_seconds": MAX_FILE_SECONDS}
    preprocessing: dict[str, Any] = {"audio": audio}
    if kind == "whisper_waveform" and signal_steps is not None:
        # Loudness runs in the graph; only trimming (if any) is left to the caller.
        signal_steps = None if signal_steps["trim_top_db"] is None else {
            "trim_top_db": signal_steps["trim_top_db"], "loudness_lufs": None}
    if signal_steps is not None:
        preprocessing["signal"] = {
            **signal_steps,
            "description": "applied to the whole resampled recording, before the window: "
                           "leading/trailing audio quieter than trim_top_db below the peak "
                           "removed (librosa.effects.trim), then scaled to loudness_lufs "
                           "integrated loudness (ITU-R BS.1770, pyloudnorm); null: skipped",
            "python": "emovox.preprocess.preprocess(signal, sample_rate, trim_top_db=..., "
                      "loudness_lufs=...)"}
    if kind == "whisper_log_mel":
        audio["max_seconds"] = float(getattr(extractor, "max_seconds", 30.0))
        audio["window"] = ("skip offset seconds, keep duration seconds (all when null), "
                           "then keep at most max_seconds")
        preprocessing["log_mel"] = log_mel_spec()
    elif kind == "whisper_waveform":
        audio["max_seconds"] = float(getattr(extractor, "max_seconds", 30.0))
        preprocessing.update(_waveform_spec(audio, target_lufs,
                                            trim=signal_steps is not None))
    else:
        preprocessing["extractor"] = {
            "spec": bundle.features,
            "python": "emovox.features.get_extractor(features).extract_signal(signal, "
                      "sample_rate).reshape(1, -1)",
        }
    spec: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "emovox_version": __version__,
        # The folder the bundle was loaded from (emovox.inference.packaged.bundle_digest).
        "bundle_sha256": bundle_digest(source.path) if source.path is not None else None,
        "model_file": MODEL_FILE,
        "graph": {"kind": kind, "contains": contains, "opset": opset, "input": input_spec,
                  "output": {"name": "probabilities", "dtype": "float32",
                             "shape": [1 if kind == "whisper_log_mel" else "batch",
                                       len(bundle.classes)],
                             "description": "class probabilities, columns in 'classes' "
                                            "order, rows summing to 1"}},
        "classes": list(bundle.classes),
        # A calibrated model's "uncertain" rule (emovox.inference.rows.result_rows):
        # a top probability below this is answered "uncertain"; null: never.
        "uncertain_below": getattr((adapted or bundle).model, "uncertain_below", None),
        "labels": bundle.labels.to_dict(),
        "features": bundle.features,
        "preprocessing": preprocessing,
        "training": bundle.training,
    }
    if plain_head is not None:
        batch = 1 if kind == "whisper_log_mel" else "batch"
        spec["graph"]["features_output"] = {
            "name": "features", "dtype": "float32",
            "shape": [batch, width],
            "description": "the pooled encoder features (input of the adaptation)"}
        spec["graph"]["frames_output"] = {
            "name": "frames", "dtype": "float32",
            "shape": [batch, "frames", width],
            "frame_seconds": ENCODER_FRAME_SECONDS,
            "description": "the same encoder states frame by frame (frame k covers "
                           "[k, k + 1) * frame_seconds of the analysed window); their "
                           "mean over frames is 'features'. A timeline pools the frames "
                           "inside each window and applies the head in "
                           f"{LINEAR_HEAD_FILE} (emovox.inference.frames)"}

    out_dir = Path(out_dir)
    with atomic_folder(out_dir) as work:
        onnx.save_model(proto, str(work / MODEL_FILE), save_as_external_data=False)
        if int8:
            float_model = work / "float32.onnx"
            (work / MODEL_FILE).replace(float_model)
            spec["graph"]["quantization"] = quantize_int8(float_model, work / MODEL_FILE)
        spec["sha256"] = hashlib.sha256((work / MODEL_FILE).read_bytes()).hexdigest()
        if plain_head is not None:
            spec["graph"]["frames_output"]["head"] = write_linear_head(
                work / LINEAR_HEAD_FILE, plain_head, order)
        if adapted_head is not None:  # only set for a speaker-normalised bundle
            assert adapted is not None and adapted.reference is not None
            spec["adaptation"] = write_adaptation(
                work, adapted_head,
                [list(adapted.model.classes_).index(c) for c in bundle.classes],
                adapted.reference, float(adapted.preprocessing.get(
                    "prior_weight", DEFAULT_PRIOR_WEIGHT)))
        (work / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        card = bundle.card or "# Model card\n\n(none given)\n"
        if int8:  # the figures above are the float model's: say what differs
            card += ("\n## This export: int8 weights\n\nThe encoder's matrix weights are "
                     "quantised to int8 per output channel (ONNX Runtime dynamic "
                     "quantisation; preprocessing and head stay float32): about twice as "
                     "fast on CPU, and its probabilities move by up to a few hundredths "
                     "from the float model's (the scores above are the float model's; "
                     "benchmarks/int8_agreement.py measures the difference).\n")
        (work / CARD_FILE).write_text(card)
        spec["check"] = _reference_check(bundle, work, check and not int8)
        if int8:
            spec["check"]["float32"] = _int8_check(work, float_model, check)
            float_model.unlink()
        (work / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
    return out_dir


def quantize_int8(source: Path, target: Path) -> dict[str, Any]:
    """Dynamic int8 quantisation of a graph's MatMul weights (ONNX Runtime).

    The preprocessing and the classifier head (:data:`FLOAT_NODES`) stay float32;
    activations are quantised per call, so the graph's inputs and outputs are
    unchanged.

    Parameters
    ----------
    source : Path
        The float32 graph.
    target : Path
        Where to write the quantised graph (one file, weights inside).

    Returns
    -------
    dict
        The ``graph.quantization`` entry of ``preprocessing.json``.
    """
    import onnx

    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as error:
        raise missing_onnx("onnxruntime (quantization)", error) from None
    nodes = onnx.load_model(str(source), load_external_data=False).graph.node
    kept = [n.name for n in nodes if n.name.startswith(FLOAT_NODES)]
    with quiet_root_logger():
        # Per output channel: as fast as one scale per tensor here, and closer to
        # float32 (timeline UAR within 0.002 of it on the speed benchmark's recording,
        # against 0.019 per tensor; docs/RESULTS.md).
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=kept,
                         per_channel=True, extra_options={"MatMulConstBOnly": True})
    quantised = sum(n.op_type == "DynamicQuantizeLinear" for n in
                    onnx.load_model(str(target), load_external_data=False).graph.node)
    return {"method": "onnxruntime.quantization.quantize_dynamic, weight_type QInt8 per "
                      "output channel, MatMul with constant weights only (the encoder's "
                      "projections, and its two convolutions written as matrix products); "
                      "preprocessing and classifier head kept float32",
            "quantised_inputs": quantised}


def _int8_check(folder: Path, float_model: Path, strict: bool) -> dict[str, Any]:
    """Probabilities of the float32 and int8 graphs on a synthetic voice."""
    from emovox.inference.onnx_backend import OnnxBackend
    from emovox.synth import synth_voice

    signal = synth_voice(2.0, seed=0)
    quantised = OnnxBackend(folder).encode([signal], SAMPLE_RATE).plain
    full = OnnxBackend(folder, model_file=float_model.name).encode([signal], SAMPLE_RATE).plain
    assert quantised is not None and full is not None  # Whisper graphs always answer
    diff = float(np.max(np.abs(quantised - full)))
    if strict and not diff <= INT8_CHECK_TOLERANCE:
        raise BundleError(f"int8 export check failed: probabilities differ from the float32 "
                          f"graph by {diff:.2e} (> {INT8_CHECK_TOLERANCE:g})")
    return {"max_abs_diff_int8_vs_float32": diff,
            "float32_probabilities": [round(float(p), 6) for p in full[0]]}


def _front_settings(extractor: Any, target_lufs: float | None) -> dict[str, Any]:
    """The in-graph preprocessing of a Whisper extractor: loudness target and window."""
    start = round(extractor.offset * SAMPLE_RATE)
    length = round(float(getattr(extractor, "max_seconds", 30.0)) * SAMPLE_RATE)
    if extractor.duration is not None:
        length = min(length, round(extractor.duration * SAMPLE_RATE))
    return {"target_lufs": target_lufs, "start": start, "length": length}


def _waveform_spec(audio: dict[str, Any], target_lufs: float | None,
                   trim: bool) -> dict[str, Any]:
    """``preprocessing`` entries of a ``whisper_waveform`` graph: what the graph does,
    and what a caller must do before it."""
    from emovox.export_waveform import loudness_spec

    caller = ["decode the audio and average its channels to mono",
              f"resample to {SAMPLE_RATE} Hz (soxr HQ in emovox)"]
    if trim:
        caller.append("trim leading/trailing silence (preprocessing.signal)")
    caller += ["refuse what the graph cannot analyse: less than min_seconds, or silent "
               "(no 50 ms frame above -85 dBFS RMS, emovox.audio.check_signal); the "
               "analysed window needs more than 200 samples",
               "run the graph on float32 [1, samples] (or equal-length rows as a batch)"]
    in_graph = []
    if target_lufs is not None:
        in_graph.append("loudness scaling of the whole input to loudness.target_lufs "
                        "(preprocessing.loudness)")
    in_graph += ["analysed window: samples [offset * 16000, + min(duration, max_seconds) "
                 "* 16000) of the scaled input", "Whisper log-mel (preprocessing.log_mel)",
                 "encoder, pooling, classifier"]
    mel = log_mel_spec()
    mel["layout"] = "computed inside the graph from the analysed window"
    entries: dict[str, Any] = {"caller": caller, "in_graph": in_graph, "log_mel": mel}
    if target_lufs is not None:
        entries["loudness"] = loudness_spec(float(target_lufs))
    audio["window"] = "cut inside the graph, after the loudness is measured on the whole input"
    return entries


def _reference_check(bundle: Bundle, folder: Path, strict: bool) -> dict[str, Any]:
    """Native vs ONNX probabilities on a synthetic voice (stored in the spec)."""
    from emovox.recognizer import Recognizer
    from emovox.synth import synth_voice

    signal = synth_voice(2.0, seed=0)
    # The graph does not adapt to the speaker; compare with the unadapted native model.
    native = Recognizer(bundle, n_jobs=1, adapt="none").predict_signal(
        signal, SAMPLE_RATE)[bundle.classes]
    exported = OnnxRecognizer(folder).predict_signal(signal, SAMPLE_RATE)[bundle.classes]
    native_p = native.to_numpy(dtype=np.float64)[0]
    diff = float(np.max(np.abs(native_p - exported.to_numpy(dtype=np.float64)[0])))
    if strict and not diff <= CHECK_TOLERANCE:
        raise BundleError(f"ONNX export check failed: probabilities differ from the native "
                          f"model by {diff:.2e} (> {CHECK_TOLERANCE:g}) on a synthetic voice")
    return {"signal": "emovox.synth.synth_voice(2.0, seed=0) at 16000 Hz",
            "native_probabilities": [round(float(p), 6) for p in native_p],
            "max_abs_diff": diff}


def _fold_linear(model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """``(mean, scale, coef, intercept)`` of a [StandardScaler] + LogisticRegression model.

    ``None`` for any other model (it is then converted with skl2onnx).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    temperature = 1.0
    if type(model).__name__ == "CalibratedClassifier":
        # softmax(log p / T) of a softmax model = softmax of its logits divided by T.
        temperature, model = model.temperature_, model.base_
    steps = [s for _, s in model.steps if s not in (None, "passthrough")] \
        if isinstance(model, Pipeline) else [model]
    if not steps or not isinstance(steps[-1], LogisticRegression):
        return None
    classifier = steps[-1]
    if getattr(classifier, "solver", "lbfgs") == "liblinear" and len(classifier.classes_) > 2:
        return None  # one-vs-rest probabilities, not a softmax
    if getattr(classifier, "multi_class", "auto") == "ovr" and len(classifier.classes_) > 2:
        return None
    dim = classifier.coef_.shape[1]
    mean, scale = np.zeros(dim), np.ones(dim)
    for step in steps[:-1]:
        if not isinstance(step, StandardScaler):
            return None
        step_mean = step.mean_ if step.mean_ is not None else np.zeros(dim)
        step_scale = step.scale_ if step.scale_ is not None else np.ones(dim)
        # (((x - m) / s - m2) / s2) = (x - (m + m2 s)) / (s s2)
        mean, scale = mean + step_mean * scale, scale * step_scale
    return mean, scale, classifier.coef_ / temperature, classifier.intercept_ / temperature


def _whisper_parts(extractor: Any) -> tuple[list[Any], dict[str, Any] | None] | None:
    """The Whisper encoders a bundle's features come from, and the signal steps before
    them: one encoder, or each part of a ``fused`` bundle in order. None for other
    features, or for parts whose preprocessing, window or pooling differ (one graph
    front feeds every encoder)."""
    parts = extractor.extractors if extractor.name == "fused" else [extractor]
    encoders, steps = [], []
    for part in parts:
        if part.name == "preprocessed" and part.inner.name == "whisper_encoder":
            encoders.append(part.inner)
            steps.append({"trim_top_db": part.trim_top_db, "loudness_lufs": part.loudness_lufs})
        elif part.name == "whisper_encoder":
            encoders.append(part)
            steps.append(None)
        else:
            return None
    settings = [(e.sample_rate, e.offset, e.duration, getattr(e, "max_seconds", 30.0),
                 e.pooling) for e in encoders]
    if any(step != steps[0] for step in steps) or len(set(settings)) > 1:
        return None
    return encoders, steps[0]


def _whisper_graph(bundle: Bundle, encoders: Sequence[Any], order: list[int], opset: int,
                   dynamo: bool, front: dict[str, Any] | None = None,
                   matmul_convs: bool = False
                   ) -> tuple[Any, str, tuple[np.ndarray, ...] | None]:
    """One graph from log-mel (or waveform) to probabilities for a Whisper bundle.

    ``encoders``: its Whisper extractors (:func:`_whisper_parts`), each run on the same
    log-mel, their pooled states concatenated in order. With a linear head (folded in),
    two more outputs: ``features``, the pooled encoder states (the input of the head,
    for adaptation outside the graph), and ``frames``, the same states frame by frame
    (``mean`` pooling only), for timelines that pool windows themselves. ``front``: the
    :func:`_front_settings` of a waveform graph (None: the graph takes the log-mel).
    ``matmul_convs``: the encoders' convolutions as matrix products, so that int8
    quantisation reaches them.

    Returns
    -------
    (onnx.ModelProto, str, tuple or None)
        The graph, what it contains, and the folded linear head ``(mean, scale, coef,
        intercept)`` it ends with (None: a converted scikit-learn model).
    """
    import torch

    from emovox.features.encoders import load_whisper_encoder

    pooling = encoders[0].pooling
    width = sum(math.prod(e.output_shape) for e in encoders)
    model = bundle.model
    folded = _fold_linear(model)
    if folded is not None:
        _check_folded(model, folded, order, width)
        if bundle.reference is not None:
            # The graph predicts without adaptation: features are standardised by the
            # average training speaker, folded in front of the scaler:
            # ((x - r) / q - m) / s = (x - (r + m q)) / (q s).
            mean, scale, coef, intercept = folded
            ref_scale = np.sqrt(bundle.reference.var + 1e-6)
            folded = (bundle.reference.mean + mean * ref_scale, ref_scale * scale,
                      coef, intercept)
        head: torch.nn.Module | None = _torch_classes().LinearHead(*folded, order)
    elif bundle.reference is not None:
        raise BundleError("a speaker-normalised bundle exports only with a linear head")
    else:
        head = None
    module = _torch_classes().WhisperModule(
        [(load_whisper_encoder(e.model), list(e.layer_indices)) for e in encoders],
        pooling, head, matmul_convs).eval()
    outputs = list(module.outputs)
    if front is None:
        example = torch.from_numpy(whisper_log_mel_numpy(_warm_signal(3.0)))[None]
        name, axes, batch, takes = "mel", {2: "frames"}, False, "input log-mel"
    else:
        from emovox.export_waveform import waveform_classes

        classes = waveform_classes()
        module = classes.WaveformModel(classes.WaveformFront(
            front["target_lufs"], front["start"], front["length"]), module).eval()
        example = torch.from_numpy(_warm_signal(3.0))[None]
        name, axes, batch = "waveform", {1: "samples"}, True
        takes = "input 16 kHz waveform" + (
            f", loudness scaled to {front['target_lufs']:g} LUFS (BS.1770) in the graph, "
            if front["target_lufs"] is not None else ", ") + "log-mel in the graph"
    pooled = " + ".join(f"Whisper {e.model} encoder, {pooling} pooling of hidden states "
                        f"{list(e.layer_indices)}" for e in encoders)
    if head is not None:
        proto = _torch_to_onnx(module, example, name, outputs, axes, opset, dynamo,
                               dynamic_batch=batch)
        for position, axis in ((1, 1), (2, 2))[:len(outputs) - 1]:  # features, frames
            proto.graph.output[position].type.tensor_type.shape.dim[axis].dim_value = width
        if "frames" in outputs:  # traced with 150 frames: name the axis
            proto.graph.output[2].type.tensor_type.shape.dim[1].dim_param = "frames"
        names = " + ".join(type(s).__name__ for _, s in getattr(model, "steps", [])) \
            or type(model).__name__
        return proto, (f"{pooled}, {names} folded in, softmax; "
                       f"{takes}, output probabilities"), folded
    encoder = _torch_to_onnx(module, example, name, "features", axes, opset, dynamo,
                             dynamic_batch=batch)
    classifier = _sklearn_proto(model, order, width, opset)
    proto = _join(encoder, classifier)
    return proto, (f"{pooled}, then {type(model).__name__} "
                   f"converted by skl2onnx; {takes}, output probabilities"), None


def _check_folded(model: Any, folded: tuple[np.ndarray, ...], order: list[int],
                  dim: int) -> None:
    """Make sure the folded head reproduces ``model.predict_proba``."""
    mean, scale, coef, intercept = folded
    x = np.random.default_rng(0).standard_normal((8, dim)) * scale + mean
    expected = model.predict_proba(x)[:, order]
    proba = linear_head_probabilities(x, mean, scale, coef, intercept)
    if not np.allclose(proba[:, order], expected, atol=1e-6):
        raise BundleError("cannot fold this logistic regression into the graph: its "
                          "probabilities are not a softmax of its decision function")


def _warm_signal(seconds: float) -> np.ndarray:
    from emovox.synth import synth_voice

    return synth_voice(seconds, seed=1)


def _network_graph(model: Any, order: list[int], dim: int, opset: int,
                   dynamo: bool) -> tuple[Any, str]:
    """A NeuralClassifier with its standardisation and softmax, on flat features."""
    import torch

    module = _torch_classes().NetworkModule(model, order).eval()
    example = torch.zeros(1, dim)
    proto = _torch_to_onnx(module, example, "features", "probabilities", {}, opset, dynamo,
                           dynamic_batch=True)
    return proto, (f"{model.network} network with its standardisation and softmax; input "
                   "flattened features, output probabilities")


def _sklearn_graph(model: Any, order: list[int], dim: int, opset: int) -> tuple[Any, str]:
    proto = _sklearn_proto(model, order, dim, opset)
    names = " + ".join(type(s).__name__ for _, s in getattr(model, "steps", [])) \
        or type(model).__name__
    return proto, f"{names} (skl2onnx); input features, output probabilities"


def _sklearn_proto(model: Any, order: list[int], dim: int, opset: int) -> Any:
    """skl2onnx graph ``features`` -> ``probabilities`` (columns reordered to ``order``)."""
    try:
        from skl2onnx import to_onnx
        from skl2onnx.common.data_types import FloatTensorType
    except ImportError as error:
        raise missing_onnx("skl2onnx", error) from None
    from onnx import helper
    from sklearn.pipeline import Pipeline

    final = model.steps[-1][1] if isinstance(model, Pipeline) else model
    try:
        proto = to_onnx(model, initial_types=[("features", FloatTensorType([None, dim]))],
                        target_opset={"": opset, "ai.onnx.ml": 3},
                        options={id(final): {"zipmap": False}})
    except Exception as error:  # skl2onnx raises many types for unsupported models
        raise BundleError(f"cannot convert {type(final).__name__} to ONNX with skl2onnx: "
                          f"{error}") from None
    graph = proto.graph
    probability = next(o.name for o in graph.output if "prob" in o.name)
    label = [o for o in graph.output if o.name != probability]
    for output in label:
        graph.output.remove(output)
    renamed = "sklearn_probabilities"
    for node in graph.node:
        node.output[:] = [renamed if o == probability else o for o in node.output]
    indices = helper.make_tensor("emovox_class_order", 7, [len(order)], order)  # int64
    graph.initializer.append(indices)
    graph.node.append(helper.make_node("Gather", [renamed, "emovox_class_order"],
                                       ["probabilities"], axis=1, name="emovox_reorder"))
    out = next(o for o in graph.output if o.name == probability)
    graph.output.remove(out)
    graph.output.append(helper.make_tensor_value_info("probabilities", 1,
                                                      [None, len(order)]))
    return _prune(proto)


def _prune(proto: Any) -> Any:
    """Drop nodes that no longer feed an output (e.g. skl2onnx's label branch)."""
    graph = proto.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            keep.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(keep))
    used = {i for n in graph.node for i in n.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)
    return proto


def _dedupe_opsets(proto: Any) -> None:
    """One opset import per domain (the highest), as some converters repeat them."""
    from onnx import helper

    versions: dict[str, int] = {}
    for entry in proto.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    del proto.opset_import[:]
    proto.opset_import.extend(helper.make_opsetid(k, v) for k, v in versions.items())


def _join(first: Any, second: Any) -> Any:
    """Feed ``first``'s ``features`` output into ``second``'s ``features`` input."""
    from onnx import compose, helper

    second = compose.add_prefix(second, "clf_", rename_inputs=False, rename_outputs=False)
    domains = {d.domain: d.version for d in first.opset_import}
    for d in second.opset_import:
        domains[d.domain] = max(domains.get(d.domain, 0), d.version)
    first.ir_version = second.ir_version = max(first.ir_version, second.ir_version)
    for proto in (first, second):
        del proto.opset_import[:]
        proto.opset_import.extend(helper.make_opsetid(k, v) for k, v in domains.items())
    return compose.merge_models(first, second, io_map=[("features", "features")])


def _torch_to_onnx(module: Any, example: Any, input_name: str, output_name: str | list[str],
                   dynamic: dict[int, str], opset: int, dynamo: bool,
                   dynamic_batch: bool) -> Any:
    """Export a torch module to an in-memory ModelProto with weights inside.

    ``output_name``: one name, or a list for a module returning a tuple.
    """
    import onnx
    import torch

    axes = dict(dynamic)
    if dynamic_batch:
        axes[0] = "batch"
    output_names = [output_name] if isinstance(output_name, str) else list(output_name)
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = Path(tmp) / "graph.onnx"
        if dynamo:
            try:
                import onnxscript  # noqa: F401
            except ImportError as error:
                raise missing_onnx("onnxscript (for dynamo=True)", error) from None
            limits = {"frames": (4, MAX_MEL_FRAMES),
                      "samples": (N_FFT + 1, round(MAX_FILE_SECONDS * SAMPLE_RATE))}
            shapes = {input_name: {
                axis: torch.export.Dim(name, min=limits.get(name, (1, 4096))[0],
                                       max=limits.get(name, (1, 4096))[1])
                for axis, name in axes.items()}}
            torch.onnx.export(module, (example,), str(path), dynamo=True, opset_version=opset,
                              input_names=[input_name], output_names=output_names,
                              dynamic_shapes=shapes, external_data=False, verbose=False)
        else:
            torch.onnx.export(module, (example,), str(path), dynamo=False,
                              opset_version=opset, input_names=[input_name],
                              output_names=output_names,
                              dynamic_axes={input_name: axes, **{
                                  name: {0: "batch"} if dynamic_batch else {}
                                  for name in output_names}})
        return onnx.load_model(str(path), load_external_data=True)


_TORCH_CLASSES: dict[str, Any] = {}


def _torch_classes() -> Any:
    """The torch modules used for export, defined on first use.

    Kept out of module scope so that importing this module (for
    :class:`OnnxRecognizer`) never imports torch.
    """
    if _TORCH_CLASSES:
        return SimpleNamespace(**_TORCH_CLASSES)
    import torch
    from torch import nn

    class LinearHead(nn.Module):
        """Standardisation + logistic regression (softmax, or sigmoid for 2 classes)."""

        def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray,
                     intercept: np.ndarray, order: Sequence[int]) -> None:
            super().__init__()
            # Fold the scaler into the linear layer: W ((x - m) / s) + b = (W / s) x + b'.
            weight = coef / scale
            bias = intercept - weight @ mean
            self.register_buffer("weight", torch.as_tensor(weight.T, dtype=torch.float32))
            self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32))
            self.register_buffer("order", torch.as_tensor(list(order), dtype=torch.long))
            self.binary = coef.shape[0] == 1

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            z = x @ self.weight + self.bias
            if self.binary:
                p1 = torch.sigmoid(z)
                proba = torch.cat([1.0 - p1, p1], dim=1)
            else:
                proba = torch.softmax(z, dim=1)
            return proba.index_select(1, self.order)

    class ConvAsMatMul(nn.Module):
        """A 1-D convolution written as one matrix product over stacked shifted inputs.

        Same numbers as the convolution (to float rounding); ONNX Runtime's dynamic
        quantisation handles MatMul with constant weights (fast int8 kernels) but only
        Conv as ConvInteger, which is slower than float32 here.
        """

        def __init__(self, conv: nn.Conv1d) -> None:
            super().__init__()
            out_channels, in_channels, kernel = conv.weight.shape
            self.kernel, self.stride = kernel, int(conv.stride[0])
            self.padding = int(conv.padding[0])  # type: ignore[index]
            # (out, in, k) -> (k * in, out): row j * in + c multiplies input c at shift j.
            self.register_buffer("weight", conv.weight.detach().permute(2, 1, 0).reshape(
                kernel * in_channels, out_channels).contiguous())
            self.register_buffer("bias", conv.bias.detach().clone())

        def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, in, time)
            n = (x.shape[2] + 2 * self.padding - self.kernel) // self.stride + 1
            x = nn.functional.pad(x, (self.padding, self.padding)).transpose(1, 2)
            shifted = [x[:, j: j + self.stride * (n - 1) + 1: self.stride]
                       for j in range(self.kernel)]
            return (torch.cat(shifted, dim=2) @ self.weight + self.bias).transpose(1, 2)

    class WhisperModule(nn.Module):
        """Encoders -> selected hidden states -> pooling over frames -> optional head.

        ``encoders``: (encoder, state indices) pairs, each run on the same log-mel; their
        pooled states are concatenated in order (a fused bundle's layout). Outputs
        (:attr:`outputs`): the features alone without a head; with one, the
        probabilities, the features and (``mean`` pooling) the frames, each frame
        layer-major like the features. ``matmul_convs``: the encoders' two convolutions
        written as matrix products (:class:`ConvAsMatMul`), for an int8 export.
        """

        def __init__(self, encoders: Sequence[tuple[nn.Module, Sequence[int]]],
                     pooling: str, head: nn.Module | None,
                     matmul_convs: bool = False) -> None:
            super().__init__()
            modules = []
            for encoder, _ in encoders:
                if matmul_convs:  # a copy: the loaded encoder is shared with native models
                    encoder = copy.deepcopy(encoder)
                    encoder.conv1 = ConvAsMatMul(encoder.conv1)
                    encoder.conv2 = ConvAsMatMul(encoder.conv2)
                modules.append(encoder)
            self.encoders = nn.ModuleList(modules)
            self.layers = [list(layers) for _, layers in encoders]
            self.pooling = pooling
            self.head = head
            self.outputs = ("features",) if head is None else (
                ("probabilities", "features", "frames") if pooling == "mean"
                else ("probabilities", "features"))

        def forward(self, mel: torch.Tensor) -> Any:
            pooled_parts, frame_parts = [], []
            for encoder, layers in zip(self.encoders, self.layers, strict=True):
                states = encoder(mel, max(layers) + 1)  # (states, batch, frames, d)
                if layers != list(range(states.shape[0])):
                    states = torch.stack([states[i] for i in layers])
                pooled = states.mean(dim=2)  # (layers, batch, d)
                if self.pooling == "mean_std":
                    pooled = torch.cat([pooled, states.std(dim=2, unbiased=False)], dim=2)
                pooled_parts.append(pooled.permute(1, 0, 2).reshape(mel.shape[0], -1))
                frame_parts.append(
                    states.permute(1, 2, 0, 3).reshape(mel.shape[0], states.shape[2], -1))
            features = torch.cat(pooled_parts, dim=1)
            if self.head is None:
                return features
            if len(self.outputs) == 2:
                return self.head(features), features
            return self.head(features), features, torch.cat(frame_parts, dim=2)

    class NetworkModule(nn.Module):
        """A NeuralClassifier's network with its standardisation and softmax."""

        def __init__(self, model: Any, order: Sequence[int]) -> None:
            super().__init__()
            self.network = model.network_
            self.shape = [int(s) for s in model.input_shape_]
            self.register_buffer("mean", torch.as_tensor(model.mean_, dtype=torch.float32))
            self.register_buffer("scale", torch.as_tensor(model.scale_, dtype=torch.float32))
            self.register_buffer("order", torch.as_tensor(list(order), dtype=torch.long))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = (x.reshape([-1, *self.shape]) - self.mean) / self.scale
            proba = torch.softmax(self.network(x), dim=1)
            return proba.index_select(1, self.order)

    _TORCH_CLASSES.update(LinearHead=LinearHead, ConvAsMatMul=ConvAsMatMul,
                          WhisperModule=WhisperModule, NetworkModule=NetworkModule)
    return SimpleNamespace(**_TORCH_CLASSES)


# ---------------------------------------------------------------------- inference
