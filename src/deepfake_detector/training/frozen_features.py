"""Cached features of a frozen backbone, so a head trains in minutes on a CPU.

Fine-tuning ViT-B/16 takes about 3 hours per epoch of our data on a 2-core CPU; running the frozen
tower once per image and view and caching what the head reads (`ClipDetectorForImageClassification.
compute_features`: the class token after each block and the last block's mean patch token) costs one
forward pass per view, and every head fit after that takes minutes.

Views are how an image is seen: ``clean`` (as stored), ``aug*`` (a random chain of the degradations
users' images meet: flips, colour, blur, down-then-up scaling, JPEG 30-100; real and fake through the
same chain) and ``sbi*`` (a self-blended pseudo-fake made from a real image, landmark-masked). Each view
is seeded by its name and the image's path, so a rerun makes the same pixels. Fixed degradations for
robustness tables: ``jpeg<quality>``, ``blur<sigma in tenths>``, ``down<percent>`` (down, then up).
``tile<k>`` is the k-th of `TILE_COUNT` crops at the image's own resolution (`compute_tile_boxes`), for
comparing whole-image resizes with native-resolution tiles.

Work is written in shards (``<out>/<view>/shard-NNNNN.npz``, atomically), so a killed run resumes
where it stopped. Rows are the images of `deepfake_detector.data.load_labelled_images`, named in the
shards by their position in that list.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from deepfake_detector.data.labelled import LabelledImage
from deepfake_detector.training.augment import color_jitter, downscale, gaussian_blur, jpeg_recompress

DEFAULT_SHARD_SIZE = 256


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """A random chain of the changes uploads go through, in the order an image meets them."""
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    if rng.random() < 0.5:
        image = color_jitter(image, 0.2, rng)
    if rng.random() < 0.3:
        image = gaussian_blur(image, (0.2, 2.0), rng)
    if rng.random() < 0.3:
        image = downscale(image, (0.3, 0.9), rng)
    if rng.random() < 0.7:
        image = jpeg_recompress(image, (30, 100), rng)
    return image


_FIXED = ("jpeg", "blur", "down")
TILE_COUNT = 4


def compute_tile_boxes(width: int, height: int, tile: int) -> list[tuple]:
    """`TILE_COUNT` square crops of side ``tile`` at the image's own resolution, as (left, top, right,
    bottom): one centred on each quadrant, shifted inside the image.

    A side shorter than ``tile`` is taken whole (the processor then resizes that crop): what matters is
    that no crop is ever shrunk, so the generator's pixel-level traces reach the model as they are.
    """
    fractions = (0.25, 0.75)  # 2 x 2 = TILE_COUNT

    def span(length: int, fraction: float) -> tuple[int, int]:
        side = min(tile, length)
        start = min(max(round(length * fraction - side / 2), 0), length - side)
        return start, start + side

    return [
        (left, top, right, bottom)
        for top, bottom in (span(height, fraction) for fraction in fractions)
        for left, right in (span(width, fraction) for fraction in fractions)
    ]


def apply_fixed_degradation(image: Image.Image, kind: str, amount: int) -> Image.Image:
    """One named degradation at a fixed strength (no randomness): robustness tables use these."""
    fixed = random.Random(0)
    if kind == "jpeg":
        return jpeg_recompress(image, (amount, amount), fixed)
    if kind == "blur":
        return gaussian_blur(image, (amount / 10, amount / 10), fixed)
    return downscale(image, (amount / 100, amount / 100), fixed)


@dataclass(frozen=True)
class View:
    """One way of seeing the images: which rows it covers and how it changes each."""

    name: str
    splits: tuple[str, ...]
    labels: tuple[str, ...] = ("real", "fake")

    def covers(self, row: LabelledImage) -> bool:
        return row.split in self.splits and row.label in self.labels

    @property
    def kind(self) -> str:
        return self.name.rstrip("0123456789")


def parse_view(spec: str) -> View:
    """``clean``, ``aug1``, ``sbi1``, optionally ``:split+split`` (default: clean on every split, the
    others on train only; ``sbi`` views cover real images only)."""
    name, _, splits = spec.partition(":")
    kind = name.rstrip("0123456789")
    numbered = (*_FIXED, "tile")
    if kind not in ("clean", "aug", "sbi", *numbered) or (kind in numbered and kind == name):
        raise ValueError(
            f"unknown view {name!r}; views are clean, aug<N>, sbi<N>, jpeg<quality>, blur<sigma x 10>, "
            f"down<percent>, tile<0..{TILE_COUNT - 1}>"
        )
    if kind == "tile" and not 0 <= int(name[4:]) < TILE_COUNT:
        raise ValueError(f"unknown view {name!r}; tiles are tile0..tile{TILE_COUNT - 1}")
    if kind in ("clean", "tile"):
        default = ("train", "val", "test")
    else:
        default = ("test",) if kind in _FIXED else ("train",)
    chosen = tuple(splits.split("+")) if splits else default
    return View(name, chosen, ("real",) if kind == "sbi" else ("real", "fake"))


class ViewRenderer:
    """Makes a view's image of a row (loads landmark models once, for ``sbi`` views)."""

    def __init__(self, tile_px: int = 224) -> None:
        self._landmark_models = None
        self.tile_px = tile_px  # the tower's input side: a tile reaches it without resizing

    def __call__(self, view: View, row: LabelledImage, image: Image.Image) -> Image.Image:
        seed = int.from_bytes(hashlib.sha256(f"{view.name}|{row.path}".encode()).digest()[:8], "little")
        rng = random.Random(seed)
        if view.kind == "clean":
            return image
        if view.kind == "aug":
            return degrade(image, rng)
        if view.kind in _FIXED:
            return apply_fixed_degradation(image, view.kind, int(view.name[len(view.kind) :]))
        if view.kind == "tile":
            box = compute_tile_boxes(*image.size, self.tile_px)[int(view.name[4:])]
            return image.crop(box)
        from deepfake_detector.training.pseudo_fakes import (
            find_face_landmarks,
            load_landmark_models,
            make_self_blended,
        )

        if self._landmark_models is None:
            self._landmark_models = load_landmark_models()
        landmarks = find_face_landmarks(image, self._landmark_models)
        return degrade(make_self_blended(image, rng, landmarks), rng)


