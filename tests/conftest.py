"""Shared fixtures: tiny random ViT and ResNet checkpoints saved with save_pretrained, and varied real image
files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SEED_LABELS = {0: "Realism", 1: "Deepfake"}
REVERSED_LABELS = {0: "Deepfake", 1: "Realism"}


def build_tiny_vit(folder: Path, id2label: dict[int, str], *, seed: int = 0, image_size: int = 30) -> Path:
    """Saves a 2-layer random ViT (the transformers tests' tiny config) and its image processor."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=image_size,
        patch_size=6,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
    )
    model = ViTForImageClassification(config)
    # Random init gives near-identical logits for every class; widen the head so that scores spread
    # out and a parity bug (wrong index, wrong preprocessing) shows up as a large difference.
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
        model.classifier.bias.zero_()
    model.save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


def build_tiny_resnet(folder: Path, id2label: dict[int, str], *, seed: int = 0, image_size: int = 64) -> Path:
    """Saves a 2-stage random ResNet (8 and 16 channels, basic blocks) and a ViTImageProcessor: the
    shape of the bundled model, at a fraction of its size. Its last stage maps the input at 1/8."""
    import torch
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    torch.manual_seed(seed)
    config = ResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=len(id2label),
        id2label=id2label,
        label2id={name: index for index, name in id2label.items()},
    )
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def seed_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("seed-order"), SEED_LABELS, seed=0)


@pytest.fixture(scope="session")
def reversed_checkpoint(tmp_path_factory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("reversed-order"), REVERSED_LABELS, seed=1)


@pytest.fixture(scope="session")
def domain_checkpoint(tmp_path_factory) -> Path:
    """A tiny CLIP detector with a face and a general head and a random domain probe that sends the
    varied images both ways, for the surfaces that show each row's domain. Its tower is saved as is:
    the int8 round trip of the real backbone is tested in tests/test_clip_backbone.py."""
    from tests.test_clip_backbone import build_tiny_detector, build_tiny_tower

    folder = tmp_path_factory.mktemp("domains")
    build_tiny_tower().save_pretrained(folder / "backbone")
    return build_tiny_detector(folder / "backbone", folder / "detector", domains=["face", "general"])


@pytest.fixture(scope="session")
def calibrated_domain_checkpoint(domain_checkpoint) -> Path:
    """`domain_checkpoint`'s weights (the same images go to the same domain) storing each domain's own
    thresholds, far apart and with calibration's 16 digits, so that a surface which applies or shows
    the wrong domain's rule, or the pooled one (0.5), is seen: faces fake at or above 0.1235 and
    general images real below 0.3, fake at or above 0.9543."""
    from tests.test_clip_backbone import build_tiny_detector

    calibration = {
        "temperature": 1.0,
        "thresholds": {"real": 0.5, "fake": 0.5},
        "domains": {
            "face": {"thresholds": {"real": 0.12345678901234, "fake": 0.12345678901234}},
            "general": {"thresholds": {"real": 0.3, "fake": 0.95432109876543}},
        },
    }
    folder = domain_checkpoint.parent
    return build_tiny_detector(
        folder / "backbone", folder / "calibrated", domains=["face", "general"], calibration=calibration
    )


def _texture(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour pattern plus noise, so resizing and rotation change what the model sees."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        127
        + 120 * np.sin(x / max(width, 1) * rng.uniform(2, 9) + y / max(height, 1) * rng.uniform(1, 5) + phase)
        for phase in rng.uniform(0, 6, size=3)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, size=(height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _exif_rotated_jpeg(path: Path, orientation: int, seed: int) -> None:
    image = Image.fromarray(_texture(40, 64, seed))
    exif = Image.Exif()
    exif[0x0112] = orientation
    image.save(path, "JPEG", quality=92, exif=exif.tobytes())


def write_varied_images(folder: Path) -> list[Path]:
    """Writes 24 image files of varied sizes, modes, formats and EXIF orientations; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(name: str, image: Image.Image, **kwargs) -> None:
        path = folder / name
        image.save(path, **kwargs)
        written.append(path)

    rgb = lambda h, w, s: Image.fromarray(_texture(h, w, s))  # noqa: E731
    save("small.jpg", rgb(30, 30, 1), quality=90)
    save("vga.jpg", rgb(480, 640, 2), quality=85)
    save("tall-thin.jpg", rgb(301, 17, 3), quality=95)
    save("camera.jpg", rgb(1500, 2000, 4), quality=80)
    save("progressive.jpg", rgb(200, 300, 5), quality=30, progressive=True)
    save("rgb.png", rgb(100, 100, 6))
    rgba = np.dstack(
        [_texture(48, 64, 7), np.random.default_rng(7).integers(0, 256, (48, 64), dtype=np.uint8)]
    )
    save("rgba.png", Image.fromarray(rgba, "RGBA"))
    save("la.png", rgb(50, 40, 8).convert("LA"))
    save("palette.png", rgb(60, 60, 9).convert("P", palette=Image.Palette.ADAPTIVE, colors=32))
    transparent = rgb(60, 60, 10).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    transparent.info["transparency"] = 0
    save("palette-transparent.png", transparent, transparency=0)
    save("grey.png", rgb(70, 90, 11).convert("L"))
    save("one-bit.png", rgb(64, 64, 12).convert("1"))
    save("cmyk.jpg", rgb(80, 80, 13).convert("CMYK"), quality=90)
    for orientation in (3, 6, 8):
        _exif_rotated_jpeg(folder / f"exif-{orientation}.jpg", orientation, 20 + orientation)
        written.append(folder / f"exif-{orientation}.jpg")
    frames = [rgb(40, 40, 30 + i) for i in range(3)]
    save("animated.gif", frames[0], save_all=True, append_images=frames[1:], duration=100, loop=0)
    save("photo.webp", rgb(120, 160, 14), quality=80)
    save("bitmap.bmp", rgb(33, 47, 15))
    save("scan.tiff", rgb(90, 60, 16))
    save("pixel.png", rgb(1, 1, 17))
    save("wide.jpg", rgb(64, 1024, 18), quality=88)
    save("square-large.png", rgb(512, 512, 19))
    save("q100.jpg", rgb(224, 224, 21), quality=100)
    return written


@pytest.fixture(scope="session")
def varied_images(tmp_path_factory) -> list[Path]:
    return write_varied_images(tmp_path_factory.mktemp("images"))


def jpeg_bytes(height: int = 64, width: int = 64, seed: int = 0, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(_texture(height, width, seed)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()
