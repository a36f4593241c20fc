"""The library behind the routes: uploads decoded off the event loop, scored through the
micro-batcher, explained and video-scored in the model's thread. Returns the library's own records."""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

from deepfake_detector.errors import DetectorError, ExplainError, ImageTooLargeError, MissingExtraError
from deepfake_detector.inference.engines import default_workers
from deepfake_detector.io.images import try_decode_image
from deepfake_detector.results import Explanation, Prediction
from deepfake_detector.serving.batching import MicroBatcher
from deepfake_detector.serving.config import ServeConfig
from deepfake_detector.serving.errors import ApiError
from deepfake_detector.version import __version__


@dataclass(frozen=True)
class Upload:
    """One uploaded file: the name the client gave it (never opened as a path) and its bytes."""

    name: str | int
    data: bytes


@dataclass(frozen=True)
class Scored:
    """A prediction and, when it failed, the stable code of its error."""

    prediction: Prediction
    error_code: str | None = None

    def to_dict(self) -> dict:
        return {**self.prediction.to_dict(), "error_code": self.error_code}


@dataclass(frozen=True)
class _Job:
    """What the batcher carries: a decoded image and whether to score its faces."""

    image: object
    faces: bool


def _decode(upload: Upload, max_pixels: int, draft_size: tuple[int, int] | None):
    """The decoded image (`DecodedImage`: the RGB pixels with the bytes and metadata the detector's
    provenance stage reads), or ``(code, message)`` when the bytes are not a usable image.

    ``draft_size`` is the detector's own, so the pixels are those its ``predict`` would decode from
    the same bytes (and the CLI from the same file).
    """
    image = try_decode_image(upload.data, name=str(upload.name), max_pixels=max_pixels, draft_size=draft_size)
    if isinstance(image, ImageTooLargeError):
        return "too_many_pixels", str(image)
    if isinstance(image, Exception):
        return "invalid_image", str(image)
    return image


def _probe_features(detector) -> dict[str, str | None]:
    """Each optional feature -> None when this server can serve it, else why not."""
    problems: dict[str, str | None] = {}
    try:
        from deepfake_detector.optional import require

        require("matplotlib", "explain")
        problems["explain"] = (
            None if hasattr(detector, "explain") else f"{type(detector).__name__} has no heatmaps"
        )
    except MissingExtraError as error:
        problems["explain"] = str(error)
    try:
        # The backend face mode would use here (the checkpoint's, else the default), loaded once;
        # later calls reuse it.
        detector.resolve_faces(True).build_detector()
        problems["faces"] = None
    except (ImportError, DetectorError) as error:  # MissingExtraError is both
        problems["faces"] = f"face detection is not available here: {error}"
    try:
        from deepfake_detector.optional import require

        require("av", "video")
        import deepfake_detector.video.decode  # noqa: F401

        ok = hasattr(detector, "predict_video")
        problems["video"] = None if ok else f"{type(detector).__name__} has no video analysis"
    except (ImportError, DetectorError) as error:
        problems["video"] = f"video analysis is not available here: {error}"
    return problems


