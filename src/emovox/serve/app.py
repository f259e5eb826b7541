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
"""

from __future__ import annotations

import contextlib
import inspect
import math
import os
import re
import tempfile
import time
from collections.abc import AsyncIterator, Callable
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
from emovox.errors import AudioError, EmovoxError

#: Default upload limit (the ``--max-upload-mb 20`` of ``emovox serve``).
DEFAULT_MAX_UPLOAD_BYTES = 20 * 1024 * 1024
#: Default limit on the duration of a recording, in seconds.
DEFAULT_MAX_SECONDS = 600.0
#: Longest whole-file prediction of the recognisers.
MAX_PREDICT_SECONDS = 600.0
#: The page, its script and its style.
STATIC_DIR = Path(__file__).resolve().parent / "static"
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
    413: {"description": "Upload larger than the limit, or recording longer than allowed"},
    415: {"description": "Not a readable audio file"},
    422: {"description": "Unusable audio (empty, too short, silent...)"},
}


class ApiError(Exception):
    """An error answered as ``{"detail": message}`` with an HTTP status.

    Parameters
    ----------
    status : int
        HTTP status code.
    message : str
        One line for the user.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


async def receive_upload(request: Request, limit: int, directory: str | None = None) -> Upload:
    """Stream the request's audio to a temporary file, refusing it past ``limit`` bytes.

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

    Returns
    -------
    Upload

    Raises
    ------
    ApiError
        413 past the limit, 415 for another content type, 422 without a file.
    """
    from python_multipart.multipart import MultipartParser, parse_options_header

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
                             "headers": {}, "field": b"", "value": b"", "writing": False}

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

    try:
        if raw:
            open_file(request.headers.get("x-filename", "upload") or "upload")
            async for chunk in request.stream():
                write(chunk)
        else:
            boundary = options.get(b"boundary")
            if not boundary:
                raise ApiError(422, "multipart/form-data request without a boundary")

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

            def on_part_data(data: bytes, start: int, end: int) -> None:
                if state["writing"]:
                    write(data[start:end])

            def on_part_end() -> None:
                if state["writing"]:
                    state["writing"], state["done"] = False, True
                state["headers"] = {}

            parser = MultipartParser(boundary, {
                "on_header_field": on_header_field, "on_header_value": on_header_value,
                "on_header_end": on_header_end, "on_headers_finished": on_headers_finished,
                "on_part_data": on_part_data, "on_part_end": on_part_end})
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
            if state["file"] is None:
                raise ApiError(422, "no file in the form: send the audio in a field "
                                    "named 'file'")
        state["file"].close()
        return Upload(Path(state["file"].name), Path(state["name"]).name or "upload",
                      state["size"])
    except ApiError:
        _discard(state["file"])
        raise
    except Exception as error:  # a malformed multipart body
        _discard(state["file"])
        raise ApiError(422, f"could not read the upload ({type(error).__name__}: "
                            f"{error})") from None


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
    return {"engine": getattr(recognizer, "engine", "onnx"),
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


# ---------------------------------------------------------------------- the app
def create_app(
    recognizer: Any = None,
    *,
    bundle: str | Path | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    workers: int | None = None,
    warm_up: bool = True,
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
        Run one prediction on a synthetic voice at startup, so the first request does
        not pay for loading weights and compiling code.

    Returns
    -------
    FastAPI
    """
    if max_upload_bytes <= 0:
        raise ValueError(f"max_upload_bytes must be > 0, got {max_upload_bytes}")
    if not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0, got {max_seconds}")
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

    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        return JSONResponse({"detail": error.message, "status": error.status},
                            status_code=error.status)

    def audio_error(error: AudioError, upload: Upload) -> ApiError:
        message = f"{upload.filename}: {error.problem}"
        if error.problem.startswith(("not a readable audio file", "cannot decode")):
            return ApiError(415, message)
        if error.problem.startswith("too long"):
            return ApiError(413, message)
        return ApiError(422, message)

    def check_duration(upload: Upload, limit: float, hint: str) -> float:
        info = audio_info(upload.path)
        if info.samplerate <= 0 or info.frames <= 0:
            raise AudioError(upload.path, "no audio samples (empty or truncated file)")
        duration = info.frames / info.samplerate
        if duration > limit:
            raise ApiError(413, f"{upload.filename}: too long ({duration:.1f} s); the limit "
                                f"is {limit:g} s{hint}")
        return duration

    def predict_upload(upload: Upload) -> dict[str, Any]:
        start = time.perf_counter()
        hint = " (use /api/timeline for long recordings)" \
            if predict_limit < max_seconds else ""
        duration = check_duration(upload, predict_limit, hint)
        rate = _sample_rate(recognizer)
        signal = load_audio(upload.path, rate)
        frame = recognizer.predict_signal(signal, rate, name=upload.filename)
        row = frame.iloc[0]
        classes = list(recognizer.classes)
        return {"file": upload.filename, "duration": round(duration, 3),
                "emotion": str(row["emotion"]), "confidence": round(float(row["confidence"]), 6),
                "probabilities": _probabilities(row, classes), "classes": classes,
                "seconds": round(time.perf_counter() - start, 4)}

    def timeline_upload(upload: Upload, predict_timeline: Callable[..., pd.DataFrame],
                        options: dict[str, Any]) -> dict[str, Any]:
        start = time.perf_counter()
        duration = check_duration(upload, max_seconds, "")
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
        return {"file": upload.filename, "duration": round(duration, 3), "classes": classes,
                "segments": segments, "seconds": round(time.perf_counter() - start, 4)}

    async def run(upload: Upload, func: Callable[..., dict[str, Any]], *args: Any
                  ) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(func, upload, *args,
                                                  limiter=app.state.limiter)
        except AudioError as error:
            raise audio_error(error, upload) from None
        except EmovoxError as error:  # e.g. timeline options the recogniser refuses
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
        info["timeline"] = hasattr(recognizer, "predict_timeline")
        info["emovox_version"] = __version__
        return info

    @app.post("/api/predict", summary="Emotion of one recording",
              openapi_extra={"requestBody": _UPLOAD_BODY}, responses=_ERRORS)
    async def predict(request: Request) -> dict[str, Any]:
        """Emotion, confidence and class probabilities of the uploaded recording."""
        upload = await receive_upload(request, max_upload_bytes)
        return await run(upload, predict_upload)

    @app.post("/api/timeline", summary="Emotion over time of a long recording",
              openapi_extra={"requestBody": _UPLOAD_BODY},
              responses={**_ERRORS, 501: {"description": "This model has no timeline"}})
    async def timeline(request: Request, window: float | None = None,
                       hop: float | None = None, vad: str | None = None) -> dict[str, Any]:
        """Segments ``start``, ``end``, ``emotion``, ``confidence``, ``probabilities``.

        ``window`` and ``hop`` (seconds) and ``vad`` (a voice activity detector name,
        or ``none``) are passed on to the recogniser when it takes them. Segments
        without speech have ``null`` emotion and probabilities.
        """
        predict_timeline = getattr(recognizer, "predict_timeline", None)
        if predict_timeline is None:
            raise ApiError(501, "timelines are not available: this version of the "
                                f"{type(recognizer).__name__} has no predict_timeline")
        options: dict[str, Any] = {k: v for k, v in {"window": window, "hop": hop}.items()
                                   if v is not None}
        for name, value in options.items():
            if not (math.isfinite(value) and value > 0):
                raise ApiError(422, f"{name} must be a number of seconds > 0, got {value}")
        if vad is not None:
            options["vad"] = None if vad.lower() in ("none", "off", "") else vad
        upload = await receive_upload(request, max_upload_bytes)
        return await run(upload, timeline_upload, predict_timeline, options)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
