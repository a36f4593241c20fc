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
"""

from __future__ import annotations

import sys

import numpy as np

# Draft decoding keeps at least this many decoded pixels per model input pixel along each side.
DRAFT_OVERSAMPLE = 2
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
