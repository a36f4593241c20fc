"""The invisible watermark the Stable Diffusion reference pipelines embed, read back from pixels.

Every public Stable Diffusion reference pipeline marks its output with `invisible-watermark`'s
"dwtDct" method: CompVis' SD 1.x scripts embed the bytes ``StableDiffusionV1``, Stability's SD 2.x
scripts ``SDV2``, and SDXL (Stability's generative-models and diffusers) a fixed 48-bit message. The
method writes one bit into each 4x4 block of the Haar DWT approximation band of the image's U (YUV)
channel, cycling through the message, and a reader takes each bit's majority vote over its blocks.

Why not call `imwatermark.WatermarkDecoder`: it walks the blocks in a Python loop (about 85 ms for a
1024 px image) and needs one pass per message length and channel order, six here, which would cost
far more than scoring the image. `read_block_bits` does the same arithmetic on all blocks at once in NumPy
and gives bit-for-bit the library's votes (a test compares them on watermarked and plain images); the
library itself embeds the marks in the tests and the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# `invisible-watermark` refuses to embed into (or read from) anything smaller: r * c < 256 * 256.
MIN_PIXELS = 256 * 256
# A payload counts as found when so many of its bits agree that an image carrying no mark (each bit a
# coin flip) would do it with at most this chance, per payload and channel order: 31 of 32 bits, 43 of
# 48, 101 of 136. Real photos stay far below (docs/provenance.md: at most 20/32, 32/48 and 77/136 over
# the project's 5,875 real photos), while the method's own rounding loses a few bits even in lossless
# copies, so demanding every bit would miss most marked files.
MAX_CHANCE_MATCH = 1e-8
_BLOCK = 4  # the method's block side, in DWT coefficients
_SCALE = 36.0  # its default quantisation step for the U channel (the Y channel is left alone)


@dataclass(frozen=True)
class WatermarkPayload:
    """One known message: its name, its bits, and who embeds it."""

    name: str
    bits: tuple[int, ...]
    embedded_by: str

    @property
    def required_bits(self) -> int:
        """The fewest agreeing bits that count as a match (`MAX_CHANCE_MATCH`)."""
        length = len(self.bits)
        tail = 0
        for agreeing in range(length, -1, -1):  # the binomial tail P(>= agreeing of length), growing
            tail += math.comb(length, agreeing)
            if tail / 2**length > MAX_CHANCE_MATCH:
                return agreeing + 1
        return 0


def _bytes_bits(text: str) -> tuple[int, ...]:
    return tuple(int(bit) for bit in np.unpackbits(np.frombuffer(text.encode(), dtype=np.uint8)))


# The SDXL message as Stability's generative-models and diffusers declare it (a random 48-bit number).
_SDXL_MESSAGE = 0b101100111110110010010000011110111011000110011110

STABLE_DIFFUSION_PAYLOADS = (
    WatermarkPayload("StableDiffusionV1", _bytes_bits("StableDiffusionV1"), "CompVis Stable Diffusion 1.x"),
    WatermarkPayload("SDV2", _bytes_bits("SDV2"), "Stability AI Stable Diffusion 2.x"),
    WatermarkPayload(
        "SDXL", tuple(int(bit) for bit in bin(_SDXL_MESSAGE)[2:]), "Stability AI SDXL (and diffusers)"
    ),
)


@dataclass(frozen=True)
class WatermarkMatch:
    """A payload read back from an image."""

    payload: WatermarkPayload
    channel_order: str  # "bgr": embedded the library's documented way; "rgb": diffusers passes RGB
    bits_agreeing: int

    @property
    def share(self) -> float:
        return self.bits_agreeing / len(self.payload.bits)

    def describe(self) -> str:
        return (
            f"{self.payload.name}: {self.bits_agreeing}/{len(self.payload.bits)} bits agree (embedded by "
            f"{self.payload.embedded_by})"
        )


def compute_haar_approximation(channel: np.ndarray) -> np.ndarray:
    """The approximation band of a one-level 2-D Haar DWT over the last two axes (even sizes), float64.

    Bit-for-bit what ``pywt.dwt2(channel, "haar")[0]`` returns (columns of each row pair first, the
    same multiplications in the same order); the order matters because a value landing on either side
    of a quantisation step flips a bit.
    """
    coefficient = 0.7071067811865476  # 1/sqrt(2), PyWavelets' Haar low-pass taps
    values = channel.astype(np.float64)
    rows = coefficient * values[..., 0::2, :] + coefficient * values[..., 1::2, :]  # (..., H/2, W)
    return coefficient * rows[..., 0::2] + coefficient * rows[..., 1::2]  # (..., H/2, W/2)


def _tiles(plane: np.ndarray, side: int) -> np.ndarray:
    """(rows, cols) -> (blocks, side, side): the plane's side x side tiles, row-major."""
    block_rows, block_cols = plane.shape[0] // side, plane.shape[1] // side
    return (
        plane[: block_rows * side, : block_cols * side]
        .reshape(block_rows, side, block_cols, side)
        .transpose(0, 2, 1, 3)
        .reshape(block_rows * block_cols, side, side)
    )


