"""Writes the demo's example images: a real public-domain photo and manipulated versions of it that the
project's own code makes. Nothing here comes from the training data.

The real photo is scikit-image's ``astronaut`` sample (NASA portrait of astronaut Eileen Collins, public
domain; it ships inside the scikit-image wheel, so no download). From it:

- ``astronaut.jpg``: the whole photo, as a user would upload it;
- ``astronaut-face.jpg``: the face, cropped and framed like the training images (the face at the centre);
- ``astronaut-face-blended.jpg``: the face blended with an altered copy of itself
  (`deepfake_detector.training.pseudo_fakes.make_self_blended`): the seam a face swap leaves;
- ``astronaut-face-retouched.jpg``: eyes enlarged with a local warp, a classic Photoshop retouch;
- ``astronaut-face-small.jpg``: the real face shrunk to 64 px and saved at JPEG quality 30, the
  low-resolution, compressed kind of upload the seed card names as a weakness.

And one photo without a face, so that the demo shows a ``general`` image judged by the general head:
``rocket.jpg``, scikit-image's ``rocket`` sample (a SpaceX launch photo, public domain, also inside the
wheel).

Usage: ``python examples/make_examples.py OUT_DIR`` (``make demo`` runs it into build/examples).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image

# Framing of the training images: the face box (dlib's, eyebrows to chin) takes about half the side.
FACE_FRAMING_RATIO = 2.0
FACE_SIDE_PX = 256
SEED = 7


def load_sample(name: str) -> Image.Image:
    """One of scikit-image's sample photos (``astronaut``: (512, 512, 3), ``rocket``: (427, 640, 3))."""
    from deepfake_detector.optional import require

    data = require("skimage.data", "dev")
    return Image.fromarray(getattr(data, name)())  # (H, W, 3) uint8


def crop_face(photo: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The face, framed like the training images, and the face box within that crop."""
    from deepfake_detector.faces.backends import load_face_detector
    from deepfake_detector.faces.boxes import compute_crop_box

    boxes = load_face_detector("dlib-hog").detect(photo)
    if not boxes:
        raise SystemExit("make_examples: no face found in the astronaut photo")
    box = boxes[0]
    crop_box = compute_crop_box(box, photo.size, FACE_FRAMING_RATIO)
    scale = FACE_SIDE_PX / (crop_box[2] - crop_box[0])
    face_box = tuple(
        round((value - origin) * scale)
        for value, origin in zip(box.as_tuple(), crop_box[:2] * 2, strict=True)
    )
    face = photo.crop(crop_box).resize((FACE_SIDE_PX, FACE_SIDE_PX), Image.Resampling.LANCZOS)
    return face, face_box


def enlarge_eyes(
    face: Image.Image, face_box: tuple[int, int, int, int], strength: float = 0.35
) -> Image.Image:
    """Magnifies a disc around each eye (a bulge warp), the way retouching tools enlarge eyes.

    The eyes are placed from the face box by the usual proportions of a frontal face (dlib's box runs
    from the eyebrows to the chin): at 30% and 70% of its width, 25% of its height.
    """
    left, top, right, bottom = face_box
    width, height = right - left, bottom - top
    eyes = [(left + 0.3 * width, top + 0.25 * height), (left + 0.7 * width, top + 0.25 * height)]
    radius = 0.16 * width
    pixels = np.asarray(face, dtype=np.float32)  # (H, W, 3)
    rows, cols = np.mgrid[0 : pixels.shape[0], 0 : pixels.shape[1]].astype(np.float32)  # (H, W) each
    source_x, source_y = cols.copy(), rows.copy()
    for eye_x, eye_y in eyes:
        dx, dy = cols - eye_x, rows - eye_y
        distance = np.sqrt(dx * dx + dy * dy) / radius  # (H, W), 1 at the disc's edge
        # Inside the disc each pixel samples from nearer the centre: the middle is magnified,
        # and the pull fades to nothing at the edge, so there is no visible border.
        pull = np.where(distance < 1.0, strength * (1.0 - distance) ** 2, 0.0)
        source_x -= dx * pull
        source_y -= dy * pull
    x0 = np.clip(np.floor(source_x).astype(int), 0, pixels.shape[1] - 2)
    y0 = np.clip(np.floor(source_y).astype(int), 0, pixels.shape[0] - 2)
    fx, fy = (source_x - x0)[..., None], (source_y - y0)[..., None]  # (H, W, 1) bilinear weights
    warped = (
        pixels[y0, x0] * (1 - fx) * (1 - fy)
        + pixels[y0, x0 + 1] * fx * (1 - fy)
        + pixels[y0 + 1, x0] * (1 - fx) * fy
        + pixels[y0 + 1, x0 + 1] * fx * fy
    )
    return Image.fromarray(np.clip(warped + 0.5, 0, 255).astype(np.uint8))


def make_examples(out_dir: Path) -> list[Path]:
    """Writes the example JPEGs into ``out_dir`` and returns their paths."""
    from deepfake_detector.training.pseudo_fakes import make_self_blended

    out_dir.mkdir(parents=True, exist_ok=True)
    photo = load_sample("astronaut")
    face, face_box = crop_face(photo)
    small = face.resize((64, 64), Image.Resampling.BILINEAR)
    images = {
        "astronaut.jpg": (photo, 90),
        "astronaut-face.jpg": (face, 90),
        "astronaut-face-blended.jpg": (make_self_blended(face, random.Random(SEED)), 90),
        "astronaut-face-retouched.jpg": (enlarge_eyes(face, face_box), 90),
        "astronaut-face-small.jpg": (small, 30),
        "rocket.jpg": (load_sample("rocket"), 90),
    }
    written = []
    for name, (image, quality) in images.items():
        path = out_dir / name
        image.save(path, "JPEG", quality=quality)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path, help="folder to write the JPEGs into (created)")
    args = parser.parse_args(argv)
    for path in make_examples(args.out_dir):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
