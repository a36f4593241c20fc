"""The FastAPI application: routes that turn uploads into the library's result records, and the page.

`build_app` makes a new application around a loaded `Detector`; nothing is global, so tests (and a
process serving two models) can build as many as they like.

Route annotations are evaluated when the routes are defined (no ``from __future__ import annotations``)
because they refer to this app's own settings, which FastAPI could not resolve later.
"""

import base64
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, FastAPI, File, Form, Query, Security, UploadFile
from fastapi.responses import HTMLResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from deepfake_detector.serving.batching import BatcherStopped
from deepfake_detector.serving.config import ServeConfig
from deepfake_detector.serving.errors import ApiError, install_error_handlers
from deepfake_detector.serving.limits import API_KEY_HEADER, Admission, RequestGuard, check_api_key
from deepfake_detector.serving.schemas import (
    ErrorResponse,
    ExplainResponse,
    HealthResponse,
    ModelResponse,
    PredictResponse,
    ReadyResponse,
    StatsResponse,
    VideoPredictionRecord,
    error_responses,
)
from deepfake_detector.serving.service import DetectorService, Upload
from deepfake_detector.version import __version__

WORK_ROUTES = (("POST", "/v1/predict"), ("POST", "/v1/predict/video"), ("POST", "/v1/explain"))
UPLOAD_ERRORS = ("bad_request", "payload_too_large", "unsupported_media_type", "invalid_request")
BUSY_ERRORS = ("queue_full", "not_ready", "timeout")

# The page loads nothing from elsewhere: scripts and styles from this server, images from uploads.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
}


def _check_part(upload: UploadFile, kind: str) -> None:
    """Refuses parts that say they are something else; the bytes themselves are checked on decoding.

    Args:
        upload: One file part.
        kind: "image" or "video", what the route takes.
    """
    content_type = (upload.content_type or "").split(";")[0].strip().lower()
    if content_type in ("", "application/octet-stream") or content_type.startswith(f"{kind}/"):
        return
    if content_type.startswith("video/"):
        hint = "send videos to /v1/predict/video"
    elif content_type.startswith("image/"):
        hint = "send images to /v1/predict"
    else:
        hint = f"send {kind} files"
    article = "an" if kind == "image" else "a"
    raise ApiError(
        "unsupported_media_type",
        f"{upload.filename or 'a file part'} is {content_type!r}, not {article} {kind}; {hint}",
    )


async def _read_uploads(files: list[UploadFile]) -> list[Upload]:
    # The name is only echoed back in the results; the server never opens it as a path.
    return [Upload(file.filename or index, await file.read()) for index, file in enumerate(files)]


