"""Image loading: every supported kind of input becomes RGB; every bad input gets a named, clear error."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from deepfake_detector.errors import ImageLoadError
from deepfake_detector.io.images import load_image

from .conftest import jpeg_bytes


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def test_every_varied_image_loads_as_rgb(varied_images):
    for path in varied_images:
        image = load_image(path)
        assert image.mode == "RGB", path.name


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    assert Image.open(path).mode.startswith("I")
    pixels = np.asarray(load_image(path))
    assert pixels.shape == (64, 64, 3)
    expected = np.round(ramp / 65535 * 255)
    assert np.abs(pixels[..., 0].astype(int) - expected).max() <= 1
    # Pillow's own convert("RGB") clips nearly everything to white; we keep the ramp.
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.9
    assert (pixels == 255).mean() < 0.05


def test_animated_image_uses_its_first_frame():
    frames = [Image.new("RGB", (20, 20), colour) for colour in ((200, 10, 10), (10, 200, 10))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50)
    red = np.asarray(load_image(buffer.getvalue()))
    assert red[..., 0].mean() > 150 and red[..., 1].mean() < 60


def test_cmyk_and_alpha_and_palette_convert():
    assert load_image(Image.new("CMYK", (8, 8), (0, 255, 255, 0))).getpixel((0, 0))[0] > 200
    assert load_image(Image.new("RGBA", (8, 8), (10, 20, 30, 0))).getpixel((0, 0)) == (10, 20, 30)
    assert load_image(Image.new("LA", (8, 8), (90, 255))).getpixel((0, 0)) == (90, 90, 90)
    assert load_image(Image.new("P", (8, 8))).mode == "RGB"


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.full((4, 5), 7, np.uint8), (7, 7, 7)),
        (np.full((4, 5, 1), 9, np.uint8), (9, 9, 9)),
        (np.full((4, 5, 3), (1, 2, 3), np.uint8), (1, 2, 3)),
        (np.full((4, 5, 4), (1, 2, 3, 0), np.uint8), (1, 2, 3)),
        (np.full((4, 5, 3), 1.0, np.float32), (255, 255, 255)),
        (np.full((4, 5, 3), 65535, np.uint16), (255, 255, 255)),
    ],
)
def test_numpy_arrays(array, expected):
    image = load_image(array)
    assert image.size == (5, 4)
    assert image.getpixel((0, 0)) == expected


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((4, 5, 2), np.uint8), "shape"),
        (np.zeros((2, 4, 5, 3), np.uint8), "shape"),
        (np.full((4, 5), 2.0), r"\[0, 1\]"),
        (np.zeros((4, 5), np.int64), "dtype"),
    ],
)
def test_bad_arrays_are_refused(array, message):
    with pytest.raises(ImageLoadError, match=message):
        load_image(array)


def test_bad_files_get_errors_that_name_them(tmp_path):
    cases = {
        "empty.jpg": (b"", "empty file"),
        "text.jpg": (b"this is not an image\n" * 20, "not an image"),
        "truncated.jpg": (jpeg_bytes(256, 256)[:3000], "truncated or corrupt"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ImageLoadError, match=message) as caught:
            load_image(path)
        assert str(path) in str(caught.value)
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)
    with pytest.raises(ImageLoadError, match="unsupported input type"):
        load_image(12345)


def test_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    import os

    os.mkfifo(fifo)
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image(fifo)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    # A 1-bit PNG of 12,000 x 12,000 is a few kB on disk but 144 megapixels decoded.
    bomb = Image.new("1", (12_000, 12_000))
    path = tmp_path / "bomb.png"
    bomb.save(path, optimize=True)
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageLoadError, match=r"bomb\.png: image is 12000x12000 = 144,000,000 pixels"):
        load_image(path)
    huge = tmp_path / "huge.png"
    Image.new("1", (15_000, 15_000)).save(huge, optimize=True)  # above Pillow's own hard limit
    with pytest.raises(ImageLoadError, match=r"huge\.png: image is too large to decode safely"):
        load_image(huge)
    with pytest.raises(ImageLoadError, match="above the limit of 1,000"):
        load_image(_png_bytes(Image.new("RGB", (50, 50))), max_pixels=1_000)
    assert load_image(_png_bytes(Image.new("RGB", (50, 50))), max_pixels=2_500).size == (50, 50)