class DetectorService:
    """A `Detector` made safe to share between concurrent requests.

    Model work (scoring batches, heatmaps, videos) runs one job at a time in a single worker thread;
    image decoding runs in a small pool beside it, so decoding the next batch overlaps scoring this
    one. A video holds the model thread while it decodes and scores its frames.

    Args:
        detector: A loaded `deepfake_detector.Detector`.
        config: The server's limits and batching settings.
    """

    def __init__(self, detector, config: ServeConfig) -> None:
        self.detector = detector
        self.config = config
        self.weights_sha256: str | None = None
        self.unavailable: dict[str, str | None] = {}
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._decode_threads = ThreadPoolExecutor(max_workers=default_workers(), thread_name_prefix="decode")
        self.batcher: MicroBatcher = MicroBatcher(
            self._score_batch,
            max_batch_size=config.max_batch_size,
            max_wait_s=config.max_batch_wait_ms / 1000.0,
            executor=self._model_thread,
        )
        self.ready = False

    async def start(self) -> None:
        """Fingerprints the weights, finds which features work, starts the batcher."""
        from deepfake_detector.modeling.fingerprint import compute_weights_sha256

        loop = asyncio.get_running_loop()
        if getattr(self.detector, "model", None) is not None:  # None: an ONNX engine, no PyTorch weights
            self.weights_sha256 = await loop.run_in_executor(
                self._model_thread, compute_weights_sha256, self.detector.model
            )
        self.unavailable = await loop.run_in_executor(self._model_thread, _probe_features, self.detector)
        await self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()
        self._decode_threads.shutdown(wait=False, cancel_futures=True)
        self._model_thread.shutdown(wait=False, cancel_futures=True)

    @property
    def features(self) -> dict[str, bool]:
        return {name: problem is None for name, problem in self.unavailable.items()}

    def _require(self, feature: str, code: str) -> None:
        problem = self.unavailable.get(feature, f"{feature} is not available")
        if problem is not None:
            raise ApiError(code, problem)

    def _score_batch(self, jobs: list[_Job]) -> list[Prediction]:
        results: list[Prediction | None] = [None] * len(jobs)
        for faces in (False, True):
            positions = [position for position, job in enumerate(jobs) if job.faces is faces]
            if not positions:
                continue
            images = [jobs[position].image for position in positions]
            options = {"faces": faces}  # face crops per model call, like images; False: whole images
            predictions = self.detector.predict(images, batch_size=self.config.max_batch_size, **options)
            for position, prediction in zip(positions, predictions, strict=True):
                results[position] = prediction
        return results

    def _error_prediction(self, name: str | int, message: str) -> Prediction:
        return Prediction.failed(name, message, model=self.detector.model_id, revision=self.detector.revision)

    def _wants_faces(self, faces: bool | None) -> bool:
        """Whether the detector scores ``faces`` (None: as the checkpoint says) in face mode; asked of the
        detector's own resolver, so the server decides nothing itself."""
        return self.detector.resolve_faces(faces) is not None

    async def predict(self, uploads: list[Upload], *, faces: bool | None = None) -> list[Scored]:
        """Scores uploaded images; a bad one gets an error record and the others are still scored.

        Raises:
            ApiError: Faces were asked for and this server can't find them (501).
        """
        faces = self._wants_faces(faces)
        if faces:
            self._require("faces", "faces_unavailable")
        loop = asyncio.get_running_loop()
        draft_size = self.detector.draft_size_for(faces=faces)  # the detector's own decoding
        decoded = await asyncio.gather(
            *(
                loop.run_in_executor(
                    self._decode_threads, _decode, upload, self.config.max_pixels, draft_size
                )
                for upload in uploads
            )
        )
        good = [(position, image) for position, image in enumerate(decoded) if not isinstance(image, tuple)]
        predictions = await self.batcher.submit([_Job(image, faces) for _, image in good])
        results: list[Scored | None] = [
            Scored(self._error_prediction(upload.name, outcome[1]), outcome[0])
            if isinstance(outcome, tuple)
            else None
            for upload, outcome in zip(uploads, decoded, strict=True)
        ]
        for (position, _), prediction in zip(good, predictions, strict=True):
            # The detector numbered the images of its batch; the client knows them by their names.
            results[position] = Scored(replace(prediction, source=uploads[position].name))
        return results

    async def explain(
        self, upload: Upload, method: str, *, faces: bool | None = None
    ) -> tuple[Explanation, bytes]:
        """The heatmap of one image (per face crop with ``faces``) and its overlay as PNG bytes.

        Raises:
            ApiError: The image can't be read (422), or heatmaps (or faces) are not available here (501).
        """
        self._require("explain", "explain_unavailable")
        if self._wants_faces(faces):
            self._require("faces", "faces_unavailable")
        loop = asyncio.get_running_loop()
        outcome = await loop.run_in_executor(
            self._decode_threads,
            _decode,
            upload,
            self.config.max_pixels,
            None,  # heatmaps at full size
        )
        if isinstance(outcome, tuple):
            raise ApiError(*outcome)
        try:
            explanation, png = await loop.run_in_executor(
                self._model_thread, self._explain, outcome.rgb, method, faces
            )
        except ExplainError as error:  # the method does not apply to this checkpoint
            raise ApiError("explain_unavailable", str(error)) from None
        return replace(explanation, source=upload.name), png

    def _explain(self, image, method: str, faces: bool | None) -> tuple[Explanation, bytes]:
        from deepfake_detector.explain.overlay import compute_overlay

        explanation = self.detector.explain(image, method=method, faces=faces)
        if not explanation.ok:
            raise DetectorError(explanation.error)
        buffer = io.BytesIO()
        compute_overlay(image, explanation.heatmap, faces=explanation.faces or ()).save(buffer, format="PNG")
        return explanation, buffer.getvalue()

    async def predict_video(self, upload: Upload, *, faces: bool | None, num_frames: int | None) -> dict:
        """Scores an uploaded video; returns `VideoPrediction.to_dict()` under the upload's name.

        ``faces`` None follows the checkpoint, as for images.

        Raises:
            ApiError: Video (or faces) not available here (501); not a video, or too long (422).
        """
        self._require("video", "video_unavailable")
        if self._wants_faces(faces):
            self._require("faces", "faces_unavailable")
        loop = asyncio.get_running_loop()
        prediction = await loop.run_in_executor(
            self._model_thread, self._predict_video, upload, faces, num_frames
        )
        if not prediction.ok:
            raise ApiError("invalid_video", prediction.error)
        return replace(prediction, source=upload.name).to_dict()

    def _predict_video(self, upload: Upload, faces: bool | None, num_frames: int | None):
        from deepfake_detector.errors import VideoLoadError
        from deepfake_detector.video.decode import FrameSampling, VideoReader

        sampling = FrameSampling() if num_frames is None else FrameSampling(num_frames=num_frames)
        # PyAV reads from a file; this one is the server's own, in its temp folder, never a name
        # taken from the request.
        with tempfile.TemporaryDirectory(prefix="deepfake-detector-upload-") as folder:
            path = os.path.join(folder, "upload")
            with open(path, "wb") as handle:
                handle.write(upload.data)
            try:
                with VideoReader(path, sampling) as reader:
                    duration_s = reader.duration_s
            except VideoLoadError as error:
                raise ApiError("invalid_video", str(error).replace(path, str(upload.name))) from None
            if duration_s is not None and duration_s > self.config.max_video_seconds:
                raise ApiError(
                    "video_too_long",
                    f"{upload.name}: the video lasts {duration_s:.1f} s, above the limit of "
                    f"{self.config.max_video_seconds:g} s (max_video_seconds); send a shorter clip",
                )
            prediction = self.detector.predict_video(path, faces=faces, sampling=sampling)
        if prediction.error is not None:
            prediction = replace(prediction, error=prediction.error.replace(path, str(upload.name)))
        return prediction

    def model_info(self) -> dict:
        """`ModelInfo.to_dict()` with the package version, the weights' hash, features and limits."""
        return {
            **self.detector.info().to_dict(),
            "version": __version__,
            "weights_sha256": self.weights_sha256,
            "features": self.features,
            "limits": self.config.limits(),
        }
