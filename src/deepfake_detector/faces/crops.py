"""Face mode's settings and crops: which detector and margin, how the caller's choice merges over the
checkpoint's, and the square crops cut around each face.

A checkpoint trained on face crops says so in its stored settings (`StoredSettings.faces`:
detector and margin, `FaceOptions.to_config`). What a caller asks for (``faces=None/True/False``, a
`FaceOptions`, or the partial `FaceOverrides` that CLI flags and HTTP fields make) is merged over those
stored settings in one function, `resolve_face_options`, the way timm merges a caller's overlay over a
model's pretrained config; every entry point passes the caller's choice through to it untouched.

A detector keeps its `FaceMode`: whether face mode is on when a call leaves ``faces`` out, and the face
settings apart from that switch, so that turning face mode off at load (``serve --no-faces``) never
loses the checkpoint's detector and margin for a call that turns it back on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from deepfake_detector.aggregation import FACE_STRATEGIES, FaceAggregation
from deepfake_detector.faces.backends import (
    DEFAULT_FACE_DETECTOR,
    FACE_DETECTORS,
    FaceDetector,
    load_face_detector,
)
from deepfake_detector.faces.boxes import DEFAULT_MARGIN_RATIO, FaceBox, compute_crop_box
from deepfake_detector.settings import float_at_least

if TYPE_CHECKING:
    from PIL import Image


def _check_detector(detector: str) -> None:
    if detector not in FACE_DETECTORS:
        raise ValueError(f"unknown face detector {detector!r}; choose one of {', '.join(FACE_DETECTORS)}")


def _check_margin(margin_ratio: float) -> None:
    if not margin_ratio >= 1.0:
        raise ValueError(f"margin_ratio must be at least 1.0 (the face box itself), got {margin_ratio}")


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
        _check_detector(self.detector)
        _check_margin(self.margin_ratio)

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
class FaceOverrides:
    """A caller's partial choice about face mode; every field left None follows the checkpoint.

    This is what CLI flags (``--faces/--no-faces``, ``--face-detector``, ``--face-margin``,
    ``--face-strategy``, made from these fields by `deepfake_detector.settings`) and HTTP form fields
    describe: only what the user said, so that the one merge (`resolve_face_options`) decides the rest
    from the checkpoint's stored settings.

    Attributes:
        enabled: True: face mode; False: whole images; None: as the checkpoint says (face mode when it
            was trained on face crops).
        detector: Replaces the checkpoint's detector backend (then its ``detector_options`` are dropped).
        margin_ratio: Replaces the checkpoint's crop margin.
        strategy: How faces combine ("max", "mean", "largest"); None: "max", the most-fake face.
    """

    enabled: bool | None = field(
        default=None,
        metadata={
            "flag": "--faces",
            "help": "find the faces in images and video frames and score (or explain) a crop of each; an "
            "image's score is its most-fake face (--face-strategy); an image without a face is handled "
            "whole and flagged no_face; default: on for a checkpoint trained on face crops (its "
            "config.json says so, with the detector and margin it was trained with), else off",
        },
    )
    detector: str | None = field(
        default=None,
        metadata={
            "flag": "--face-detector",
            "choices": tuple(FACE_DETECTORS),
            "help": f"face detector backend (the checkpoint's, else {DEFAULT_FACE_DETECTOR}; docs/faces.md "
            "compares them)",
        },
    )
    margin_ratio: float | None = field(
        default=None,
        metadata={
            "flag": "--face-margin",
            "type": float_at_least(1.0, "the face box itself"),
            "metavar": "RATIO",
            "help": "side of the square crop over the face box's longer side (the checkpoint's, else "
            f"{DEFAULT_MARGIN_RATIO})",
        },
    )
    strategy: str | None = field(
        default=None,
        metadata={
            "flag": "--face-strategy",
            "choices": FACE_STRATEGIES,
            "help": "how the faces of one image or frame combine: max (most-fake face, default), mean, "
            "largest",
        },
    )

    def __post_init__(self) -> None:
        if self.detector is not None:
            _check_detector(self.detector)
        if self.margin_ratio is not None:
            _check_margin(self.margin_ratio)
        if self.strategy is not None and self.strategy not in FACE_STRATEGIES:
            raise ValueError(
                f"unknown face strategy {self.strategy!r}; choose one of {', '.join(FACE_STRATEGIES)}"
            )


FaceChoice = bool | FaceOptions | FaceOverrides | None


def resolve_face_options(faces: FaceChoice, stored: FaceOptions | None) -> FaceOptions | None:
    """The face mode a caller's choice asks for, merged over the settings stored with the checkpoint.

    This is the one place the decision is made; the CLI, the server, Ray and evaluation pass their
    user's choice here untouched.

    Args:
        faces: `FaceOptions`: exactly these. ``True``: face mode with the checkpoint's settings, else
            the library's defaults. ``False``: whole images. None: as the checkpoint says (face mode
            only when it stores face settings). `FaceOverrides`: its fields over the checkpoint's.
        stored: The checkpoint's face settings (`StoredSettings.faces`), None when it stores none.

    Returns:
        The options to score with, or None for whole images.
    """
    if isinstance(faces, FaceOptions):
        return faces
    overrides = faces if isinstance(faces, FaceOverrides) else FaceOverrides(enabled=faces)
    if overrides.enabled is False or (overrides.enabled is None and stored is None):
        return None
    base = stored or FaceOptions()
    return FaceOptions(
        detector=overrides.detector or base.detector,
        margin_ratio=overrides.margin_ratio if overrides.margin_ratio is not None else base.margin_ratio,
        aggregation=(
            FaceAggregation(overrides.strategy) if overrides.strategy is not None else base.aggregation
        ),
        # Backend options belong to the backend they were written for.
        detector_options=base.detector_options if overrides.detector in (None, base.detector) else {},
    )


@dataclass(frozen=True)
class FaceMode:
    """A detector's face mode, resolved once at load (`build_face_mode`).

    Attributes:
        enabled: Face mode when a call leaves ``faces`` out.
        options: The face settings whenever face mode is on: the checkpoint's, under the load-time
            overrides, else the library's defaults. Kept when ``enabled`` is False.
    """

    enabled: bool
    options: FaceOptions

    def resolve(self, faces: FaceChoice = None) -> FaceOptions | None:
        """What a call's ``faces`` means (`resolve_face_options` over these settings): the options to
        score with, or None for whole images. None follows ``enabled``."""
        if faces is None:
            faces = self.enabled
        return resolve_face_options(faces, self.options)

    @property
    def default(self) -> FaceOptions | None:
        """The options a call that leaves ``faces`` out scores with (None: whole images)."""
        return self.options if self.enabled else None


def build_face_mode(faces: FaceChoice, stored: FaceOptions | None) -> FaceMode:
    """The face mode of a detector loaded with ``faces`` (as `resolve_face_options` reads it) from a
    checkpoint that stores ``stored``; the settings are kept whether face mode is on or off."""
    on = resolve_face_options(faces, stored)
    if on is not None:
        return FaceMode(True, on)
    settings_only = replace(faces, enabled=True) if isinstance(faces, FaceOverrides) else True
    return FaceMode(False, resolve_face_options(settings_only, stored))


@dataclass(frozen=True)
class FaceCrops:
    """The faces found in one image and the crops to score: one per face, or the whole image if none."""

    boxes: tuple[FaceBox, ...]
    crop_boxes: tuple[tuple[int, int, int, int], ...]
    images: tuple[Image.Image, ...]


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

    Training takes one input per labelled image; the largest face is the subject (the face that
    FaceForensics++ tracks), and detectors list faces largest first.

    Returns:
        (crop box, crop), or (None, the whole image) when no face is found.
    """
    crops = cut_faces(face_detector, image, options)
    if not crops.boxes:
        return None, image
    return crops.crop_boxes[0], crops.images[0]
