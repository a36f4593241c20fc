"""One image at a time through the checkpoint's own image processor, made cheap for large photos.

Preprocessing is the checkpoint's processor (its size, resampling, mean and std), always. Two
shortcuts keep camera-size photos from costing more than the model step:

- **Resize first (exact).** A PIL-backend processor with a fixed height x width converts the whole
  decoded image to NumPy, back to PIL to resize it, and to NumPy again; for a 12-megapixel photo that
  costs about three times the resize. Resizing the PIL image first, with the processor's own size and
  filter, gives the same pixels (its resize of an image already that size is a copy), so this is on
  for every precision. It is used only when the processor's ``resize`` and ``_preprocess`` are
  transformers' own ``PilBackend`` ones, so nothing a subclass changes is skipped.
- **JPEG draft decoding (close, not exact).** libjpeg can decode at 1/2, 1/4 or 1/8 scale in the DCT
  domain (PIL's ``Image.draft``), several times faster for large photos. `draft_size` asks for at least
  `DRAFT_OVERSAMPLE` times the model input on both sides, so the processor still shrinks the image with
  its own antialiasing filter; the pixels then differ by a grey level or two, and the throughput
  benchmark measures what that does to the scores. The `Detector` turns it off for exact answers.

`NumpyImageProcessor` applies the commonest processor, a ViTImageProcessor that resizes to a fixed
height x width, with PIL and NumPy alone, to the same pixels. It is written here rather than taken
from transformers because importing any transformers image processor imports PyTorch and transformers'
modelling code (about 4 s of each process's start-up on a 2-core CPU), which a detector running an
ONNX export otherwise never needs. `load_image_processor` decides which one a folder gets.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

# Draft decoding keeps at least this many decoded pixels per model input pixel along each side.
DRAFT_OVERSAMPLE = 2
# The file transformers' image processors are saved in.
PROCESSOR_FILE = "preprocessor_config.json"
# What `NumpyImageProcessor` reproduces: these processor types, with these settings all stored and its
# steps on (a fixed-size resize, rescaling, normalising); the flags of any other step off; nothing else.
_NUMPY_PROCESSOR_TYPES = ("ViTImageProcessor", "ViTImageProcessorPil")
_NUMPY_REQUIRED = (
    "do_resize",
    "size",
    "resample",
    "do_rescale",
    "rescale_factor",
    "do_normalize",
    "image_mean",
    "image_std",
)
_NUMPY_OFF_FLAGS = ("do_center_crop", "do_pad")
_NUMPY_UNUSED = ("image_processor_type", "processor_class", "do_convert_rgb", "crop_size", "pad_size")
# Processor size keys that are lengths of a side (others, such as max_pixels, count pixels).
_SIDE_KEYS = ("height", "width", "shortest_edge", "longest_edge", "max_height", "max_width")


class ImagePreprocessor:
    """Turns one loaded RGB image into the (3, H, W) float32 pixel values the model takes.

    Args:
        processor: The checkpoint's image processor.
        jpeg_draft: Offer a `draft_size` for JPEG decoding (see the module docstring).
    """

    def __init__(self, processor, *, jpeg_draft: bool = False) -> None:
        self.processor = processor
        self.jpeg_draft = jpeg_draft
        self._resize_to, self._resample = _exact_resize(processor)

    @property
    def draft_size(self) -> tuple[int, int] | None:
        """The smallest (width, height) a JPEG may be decoded at, or None to decode it whole."""
        if not self.jpeg_draft:
            return None
        side = _largest_input_side(self.processor)
        if side is None:
            return None
        # Square, so that it holds whichever way EXIF turns the photo and whatever aspect the
        # processor resizes to.
        return (DRAFT_OVERSAMPLE * side, DRAFT_OVERSAMPLE * side)

    def __call__(self, image) -> np.ndarray:
        """Pixel values of one RGB PIL image, shape (3, H, W), float32."""
        if self._resize_to is not None and image.size != self._resize_to:
            image = image.resize(self._resize_to, resample=self._resample)
        pixel_values = self.processor(images=[image], return_tensors="np")["pixel_values"]  # (1, 3, H, W)
        return np.asarray(pixel_values[0], dtype=np.float32)


def _size_dict(processor) -> dict:
    size = getattr(processor, "size", None) or {}
    return {key: value for key, value in dict(size).items() if value}


def _exact_resize(processor) -> tuple[tuple[int, int] | None, object]:
    """(width, height) and filter of the processor's resize when resizing first is exact, else None."""
    backends = sys.modules.get("transformers.image_processing_backends")
    if backends is None:  # not imported, so the processor is not one of them (a NumpyImageProcessor)
        return None, None
    PilBackend = getattr(backends, "PilBackend", None)
    if PilBackend is None:  # another transformers layout: always take the processor's own path
        return None, None
    cls = type(processor)
    if not (
        isinstance(processor, PilBackend)
        and cls.resize is PilBackend.resize
        and cls._preprocess is PilBackend._preprocess
        and getattr(processor, "do_resize", False)
    ):
        return None, None
    size = _size_dict(processor)
    if set(size) != {"height", "width"}:
        return None, None
    from PIL import Image

    resample = processor.resample if processor.resample is not None else Image.Resampling.BILINEAR
    return (int(size["width"]), int(size["height"])), resample