def build_app(detector, config: ServeConfig | None = None) -> FastAPI:
    """Builds the REST API and the web page around a detector.

    Args:
        detector: A `DetectorConfig`, loaded here, or an already loaded `deepfake_detector.Detector`
            (anything with its ``predict``/``explain``/``info``).
        config: Limits, batching and the optional API key; defaults to `ServeConfig()`.

    Returns:
        A FastAPI application; serve it with uvicorn. The batcher starts and the weights are
        fingerprinted in the application's lifespan, so the app must be run with lifespan events on
        (uvicorn's default).
    """
    from deepfake_detector.inference.config import DetectorConfig
    from deepfake_detector.inference.detector import Detector

    config = config or ServeConfig()
    if isinstance(detector, DetectorConfig):
        detector = Detector.from_config(detector)
    service = DetectorService(detector, config)
    admission = Admission(capacity=config.queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="deepfake-detector",
        version=__version__,
        summary="Is this image a deepfake, and how sure?",
        description='Upload images, get verdicts. Every error is `{"error": {"code", "message"}}` '
        "with a stable code. Concurrent requests are scored together in micro-batches.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        RequestGuard,
        api_key=config.api_key,
        admission=admission,
        work_routes=WORK_ROUTES,
        max_body_bytes=config.max_upload_bytes,
        timeout_s=config.request_timeout_s,
        retry_after_s=config.retry_after_s,
    )

    auth_errors: tuple[str, ...] = ()
    dependencies = []
    if config.api_key is not None:
        # Checked by RequestGuard before the body is read; declared here so that OpenAPI documents
        # it, and checked again so that these routes stay protected if mounted without the guard.
        key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)

        async def require_api_key(key: Annotated[str | None, Security(key_header)]) -> None:
            check_api_key(key, config.api_key)

        dependencies.append(Security(require_api_key))
        auth_errors = ("missing_api_key", "invalid_api_key")
    api = APIRouter(prefix="/v1", dependencies=dependencies, tags=["api"])

    @api.post(
        "/predict",
        response_model=PredictResponse,
        response_model_exclude_unset=True,  # a record has exactly the keys of Prediction.to_dict()
        summary="Score one or more images",
        description="Each image gets one record, in upload order. In a request of several images, one "
        "that can't be read gets a record with `error` and `error_code` and the others are still scored; "
        "a request of one image that can't be read is answered 422 with that code.",
        responses=error_responses(
            *auth_errors,
            *UPLOAD_ERRORS,
            "too_many_images",
            "invalid_image",
            "too_many_pixels",
            "faces_unavailable",
            *BUSY_ERRORS,
        ),
    )
    async def predict(
        images: Annotated[
            list[UploadFile],
            File(
                description="Image files (JPEG, PNG, WebP, GIF, BMP, TIFF, ...); repeat the field for more.",
                json_schema_extra={"minItems": 1, "maxItems": config.max_images_per_request},
            ),
        ],
        faces: Annotated[
            bool | None,
            Form(
                description="Find the faces and score each (face boxes in `faces`); the image's score is "
                "its most-fake face's, and an image without a face is scored whole (`no_face`). Default: "
                "on for a checkpoint trained on face crops, else off."
            ),
        ] = None,
    ) -> dict:
        if len(images) > config.max_images_per_request:
            raise ApiError(
                "too_many_images",
                f"{len(images)} images in one request; the limit is {config.max_images_per_request} "
                "(max_images_per_request): split them over several requests",
            )
        for image in images:
            _check_part(image, "image")
        try:
            scored = await service.predict(await _read_uploads(images), faces=faces)
        except BatcherStopped:
            raise ApiError("not_ready", "the server is shutting down; retry on another instance") from None
        if len(scored) == 1 and scored[0].error_code is not None:
            raise ApiError(scored[0].error_code, scored[0].prediction.error)
        return {"predictions": [record.to_dict() for record in scored]}

    @api.post(
        "/predict/video",
        response_model=VideoPredictionRecord,
        summary="Score a video from a sample of its frames",
        description="Frames evenly spaced in time are scored (their faces for a checkpoint trained on "
        "face crops or with `faces=true`, else whole frames) and combined into the video's score; "
        "`frames` is the per-frame timeline. A damaged file is scored from what decodes "
        "(`stopped_at_s`, `decode_problem`).",
        responses=error_responses(
            *auth_errors,
            *UPLOAD_ERRORS,
            "invalid_video",
            "video_too_long",
            "faces_unavailable",
            "video_unavailable",
            *BUSY_ERRORS,
        ),
    )
    async def predict_video(
        video: Annotated[UploadFile, File(description="A video file (MP4, WebM, MOV, MKV, AVI, ...).")],
        faces: Annotated[
            bool | None,
            Form(
                description="Score the faces of each frame (false: whole frames). Default: as for "
                "/v1/predict, on for a checkpoint trained on face crops, else off."
            ),
        ] = None,
        num_frames: Annotated[
            int | None,
            Form(
                ge=1, le=256, description="Frames to sample, evenly spaced in time (default: the library's)."
            ),
        ] = None,
    ) -> dict:
        _check_part(video, "video")
        (upload,) = await _read_uploads([video])
        return await service.predict_video(upload, faces=faces, num_frames=num_frames)

    @api.post(
        "/explain",
        response_model=ExplainResponse,
        response_model_exclude_unset=True,  # `no_face` and `faces` only in face mode, as to_dict() has
        summary="Heatmap of where the model sees the fake",
        description="Answers the heatmap drawn over the image as a PNG (verdict and score in the "
        "X-Verdict and X-Fake-Score headers, the domain in X-Domain for a checkpoint with domains), or "
        "with `format=json` the explanation record and the PNG in base64. ViT and convolutional "
        "(ResNet, ConvNeXt, RegNet) checkpoints.",
        responses={
            200: {
                "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}},
                "description": "The overlay PNG (format=png) or the explanation (format=json).",
            },
            **error_responses(
                *auth_errors,
                *UPLOAD_ERRORS,
                "invalid_image",
                "too_many_pixels",
                "explain_unavailable",
                "faces_unavailable",
                *BUSY_ERRORS,
            ),
        },
    )
    async def explain(
        image: Annotated[UploadFile, File(description="One image file.")],
        method: Annotated[
            Literal["auto", "rollout", "gradcam"],
            Form(
                description="auto: rollout for a ViT, gradcam for a convolutional checkpoint; rollout: "
                "attention rollout (ViT only); gradcam: Grad-CAM of fake against real. The answer names "
                "the method used."
            ),
        ] = "auto",
        faces: Annotated[
            bool | None,
            Form(
                description="A heatmap per face crop, placed on the image at the crop's box (zero "
                "elsewhere) with the boxes drawn; with no face, the whole image's (`no_face`). Default: "
                "on for a checkpoint trained on face crops, else off."
            ),
        ] = None,
        response_format: Annotated[
            Literal["png", "json"], Query(alias="format", description="png: the image; json: record + PNG.")
        ] = "png",
    ):
        _check_part(image, "image")
        (upload,) = await _read_uploads([image])
        explanation, png = await service.explain(upload, method, faces=faces)
        if response_format == "json":
            return {
                "explanation": explanation.to_dict(),
                "overlay_png_base64": base64.b64encode(png).decode("ascii"),
            }
        headers = {"X-Verdict": str(explanation.verdict), "X-Fake-Score": repr(explanation.fake_score)}
        if explanation.domain is not None:
            headers["X-Domain"] = explanation.domain
        return Response(content=png, media_type="image/png", headers=headers)

    @api.get(
        "/model",
        response_model=ModelResponse,
        summary="The model being served",
        description="Checkpoint id and revision, package version, labels and their roles, thresholds, "
        "a SHA-256 of the loaded weights, and the server's limits.",
        responses=error_responses(*auth_errors),
    )
    async def model() -> dict:
        return service.model_info()

    @api.get(
        "/stats",
        response_model=StatsResponse,
        summary="Batching and load counters",
        responses=error_responses(*auth_errors),
    )
    async def stats() -> dict:
        batches = service.batcher.stats
        return {
            "batches": batches.batches,
            "images": batches.items,
            "batch_size_histogram": {str(size): count for size, count in sorted(batches.histogram.items())},
            "queue_depth": service.batcher.queue_depth,
            "in_flight_requests": admission.in_flight,
            "rejected_queue_full": admission.rejected,
            "timeouts": admission.timeouts,
            "max_batch_size": config.max_batch_size,
            "max_batch_wait_ms": config.max_batch_wait_ms,
        }

    app.include_router(api)

    @app.get("/healthz", response_model=HealthResponse, tags=["ops"], summary="Liveness: the process answers")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=ReadyResponse,
        tags=["ops"],
        summary="Readiness: the model is loaded and the batcher runs",
        responses={503: {"model": ErrorResponse, "description": "`not_ready`: starting or stopping"}},
    )
    async def readyz() -> dict:
        if not (service.ready and service.batcher.running):
            raise ApiError("not_ready", "the model is not ready (starting up or shutting down)")
        return {
            "status": "ready",
            "queue_depth": service.batcher.queue_depth,
            "in_flight_requests": admission.in_flight,
        }

    static = StaticFiles(packages=[("deepfake_detector.serving", "static")])
    index_html = Path(static.all_directories[0], "index.html").read_text(encoding="utf-8")

    @app.get("/", include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(index_html, headers=PAGE_HEADERS)

    app.mount("/static", static, name="static")
    return app
