"""What face and video scoring need from a detector, and the raw answer it gives per input.

`Scorer` bundles a scoring function (loaded RGB images -> logits) with the rule that turns logits
into label, fake score and verdict (`deepfake_detector.scoring.compute_scores`) and the model's name
for the records. Face and video modes take a `Scorer`, not the `Detector`, so they depend on a
function rather than on the detector's internals, and the detector can import them without a loop.

`InputLogits` is what `Detector.iter_logits` yields: the logits of each input's crops (one row for a
whole image, one per face) before the scoring rule. Predictions are made from it by `Scorer.predict`,
and calibration fits on it, so both see exactly the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deepfake_detector.provenance import decide_verdict
from deepfake_detector.results import FaceScore, Prediction
from deepfake_detector.scoring import Calibration, Score, compute_scores, compute_verdict

if TYPE_CHECKING:
    from PIL import Image

    from deepfake_detector.aggregation import FaceAggregation
    from deepfake_detector.faces.boxes import FaceBox
    from deepfake_detector.modeling.labels import LabelRoles
    from deepfake_detector.provenance import ProvenanceRecord


@dataclass(frozen=True, eq=False)  # eq=False: NumPy arrays have no single truth value to compare by
class InputLogits:
    """The model's raw answer for one input.

    Attributes:
        source: The input's path as given, or its index in the call.
        logits: (crops, C) float32: one row for a whole image (or an image without a face), one per
            face crop in face mode. None when ``error`` is set.
        boxes: The faces found, in ``logits`` row order; empty when none was found (the single row is
            the whole image); None when faces were not searched for.
        crop_boxes: The square region scored for each face, in the same order.
        error: Why this input could not be scored.
        provenance: What the provenance stage found in the input; None when it did not run.
    """

    source: str | int
    logits: np.ndarray | None
    boxes: tuple[FaceBox, ...] | None = None
    crop_boxes: tuple[tuple[int, int, int, int], ...] = ()
    error: str | None = None
    provenance: ProvenanceRecord | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class FacesScored:
    """One image's (or frame's) faces and the combined label and score; ``faces`` empty: no face."""

    faces: tuple[FaceScore, ...]
    label: str
    fake_score: float


@dataclass(frozen=True)
class Scorer:
    """A scoring function and the rule that reads its logits, as face and video modes need them.

    Attributes:
        compute_logits: Loaded RGB images -> float32 logits, (B, C).
        roles: The checkpoint's labels and which are fake.
        calibration: Temperature and thresholds.
        model: The checkpoint's name, for the records.
        revision: The checkpoint's revision, for the records.
    """

    compute_logits: Callable[[Sequence[Image.Image]], np.ndarray]
    roles: LabelRoles
    calibration: Calibration
    model: str
    revision: str | None = None

    def score_logits(self, logits: np.ndarray) -> list[Score]:
        return compute_scores(
            logits, id2label=self.roles.id2label, fake_ids=self.roles.fake_ids, calibration=self.calibration
        )

    def verdict(self, fake_score: float) -> str:
        return compute_verdict(fake_score, self.calibration.thresholds)

    def failed(
        self, source: str | int, error: Exception | str, provenance: ProvenanceRecord | None = None
    ) -> Prediction:
        return Prediction.failed(
            source, error, model=self.model, revision=self.revision, provenance=provenance
        )

    def combine(
        self,
        logits: np.ndarray,
        boxes: tuple[FaceBox, ...],
        crop_boxes: tuple[tuple[int, int, int, int], ...],
        aggregation: FaceAggregation,
    ) -> FacesScored:
        """One image's result from the logits of its crops (`combine_faces` over the scoring rule)."""
        return combine_faces(self.score_logits(logits), boxes, crop_boxes, aggregation)

    def predict(self, scored: InputLogits, aggregation: FaceAggregation) -> Prediction:
        """The `Prediction` for one input's logits: its faces combined by ``aggregation`` in face mode,
        the verdict the scoring rule's unless the input's provenance decides it (`decide_verdict`)."""
        if not scored.ok:
            return self.failed(scored.source, scored.error, scored.provenance)
        faces = None
        if scored.boxes is None:
            (score,) = self.score_logits(scored.logits)
            label, fake_score = score.label, score.fake_score
        else:
            combined = self.combine(scored.logits, scored.boxes, scored.crop_boxes, aggregation)
            faces, label, fake_score = combined.faces, combined.label, combined.fake_score
        verdict, decided_by = decide_verdict(self.verdict(fake_score), scored.provenance)
        return Prediction(
            source=scored.source,
            label=label,
            fake_score=fake_score,
            verdict=verdict,
            model=self.model,
            revision=self.revision,
            faces=faces,
            decided_by=decided_by,
            provenance=scored.provenance,
        )


def combine_faces(
    scores: Sequence[Score],
    boxes: tuple[FaceBox, ...],
    crop_boxes: tuple[tuple[int, int, int, int], ...],
    aggregation: FaceAggregation,
) -> FacesScored:
    """One image's result from the scores of its crops (in ``boxes`` order).

    With no face, the whole image's score is the result (and ``faces`` is empty: ``no_face``). The
    combined label is that of the face whose score is nearest the combined score (for "max" and
    "largest", the deciding face itself).
    """
    if not boxes:
        (score,) = scores
        return FacesScored((), score.label, score.fake_score)
    faces = tuple(
        FaceScore(
            box=box.as_tuple(),
            crop_box=crop,
            detection_score=box.score,
            label=score.label,
            fake_score=score.fake_score,
            verdict=score.verdict,
        )
        for box, crop, score in zip(boxes, crop_boxes, scores, strict=True)
    )
    values = np.array([face.fake_score for face in faces])
    combined = aggregation.compute(values, [box.area for box in boxes])
    label = faces[int(np.argmin(np.abs(values - combined)))].label
    return FacesScored(faces, label, combined)
