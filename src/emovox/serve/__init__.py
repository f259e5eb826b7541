"""HTTP API and browser page over a recogniser: ``create_app`` and ``emovox serve``.

FastAPI, uvicorn and python-multipart are needed only here, so importing
:mod:`emovox` never requires them.
"""

from emovox.serve.app import (
    DEFAULT_MAX_SECONDS,
    DEFAULT_MAX_UPLOAD_BYTES,
    ApiError,
    create_app,
    model_info,
    receive_upload,
)

__all__ = [
    "DEFAULT_MAX_SECONDS",
    "DEFAULT_MAX_UPLOAD_BYTES",
    "ApiError",
    "create_app",
    "model_info",
    "receive_upload",
]