def _peak_bits(coefficients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The library's rule per block of 16 coefficients: the largest other than the first.

    Returns:
        (the peak's value, its position), each (blocks,).
    """
    peak = np.argmax(coefficients[:, 1:], axis=1) + 1  # all >= 0: no abs() needed
    return coefficients[np.arange(len(coefficients)), peak], peak


def read_block_bits(rgb: np.ndarray, embedded_as: str = "bgr") -> np.ndarray:
    """The bit each 4x4 block of the U channel's DWT approximation carries, in the library's order.

    Each approximation coefficient is half the sum of its 2x2 pixels, so the bit, ``(value % 36) >
    18``, is read from integer sums; only where a sum lands exactly on a quantisation boundary (a
    multiple of 18, about one block in 36) does the library's floating-point rounding decide, and
    those blocks are recomputed exactly as PyWavelets does (`compute_haar_approximation`).

    Args:
        rgb: (H, W, 3) uint8 RGB pixels.
        embedded_as: The channel order the encoder was handed the pixels in: "bgr" (OpenCV's, as the
            library documents and the CompVis and Stability scripts do) or "rgb" (diffusers hands it
            RGB arrays). Either way no copy of the image is made: OpenCV reads the order it is told.

    Returns:
        Bool (blocks,), row-major over the blocks, as `imwatermark`'s ``EmbedMaxDct.decode_frame`` visits
        them.
    """
    import cv2

    rows, cols = rgb.shape[0] // 4 * 4, rgb.shape[1] // 4 * 4
    conversion = {"bgr": cv2.COLOR_RGB2YUV, "rgb": cv2.COLOR_BGR2YUV}[embedded_as]
    u_channel = cv2.cvtColor(np.ascontiguousarray(rgb), conversion)[:rows, :cols, 1]
    wide = u_channel.astype(np.uint16)
    sums = wide[0::2, 0::2] + wide[1::2, 0::2] + wide[0::2, 1::2] + wide[1::2, 1::2]  # (rows/2, cols/2)
    peak_sums, _ = _peak_bits(_tiles(sums, _BLOCK).reshape(-1, _BLOCK * _BLOCK))  # (blocks,)
    scale_sums = int(2 * _SCALE)  # the quantisation step, in sums (twice the coefficient)
    bits = (peak_sums % scale_sums) > scale_sums // 2
    boundary = np.flatnonzero(peak_sums % (scale_sums // 2) == 0)
    if boundary.size:
        pixels = _tiles(u_channel, 2 * _BLOCK)[boundary]  # (boundary blocks, 8, 8)
        values, _ = _peak_bits(compute_haar_approximation(pixels).reshape(len(boundary), -1))
        bits[boundary] = (values % _SCALE) > 0.5 * _SCALE
    return bits


def vote_bits(block_bits: np.ndarray, length: int) -> np.ndarray:
    """Each message bit's majority vote over the blocks that carry it (block i carries bit i % length),
    with the library's own rounding (``mean * 255 > 127``)."""
    carrier = np.arange(len(block_bits)) % length  # (blocks,) which bit each block carries
    votes = np.bincount(carrier, weights=block_bits, minlength=length)
    counts = np.bincount(carrier, minlength=length)
    return (votes / np.maximum(counts, 1)) * 255 > 127


def read_payloads(
    rgb: np.ndarray, payloads: tuple[WatermarkPayload, ...] = STABLE_DIFFUSION_PAYLOADS
) -> list[WatermarkMatch]:
    """How many bits of each payload the image reads back, in each channel order, matched or not.

    Args:
        rgb: (H, W, 3) uint8 RGB pixels at the file's own resolution; images under 256x256 pixels in
            area (where the library cannot embed) are not read (an empty list).
    """
    if rgb.shape[0] * rgb.shape[1] < MIN_PIXELS:
        return []
    readings = []
    for channel_order in ("bgr", "rgb"):
        block_bits = read_block_bits(rgb, channel_order)
        for payload in payloads:
            if len(block_bits) >= len(payload.bits):
                votes = vote_bits(block_bits, len(payload.bits))
                agreeing = int((votes == np.array(payload.bits, dtype=bool)).sum())
                readings.append(WatermarkMatch(payload, channel_order, agreeing))
    return readings


def find_watermark(
    rgb: np.ndarray, payloads: tuple[WatermarkPayload, ...] = STABLE_DIFFUSION_PAYLOADS
) -> WatermarkMatch | None:
    """The known payload read back with the largest share of agreeing bits, when enough agree
    (`WatermarkPayload.required_bits`); else None. Arguments as for `read_payloads`."""
    matches = [
        reading
        for reading in read_payloads(rgb, payloads)
        if reading.bits_agreeing >= reading.payload.required_bits
    ]
    return max(matches, key=lambda match: match.share, default=None)
