"""Face boxes and the crops cut around them. Pure geometry on pixel coordinates; no detector here.

Why crop with a margin: detectors return tight boxes (dlib's run from the eyebrows to the chin and
leave out the ears and hairline), but a face swap's tell-tale seams sit exactly at the edge of the
swapped region: jawline, cheeks, hairline. FaceForensics++ (Rössler et al., 2019) trains and evaluates
its classifiers on crops 1.3x the size of the tracked face box, which keeps those seams in view while
the face still fills most of the model's input; 1.3 is the default here for the same reason.

Why square: image processors resize to a fixed square (224x224 for ViT) without keeping the aspect
ratio, so a non-square crop would stretch the face the model sees. The square is moved, not cut, to
stay inside the image; only a square larger than the image's shorter side is shrunk to fit it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_MARGIN_RATIO = 1.3


@dataclass(frozen=True)
class FaceBox:
    """A face found in an image, in that image's pixels (after EXIF orientation or video rotation).

    Attributes:
        left: First column inside the box.
        top: First row inside the box.
        right: First column past the box (exclusive), so ``width = right - left``.
        bottom: First row past the box (exclusive).
        score: The detector's own confidence, on its own scale (dlib HOG: SVM margin, dlib CNN:
            MMOD confidence, OpenCV Haar: cascade level weight); None when it gives none. Only
            comparable between boxes of the same detector.
    """

    left: int
    top: int
    right: int
    bottom: int
    score: float | None = None

    def __post_init__(self) -> None:
        if self.right <= self.left or self.bottom <= self.top:
            raise ValueError(f"empty face box {self.as_tuple()}: right/bottom must exceed left/top")

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def area(self) -> int:
        return self.width * self.height

    def as_tuple(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), Pillow's crop order."""
        return (self.left, self.top, self.right, self.bottom)

    def to_dict(self) -> dict:
        return {"box": list(self.as_tuple()), "detection_score": self.score}


def clip_box(box: FaceBox, image_size: tuple[int, int]) -> FaceBox | None:
    """The part of ``box`` inside an image of ``image_size`` (width, height); None when nothing is."""
    width, height = image_size
    left, top = max(box.left, 0), max(box.top, 0)
    right, bottom = min(box.right, width), min(box.bottom, height)
    if right <= left or bottom <= top:
        return None
    return FaceBox(left, top, right, bottom, box.score)


def compute_crop_box(
    box: FaceBox, image_size: tuple[int, int], margin_ratio: float = DEFAULT_MARGIN_RATIO
) -> tuple[int, int, int, int]:
    """The square region to cut around a face: ``margin_ratio`` times its longer side, kept in the image.

    Args:
        box: The detected face.
        image_size: (width, height) of the image the box is in.
        margin_ratio: Side of the crop over the longer side of the box; 1.0 is the box itself.

    Returns:
        (left, top, right, bottom) with right/bottom exclusive, inside the image.
    """
    if not margin_ratio >= 1.0:
        raise ValueError(f"margin_ratio must be at least 1.0 (the box itself), got {margin_ratio}")
    width, height = image_size
    side = min(math.ceil(max(box.width, box.height) * margin_ratio), width, height)
    centre_x, centre_y = (box.left + box.right) / 2, (box.top + box.bottom) / 2
    # Move the square inside the image rather than cutting it, so the face is never stretched.
    left = min(max(round(centre_x - side / 2), 0), width - side)
    top = min(max(round(centre_y - side / 2), 0), height - side)
    return (left, top, left + side, top + side)


def compute_iou(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes, in [0, 1]."""
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0
