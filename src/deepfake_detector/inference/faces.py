"""Face mode: find the faces in an image, score a crop of each, and combine them into the image's score.

Called by `Detector` (``predict(..., faces=True)``, ``explain(..., faces=True)``), by video scoring for
each frame, and by training and calibration (`crop_largest_face`), so that a model is trained,
calibrated and used on the same crops. The stages stay apart: `deepfake_detector.faces` finds and crops,
the detector's model scores, and `deepfake_detector.aggregation` combines.

A checkpoint trained on face crops says so in its ``config.json`` (``deepfake_detector.faces``:
detector and margin, `FaceOptions.to_config`); `Detector` then uses face mode by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from deepfake_detector.aggregation import FaceAggregation
from deepfake_detector.errors import DetectorError
from deepfake_detector.faces.backends import (
    DEFAULT_FACE_DETECTOR,
    FACE_DETECTORS,
    FaceDetector,
    load_face_detector,
)
from deepfake_detector.faces.boxes import DEFAULT_MARGIN_RATIO, FaceBox, compute_crop_box
from deepfake_detector.results import Explanation, FaceScore, Prediction
from deepfake_detector.scoring import (
    CONFIG_KEY,
    compute_fake_scores,
    compute_probabilities,
    compute_verdict,
)

if TYPE_CHECKING:
    from PIL import Image

    from deepfake_detector.inference.detector import Detector

T = TypeVar("T")


@dataclass(frozen=True)
class FaceOptions:
    """How faces are found, cropped and combined.

    Attributes:
        detector: Face detector backend: "dlib-hog" (default), "dlib-cnn" or "opencv-haar"
            (docs/faces.md compares them).
        margin_ratio: Side of each square crop over the longer side of the face box (1.3: the
            FaceForensics++ crop, which keeps the blending seams at jaw and hairline in view).
        aggregation: How the faces of one image combine into its score (default: the most-fake face).
        detector_options: Keyword arguments of the backend, e.g. ``{"upsample": 0}``.
    """

    detector: str = DEFAULT_FACE_DETECTOR
    margin_ratio: float = DEFAULT_MARGIN_RATIO
    aggregation: FaceAggregation = field(default_factory=FaceAggregation)
    detector_options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.detector not in FACE_DETECTORS:
            raise ValueError(
                f"unknown face detector {self.detector!r}; choose one of {', '.join(FACE_DETECTORS)}"
            )
        if not self.margin_ratio >= 1.0:
            raise ValueError(
                f"margin_ratio must be at least 1.0 (the face box itself), got {self.margin_ratio}"
            )

    @classmethod
    def resolve(
        cls, faces: bool | FaceOptions | None, default: FaceOptions | None = None
    ) -> FaceOptions | None:
        """The options a ``faces`` argument asks for, given a checkpoint's own (``default``).

        Options pass through; ``True`` gives ``default`` or else the library defaults; ``False`` no face
        mode; None whatever ``default`` says (None: no face mode).
        """
        if isinstance(faces, FaceOptions):
            return faces
        if faces is None:
            return default
        return (default or cls()) if faces else None

    @classmethod
    def from_config(cls, config) -> FaceOptions | None:
        """The face settings a checkpoint was trained with (``config.deepfake_detector["faces"]``), if any.

        Raises:
            ValueError: The stored settings name an unknown detector or a margin below 1.
        """
        stored = (getattr(config, CONFIG_KEY, None) or {}).get("faces")
        if not stored:
            return None
        try:
            return cls(
                detector=str(stored.get("detector", DEFAULT_FACE_DETECTOR)),
                margin_ratio=float(stored.get("margin_ratio", DEFAULT_MARGIN_RATIO)),
                detector_options=dict(stored.get("detector_options") or {}),
            )
        except (AttributeError, TypeError, ValueError) as error:
            raise ValueError(f"config.json {CONFIG_KEY}.faces = {stored!r} is not valid: {error}") from None

    def to_config(self) -> dict:
        """What a checkpoint stores: how its training images were cropped (not how faces combine, which
        is a choice at inference)."""
        stored: dict = {"detector": self.detector, "margin_ratio": self.margin_ratio}
        if self.detector_options:
            stored["detector_options"] = dict(self.detector_options)
        return stored

    def build_detector(self) -> FaceDetector:
        return load_face_detector(self.detector, **dict(self.detector_options))


@dataclass(frozen=True)
class FaceCrops:
    """The faces found in one image and the crops to score: one per face, or the whole image if none."""

    boxes: tuple[FaceBox, ...]
    crop_boxes: tuple[tuple[int, int, int, int], ...]
    images: tuple[Image.Image, ...]


@dataclass(frozen=True)
class ScoredImage:
    """An image scored in face mode: its faces (empty: none found) and the combined label and score."""

    faces: tuple[FaceScore, ...]
    label: str
    fake_score: float


def score_images(detector: Detector, images: list[Image.Image], batch_size: int) -> list[tuple[str, float]]:
    """(top label, fake score) for each already-loaded RGB image, ``batch_size`` per model call."""
    scored = []
    for start in range(0, len(images), batch_size):
        logits = detector.compute_logits(images[start : start + batch_size])  # (B, C)
        probabilities = compute_probabilities(logits, detector.calibration.temperature)  # (B, C)
        fake_scores = compute_fake_scores(probabilities, detector.roles.fake_ids)  # (B,)
        for probs, fake_score in zip(probabilities, fake_scores, strict=True):
            scored.append((detector.roles.id2label[int(np.argmax(probs))], float(fake_score)))
    return scored


def cut_faces(face_detector: FaceDetector, image: Image.Image, options: FaceOptions) -> FaceCrops:
    """Finds the faces in one RGB image and cuts a square crop around each (the whole image if none)."""
    boxes = tuple(face_detector.detect(image))
    crop_boxes = tuple(compute_crop_box(box, image.size, options.margin_ratio) for box in boxes)
    crops = tuple(image.crop(crop) for crop in crop_boxes) if boxes else (image,)
    return FaceCrops(boxes, crop_boxes, crops)


def crop_largest_face(
    face_detector: FaceDetector, image: Image.Image, options: FaceOptions
) -> tuple[tuple[int, int, int, int] | None, Image.Image]:
    """The crop of the largest face in one RGB image, exactly as `cut_faces` cuts it for scoring.

    Training and calibration take one input per labelled image; the largest face is the subject (the
    face that FaceForensics++ tracks), and detectors list faces largest first.

    Returns:
        (crop box, crop), or (None, the whole image) when no face is found.
    """
    crops = cut_faces(face_detector, image, options)
    if not crops.boxes:
        return None, image
    return crops.crop_boxes[0], crops.images[0]


def combine_faces(
    detector: Detector, crops: FaceCrops, scored: list[tuple[str, float]], options: FaceOptions
) -> ScoredImage:
    """One image's result from the scores of its crops (in `FaceCrops` order).

    With no face, the whole image's score is the result (and ``faces`` is empty: ``no_face``). The
    combined label is that of the face whose score is nearest the combined score (for "max" and
    "largest", the deciding face itself).
    """
    if not crops.boxes:
        ((label, fake_score),) = scored
        return ScoredImage((), label, fake_score)
    faces = tuple(
        FaceScore(
            box=box.as_tuple(),
            crop_box=crop,
            detection_score=box.score,
            label=label,
            fake_score=fake_score,
            verdict=compute_verdict(fake_score, detector.thresholds),
        )
        for box, crop, (label, fake_score) in zip(crops.boxes, crops.crop_boxes, scored, strict=True)
    )
    scores = np.array([face.fake_score for face in faces])
    combined = options.aggregation.compute(scores, [box.area for box in crops.boxes])
    label = faces[int(np.argmin(np.abs(scores - combined)))].label
    return ScoredImage(faces, label, combined)


def iter_scored_faces(
    detector: Detector,
    prepared: Iterable[tuple[T, FaceCrops | Exception]],
    options: FaceOptions,
    *,
    batch_size: int,
) -> Iterator[tuple[T, ScoredImage | Exception]]:
    """Scores the crops of many images, about ``batch_size`` crops per model call, in input order.

    Args:
        prepared: (key, crops) pairs; an exception in place of crops passes through as the result.
        options: How each image's faces combine.
        batch_size: Crops gathered before a model call. Only the crops wait, so memory stays bounded.

    Yields:
        (key, `ScoredImage`), or (key, exception) when the model failed on that batch.
    """
    pending: list[tuple[T, FaceCrops | Exception]] = []
    waiting = 0
    for key, crops in prepared:
        pending.append((key, crops))
        waiting += 0 if isinstance(crops, Exception) else len(crops.images)
        if waiting >= batch_size:
            yield from _score_pending(detector, pending, options, batch_size)
            pending, waiting = [], 0
    yield from _score_pending(detector, pending, options, batch_size)


def _score_pending(detector, pending, options: FaceOptions, batch_size: int):
    images = [image for _, crops in pending if not isinstance(crops, Exception) for image in crops.images]
    try:
        scored = score_images(detector, images, batch_size) if images else []
    except (RuntimeError, ValueError, DetectorError) as error:
        failure = DetectorError(f"model failed: {error}")
        for key, crops in pending:
            yield key, crops if isinstance(crops, Exception) else failure
        return
    position = 0
    for key, crops in pending:
        if isinstance(crops, Exception):
            yield key, crops
            continue
        count = len(crops.images)
        yield key, combine_faces(detector, crops, scored[position : position + count], options)
        position += count


def iter_predict_faces(
    detector: Detector, images: Iterable, options: FaceOptions, *, batch_size: int
) -> Iterator[Prediction]:
    """`Prediction` with faces for each input, in order; a bad input becomes an error row."""
    face_detector = options.build_detector()  # before any input: a missing backend is a usage error

    def prepared() -> Iterator[tuple[str | int, FaceCrops | Exception]]:
        for index, item in enumerate(images):
            source, image = detector._load(index, item)
            if isinstance(image, Exception):
                yield source, image
                continue
            try:
                yield source, cut_faces(face_detector, image, options)
            except (RuntimeError, ValueError, DetectorError) as error:
                yield source, DetectorError(f"{source}: face detection failed: {error}")

    for source, scored in iter_scored_faces(detector, prepared(), options, batch_size=batch_size):
        if isinstance(scored, Exception):
            yield detector._error(source, scored)
            continue
        yield Prediction(
            source=source,
            label=scored.label,
            fake_score=scored.fake_score,
            verdict=compute_verdict(scored.fake_score, detector.thresholds),
            model=detector.model_id,
            revision=detector.revision,
            faces=scored.faces,
        )


def explain_faces(
    detector: Detector,
    source: str | int,
    image: Image.Image,
    method: str,
    options: FaceOptions,
    face_detector: FaceDetector,
) -> Explanation:
    """A heatmap per face crop, each placed back onto the full image at its crop box.

    Each face's map is normalised on its own, so every face shows its own hottest region; outside the
    crop boxes the map is zero. With no face, the whole image is explained and ``faces`` is empty
    (``no_face``). The scores are those `iter_predict_faces` gives.
    """
    from deepfake_detector.explain.heatmaps import compute_face_heatmap, compute_image_heatmap

    try:
        crops = cut_faces(face_detector, image, options)
    except (RuntimeError, ValueError) as error:
        failure = DetectorError(f"{source}: face detection failed: {error}")
        return detector._explain_error(source, method, failure)
    scored = combine_faces(
        detector, crops, score_images(detector, list(crops.images), len(crops.images)), options
    )
    token_maps = [detector.compute_token_map(crop, method) for crop in crops.images]  # each (rows, cols)
    if crops.boxes:
        heatmap = compute_face_heatmap(token_maps, crops.crop_boxes, image.size)  # (H, W)
        token_map = np.stack(token_maps)  # (faces, rows, cols)
    else:
        token_map = token_maps[0]  # (rows, cols)
        heatmap = compute_image_heatmap(token_map, image.size)  # (H, W)
    return Explanation(
        source=source,
        method=method,
        heatmap=heatmap,
        token_map=token_map,
        label=scored.label,
        fake_score=scored.fake_score,
        verdict=compute_verdict(scored.fake_score, detector.thresholds),
        model=detector.model_id,
        revision=detector.revision,
        faces=scored.faces,
    )
