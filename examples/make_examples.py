"""Writes the demo's example images: real public-domain photos and manipulations of them that the
project's own code makes, in two folders named by what each image really is (``real/`` and ``fake/``,
the layout ``evaluate --data`` reads). Nothing here comes from the training data, and no figure of the
model's accuracy should be read from six pictures: the model card has those.

The real photos ship inside pip packages, so nothing is downloaded: scikit-image's ``astronaut`` (NASA
portrait of astronaut Eileen Collins, "no known copyright restrictions, released into the public
domain", its docstring says) and ``rocket`` (a SpaceX launch photo, released into the public domain),
and matplotlib's ``grace_hopper.jpg`` (US Navy portrait of Grace Hopper, a work of the US federal
government; matplotlib added it in PR #1599 as a public-domain image). They make:

- ``real/astronaut.jpg``: the whole photo, as a user would upload it;
- ``real/astronaut-face.jpg``: the face, cropped and framed like the training images (the face at the
  centre);
- ``real/astronaut-face-small.jpg``: the real face shrunk to 64 px and saved at JPEG quality 30, the
  low-resolution, compressed kind of upload the seed card names as a weakness;
- ``real/rocket.jpg``: a photo without a face, so that the demo shows a ``general`` image judged by the
  general head;
- ``fake/astronaut-face-swapped.jpg``: a face swap: Grace Hopper's face pasted over the astronaut's,
  scaled to her face box, its colours matched, its edge feathered (`swap_face`), the cut-and-paste
  kind of swap in the training data's ``lfw_faceswap`` source;
- ``fake/astronaut-face-blended.jpg``: the face blended with an altered copy of itself
  (`deepfake_detector.training.pseudo_fakes.make_self_blended`): the seam a face swap leaves, without
  the new face;
- ``fake/astronaut-face-retouched.jpg``: eyes enlarged with a local warp, a classic Photoshop retouch.

The default model catches the swap and misses the subtler two (their scores are low): the demo shows
both, as they are.

Usage: ``python examples/make_examples.py OUT_DIR`` (``make demo`` runs it into build/examples).
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Framing of the training images: the face box (dlib's, eyebrows to chin) takes about half the side.
FACE_FRAMING_RATIO = 2.0
FACE_SIDE_PX = 256
SEED = 7


def load_sample(name: str) -> Image.Image:
    """One of scikit-image's sample photos (``astronaut``: (512, 512, 3), ``rocket``: (427, 640, 3))."""
    from deepfake_detector.optional import require

    data = require("skimage.data", "dev")
    return Image.fromarray(getattr(data, name)())  # (H, W, 3) uint8


def load_grace_hopper() -> Image.Image:
    """matplotlib's sample portrait of Grace Hopper: (600, 512) RGB."""
    from deepfake_detector.optional import require

    cbook = require("matplotlib.cbook", "dev")
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return image.convert("RGB")


def crop_face(photo: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The (first) face, framed like the training images, and the face box within that crop."""
    from deepfake_detector.faces.backends import load_face_detector
    from deepfake_detector.faces.boxes import compute_crop_box

    boxes = load_face_detector("dlib-hog").detect(photo)
    if not boxes:
        raise SystemExit("make_examples: no face found in a sample photo")
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


def swap_face(
    target: Image.Image,
    target_box: tuple[int, int, int, int],
    source: Image.Image,
    source_box: tuple[int, int, int, int],
    feather_px: float = 8.0,
) -> Image.Image:
    """Pastes the source's face over the target's: a face swap as the early tools made them.

    The source is scaled and shifted so that its face box lands on the target's (no landmarks: the
    landmark model's terms exclude commercial use), its colours are matched to the target's face (mean
    and spread per channel inside the pasted region), and it is blended in through an ellipse over the
    face box, feathered by ``feather_px``, so the seam is soft rather than a hard cut.
    """
    (t_left, t_top, t_right, t_bottom), (s_left, s_top, s_right, s_bottom) = target_box, source_box
    scale_x, scale_y = (s_right - s_left) / (t_right - t_left), (s_bottom - s_top) / (t_bottom - t_top)
    # Image.transform's AFFINE maps output (x, y) to input (a x + b y + c, d x + e y + f).
    affine = (scale_x, 0.0, s_left - t_left * scale_x, 0.0, scale_y, s_top - t_top * scale_y)
    aligned = source.transform(target.size, Image.Transform.AFFINE, affine, Image.Resampling.BICUBIC)

    # dlib's box runs from the eyebrows to the chin: the ellipse is a little narrower and lower.
    centre_x, centre_y = (t_left + t_right) / 2, (t_top + t_bottom) / 2 + 0.05 * (t_bottom - t_top)
    radius_x, radius_y = 0.45 * (t_right - t_left), 0.525 * (t_bottom - t_top)
    ellipse = Image.new("L", target.size, 0)
    ImageDraw.Draw(ellipse).ellipse(
        [centre_x - radius_x, centre_y - radius_y, centre_x + radius_x, centre_y + radius_y], fill=255
    )
    mask = np.asarray(ellipse.filter(ImageFilter.GaussianBlur(feather_px)), dtype=np.float32) / 255.0
    mask = mask[..., None]  # (H, W, 1)

    pasted = np.asarray(aligned, dtype=np.float32)  # (H, W, 3)
    original = np.asarray(target, dtype=np.float32)  # (H, W, 3)
    inside = mask[..., 0] > 0.5
    pasted_mean, pasted_std = pasted[inside].mean(axis=0), pasted[inside].std(axis=0)  # (3,) each
    original_mean, original_std = original[inside].mean(axis=0), original[inside].std(axis=0)
    pasted = (pasted - pasted_mean) / (pasted_std + 1e-6) * original_std + original_mean
    swapped = pasted * mask + original * (1.0 - mask)
    return Image.fromarray(np.clip(swapped + 0.5, 0, 255).astype(np.uint8))


def make_examples(out_dir: Path) -> list[Path]:
    """Writes the example JPEGs into ``out_dir/real`` and ``out_dir/fake`` and returns their paths."""
    from deepfake_detector.training.pseudo_fakes import make_self_blended

    photo = load_sample("astronaut")
    face, face_box = crop_face(photo)
    hopper_face, hopper_box = crop_face(load_grace_hopper())
    small = face.resize((64, 64), Image.Resampling.BILINEAR)
    images = {
        "real/astronaut.jpg": (photo, 90),
        "real/astronaut-face.jpg": (face, 90),
        "real/astronaut-face-small.jpg": (small, 30),
        "real/rocket.jpg": (load_sample("rocket"), 90),
        "fake/astronaut-face-swapped.jpg": (swap_face(face, face_box, hopper_face, hopper_box), 90),
        "fake/astronaut-face-blended.jpg": (make_self_blended(face, random.Random(SEED)), 90),
        "fake/astronaut-face-retouched.jpg": (enlarge_eyes(face, face_box), 90),
    }
    written = []
    for name, (image, quality) in images.items():
        path = out_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
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
