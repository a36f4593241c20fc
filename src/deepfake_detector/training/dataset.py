"""Labelled images as model inputs: loaded like at inference, augmented, then run through the checkpoint's
own image processor, so training and `Detector` see the same preprocessing.

With face crops on (``faces.enabled``), a first pass finds each image's largest face with the detector and
crop function that inference uses (`find_face_crops`), and the dataset cuts that crop out before the
augmentations, so a model trains on exactly what ``predict --faces`` will show it.

Unreadable images never stop a run: a first pass finds files that are missing or whose header isn't an
image (counted, logged, and refused only when too many are bad), and an image whose data turns out to
be corrupt while training is skipped in favour of the next one, with a warning and a count.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from PIL import Image, UnidentifiedImageError

from deepfake_detector.data.labelled import DataError, LabelledImage
from deepfake_detector.errors import ImageLoadError
from deepfake_detector.io.images import DEFAULT_MAX_PIXELS, try_load_image
from deepfake_detector.training.augment import Augmentation
from deepfake_detector.training.pseudo_fakes import make_self_blended

if TYPE_CHECKING:
    from deepfake_detector.faces.backends import FaceDetector
    from deepfake_detector.faces.crops import FaceOptions

logger = logging.getLogger(__name__)

CropBox = tuple[int, int, int, int]


@dataclass(frozen=True)
class UnreadableImage:
    """A training image that was left out, and why."""

    path: str
    error: str

    def to_dict(self) -> dict:
        return {"path": self.path, "error": self.error}


def find_unreadable_images(images: Sequence[LabelledImage]) -> list[UnreadableImage]:
    """Opens every file's header (not its pixels, which is slow) to find missing and non-image files.

    Args:
        images: The records to check.

    Returns:
        One record per unreadable file, in input order.
    """
    problems = []
    for image in images:
        try:
            with Image.open(image.path) as opened:
                opened.size  # noqa: B018 - the header is parsed by open; size proves it has one
        except FileNotFoundError:
            problems.append(UnreadableImage(image.path, "no such file"))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as error:
            problems.append(UnreadableImage(image.path, f"{type(error).__name__}: {error}"))
    return problems


@dataclass(frozen=True)
class FaceCropScan:
    """Where each image's largest face is, from one pass over the images.

    Attributes:
        crop_boxes: Per image, in input order: the crop box of its largest face, or None (no face
            found, or the image could not be read here; the dataset skips and counts those itself).
        no_face: Paths of the readable images in which no face was found: they are used whole.
    """

    crop_boxes: list[CropBox | None]
    no_face: list[str]


def find_face_crops(
    images: Sequence[LabelledImage],
    face_detector: FaceDetector,
    options: FaceOptions,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: bool = False,
) -> FaceCropScan:
    """Finds the largest face of every image and the crop that inference would cut around it.

    Detection runs once per image here rather than in every epoch: it costs far more than decoding,
    and a box does not change between epochs (augmentations are applied to the crop).

    Args:
        images: The records.
        face_detector: A loaded backend (`FaceOptions.build_detector`).
        options: The detector and margin; `crop_largest_face` applies them as `predict --faces` does.
        max_pixels: Decompression-bomb limit, as at inference.
        progress: Show a progress bar on stderr.
    """
    import sys

    from tqdm import tqdm

    from deepfake_detector.faces.crops import crop_largest_face

    crop_boxes: list[CropBox | None] = []
    no_face: list[str] = []
    for record in tqdm(images, desc="finding faces", unit="img", file=sys.stderr, disable=not progress):
        image = try_load_image(record.path, max_pixels=max_pixels)
        if isinstance(image, Exception):  # counted as unreadable by the dataset, which meets it again
            crop_boxes.append(None)
            continue
        crop_box, _ = crop_largest_face(face_detector, image, options)
        crop_boxes.append(crop_box)
        if crop_box is None:
            no_face.append(record.path)
    return FaceCropScan(crop_boxes, no_face)


def sample_images(images: Sequence[LabelledImage], count: int | None, seed: int) -> list[LabelledImage]:
    """A seeded random subset of ``count`` images in their original order (all of them when None)."""
    if count is None or count >= len(images):
        return list(images)
    chosen = sorted(random.Random(seed).sample(range(len(images)), count))
    return [images[index] for index in chosen]


@dataclass
class ImageClassificationDataset:
    """A map-style dataset over labelled images: item i is ``{"pixel_values": (3, H, W), "labels": id}``.

    Attributes:
        images: The records.
        processor: The checkpoint's image processor (resize, rescale, normalise).
        label_ids: Class index of each role, ``{"real": 0, "fake": 1}`` for the seed's labels.
        augment: Training augmentation, or None for validation.
        max_pixels: Decompression-bomb limit, as at inference.
        crop_boxes: With face crops: per image, the crop box to cut before augmenting (None: use the
            whole image), from `find_face_crops`. None: whole images.
        pseudo_fakes: Extra items after the images: item ``len(images) + k`` is a random real image made
            into a self-blended pseudo-fake (`make_self_blended`) and labelled fake.
        skipped: Images found corrupt while training, in this process.
    """

    images: Sequence[LabelledImage]
    processor: object
    label_ids: dict[str, int]
    augment: Augmentation | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    crop_boxes: Sequence[CropBox | None] | None = None
    pseudo_fakes: int = 0
    skipped: list[UnreadableImage] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._bad: set[int] = set()
        if self.crop_boxes is not None and len(self.crop_boxes) != len(self.images):
            raise ValueError(f"{len(self.crop_boxes)} crop boxes for {len(self.images)} images")
        self._real_positions = [i for i, image in enumerate(self.images) if image.label == "real"]
        if self.pseudo_fakes and not self._real_positions:
            raise DataError("pseudo-fakes are made from real images, and the training data has none")

    def __len__(self) -> int:
        return len(self.images) + self.pseudo_fakes

    def labels(self) -> list[int]:
        return [self.label_ids[image.label] for image in self.images] + [
            self.label_ids["fake"]
        ] * self.pseudo_fakes

    def __getitem__(self, index: int) -> dict:
        pseudo_fake = index >= len(self.images)
        if pseudo_fake:  # a fresh real source and a fresh blend each time, so epochs don't repeat
            index = self._real_positions[random.randrange(len(self._real_positions))]
        # A corrupt file is replaced by the next readable one, so batches keep their size and a bad
        # file deep in the data can't crash the run at step 3,000.
        for offset in range(len(self.images)):
            position = (index + offset) % len(self.images)
            record = self.images[position]
            if position in self._bad or (pseudo_fake and record.label != "real"):
                continue
            image = try_load_image(record.path, max_pixels=self.max_pixels)
            if isinstance(image, Exception):  # unreadable, or any decoder bug a hostile file trips
                self._skip(position, image)
                continue
            if self.crop_boxes is not None and self.crop_boxes[position] is not None:
                image = image.crop(self.crop_boxes[position])  # what `cut_faces` cuts at inference
            if pseudo_fake:
                image = make_self_blended(image, random)
            if self.augment is not None:
                image = self.augment(image, random)
            pixel_values = self.processor(images=image, return_tensors="pt")["pixel_values"][0]  # (3, H, W)
            label = "fake" if pseudo_fake else record.label
            return {"pixel_values": pixel_values, "labels": self.label_ids[label]}
        raise DataError("none of the training images could be read; see the warnings above")

    def _skip(self, position: int, error: Exception) -> None:
        self._bad.add(position)
        path = self.images[position].path
        message = (
            str(error) if isinstance(error, ImageLoadError) else f"{path}: {type(error).__name__}: {error}"
        )
        self.skipped.append(UnreadableImage(path, message))
        logger.warning("skipping unreadable image %s (%d skipped so far)", message, len(self.skipped))
