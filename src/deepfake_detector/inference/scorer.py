"""What face and video scoring need from a detector, and the raw answer it gives per input.

`Scorer` bundles a scoring function (loaded RGB images -> logits) with the rule that turns logits
into fake score and verdict (`deepfake_detector.scoring.compute_scores`), the thresholds that decide
each row (`Calibration.rule_for`) and the model's name for the records. Face and video modes take a
`Scorer`, not the `Detector`, so they depend on a function rather than on the detector's internals,
and the detector can import them without a loop.

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
from deepfake_detector.scoring import (
    FACE_DOMAIN,
    Calibration,
    DecisionRule,
    ModelOutputs,
    Score,
    compute_scores,
)

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
        domain_logits: (crops, domains) float32 of the domain probe, for a model with domains.
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
    domain_logits: np.ndarray | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def outputs(self) -> ModelOutputs:
        return ModelOutputs(self.logits, self.domain_logits)


@dataclass(frozen=True)
class FacesScored:
    """One image's (or frame's) faces and the combined score and domain; ``faces`` empty: no face (the
    whole image's score)."""

    faces: tuple[FaceScore, ...]
    fake_score: float
    domain: str | None = None


@dataclass(frozen=True)
class Scorer:
    """A scoring function and the rule that reads its logits, as face and video modes need them.

    Attributes:
        compute_outputs: Loaded RGB images -> the model step's outputs (logits and domain logits).
        roles: The checkpoint's labels and which are fake.
        calibration: Temperature and thresholds (per domain where the checkpoint has them).
        model: The checkpoint's name, for the records.
        revision: The checkpoint's revision, for the records.
        domains: The checkpoint's domains (``config.domains``); None when it has none.
    """

    compute_outputs: Callable[[Sequence[Image.Image]], ModelOutputs]
    roles: LabelRoles
    calibration: Calibration
    model: str
    revision: str | None = None
    domains: tuple[str, ...] | None = None

    def score_outputs(self, outputs: ModelOutputs) -> list[Score]:
        return compute_scores(
            outputs, fake_ids=self.roles.fake_ids, calibration=self.calibration, domains=self.domains
        )

    def rule(self, domain: str | None = None, *, video: bool = False) -> DecisionRule:
        """The thresholds that decide a row of ``domain`` (a video clip's with ``video``), and whose."""
        return self.calibration.rule_for(domain, video=video)

    def decide(
        self,
        fake_score: float,
        domain: str | None,
        provenance: ProvenanceRecord | None = None,
        *,
        video: bool = False,
    ) -> dict:
        """Everything a row says about its decision, from one place: ``verdict``, ``decided_by`` (the
        model, or the provenance evidence `decide_verdict` lets decide), ``label`` (the class name of
        the verdict, `LabelRoles.label_for`), and the rule's ``threshold``, ``uncertain_from`` and
        ``threshold_from`` (`DecisionRule.row_fields`)."""
        rule = self.rule(domain, video=video)
        verdict, decided_by = decide_verdict(rule.decide(fake_score), provenance)
        return {
            "verdict": verdict,
            "decided_by": decided_by,
            "label": self.roles.label_for(verdict),
            **rule.row_fields(),
        }

    def failed(
        self, source: str | int, error: Exception | str, provenance: ProvenanceRecord | None = None
    ) -> Prediction:
        return Prediction.failed(
            source, error, model=self.model, revision=self.revision, provenance=provenance
        )

    def combine(
        self,
        outputs: ModelOutputs,
        boxes: tuple[FaceBox, ...],
        crop_boxes: tuple[tuple[int, int, int, int], ...],
        aggregation: FaceAggregation,
    ) -> FacesScored:
        """One image's result from the outputs of its crops (`combine_faces` over the scoring rule)."""
        return combine_faces(self.score_outputs(outputs), boxes, crop_boxes, aggregation, self.roles)

    def predict(self, scored: InputLogits, aggregation: FaceAggregation) -> Prediction:
        """The `Prediction` for one input's logits: its faces combined by ``aggregation`` in face mode,
        the verdict the scoring rule's unless the input's provenance decides it (`decide_verdict`)."""
        if not scored.ok:
            return self.failed(scored.source, scored.error, scored.provenance)
        faces = None
        if scored.boxes is None:
            (score,) = self.score_outputs(scored.outputs)
            fake_score, domain = score.fake_score, score.domain
        else:
            combined = self.combine(scored.outputs, scored.boxes, scored.crop_boxes, aggregation)
            faces, fake_score, domain = combined.faces, combined.fake_score, combined.domain
        return Prediction(
            source=scored.source,
            fake_score=fake_score,
            model=self.model,
            revision=self.revision,
            faces=faces,
            provenance=scored.provenance,
            domain=domain,
            detector=self.detector_name(domain),
            **self.decide(fake_score, domain, scored.provenance),
        )

    def detector_name(self, domain: str | None) -> str:
        """Which head gave a score of ``domain``: ``<domain>-head``, or ``model`` for a checkpoint
        with one head for everything."""
        return f"{domain}-head" if self.domains and domain else "model"


def combine_faces(
    scores: Sequence[Score],
    boxes: tuple[FaceBox, ...],
    crop_boxes: tuple[tuple[int, int, int, int], ...],
    aggregation: FaceAggregation,
    roles: LabelRoles,
) -> FacesScored:
    """One image's result from the scores of its crops (in ``boxes`` order).

    With no face, the whole image's score is the result (and ``faces`` is empty: ``no_face``). The
    combined domain is that of the face whose score is nearest the combined score (for "max" and
    "largest", the deciding face itself). Each face's ``label`` is the class name of its own verdict
    (``roles``).
    """
    if not boxes:
        (score,) = scores
        return FacesScored((), score.fake_score, score.domain)
    faces = tuple(
        FaceScore(
            box=box.as_tuple(),
            crop_box=crop,
            detection_score=box.score,
            label=roles.label_for(score.verdict),
            fake_score=score.fake_score,
            verdict=score.verdict,
            domain=score.domain,
            threshold=score.rule.thresholds.fake,
        )
        for box, crop, score in zip(boxes, crop_boxes, scores, strict=True)
    )
    values = np.array([face.fake_score for face in faces])
    combined = aggregation.compute(values, [box.area for box in boxes])
    nearest = faces[int(np.argmin(np.abs(values - combined)))]
    # A face the face detector found is in the face domain, whether or not the model has a probe.
    return FacesScored(faces, combined, nearest.domain or FACE_DOMAIN)
