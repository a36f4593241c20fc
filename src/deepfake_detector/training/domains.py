"""Which images are in the face model's domain: the labels the domain probe is trained on.

The probe (a linear layer on the features the tower computes anyway) decides at inference time whether
an image shows a face the face head can judge (``face``) or anything else (``general``). Its training
labels come from here: an image of the faces data is ``face`` by construction (face-centred crops), any
other image is ``face`` when dlib's HOG detector finds a face in it large enough to judge
(`MIN_FACE_RATIO` of the shorter side), else ``general``. A street with small passers-by is
``general``: the face head was trained on face-centred crops, not on faces of 20 pixels.

Labels are cached per manifest row (``domains.json`` beside the feature cache), keyed by path, so a
data release that changes the file list relabels only what is new.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from deepfake_detector.data.labelled import LabelledImage
from deepfake_detector.scoring import FACE_DOMAIN

# A face whose box is at least this share of the image's shorter side is one the face head can judge:
# the faces data's crops have faces of 40-70% of the side; 0.15 keeps half-body portraits in.
MIN_FACE_RATIO = 0.15


def compute_face_domain(image, detector) -> str:
    """``face`` when ``detector`` finds a face of at least `MIN_FACE_RATIO` of the shorter side."""
    shorter = min(image.size)
    boxes = detector.detect(image)
    large = [box for box in boxes if max(box.width, box.height) >= MIN_FACE_RATIO * shorter]
    return "face" if large else "general"


def label_domains(
    rows: Sequence[LabelledImage],
    cache_file: str | os.PathLike,
    *,
    all_faces: bool,
    log: Callable[[str], None] | None = None,
) -> list[str]:
    """The domain of every row ("face" or "general"), detecting faces only for rows not in ``cache_file``.

    Args:
        rows: The labelled images.
        cache_file: JSON {path: domain}, read and rewritten (atomically) as rows are labelled.
        all_faces: Every row is a face crop (the faces data): no detection.
        log: Progress messages (default: stderr).

    Returns:
        One domain per row, in order. An image that can't be read is labelled ``general``.
    """
    if all_faces:
        return [FACE_DOMAIN] * len(rows)
    from deepfake_detector.faces.backends import load_face_detector
    from deepfake_detector.io.images import load_image

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    cache_file = Path(cache_file)
    known = json.loads(cache_file.read_text()) if cache_file.exists() else {}
    missing = [row for row in rows if row.path not in known]
    if missing:
        detector = load_face_detector("dlib-hog")
        started = time.perf_counter()
        for row in missing:
            try:
                known[row.path] = compute_face_domain(load_image(row.path), detector)
            except Exception as error:  # an unreadable image is no face; the features say it failed
                log(f"{row.path}: {type(error).__name__}: {error}")
                known[row.path] = "general"
        elapsed = time.perf_counter() - started
        log(
            f"domains: {len(missing)} images labelled by dlib-hog in {elapsed:.1f} s "
            f"({1000 * elapsed / len(missing):.1f} ms per image)"
        )
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        staging = cache_file.with_suffix(".tmp")
        staging.write_text(json.dumps(known, indent=0, sort_keys=True))
        staging.replace(cache_file)
    return [known[row.path] for row in rows]
