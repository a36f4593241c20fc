"""Read one image from a path, bytes, a PIL image or a NumPy array into an RGB PIL image.

The conversion matches what ``transformers.pipeline("image-classification")`` does (EXIF transpose,
then ``convert("RGB")``), so scores agree with it, except where that would throw information away:
16-bit and 32-bit greyscale are scaled to 8 bits instead of clipped to white.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from deepfake_detector.errors import ImageLoadError, ImageTooLargeError

# Pillow's own decompression-bomb warning threshold (~89.5 MP, about 9,460 x 9,460): roughly four
# 24-megapixel camera images. A larger image is refused unless the caller raises the limit.
DEFAULT_MAX_PIXELS = 89_478_485

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Image.Image | np.ndarray  # or DecodedImage


def describe_source(image: ImageInput, index: int) -> str | int:
    """The name a result carries for an input: its path for files, its position otherwise."""
    if isinstance(image, (str, os.PathLike)):
        return os.fspath(image)
    return index


def check_media_file(
    path: str | os.PathLike, kind: str = "image", error: type[Exception] = ImageLoadError
) -> None:
    """Refuses what can't be a media file before anything opens it: missing paths, folders, FIFOs,
    sockets and devices (which could block forever or never end), and empty files.

    Args:
        path: The file to check.
        kind: What the file should hold ("image", "video"), for the message.
        error: The exception type to raise, so each loader keeps its own error class.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise error(f"{path}: no such file or directory") from None
    except OSError as problem:
        raise error(f"{path}: cannot access ({problem.strerror or problem})") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(
            f"{path}: is a directory, not {'an' if kind[0] in 'aeiou' else 'a'} {kind} file "
            "(pass --recursive to scan folders)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise error(f"{path}: not a regular file")
    if info.st_size == 0:
        raise error(f"{path}: empty file (0 bytes)")


def _read_file(path: Path) -> bytes:
    check_media_file(path)
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except PermissionError:
        raise ImageLoadError(f"{path}: permission denied") from None
    except OSError as error:
        raise ImageLoadError(f"{path}: cannot read ({error.strerror or error})") from None


def _open_image(
    data: bytes, name: str, max_pixels: int, draft_size: tuple[int, int] | None = None
) -> tuple[Image.Image, bool]:
    if not data:
        raise ImageLoadError(f"{name}: empty input (0 bytes)")
    if max_pixels > 2 * Image.MAX_IMAGE_PIXELS:
        # Pillow refuses anything above twice its global limit before we can look at the size; the
        # caller asked for more on purpose, so lift Pillow's cap to theirs (ours still applies).
        Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise ImageTooLargeError(
            f"{name}: image is too large to decode safely (decompression-bomb limit of {max_pixels:,} pixels)"
        ) from None
    except UnidentifiedImageError:
        raise ImageLoadError(f"{name}: not an image, or an image format Pillow cannot read") from None
    except OSError as error:
        raise ImageLoadError(f"{name}: corrupt image header ({error})") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{name}: image is {width}x{height} = {width * height:,} pixels, above the limit of "
            f"{max_pixels:,} (decompression-bomb guard; raise max_pixels / --max-pixels to allow it)"
        )
    try:
        image.seek(0)  # animated images (GIF, APNG, WebP): score the first frame
        if draft_size is not None and image.format in ("JPEG", "MPO"):
            # libjpeg's DCT scaling: decode at 1/2, 1/4 or 1/8 size, never below draft_size.
            image.draft(None, draft_size)
        image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise ImageLoadError(f"{name}: truncated or corrupt image data ({error})") from None
    return image, image.size != (width, height)


def _scale_high_bit_depth(image: Image.Image) -> Image.Image:
    """16/32-bit greyscale to 8-bit, keeping the picture (Pillow's convert would clip to 255)."""
    values = np.asarray(image)
    if image.mode == "F":
        peak = 1.0 if values.max(initial=0.0) <= 1.0 else 255.0
        return Image.fromarray(np.clip(values / peak * 255.0, 0, 255).round().astype(np.uint8))
    peak = 65535 if (image.mode.startswith("I;16") or values.max(initial=0) > 255) else 255
    scaled = np.clip(values.astype(np.float64) / peak * 255.0, 0, 255).round()
    return Image.fromarray(scaled.astype(np.uint8))


