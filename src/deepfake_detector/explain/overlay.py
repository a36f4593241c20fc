"""Draw a heatmap over its image, and the face crops it was computed on, and write it as a PNG
(matplotlib provides the colour map)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from deepfake_detector.optional import require

DEFAULT_COLORMAP = "turbo"
DEFAULT_ALPHA = 0.45
BOX_RGB = (255, 255, 255)


def compute_overlay(
    image: Image.Image,
    heatmap: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    colormap: str = DEFAULT_COLORMAP,
    faces: Sequence = (),
) -> Image.Image:
    """Blends a colour-mapped heatmap over an image, and outlines the face crops it was computed on.

    Args:
        image: The image the map was computed on (any mode; converted to RGB).
        heatmap: (H, W) in [0, 1], at the image's size.
        alpha: Weight of the heatmap colours, 0 (image only) to 1 (heatmap only).
        colormap: A matplotlib colour map name; hot is the top of the map (red for "turbo").
        faces: `FaceScore` records (``Explanation.faces``): each one's ``crop_box`` is outlined and
            labelled with its fake score.

    Returns:
        An RGB image of the same size.

    Raises:
        ValueError: The heatmap's shape is not the image's (height, width), or alpha is outside [0, 1].
    """
    matplotlib = require("matplotlib", "explain")
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    if heatmap.shape != rgb.shape[:2]:
        raise ValueError(
            f"heatmap shape {heatmap.shape} does not match the image's (height, width) {rgb.shape[:2]}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    # A 256-entry lookup table instead of calling the colour map per pixel: (H, W, 4) float64 for a camera
    # image would take hundreds of megabytes.
    table = (matplotlib.colormaps[colormap](np.linspace(0.0, 1.0, 256))[:, :3] * 255).astype(np.float32)
    levels = np.clip(np.rint(heatmap * 255), 0, 255).astype(np.uint8)  # (H, W)
    colours = table[levels]  # (H, W, 3)
    blended = (1.0 - alpha) * rgb + alpha * colours
    overlay = Image.fromarray(np.clip(np.rint(blended), 0, 255).astype(np.uint8))
    if faces:
        draw = ImageDraw.Draw(overlay)
        width = max(1, round(min(overlay.size) / 150))  # visible on a phone photo, thin on a thumbnail
        for face in faces:
            left, top, right, bottom = face.crop_box
            draw.rectangle((left, top, right - 1, bottom - 1), outline=BOX_RGB, width=width)
            draw.text((left + width + 2, top + width + 1), f"{face.fake_score:.2f}", fill=BOX_RGB)
    return overlay


def render_overlay(
    path: str | os.PathLike,
    image: Image.Image,
    heatmap: np.ndarray,
    *,
    alpha: float = DEFAULT_ALPHA,
    colormap: str = DEFAULT_COLORMAP,
    faces: Sequence = (),
) -> Path:
    """Writes `compute_overlay` of the image, heatmap and face crops as a PNG; returns the path written."""
    path = Path(path)
    compute_overlay(image, heatmap, alpha=alpha, colormap=colormap, faces=faces).save(path, format="PNG")
    return path


def export_heatmap(path: str | os.PathLike, heatmap: np.ndarray) -> Path:
    """Writes the raw (H, W) float32 map as a .npy file; returns the path written."""
    path = Path(path)
    np.save(path, np.asarray(heatmap, dtype=np.float32))
    return path
