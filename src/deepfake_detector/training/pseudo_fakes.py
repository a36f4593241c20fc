"""Self-blended pseudo-fakes: a real face blended into a slightly altered copy of itself.

Face swaps and retouching leave a seam where pasted pixels meet the original: a soft boundary, a small
colour or sharpness mismatch, a slight misalignment. A self-blended image (Shiohara & Yamasaki, "Detecting
Deepfakes with Self-Blended Images", CVPR 2022) has exactly those artefacts and nothing else: same person,
same pose, same background. A detector that must tell it from its real source learns the seam instead
of the identities and generators of one dataset, which is what carries over to manipulations it never saw.

The paper cuts its blend region from facial landmarks: `render_landmark_mask` does that with the convex
hull of dlib's 68 landmarks (`find_face_landmarks`; the model ships in the ``face_recognition_models``
package, trained on iBUG 300-W, whose terms exclude commercial use, so it is used at training time only
and never ships). Where no face or landmark model is found, `render_blend_mask` gives a randomly deformed
ellipse over the centre of the face-centred crop. Written with NumPy and Pillow because no maintained
library makes these images.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from deepfake_detector.training.augment import RandomSource, gaussian_blur, jpeg_recompress

_MASK_POINTS = 24  # vertices of the deformed ellipse


def render_blend_mask(
    size: tuple[int, int], rng: RandomSource, axes_ratio: tuple[float, float] = (0.22, 0.42)
) -> np.ndarray:
    """A soft, irregular elliptical mask over the middle of a face-centred image.

    Args:
        size: ``(width, height)`` of the image.
        rng: Source of randomness.
        axes_ratio: Range of the ellipse's semi-axes as a share of the image side: small values cover the
            inner face (eyes, nose, mouth; a retouch), large ones the whole face (a swap).

    Returns:
        ``(H, W)`` float32 weights in [0, 1]: 1 inside the blended region, fading out over its edge.
    """
    width, height = size
    centre_x = width * (0.5 + rng.uniform(-0.05, 0.05))
    centre_y = height * (0.52 + rng.uniform(-0.05, 0.05))  # faces sit a little below the crop's middle
    radius_x = width * rng.uniform(*axes_ratio)
    radius_y = height * rng.uniform(axes_ratio[0] * 1.1, axes_ratio[1] * 1.25)  # faces are taller
    # Each vertex's radius is jittered, so the boundary is not a clean ellipse a model could look for.
    points = []
    for index in range(_MASK_POINTS):
        angle = 2 * math.pi * index / _MASK_POINTS
        stretch = rng.uniform(0.85, 1.15)
        points.append(
            (centre_x + stretch * radius_x * math.cos(angle), centre_y + stretch * radius_y * math.sin(angle))
        )
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    # The feathering decides how visible the seam is: from a hard cut to a wide, gentle fade.
    feather = max(1.0, min(width, height) * rng.uniform(0.01, 0.08))
    mask = mask.filter(ImageFilter.GaussianBlur(radius=feather))
    return np.asarray(mask, dtype=np.float32) / 255.0  # (H, W)


def find_face_landmarks(image: Image.Image, models: tuple | None = None) -> np.ndarray | None:
    """dlib's 68 landmarks (x, y) of the largest face, or None when no face is found.

    Args:
        image: An RGB image.
        models: ``(face_detector, shape_predictor)`` from `load_landmark_models` (loaded once by the
            caller; loading takes about a second).

    Returns:
        (68, 2) float32 pixel coordinates, or None.
    """
    detector, predictor = models or load_landmark_models()
    pixels = np.asarray(image.convert("RGB"))  # (H, W, 3)
    faces = detector(pixels, 0) or detector(pixels, 1)  # upsample once for small faces
    if not faces:
        return None
    face = max(faces, key=lambda box: box.width() * box.height())
    shape = predictor(pixels, face)
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float32)


def load_landmark_models() -> tuple:
    """dlib's HOG face detector and its 68-point shape predictor (from ``face_recognition_models``).

    Raises:
        MissingExtraError: dlib or ``face_recognition_models`` is not installed (extra ``faces-cnn``).
    """
    from deepfake_detector.faces.backends import face_recognition_models_file
    from deepfake_detector.optional import require

    dlib = require("dlib", "faces")
    predictor = dlib.shape_predictor(face_recognition_models_file("shape_predictor_68_face_landmarks.dat"))
    return dlib.get_frontal_face_detector(), predictor


def render_landmark_mask(size: tuple[int, int], landmarks: np.ndarray, rng: RandomSource) -> np.ndarray:
    """The SBI paper's blend region: the convex hull of the face's landmarks, randomly deformed.

    The hull is scaled about its centre (0.85-1.1, so the seam falls inside or just outside the face
    outline) and feathered by a random width, as the paper's mask deformation does.

    Args:
        size: ``(width, height)`` of the image.
        landmarks: (N, 2) pixel coordinates (`find_face_landmarks`).
        rng: Source of randomness.

    Returns:
        ``(H, W)`` float32 weights in [0, 1].
    """
    from scipy.spatial import ConvexHull

    width, height = size
    hull = landmarks[ConvexHull(landmarks).vertices]  # (K, 2), in order around the face
    centre = hull.mean(axis=0)
    scale_x, scale_y = rng.uniform(0.85, 1.1), rng.uniform(0.85, 1.1)
    points = [
        (float(centre[0] + scale_x * (x - centre[0])), float(centre[1] + scale_y * (y - centre[1])))
        for x, y in hull
    ]
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).polygon(points, fill=255)
    feather = max(1.0, min(width, height) * rng.uniform(0.01, 0.06))
    mask = mask.filter(ImageFilter.GaussianBlur(radius=feather))
    return np.asarray(mask, dtype=np.float32) / 255.0  # (H, W)


def alter_copy(image: Image.Image, rng: RandomSource) -> Image.Image:
    """The source of the blended pixels: the same image, slightly shifted, scaled, recoloured and blurred
    or sharpened, as a pasted face differs from the one it covers."""
    width, height = image.size
    altered = image
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if rng.random() < 0.6:
            altered = enhancer(altered).enhance(rng.uniform(0.85, 1.15))
    if rng.random() < 0.5:  # a per-channel tint: skin tones of two faces rarely match
        shift = np.array([rng.uniform(-12, 12) for _ in range(3)], dtype=np.float32)
        pixels = np.asarray(altered, dtype=np.float32) + shift  # (H, W, 3)
        altered = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    choice = rng.random()
    if choice < 0.35:
        altered = gaussian_blur(altered, (0.5, 1.5), rng)
    elif choice < 0.7:
        altered = ImageEnhance.Sharpness(altered).enhance(rng.uniform(1.5, 3.0))
    # Misalignment: scale about the centre and translate by a few per cent.
    scale = rng.uniform(0.94, 1.06)
    shift_x, shift_y = width * rng.uniform(-0.03, 0.03), height * rng.uniform(-0.03, 0.03)
    # Image.transform's AFFINE maps output (x, y) to input (a x + b y + c, d x + e y + f).
    a = 1.0 / scale
    c = width / 2 - a * width / 2 - shift_x * a
    f = height / 2 - a * height / 2 - shift_y * a
    altered = altered.transform(
        (width, height), Image.Transform.AFFINE, (a, 0.0, c, 0.0, a, f), resample=Image.Resampling.BILINEAR
    )
    if rng.random() < 0.3:  # pasted pixels were often compressed on their own before the paste
        altered = jpeg_recompress(altered, (60, 95), rng)
    return altered


def make_self_blended(
    image: Image.Image, rng: RandomSource, landmarks: np.ndarray | None = None
) -> Image.Image:
    """Blends an altered copy of a real face into the face itself; the result is a (pseudo-)fake.

    Args:
        image: A face-centred RGB image of a real face.
        rng: Source of randomness.
        landmarks: The face's (N, 2) landmarks (`find_face_landmarks`): the blend region is their
            deformed hull; None: a deformed ellipse over the middle of the crop.

    Returns:
        An RGB image of the same size.
    """
    image = image.convert("RGB")
    if landmarks is None:
        mask = render_blend_mask(image.size, rng)  # (H, W)
    else:
        mask = render_landmark_mask(image.size, landmarks, rng)  # (H, W)
    # Partial blends leave a fainter seam; the paper draws the ratio from {0.25, 0.5, 0.75, 1, 1, 1}.
    mask *= rng.uniform(0.4, 1.0) if rng.random() < 0.5 else 1.0
    original = np.asarray(image, dtype=np.float32)  # (H, W, 3)
    pasted = np.asarray(alter_copy(image, rng), dtype=np.float32)  # (H, W, 3)
    blended = pasted * mask[..., None] + original * (1.0 - mask[..., None])
    return Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