def to_rgb(image: Image.Image) -> Image.Image:
    """EXIF orientation applied, then RGB: what the transformers pipeline does, plus bit-depth scaling."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16L", "I;16B", "I;16N", "F"):
        image = _scale_high_bit_depth(image)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids Pillow's warning; alpha is dropped below like the pipeline
    return image.convert("RGB")


def _array_to_image(array: np.ndarray, name: str) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{name}: array of shape {array.shape} is not an image; expected (H, W), (H, W, 1), (H, W, 3) "
            "or (H, W, 4) in height-width-channel order"
        )
    if array.dtype == np.uint8:
        pixels = array
    elif array.dtype == np.uint16:
        pixels = (array.astype(np.float64) / 65535 * 255).round().astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise ImageLoadError(f"{name}: float arrays must hold values in [0, 1]")
        pixels = (array * 255).round().astype(np.uint8)
    else:
        raise ImageLoadError(f"{name}: unsupported array dtype {array.dtype}; use uint8, uint16 or float")
    return Image.fromarray(np.ascontiguousarray(pixels))


@dataclass(frozen=True)
class DecodedImage:
    """One input, decoded, with what the provenance stage reads beside the pixels.

    Attributes:
        rgb: The RGB image the model scores (`load_image`'s result).
        original: The image as the file decoded, before orientation and RGB conversion, with its
            metadata (``info``, EXIF); the input itself for PIL images; None for arrays.
        data: The encoded file bytes, for files and bytes inputs; None for decoded inputs.
        reduced: True when a JPEG was decoded at reduced scale (``draft_size``), so ``rgb`` is not
            the file's own pixels.
    """

    rgb: Image.Image
    original: Image.Image | None = None
    data: bytes | None = None
    reduced: bool = False


def load_image(
    image: ImageInput,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image:
    """Reads one input into an RGB PIL image.

    Args:
        image: A file path, encoded bytes, a PIL image, or an (H, W[, C]) array (uint8, uint16, or float
            in [0, 1]).
        name: How the input is named in error messages; defaults to the path or "input".
        max_pixels: Images with more pixels are refused before they are decoded.
        draft_size: (width, height): JPEG files and bytes at least twice this size on both sides are
            decoded at 1/2, 1/4 or 1/8 scale, no smaller than this. Faster, but the pixels differ
            slightly from a full decode. None decodes everything whole.

    Returns:
        A fully loaded RGB image with EXIF orientation applied; animated images give their first frame.

    Raises:
        ImageLoadError: The message names the input and says what is wrong with it.
    """
    return decode_image(image, name=name, max_pixels=max_pixels, draft_size=draft_size).rgb


def decode_image(
    image: ImageInput,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> DecodedImage:
    """`load_image`, keeping the file's bytes and its image as decoded (`DecodedImage`). Arguments and
    errors as for `load_image`; a `DecodedImage` (decoded earlier, e.g. by the server's own threads)
    passes through as it is."""
    if isinstance(image, DecodedImage):
        return image
    if isinstance(image, (str, os.PathLike, bytes, bytearray, memoryview)):
        if isinstance(image, (str, os.PathLike)):
            data, name = _read_file(Path(image)), name or str(image)
        else:
            data, name = bytes(image), name or "input"
        original, reduced = _open_image(data, name, max_pixels, draft_size)
        return DecodedImage(to_rgb(original), original, data, reduced)
    name = name or "input"
    if isinstance(image, Image.Image):
        width, height = image.size
        if width * height > max_pixels:
            raise ImageTooLargeError(
                f"{name}: image has {width * height:,} pixels, above the limit of {max_pixels:,}"
            )
        return DecodedImage(to_rgb(image), image)
    if isinstance(image, np.ndarray):
        return DecodedImage(to_rgb(_array_to_image(image, name)))
    raise ImageLoadError(
        f"{name}: unsupported input type {type(image).__name__}; "
        "pass a path, bytes, a PIL image or a NumPy array"
    )


def try_load_image(
    image: ImageInput,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> Image.Image | ImageLoadError:
    """`load_image` for a batch: the image, or the error that becomes this input's own row.

    A hostile file can trip any decoder bug, not only the ones `load_image` names; those become an
    `ImageLoadError` that names the file too, so one bad input never takes its batch down. The error's
    type is kept (`ImageTooLargeError` for a bomb), so callers can tell the problems apart.
    """
    decoded = try_decode_image(image, name=name, max_pixels=max_pixels, draft_size=draft_size)
    return decoded if isinstance(decoded, ImageLoadError) else decoded.rgb


def try_decode_image(
    image: ImageInput,
    *,
    name: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> DecodedImage | ImageLoadError:
    """`decode_image` for a batch, as `try_load_image` is for `load_image`."""
    try:
        return decode_image(image, name=name, max_pixels=max_pixels, draft_size=draft_size)
    except ImageLoadError as error:
        return error
    except Exception as error:
        where = name or (str(image) if isinstance(image, (str, os.PathLike)) else "input")
        return ImageLoadError(f"{where}: cannot decode ({type(error).__name__}: {error})")
