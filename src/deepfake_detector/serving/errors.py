"""Every error the API answers with: a stable code, an HTTP status, and one JSON shape.

The body is always ``{"error": {"code": "...", "message": "..."}}``. Codes are part of the API
contract (clients branch on them); messages are for people and may be reworded.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

# code -> (HTTP status, when it is answered)
ERROR_CODES: dict[str, tuple[int, str]] = {
    "bad_request": (400, "the request body could not be parsed (malformed multipart data)"),
    "missing_api_key": (401, "the server requires an API key and the X-API-Key header is absent"),
    "invalid_api_key": (401, "the X-API-Key header does not hold the server's key"),
    "not_found": (404, "no such endpoint"),
    "method_not_allowed": (405, "the endpoint exists but not for this HTTP method"),
    "payload_too_large": (413, "the request body is larger than max_upload_bytes"),
    "unsupported_media_type": (415, "the body is not multipart/form-data, or a file part is not an image"),
    "invalid_request": (422, "a parameter or form field is missing or invalid"),
    "too_many_images": (422, "more images in one request than max_images_per_request"),
    # The next two answer a request of one image; in a request of several, each bad image gets its
    # code in its own row (``error_code``) and the others are still scored.
    "invalid_image": (422, "the uploaded image is corrupt, truncated or not an image"),
    "too_many_pixels": (422, "the uploaded image has more pixels than max_pixels"),
    "invalid_video": (422, "the uploaded video can't be read, or has no decodable video frame"),
    "video_too_long": (422, "the uploaded video lasts longer than max_video_seconds"),
    "internal_error": (500, "an unexpected server fault; the message names it, the log has the traceback"),
    "explain_unavailable": (501, "heatmaps need the explain extra and a ViT or convolutional checkpoint"),
    "faces_unavailable": (501, "face detection needs the faces extra"),
    "video_unavailable": (501, "video analysis needs the video extra"),
    "queue_full": (503, "queue_size requests are already admitted; retry after Retry-After seconds"),
    "not_ready": (503, "the server is starting or stopping"),
    "timeout": (504, "the request took longer than request_timeout_s"),
}

_CODE_BY_STATUS = {
    400: "bad_request",
    401: "invalid_api_key",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    503: "not_ready",
    504: "timeout",
}


class ApiError(Exception):
    """An error answer: raise it anywhere below a route and the handler turns it into JSON.

    Args:
        code: One of `ERROR_CODES`; its status is the HTTP status.
        message: What was wrong and what is accepted.
        headers: Extra response headers, such as Retry-After.
    """

    def __init__(self, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        if code not in ERROR_CODES:
            raise ValueError(f"unknown API error code {code!r}")
        super().__init__(message)
        self.code = code
        self.status = ERROR_CODES[code][0]
        self.message = message
        self.headers = headers or {}

    def to_response(self) -> JSONResponse:
        return error_response(self.code, self.message, headers=self.headers)


def error_response(code: str, message: str, *, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for an error code."""
    return JSONResponse(
        {"error": {"code": code, "message": message}}, status_code=ERROR_CODES[code][0], headers=headers
    )


def _describe_validation_errors(error: RequestValidationError) -> str:
    parts = []
    for item in error.errors():
        location = ".".join(str(part) for part in item.get("loc", ()) if part != "body") or "request"
        parts.append(f"{location}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) + " (see /openapi.json for the accepted fields)"


def install_error_handlers(app: FastAPI) -> None:
    """Makes every error, FastAPI's and Starlette's own included, answer in the one JSON shape."""

    async def on_api_error(request: Request, error: ApiError) -> JSONResponse:
        return error.to_response()

    async def on_http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        code = _CODE_BY_STATUS.get(error.status_code, "internal_error")
        if code == "not_found":
            message = f"no endpoint at {request.url.path}; see /docs for the API"
        elif code == "method_not_allowed":
            message = f"{request.method} is not allowed on {request.url.path}"
        else:
            message = str(error.detail)
        response = error_response(code, message, headers=dict(error.headers or {}))
        if ERROR_CODES[code][0] != error.status_code:  # an unmapped status keeps its own number
            response.status_code = error.status_code
        return response

    async def on_validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        return error_response("invalid_request", _describe_validation_errors(error))

    async def on_unexpected_error(request: Request, error: Exception) -> JSONResponse:
        # Starlette logs the traceback; the client gets the type and message, never the stack.
        return error_response("internal_error", f"unexpected server error ({type(error).__name__}: {error})")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected_error)
