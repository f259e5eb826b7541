"""The HTTP API and the browser page: a FastAPI app over one recogniser.

Endpoints
---------
``GET /``                the browser page (record, upload, guided session)
``POST /api/predict``    one recording -> emotion, confidence, probabilities, duration
``POST /api/timeline``   a long recording -> emotion over time (when the recogniser
                         has ``predict_timeline``; 501 otherwise)
``GET /api/model``       classes, label set, features, training summary, model card
``GET /api/health``      ``{"status": "ok"}``
``GET /docs``            the OpenAPI documentation

Audio is sent as ``multipart/form-data`` (a field ``file``) or as a raw ``audio/*`` /
``application/octet-stream`` body. The upload is streamed to a temporary file and
refused with 413 as soon as it passes ``max_upload_bytes``; a recording longer than
``max_seconds`` is refused with 413 from its header, before it is decoded; a file
that is not audio gets 415 and other unusable audio 422, each with the one-line
:class:`~emovox.errors.AudioError` message in ``detail``. Predictions run in worker
threads (at most ``workers`` at a time), so the server keeps answering while it
computes.

What one request may cost is bounded before any work starts: every query parameter
is checked (422 naming it in ``field``; unknown parameters too), a timeline's
windows are counted from the recording's header (at most ``max_windows``, 413
above), form fields other than the file are refused past :data:`MAX_FIELD_BYTES`
as they stream in (413), and a body that takes longer than ``receive_seconds`` to
arrive is answered 408. Each timeline keeps its own adaptation state, so none waits
for another.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pandas as pd
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from emovox import __version__
from emovox.audio import audio_info, load_audio
from emovox.errors import AudioError, ConfigError, EmovoxError
from emovox.timeline import DEFAULT_HOP, DEFAULT_WINDOW, check_window, window_count
from emovox.vad import VAD_METHODS

logger = logging.getLogger(__name__)

#: Default upload limit (the ``--max-upload-mb 20`` of ``emovox serve``).
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Default limit on the duration of a recording, in seconds.
DEFAULT_MAX_SECONDS = 600.0
#: Longest whole-file prediction of the recognisers.
MAX_PREDICT_SECONDS = 600.0
#: The page, its script and its style.
STATIC_DIR = Path(__file__).resolve().parent / "static"
#: Shortest and longest timeline window accepted by the API, in seconds.
MIN_WINDOW, MAX_WINDOW = 0.5, 30.0
#: Shortest hop between timeline windows, in seconds.
MIN_HOP = 0.25
#: Most times a second of audio may be analysed (``window / hop``): bounds the work.
MAX_OVERLAP = 8.0
#: Default limit on the windows of one timeline (600 s at the smallest hop: 2400).
DEFAULT_MAX_WINDOWS = 2400
#: Default seconds allowed to receive one request body (slow clients get 408).
DEFAULT_RECEIVE_SECONDS = 60.0
#: Largest form field other than the audio file, in bytes.
MAX_FIELD_BYTES = 4096
#: Most parts in one form (python-multipart bounds the headers of each part).
MAX_PARTS = 16
#: Values of ``vad`` that mean no voice activity detection.
NO_VAD = ("none", "off", "")
#: Room for the multipart boundaries and part headers around the file.
_MULTIPART_OVERHEAD = 64 * 1024
_CHUNK = 64 * 1024

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {"type": "object", "required": ["file"],
                       "properties": {"file": {"type": "string", "format": "binary",
                                               "description": "An audio file (WAV, FLAC, "
                                                              "OGG, AIFF, MP3...)"}}}},
        "audio/*": {"schema": {"type": "string", "format": "binary"}},
    },
}
_ERRORS = {
    408: {"description": "The request body took longer than allowed to arrive"},
    413: {"description": "Upload larger than the limit, recording longer than allowed, "
                         "a form field past its limit, or a timeline with too many windows"},
    415: {"description": "Not a readable audio file"},
    422: {"description": "Unusable audio (empty, too short, silent...), or an invalid "
                         "parameter (named in 'field')"},
}
_TIMELINE_PARAMETERS = [
    {"name": "window", "in": "query", "required": False,
     "description": f"Seconds per window, {MIN_WINDOW:g} to {MAX_WINDOW:g} "
                    f"(default {DEFAULT_WINDOW:g})",
     "schema": {"type": "number", "minimum": MIN_WINDOW, "maximum": MAX_WINDOW}},
    {"name": "hop", "in": "query", "required": False,
     "description": f"Seconds between window starts, at least {MIN_HOP:g} and window / "
                    f"{MAX_OVERLAP:g}, at most the window (default {DEFAULT_HOP:g})",
     "schema": {"type": "number", "minimum": MIN_HOP, "maximum": MAX_WINDOW}},
    {"name": "vad", "in": "query", "required": False,
     "description": "Voice activity detector, or 'none' to classify every window",
     "schema": {"type": "string", "enum": [*VAD_METHODS, "none"]}},
]


class ApiError(Exception):
    """An error answered as ``{"detail": message}`` with an HTTP status.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        One line for the user.
    field : str, optional
        The request parameter or form field at fault (answered as ``field``).
    """

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


@dataclass
class Upload:
    """An uploaded file saved to a temporary path.

    Attributes
    ----------
    path : Path
        The temporary file (deleted by the endpoint).
    filename : str
        The client's name for it (or ``"upload"``).
    size : int
        Bytes.
    """

    path: Path
    filename: str
    size: int


# ---------------------------------------------------------------------- uploads
def _safe_suffix(filename: str) -> str:
    suffix = Path(filename).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload too large: the limit is {limit / 1048576:.1f} MB "
                         f"({limit} bytes); send a shorter or compressed recording")


async def receive_upload(request: Request, limit: int, directory: str | None = None,
                         timeout: float | None = None) -> Upload:
    """Stream the request's audio to a temporary file, refusing it past ``limit`` bytes.

    Everything is refused as it streams in, never after reading it all: a body past
    ``limit`` plus room for the form, a form field other than the file past
    :data:`MAX_FIELD_BYTES`, more than :data:`MAX_PARTS` parts, a body still arriving
    after ``timeout`` seconds (python-multipart itself refuses oversized part headers).

    Parameters
    ----------
    request : Request
        A ``multipart/form-data`` request with the audio in the field ``file`` (or the
        first part that has a file name), or a raw ``audio/*`` /
        ``application/octet-stream`` body (name from the ``X-Filename`` header).
    limit : int
        Most bytes accepted for the file.
    directory : str, optional
        Folder of the temporary file.
    timeout : float, optional
        Seconds allowed for the whole body to arrive (None: no limit).

    Returns
    -------
    Upload

    Raises
    ------
    ApiError
        408 past ``timeout``, 413 past a size limit, 415 for another content type,
        422 without a file or for a malformed form.
    """
    from python_multipart.multipart import parse_options_header

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit + \
            _MULTIPART_OVERHEAD:
        raise _too_large(limit)
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    raw = content_type.startswith(b"audio/") or content_type == b"application/octet-stream"
    if content_type != b"multipart/form-data" and not raw:
        raise ApiError(415, "send the audio as multipart/form-data (a field named 'file') "
                            "or as a raw audio/* body, not "
                            f"{content_type.decode('latin-1') or 'an empty content type'}")
    state: dict[str, Any] = {"size": 0, "file": None, "name": None, "done": False,
                             "headers": {}, "field": b"", "value": b"", "writing": False,
                             "body": 0, "parts": 0, "part": "", "part_size": 0}

    def open_file(filename: str) -> None:
        handle = tempfile.NamedTemporaryFile(  # noqa: SIM115  (closed below)
            prefix="emovox-upload-", suffix=_safe_suffix(filename), dir=directory,
            delete=False)
        state.update(file=handle, name=filename, writing=True)

    def write(data: bytes) -> None:
        state["size"] += len(data)
        if state["size"] > limit:
            raise _too_large(limit)
        state["file"].write(data)

    async def body() -> AsyncIterator[bytes]:
        # The whole body, file and form, is bounded (not only the file's bytes).
        async for chunk in request.stream():
            state["body"] += len(chunk)
            if state["body"] > limit + _MULTIPART_OVERHEAD:
                raise _too_large(limit)
            yield chunk

    try:
        with anyio.fail_after(timeout):
            if raw:
                open_file(request.headers.get("x-filename", "upload") or "upload")
                async for chunk in body():
                    write(chunk)
            else:
                await _parse_form(body(), options.get(b"boundary"), state, open_file, write)
        if state["file"] is None:
            raise ApiError(422, "no file in the form: send the audio in a field named 'file'")
        state["file"].close()
        return Upload(Path(state["file"].name), Path(state["name"]).name or "upload",
                      state["size"])
    except ApiError:
        _discard(state["file"])
        raise
    except TimeoutError:
        _discard(state["file"])
        raise ApiError(408, f"the request body took longer than {timeout:g} s to arrive; "
                            "send it faster or send a shorter recording") from None
    except Exception as error:  # a malformed multipart body
        _discard(state["file"])
        raise ApiError(422, f"could not read the upload ({type(error).__name__}: "
                            f"{error})") from None


async def _parse_form(chunks: AsyncIterator[bytes], boundary: bytes | None,
                      state: dict[str, Any], open_file: Callable[[str], None],
                      write: Callable[[bytes], None]) -> None:
    """Feed a multipart body to the parser: the file part is written as it comes, the
    other fields are only counted (and refused past :data:`MAX_FIELD_BYTES`)."""
    from python_multipart.multipart import MultipartParser, parse_options_header

    if not boundary:
        raise ApiError(422, "multipart/form-data request without a boundary")

    def on_part_begin() -> None:
        state["parts"] += 1
        if state["parts"] > MAX_PARTS:
            raise ApiError(413, f"more than {MAX_PARTS} parts in the form")

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        state["headers"][state["field"].decode("latin-1").lower()] = state["value"]
        state["field"], state["value"] = b"", b""

    def on_headers_finished() -> None:
        disposition = state["headers"].get("content-disposition", b"")
        _, params = parse_options_header(disposition)
        filename = params.get(b"filename")
        field = params.get(b"name", b"")
        if state["file"] is None and (filename is not None or field == b"file"):
            open_file((filename or b"upload").decode("utf-8", "replace") or "upload")
        state["part"] = field.decode("utf-8", "replace")[:64]
        state["part_size"] = 0

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["writing"]:
            write(data[start:end])
            return
        state["part_size"] += end - start
        if state["part_size"] > MAX_FIELD_BYTES:
            raise ApiError(413, f"form field {state['part']!r} is larger than "
                                f"{MAX_FIELD_BYTES} bytes: only the audio 'file' may be "
                                "large", field=state["part"] or None)

    def on_part_end() -> None:
        if state["writing"]:
            state["writing"], state["done"] = False, True
        state["headers"] = {}

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished, "on_part_data": on_part_data,
        "on_part_end": on_part_end})
    async for chunk in chunks:
        parser.write(chunk)
    parser.finalize()


def _discard(handle: Any) -> None:
    if handle is not None:
        handle.close()
        Path(handle.name).unlink(missing_ok=True)


# ---------------------------------------------------------------------- model access
def _sample_rate(recognizer: Any) -> int:
    rate = getattr(recognizer, "sample_rate", None)
    if rate is None:
        rate = recognizer.extractor.sample_rate
    return int(rate)


def model_info(recognizer: Any) -> dict[str, Any]:
    """What ``GET /api/model`` says about a recogniser (native or ONNX).

    Parameters
    ----------
    recognizer : Recognizer or OnnxRecognizer

    Returns
    -------
    dict
        ``engine``, ``classes``, ``labels``, ``features``, ``preprocessing``,
        ``training``, ``card`` and ``bundle`` (the source folder).
    """
    bundle = getattr(recognizer, "bundle", None)
    if bundle is not None:
        meta = bundle.metadata()
        return {"engine": "native", "classes": list(recognizer.classes),
                "labels": meta["labels"], "features": meta["features"],
                "preprocessing": meta.get("preprocessing", {}),
                "training": meta.get("training", {}), "card": bundle.card,
                "bundle": str(bundle.path) if bundle.path else None}
    spec = recognizer.metadata()
    return {"engine": "onnx",
            "classes": list(recognizer.classes), "labels": spec.get("labels", {}),
            "features": spec.get("features", {}),
            "preprocessing": spec.get("preprocessing", {}),
            "training": spec.get("training", {}), "card": getattr(recognizer, "card", ""),
            "bundle": str(getattr(recognizer, "path", "")) or None}


def _probabilities(row: pd.Series, classes: list[str]) -> dict[str, float]:
    return {c: round(float(row[c]), 6) for c in classes}


def _json_value(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


# ---------------------------------------------------------------------- parameters
def check_query(query: Mapping[str, str], allowed: tuple[str, ...]) -> None:
    """Refuse query parameters an endpoint does not take.

    Parameters
    ----------
    query : Mapping
        The request's query parameters.
    allowed : tuple of str
        The names the endpoint takes.

    Raises
    ------
    ApiError
        422 naming the first unknown parameter.
    """
    unknown = sorted(set(query) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no query parameters"
        raise ApiError(422, f"unknown parameter {unknown[0][:40]!r}: this endpoint takes "
                            f"{takes}", field=unknown[0][:40])


def _seconds(query: Mapping[str, str], name: str, default: float, low: float,
             high: float) -> float:
    """A query parameter in seconds, finite and within ``[low, high]``."""
    text = query.get(name)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and low <= value <= high):
        raise ApiError(422, f"{name} must be a number of seconds from {low:g} to {high:g}, "
                            f"got {text[:40]!r}", field=name)
    return value


def _default(function: Callable[..., Any], name: str, fallback: float) -> float:
    """The default of a numeric parameter of ``function`` (``fallback`` without one)."""
    parameter = inspect.signature(function).parameters.get(name)
    default = None if parameter is None else parameter.default
    return float(default) if isinstance(default, (int, float)) else fallback


def conversation_json(frame: pd.DataFrame) -> dict[str, Any]:
    """``speakers`` (per-speaker summary and strongest moments) and ``speaker_turns``
    of a timeline made with speakers."""
    from emovox.conversation import speaker_summary, strongest_moments

    summary = speaker_summary(frame)
    moments = strongest_moments(frame)
    speakers = []
    for speaker, row in summary.iterrows():
        mine = moments[moments["speaker"] == speaker]
        speakers.append({
            "speaker": str(speaker),
            "speech_seconds": round(float(row["speech_seconds"]), 3),
            "speech_share": round(float(row["speech_share"]), 4),
            "main_emotion": _json_value(row["main_emotion"]),
            "emotions": {str(c): round(float(row[c]), 4) for c in summary.columns
                         if c not in ("speech_seconds", "speech_share", "main_emotion")},
            "moments": [{"start": float(m.start), "end": float(m.end),
                         "emotion": str(m.emotion), "confidence": round(float(m.confidence), 4)}
                        for m in mine.itertuples()]})
    turns = [{"start": float(a), "end": float(b), "speaker": str(w)}
             for a, b, w in frame.attrs.get("speaker_turns", [])]
    return {"speakers": speakers, "speaker_turns": turns}


def timeline_options(query: Mapping[str, str],
                     predict_timeline: Callable[..., Any] | None = None) -> dict[str, Any]:
    """The validated ``window``, ``hop`` and ``vad`` of a timeline request.

    Parameters
    ----------
    query : Mapping
        The request's query parameters (no others are accepted).
    predict_timeline : callable, optional
        The recogniser's method, whose defaults fill in a missing ``window`` or
        ``hop`` (else :data:`~emovox.timeline.DEFAULT_WINDOW` and ``DEFAULT_HOP``).

    Returns
    -------
    dict
        ``window`` and ``hop`` in seconds (always), ``vad`` (a name or None, only when
        given), ``speakers`` (``"auto"``, a number or a range ``"MIN-MAX"``, only when
        given) and ``voices`` (the voice encoder, only with ``speakers``).

    Raises
    ------
    ApiError
        422 naming the parameter: unknown, not a finite number, ``window`` outside
        [:data:`MIN_WINDOW`, :data:`MAX_WINDOW`], ``hop`` under :data:`MIN_HOP` or
        ``window / MAX_OVERLAP`` or over ``window``, ``vad`` not a detector,
        ``voices`` not an encoder or without ``speakers``.
    """
    check_query(query, ("window", "hop", "vad", "speakers", "voices"))
    defaults = {name: _default(predict_timeline, name, fallback) if predict_timeline
                else fallback for name, fallback in (("window", DEFAULT_WINDOW),
                                                     ("hop", DEFAULT_HOP))}
    window = _seconds(query, "window", defaults["window"], MIN_WINDOW, MAX_WINDOW)
    # A short hop multiplies the work: bounded absolutely and relative to the window.
    hop = _seconds(query, "hop", defaults["hop"], max(MIN_HOP, window / MAX_OVERLAP),
                   MAX_WINDOW)
    try:
        check_window(window, hop)  # the timeline's own rule: hop <= window
    except ValueError as error:
        raise ApiError(422, str(error), field="hop") from None
    options: dict[str, Any] = {"window": window, "hop": hop}
    vad = query.get("vad")
    if vad is not None:
        if vad.lower() in NO_VAD:
            options["vad"] = None
        elif vad.lower() in VAD_METHODS:
            options["vad"] = vad.lower()
        else:
            raise ApiError(422, f"vad must be one of {', '.join(VAD_METHODS)} or none, "
                                f"got {vad[:40]!r}", field="vad")
    speakers = query.get("speakers")
    if speakers is not None:  # a conversation: separate the voices (auto, N or a range)
        from emovox.diarization import MAX_SPEAKERS, check_speakers, speaker_range

        try:
            options["speakers"] = check_speakers(speakers[:8])
        except ValueError as error:
            raise ApiError(422, str(error), field="speakers") from None
        asked = options["speakers"]  # N, or a range's top: above the bound is refused
        if asked != "auto" and speaker_range(asked, MAX_SPEAKERS + 1)[1] > MAX_SPEAKERS:
            raise ApiError(422, f"speakers: at most {MAX_SPEAKERS}", field="speakers")
    voices = query.get("voices")
    if voices is not None:
        from emovox.speakers import VOICE_ENCODERS

        if speakers is None:
            raise ApiError(422, "voices tells the voices of speakers apart: give speakers",
                           field="voices")
        if voices not in VOICE_ENCODERS:
            raise ApiError(422, f"voices must be one of {', '.join(VOICE_ENCODERS)}, "
                                f"got {voices[:40]!r}", field="voices")
        options["voices"] = voices
    return options


# ---------------------------------------------------------------------- the app
def _warm_voices() -> None:
    """Load the default voice encoder (its ONNX graphs built into the cache on the
    first start); a server without its weights still serves everything else."""
    from emovox.diarization import DEFAULT_VOICES
    from emovox.speakers import voice_encoder

    try:
        voice_encoder(DEFAULT_VOICES)
    except ConfigError as error:
        logger.warning("speakers will not be told apart: %s", error)


def create_app(
    recognizer: Any = None,
    *,
    bundle: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    workers: int | None = None,
    warm_up: bool = True,
    max_windows: int = DEFAULT_MAX_WINDOWS,
    receive_seconds: float | None = DEFAULT_RECEIVE_SECONDS,
) -> FastAPI:
    """Build the FastAPI app; the recogniser is loaded once, here.

    Parameters
    ----------
    recognizer : Recognizer or OnnxRecognizer, optional
        The model to serve; default: ``Recognizer(bundle, n_jobs=1)``.
    bundle : str or Path, optional
        Bundle folder used when ``recognizer`` is not given (``None``: the packaged
        default model).
    max_upload_bytes : int
        Largest upload accepted (413 above).
    max_seconds : float
        Longest recording accepted (413 above); whole-file predictions are further
        limited to ``MAX_PREDICT_SECONDS``.
    workers : int, optional
        Predictions computed at the same time (default: the number of cores).
    warm_up : bool
        Run one prediction on a synthetic voice and load the default voice encoder at
        startup, so the first request (with ``speakers`` or not) does not pay for
        loading weights and building graphs.
    max_windows : int
        Most windows of one timeline (413 above, counted from the header before any
        work).
    receive_seconds : float, optional
        Seconds allowed for a request body to arrive (408 after); None: no limit.

    Returns
    -------
    FastAPI
    """
    if max_upload_bytes <= 0:
        raise ValueError(f"max_upload_bytes must be > 0, got {max_upload_bytes}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
    if max_windows < 1:
        raise ValueError(f"max_windows must be >= 1, got {max_windows}")
    if receive_seconds is not None and not receive_seconds > 0:
        raise ValueError(f"receive_seconds must be > 0 or None, got {receive_seconds}")
    if recognizer is None:
        from emovox.recognizer import Recognizer

        recognizer = Recognizer(bundle, n_jobs=1)
    n_workers = workers or os.cpu_count() or 1
    predict_limit = min(max_seconds, MAX_PREDICT_SECONDS)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(n_workers)
        if warm_up:
            from emovox.synth import synth_voice

            await anyio.to_thread.run_sync(recognizer.predict_signal, synth_voice(1.5),
                                           16000)
            await anyio.to_thread.run_sync(_warm_voices)
        yield

    app = FastAPI(
        title="emovox",
        version=__version__,
        summary="Speech emotion recognition: the emotion of a recording, or of a long "
                "recording over time.",
        lifespan=lifespan,
    )
    app.state.recognizer = recognizer
    app.state.limits = {"max_upload_bytes": int(max_upload_bytes),
                        "max_seconds": float(max_seconds),
                        "max_predict_seconds": float(predict_limit)}
    app.state.timeline_limits = {"min_window": MIN_WINDOW, "max_window": MAX_WINDOW,
                                 "min_hop": MIN_HOP, "max_overlap": MAX_OVERLAP,
                                 "max_windows": int(max_windows)}

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        content: dict[str, Any] = {"detail": error.message, "status": error.status}
        if error.field is not None:
            content["field"] = error.field
        # Refused mid-body (408, 413): the rest of the body is not read, so the
        # connection cannot carry another request.
        headers = {"Connection": "close"} if error.status in (408, 413) else None
        return JSONResponse(content, status_code=error.status, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> JSONResponse:
        # A bug: one line for the client, the traceback stays in the server's log.
        return JSONResponse({"detail": f"internal error ({type(error).__name__})",
                             "status": 500}, status_code=500)

    def audio_error(error: AudioError, upload: Upload) -> ApiError:
        message = f"{upload.filename}: {error.problem}"
        if error.problem.startswith(("not a readable audio file", "cannot decode")):
            return ApiError(415, message)
        if error.problem.startswith("too long"):
            return ApiError(413, message)
        return ApiError(422, message)

    def check_duration(upload: Upload, limit: float, hint: str) -> tuple[float, Any]:
        """Duration and header of an upload, refused past ``limit`` seconds."""
        info = audio_info(upload.path)
        if info.samplerate <= 0 or info.frames <= 0:
            raise AudioError(upload.path, "no audio samples (empty or truncated file)")
        duration = info.frames / info.samplerate
        if duration > limit:
            raise ApiError(413, f"{upload.filename}: too long ({duration:.1f} s); the limit "
                                f"is {limit:g} s{hint}")
        return duration, info

    def predict_upload(upload: Upload) -> dict[str, Any]:
        start = time.perf_counter()
        hint = " (use /api/timeline for long recordings)" \
            if predict_limit < max_seconds else ""
        duration, _ = check_duration(upload, predict_limit, hint)
        rate = _sample_rate(recognizer)
        signal = load_audio(upload.path, rate)
        frame = recognizer.predict_signal(signal, rate, name=upload.filename)
        row = frame.iloc[0]
        classes = list(recognizer.classes)
        return {"file": upload.filename, "duration": round(duration, 3),
                "emotion": str(row["emotion"]), "confidence": round(float(row["confidence"]), 6),
                "probabilities": _probabilities(row, classes), "classes": classes,
                "basis": str(row.get("basis", "whole recording")),
                "seconds": round(time.perf_counter() - start, 4)}

    def timeline_upload(upload: Upload, predict_timeline: Callable[..., pd.DataFrame],
                        options: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        duration, info = check_duration(upload, max_seconds, "")
        # The work is bounded before it starts: windows counted from the header.
        count = window_count(info.frames, info.samplerate, options["window"], options["hop"])
        if count > max_windows:
            raise ApiError(413, f"{upload.filename}: {count} windows of {options['window']:g}"
                                f" s every {options['hop']:g} s in {duration:.1f} s; the "
                                f"limit is {max_windows}: use a larger hop or a shorter "
                                "recording", field="hop")
        parameters = inspect.signature(predict_timeline).parameters
        kwargs = {k: v for k, v in options.items() if k in parameters}
        if "name" in parameters:
            kwargs["name"] = upload.filename
        first = next(iter(parameters), "")
        if "signal" in first:
            rate = _sample_rate(recognizer)
            signal = load_audio(upload.path, rate, max_duration=max_seconds)
            frame = predict_timeline(signal, rate, **kwargs)
        else:
            frame = predict_timeline(str(upload.path), **kwargs)
        classes = list(recognizer.classes)
        segments = []
        for (_, seg_start, seg_end), row in frame.iterrows():
            segment = {"start": round(float(seg_start), 3), "end": round(float(seg_end), 3),
                       "emotion": _json_value(row.get("emotion")),
                       "confidence": _json_value(row.get("confidence")),
                       "probabilities": {c: _json_value(row[c]) for c in classes
                                         if c in row.index}}
            extra = {str(k): _json_value(v) for k, v in row.items()
                     if k not in classes and k not in ("emotion", "confidence")}
            segment.update({k: v for k, v in extra.items()
                            if v is None or isinstance(v, (str, int, float, bool))})
            segments.append(segment)
        answer = {"file": upload.filename, "duration": round(duration, 3), "classes": classes,
                  "segments": segments}
        if "speaker" in frame.columns:  # a conversation: who spoke when, how each felt
            answer.update(conversation_json(frame))
        answer["seconds"] = round(time.perf_counter() - start, 4)
        return answer

    async def run(upload: Upload, func: Callable[..., dict[str, Any]], *args: Any
                  ) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(func, upload, *args,
                                                  limiter=app.state.limiter)
        except AudioError as error:
            raise audio_error(error, upload) from None
        except (EmovoxError, ValueError) as error:  # e.g. options the recogniser refuses
            raise ApiError(422, str(error)) from None
        finally:
            upload.path.unlink(missing_ok=True)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/api/health", summary="Liveness check")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/api/model", summary="The model served: classes, labels, features, card")
    async def model() -> dict[str, Any]:
        info = model_info(recognizer)
        info["limits"] = app.state.limits
        info["timeline_limits"] = app.state.timeline_limits
        info["timeline"] = hasattr(recognizer, "predict_timeline")
        info["emovox_version"] = __version__
        return info

    @app.post("/api/predict", summary="Emotion of one recording",
              openapi_extra={"requestBody": _UPLOAD_BODY}, responses=_ERRORS)
    async def predict(request: Request) -> dict[str, Any]:
        """Emotion, confidence and class probabilities of the uploaded recording."""
        check_query(request.query_params, ())
        upload = await receive_upload(request, max_upload_bytes, timeout=receive_seconds)
        return await run(upload, predict_upload)

    @app.post("/api/timeline", summary="Emotion over time of a long recording",
              openapi_extra={"requestBody": _UPLOAD_BODY,
                             "parameters": _TIMELINE_PARAMETERS},
              responses={**_ERRORS, 501: {"description": "This model has no timeline"}})
    async def timeline(request: Request) -> dict[str, Any]:
        """Segments ``start``, ``end``, ``emotion``, ``confidence``, ``probabilities``.

        ``window`` and ``hop`` (seconds) and ``vad`` (a voice activity detector name,
        or ``none``) are checked, then passed on to the recogniser when it takes
        them. Segments without speech have ``null`` emotion and probabilities.
        """
        predict_timeline = getattr(recognizer, "predict_timeline", None)
        if predict_timeline is None:
            raise ApiError(501, "timelines are not available: this version of the "
                                f"{type(recognizer).__name__} has no predict_timeline")
        # Checked before the body is read: a bad request costs no upload.
        options = timeline_options(request.query_params, predict_timeline)
        upload = await receive_upload(request, max_upload_bytes, timeout=receive_seconds)
        return await run(upload, timeline_upload, predict_timeline, options)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
