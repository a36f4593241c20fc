"""The provenance stage: what a file declares about its origin, read before the model's opinion.

Three checks, each on what it needs: C2PA on the original file bytes (before any decoding), metadata
on the image as the file decoded, and the Stable Diffusion watermark on the pixels at the file's own
resolution, of files that can still carry it (`_carries_watermark`: not JPEGs). Each runs when its
library is installed (``pip install 'deepfake-detector[provenance]'`` brings them all); the record
names the checks that ran.
"""

from __future__ import annotations

import importlib.util
import logging
import mimetypes
import os
from dataclasses import dataclass, field
from functools import cache

import numpy as np

from deepfake_detector.errors import DetectorError
from deepfake_detector.provenance.records import Finding, ProvenanceRecord

logger = logging.getLogger(__name__)

_MIME_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "TIFF": "image/tiff",
    "GIF": "image/gif",
    "AVIF": "image/avif",
    "HEIF": "image/heif",
}


class ProvenanceError(DetectorError):
    """A provenance option can't be used (a trust-anchor file that can't be read)."""


@dataclass(frozen=True)
class ProvenanceOptions:
    """How the stage runs.

    Attributes:
        c2pa_trust_anchors: A PEM file of root certificates whose signers count as trusted; without
            one, an intact manifest is reported "valid" (signer unknown), never "trusted".
    """

    c2pa_trust_anchors: str | None = None
    _pem: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.c2pa_trust_anchors is None:
            return
        try:
            with open(self.c2pa_trust_anchors, encoding="ascii") as handle:
                pem = handle.read(1_000_000)
        except (OSError, UnicodeDecodeError) as error:
            raise ProvenanceError(
                f"c2pa_trust_anchors={self.c2pa_trust_anchors}: cannot read ({error})"
            ) from None
        if "-----BEGIN CERTIFICATE-----" not in pem:
            raise ProvenanceError(
                f"c2pa_trust_anchors={self.c2pa_trust_anchors}: no PEM certificate in it "
                "(expected '-----BEGIN CERTIFICATE-----' blocks)"
            )
        object.__setattr__(self, "_pem", pem)

    def inspect_image(self, decoded) -> ProvenanceRecord:
        """All three checks on one decoded input (`deepfake_detector.io.images.DecodedImage`)."""
        evidence: list[Finding] = []
        checks = []
        c2pa = None
        if decoded.data is not None and available("c2pa"):
            from deepfake_detector.provenance.c2pa_manifest import read_c2pa

            original = decoded.original
            mime = _MIME_TYPES.get(getattr(original, "format", None) or "")
            c2pa, found = read_c2pa(decoded.data, mime, trust_anchors_pem=self._pem)
            evidence.extend(found)
            checks.append("c2pa")
        if decoded.original is not None:
            from deepfake_detector.provenance.metadata import find_metadata

            evidence.extend(find_metadata(decoded.original))
            checks.append("metadata")
        if _carries_watermark(decoded) and available("watermark"):
            from deepfake_detector.provenance.watermark import find_watermark

            match = find_watermark(np.asarray(decoded.rgb))
            if match is not None:
                evidence.append(Finding("watermark", "sd_watermark", match.describe(), ai_declared=True))
            checks.append("watermark")
        return ProvenanceRecord(tuple(evidence), c2pa, tuple(checks))

    def inspect_file(self, path: str | os.PathLike) -> ProvenanceRecord:
        """The C2PA check on a file that isn't decoded as one image (a video): its bytes as they are.

        A file over `MAX_MANIFEST_FILE_BYTES`, or one that can't be read, gives a ``c2pa_error``
        finding, as a broken manifest does; the file is only read when it is small enough.
        """
        if not available("c2pa"):
            return ProvenanceRecord()
        from deepfake_detector.provenance.c2pa_manifest import MAX_MANIFEST_FILE_BYTES, read_c2pa, too_large

        try:
            if os.path.getsize(path) > MAX_MANIFEST_FILE_BYTES:
                return ProvenanceRecord((too_large(),), None, ("c2pa",))
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            finding = Finding("c2pa", "c2pa_error", f"cannot read the file ({error.strerror or error})")
            return ProvenanceRecord((finding,), None, ("c2pa",))
        c2pa, found = read_c2pa(data, mimetypes.guess_type(os.fspath(path))[0], trust_anchors_pem=self._pem)
        return ProvenanceRecord(tuple(found), c2pa, ("c2pa",))


def _carries_watermark(decoded) -> bool:
    """Whether the Stable Diffusion watermark can still be in these pixels, so they are worth reading.

    Not in a JPEG: re-encoding erases it (docs/provenance.md: found in 6 of 636 marked copies at
    quality 95, 1 at 90, none below), and reading costs about 10 ms per megapixel, more than the whole
    stage otherwise. Not in pixels decoded at reduced scale either: resizing erases it too.
    """
    original_format = getattr(decoded.original, "format", None)
    return not decoded.reduced and original_format not in ("JPEG", "MPO")


@cache
def available(check: str) -> bool:
    """Whether a check's library is installed ("c2pa": c2pa-python; "watermark": OpenCV); warns once
    when one is missing, naming the extra that brings it."""
    module = {"c2pa": "c2pa", "watermark": "cv2"}[check]
    if importlib.util.find_spec(module) is not None:
        return True
    logger.warning(
        "provenance: the %s check is skipped (%s is not installed); "
        "pip install 'deepfake-detector[provenance]' to run it",
        check,
        module,
    )
    return False