def extract_features(
    model,
    preprocessor: Callable[[Image.Image], np.ndarray],
    rows: Sequence[LabelledImage],
    views: Sequence[View],
    out_dir: str | os.PathLike,
    *,
    shard_size: int = DEFAULT_SHARD_SIZE,
    batch_size: int = 32,
    precision: str = "bf16",
    log: Callable[[str], None] | None = None,
) -> None:
    """Runs the frozen tower over every view's rows and writes the head's inputs in shards.

    Args:
        model: A `ClipDetectorForImageClassification` (its ``compute_features`` is the feature map).
        preprocessor: RGB image -> (3, H, W) float32 (the checkpoint's `ImagePreprocessor`).
        rows: The labelled images (`load_labelled_images`), every split.
        views: The views to extract (`parse_view`).
        out_dir: Cache folder; existing shards are kept (resume).
        shard_size: Rows per shard.
        batch_size: Images per forward pass.
        precision: "bf16" (autocast; class tokens within cosine 0.9999 of fp32) or "fp32".
        log: Progress messages (default: stderr).
    """
    import torch

    from deepfake_detector.io.images import load_image

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    out_dir = Path(out_dir)
    renderer = ViewRenderer(model.config.vision_config.image_size)
    model.eval()
    for view in views:
        chosen = [(index, row) for index, row in enumerate(rows) if view.covers(row)]
        shards = [chosen[start : start + shard_size] for start in range(0, len(chosen), shard_size)]
        folder = out_dir / view.name
        folder.mkdir(parents=True, exist_ok=True)
        for number, shard in enumerate(shards):
            target = folder / f"shard-{number:05d}.npz"
            if target.exists():
                continue
            started = time.perf_counter()
            features, indices, errors = [], [], []
            for start in range(0, len(shard), batch_size):
                batch_indices, pixels = [], []
                for index, row in shard[start : start + batch_size]:
                    try:
                        image = renderer(view, row, load_image(row.path))
                        pixels.append(preprocessor(image))
                        batch_indices.append(index)
                    except Exception as error:  # one bad image is recorded, never stops the run
                        errors.append(f"{row.path}: {type(error).__name__}: {error}")
                if not pixels:
                    continue
                with (
                    torch.inference_mode(),
                    torch.autocast("cpu", torch.bfloat16, enabled=precision == "bf16"),
                ):
                    tokens, _ = model.compute_features(torch.from_numpy(np.stack(pixels)))  # (B, T, D)
                features.append(tokens.float().numpy().astype(np.float16))
                indices.extend(batch_indices)
            if errors and not indices:
                # Every image of the shard failed: a systematic problem (a missing dependency, a wrong
                # data folder), not bad files. Stop before writing, so a rerun retries the shard.
                raise RuntimeError(
                    f"{view.name}: every image of shard {number + 1} failed; first: {errors[0]}"
                )
            staging = target.with_suffix(".tmp.npz")
            np.savez(
                staging,
                features=np.concatenate(features) if features else np.zeros((0, 0, 0), np.float16),
                rows=np.array(indices, dtype=np.int64),
                errors=np.array(errors, dtype=str),
            )
            staging.replace(target)
            rate = len(shard) / (time.perf_counter() - started)
            failed = f", {len(errors)} failed (listed in the shard)" if errors else ""
            progress = f"shard {number + 1}/{len(shards)} ({len(shard)} images{failed}, {rate:.1f} img/s)"
            log(f"{view.name}: {progress}")


def load_features(out_dir: str | os.PathLike, view: str) -> tuple[np.ndarray, np.ndarray]:
    """All shards of a view: features (N, tokens, D) as float32 and their manifest row indices (N,)."""
    folder = Path(out_dir) / view
    shards = sorted(folder.glob("shard-*.npz"))
    if not shards:
        return np.zeros((0, 0, 0), np.float32), np.zeros(0, np.int64)
    parts = [np.load(shard) for shard in shards]
    features = np.concatenate([part["features"] for part in parts if len(part["rows"])]).astype(np.float32)
    rows = np.concatenate([part["rows"] for part in parts])
    return features, rows


def write_cache_info(out_dir: str | os.PathLike, info: dict) -> None:
    """What the cache was made from (manifest, backbone hash, feature layout), for the run's record."""
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    (Path(out_dir) / "cache.json").write_text(json.dumps(info, indent=2) + "\n")