def _largest_input_side(processor) -> int | None:
    crop = {key: value for key, value in dict(getattr(processor, "crop_size", None) or {}).items() if value}
    sides = [
        value
        for sizes in (_size_dict(processor), crop)
        for key, value in sizes.items()
        if key in _SIDE_KEYS and isinstance(value, int)
    ]
    return max(sides) if sides else None


class NumpyImageProcessor:
    """A fixed-size ViTImageProcessor's settings, applied with PIL and NumPy: the same pixels as
    transformers' PIL backend (`ViTImageProcessorPil`), bit for bit, without importing transformers.

    Each image is converted to RGB, resized to ``size`` with ``resample``, multiplied by
    ``rescale_factor`` in float64 and cast to float32, then normalised with ``image_mean`` and
    ``image_std`` in float32, channels first: transformers' own steps and dtypes, in its order.

    Args:
        settings: The processor's saved settings (``preprocessor_config.json``), which
            `supports` accepts.
    """

    def __init__(self, settings: dict) -> None:
        if not self.supports(settings):
            raise ValueError(f"NumpyImageProcessor cannot apply these settings: {settings}")
        self._settings = dict(settings)
        self.size = {"height": int(settings["size"]["height"]), "width": int(settings["size"]["width"])}
        self.crop_size = None
        self.do_center_crop = False
        self.resample = int(settings["resample"])
        self.rescale_factor = float(settings["rescale_factor"])
        self.image_mean = np.asarray(settings["image_mean"], dtype=np.float32)  # (3,)
        self.image_std = np.asarray(settings["image_std"], dtype=np.float32)  # (3,)

    @staticmethod
    def supports(settings: dict) -> bool:
        """Whether these saved settings are the form this class reproduces exactly."""
        if settings.get("image_processor_type") not in _NUMPY_PROCESSOR_TYPES:
            return False
        if any(key not in settings for key in _NUMPY_REQUIRED):
            return False
        known = (*_NUMPY_REQUIRED, *_NUMPY_OFF_FLAGS, *_NUMPY_UNUSED)
        if any(key not in known for key in settings) or any(settings.get(key) for key in _NUMPY_OFF_FLAGS):
            return False
        size, mean, std = settings["size"], settings["image_mean"], settings["image_std"]
        return (
            all(settings[key] is True for key in ("do_resize", "do_rescale", "do_normalize"))
            and isinstance(size, dict)
            and set(size) == {"height", "width"}
            and all(isinstance(side, int) and side > 0 for side in size.values())
            and settings["resample"] in range(6)  # PIL's filters, 0 (NEAREST) to 5 (HAMMING)
            and isinstance(settings["rescale_factor"], (int, float))
            and isinstance(mean, list)
            and isinstance(std, list)
            and len(mean) == len(std) == 3
        )

    def __call__(self, images, return_tensors: str = "np") -> dict:
        """``{"pixel_values": (N, 3, H, W) float32}`` for a list of PIL images, as NumPy
        (``return_tensors="np"``) or PyTorch (``"pt"``)."""
        pixel_values = np.stack([self._pixels(image) for image in images])
        if return_tensors == "pt":
            import torch

            return {"pixel_values": torch.from_numpy(pixel_values)}
        if return_tensors != "np":
            raise ValueError(f"return_tensors={return_tensors!r}: NumpyImageProcessor returns 'np' or 'pt'")
        return {"pixel_values": pixel_values}

    def _pixels(self, image) -> np.ndarray:
        if image.mode != "RGB":
            image = image.convert("RGB")
        target = (self.size["width"], self.size["height"])
        if image.size != target:
            image = image.resize(target, resample=self.resample)
        pixels = np.asarray(image)  # (H, W, 3) uint8
        pixels = (pixels.astype(np.float64) * self.rescale_factor).astype(np.float32)
        pixels = (pixels - self.image_mean) / self.image_std
        return np.ascontiguousarray(pixels.transpose(2, 0, 1))  # (3, H, W) float32

    def to_dict(self) -> dict:
        """The saved settings, as transformers' ``to_dict`` gives them."""
        return dict(self._settings)


def load_image_processor(folder: str | os.PathLike, *, without_transformers: bool = False):
    """The image processor saved in ``folder``.

    Args:
        folder: A checkpoint or export folder holding ``preprocessor_config.json``.
        without_transformers: Use `NumpyImageProcessor` when the saved settings are its form (for a
            detector that otherwise never imports PyTorch); any other form is loaded by transformers'
            ``AutoImageProcessor``, as it always is when this is False.

    Raises:
        OSError, ValueError, KeyError: The settings can't be read (as ``AutoImageProcessor`` raises).
    """
    if without_transformers:
        try:
            settings = json.loads((Path(folder) / PROCESSOR_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            settings = None  # transformers below says what is wrong, in its own words
        if isinstance(settings, dict) and NumpyImageProcessor.supports(settings):
            return NumpyImageProcessor(settings)
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(folder)
