"""Face mode: score the crops of many images together, and explain them.

The stages stay apart: `deepfake_detector.faces` finds and crops (and holds `FaceOptions` and the one
merge of a caller's choice over the checkpoint's, `resolve_face_options`), a `Scorer`'s scoring
function turns crops into logits, and `deepfake_detector.aggregation` combines the faces' scores. Used
by `Detector` for images (``iter_logits``), video frames and explanations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from deepfake_detector.errors import DetectorError
from deepfake_detector.faces.crops import FaceCrops, FaceOptions, cut_faces
from deepfake_detector.results import Explanation
from deepfake_detector.scoring import ModelOutputs

if TYPE_CHECKING:
    from PIL import Image

    from deepfake_detector.faces.backends import FaceDetector
    from deepfake_detector.inference.scorer import Scorer
    from deepfake_detector.provenance import ProvenanceRecord

T = TypeVar("T")


def iter_crop_outputs(
    compute_outputs: Callable[..., ModelOutputs],
    prepared: Iterable[tuple[T, FaceCrops | Exception]],
    *,
    batch_size: int,
) -> Iterator[tuple[T, FaceCrops | Exception, ModelOutputs | None]]:
    """Model outputs of the crops of many images, about ``batch_size`` crops per model call, in order.

    Args:
        compute_outputs: The scoring function, loaded RGB images -> `ModelOutputs` of B rows.
        prepared: (key, crops) pairs; an exception in place of crops passes through.
        batch_size: Crops gathered before a model call. Only the crops wait, so memory stays bounded.

    Yields:
        (key, crops, outputs with one row per crop), or (key, exception, None) when the input or its
        batch failed.
    """
    pending: list[tuple[T, FaceCrops | Exception]] = []
    waiting = 0
    for key, crops in prepared:
        pending.append((key, crops))
        waiting += 0 if isinstance(crops, Exception) else len(crops.images)
        if waiting >= batch_size:
            yield from _score_pending(compute_outputs, pending, batch_size)
            pending, waiting = [], 0
    yield from _score_pending(compute_outputs, pending, batch_size)


def _score_pending(compute_outputs, pending, batch_size: int):
    images = [image for _, crops in pending if not isinstance(crops, Exception) for image in crops.images]
    try:
        parts = [
            compute_outputs(images[start : start + batch_size]) for start in range(0, len(images), batch_size)
        ]
    except (RuntimeError, ValueError, DetectorError) as error:
        failure = DetectorError(f"model failed: {error}")
        for key, crops in pending:
            yield key, crops if isinstance(crops, Exception) else failure, None
        return
    rows = ModelOutputs.concatenate(parts) if parts else None  # one row per crop
    position = 0
    for key, crops in pending:
        if isinstance(crops, Exception):
            yield key, crops, None
            continue
        count = len(crops.images)
        yield key, crops, rows.rows(position, position + count)
        position += count


def explain_faces(
    scorer: Scorer,
    compute_token_map: Callable[[Image.Image], np.ndarray],
    source: str | int,
    image: Image.Image,
    method: str,
    options: FaceOptions,
    face_detector: FaceDetector,
    provenance: ProvenanceRecord | None = None,
) -> Explanation:
    """A heatmap per face crop, each placed back onto the full image at its crop box.

    Each face's map is normalised on its own, so every face shows its own hottest region; outside the
    crop boxes the map is zero. With no face, the whole image is explained and ``faces`` is empty
    (``no_face``). The scores and the verdict are those face-mode prediction gives, ``provenance``
    (what the provenance stage found in the file) included.
    """
    from deepfake_detector.explain.heatmaps import compute_face_heatmap, compute_image_heatmap

    try:
        crops = cut_faces(face_detector, image, options)
    except (RuntimeError, ValueError) as error:
        failure = DetectorError(f"{source}: face detection failed: {error}")
        return Explanation.failed(source, method, failure, model=scorer.model, revision=scorer.revision)
    outputs = scorer.compute_outputs(list(crops.images))  # one row per crop
    scored = scorer.combine(outputs, crops.boxes, crops.crop_boxes, options.aggregation)
    token_maps = [compute_token_map(crop) for crop in crops.images]  # each (rows, cols)
    if crops.boxes:
        heatmap = compute_face_heatmap(token_maps, crops.crop_boxes, image.size)  # (H, W)
        token_map = np.stack(token_maps)  # (faces, rows, cols)
    else:
        token_map = token_maps[0]  # (rows, cols)
        heatmap = compute_image_heatmap(token_map, image.size)  # (H, W)
    return Explanation(
        source=source,
        method=method,
        heatmap=heatmap,
        token_map=token_map,
        fake_score=scored.fake_score,
        model=scorer.model,
        revision=scorer.revision,
        faces=scored.faces,
        domain=scored.domain,
        **scorer.decide(scored.fake_score, scored.domain, provenance),
    )
