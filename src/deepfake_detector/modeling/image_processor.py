"""The image processor a checkpoint folder saved, loaded without transformers where that is exact.

`NumpyImageProcessor` applies the commonest processor, a ViTImageProcessor that resizes to a fixed
height x width, with PIL and NumPy alone, to the same pixels as transformers' PIL backend. It is
written here rather than taken from transformers because importing any transformers image processor
imports PyTorch and transformers' modelling code (about 4 s of each process's start-up on a 2-core
CPU), which a detector running an ONNX export otherwise never needs. `load_image_processor` decides
which one a folder gets.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

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
