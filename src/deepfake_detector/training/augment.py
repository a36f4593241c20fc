"""Training augmentations on RGB PIL images, written with Pillow because torchvision has no CPU build
that works beside transformers here.

Each augmentation keeps the image's size, so the checkpoint's own image processor does the one resize
and normalisation that inference does too. Randomness comes from a ``random.Random``-like source; the
dataset passes the ``random`` module, which the Trainer seeds per process and per data-loader worker.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from typing import Protocol

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from deepfake_detector.training.config import AugmentationConfig


class RandomSource(Protocol):
    def random(self) -> float: ...

    def uniform(self, a: float, b: float) -> float: ...

    def randint(self, a: int, b: int) -> int: ...


def random_resized_crop(
    image: Image.Image, scale: tuple[float, float], ratio: tuple[float, float], rng: RandomSource
) -> Image.Image:
    """Crops a random area share ``scale`` and aspect ``ratio`` and resizes it back (torchvision's rule)."""
    width, height = image.size
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_low, log_high))
        crop_w, crop_h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left, top = rng.randint(0, width - crop_w), rng.randint(0, height - crop_h)
            break
    else:  # no sample fitted in 10 tries: the largest centred crop within the ratio range
        aspect = min(max(width / height, ratio[0]), ratio[1])
        crop_w, crop_h = (
            (width, round(width / aspect)) if width / height < aspect else (round(height * aspect), height)
        )
        crop_w, crop_h = min(crop_w, width), min(crop_h, height)
        left, top = (width - crop_w) // 2, (height - crop_h) // 2
    box = (left, top, left + crop_w, top + crop_h)
    return image.resize((width, height), Image.Resampling.BILINEAR, box=box)


def rotate(image: Image.Image, degrees: float, rng: RandomSource) -> Image.Image:
    """Rotates by a uniform angle in [-degrees, degrees]; corners are filled black like torchvision."""
    return image.rotate(
        rng.uniform(-degrees, degrees), resample=Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )


def color_jitter(image: Image.Image, strength: float, rng: RandomSource) -> Image.Image:
    """Scales brightness, contrast and saturation each by a factor in [1 - strength, 1 + strength]."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(rng.uniform(1.0 - strength, 1.0 + strength))
    return image


def gaussian_blur(image: Image.Image, sigma: tuple[float, float], rng: RandomSource) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*sigma)))  # Pillow's radius is sigma


def downscale(image: Image.Image, factor: tuple[float, float], rng: RandomSource) -> Image.Image:
    """Shrinks by a random factor and scales back up: the detail a low-resolution upload has lost."""
    width, height = image.size
    share = rng.uniform(*factor)
    small = image.resize(
        (max(1, round(width * share)), max(1, round(height * share))), Image.Resampling.BILINEAR
    )
    return small.resize((width, height), Image.Resampling.BILINEAR)


def jpeg_recompress(image: Image.Image, quality: tuple[float, float], rng: RandomSource) -> Image.Image:
    """Encodes as JPEG at a random quality and decodes again, as social-media re-uploads do."""
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=round(rng.uniform(*quality)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


Augmentation = Callable[[Image.Image, RandomSource], Image.Image]


def build_augmentation(config: AugmentationConfig) -> Augmentation | None:
    """The configured augmentations as one function, or None when all are off.

    Geometry first, then colour and sharpness, then the degradations in the order an image meets
    them on its way to a viewer: blur, downscale, JPEG compression last.
    """
    steps: list[tuple[float, Augmentation]] = []
    if config.crop_scale is not None:
        steps.append(
            (1.0, lambda im, rng: random_resized_crop(im, config.crop_scale, config.crop_ratio, rng))
        )
    if config.rotation_degrees > 0:
        steps.append((1.0, lambda im, rng: rotate(im, config.rotation_degrees, rng)))
    if config.horizontal_flip_probability > 0:
        steps.append((config.horizontal_flip_probability, lambda im, rng: ImageOps.mirror(im)))
    if config.color_jitter:
        steps.append(
            (config.color_jitter_probability, lambda im, rng: color_jitter(im, config.color_jitter, rng))
        )
    if config.sharpness_factor is not None:
        factor = config.sharpness_factor
        steps.append(
            (config.sharpness_probability, lambda im, rng: ImageEnhance.Sharpness(im).enhance(factor))
        )
    if config.blur_sigma is not None:
        steps.append((config.blur_probability, lambda im, rng: gaussian_blur(im, config.blur_sigma, rng)))
    if config.downscale_factor is not None:
        steps.append(
            (config.downscale_probability, lambda im, rng: downscale(im, config.downscale_factor, rng))
        )
    if config.jpeg_quality is not None:
        steps.append((config.jpeg_probability, lambda im, rng: jpeg_recompress(im, config.jpeg_quality, rng)))
    if not steps:
        return None

    def augment(image: Image.Image, rng: RandomSource = random) -> Image.Image:
        for probability, step in steps:
            if probability >= 1.0 or rng.random() < probability:
                image = step(image, rng)
        return image

    return augment
