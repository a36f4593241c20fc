"""Score a labelled split with a `Detector` and write the evaluation report.

Scoring goes through `Detector.iter_predict`, so an image that can't be read becomes an error row in
``predictions.csv`` (one row per image, whatever happened) and is left out of the metrics, never an
abort. The decision threshold is the checkpoint's own (``calibrate`` fits it on a validation split);
it is never chosen here, on the data being reported.

The robustness sweep re-scores the same images after one perturbation at a time (JPEG re-compression,
Gaussian blur, downscaling: the card's stated weaknesses) and reports ROC-AUC and accuracy per level.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deepfake_detector.errors import DetectorError
from deepfake_detector.evaluation.metrics import (
    compute_accuracy,
    compute_binary_metrics,
    compute_classification_report,
    compute_classification_table,
    compute_false_negative_rate,
    compute_false_positive_rate,
    compute_metrics_by_group,
    compute_roc_auc,
)
from deepfake_detector.evaluation.report import EvaluationReport, RobustnessResult, render_report
from deepfake_detector.io.images import try_load_image
from deepfake_detector.io.inputs import InputProblem
from deepfake_detector.version import __version__

if TYPE_CHECKING:
    from deepfake_detector.faces.crops import FaceChoice

POSITIVE = "fake"
ROLES = ("real", "fake")
PREDICTION_COLUMNS = (
    "path",
    "label",
    "source",
    "group",
    "split",
    "fake_score",
    "threshold",
    "predicted",
    "verdict",
    "error",
    "decided_by",
    "domain",
    "detector",
    "ai_declared",
)
ROBUSTNESS_COLUMNS = ("perturbation", "path", "label", "source", "fake_score", "predicted", "error")


@dataclass(frozen=True)
class Perturbation:
    """One degradation at one strength, applied to an RGB image before scoring.

    Attributes:
        kind: "jpeg" (re-encode at this quality), "blur" (Gaussian blur of this radius in pixels) or
            "downscale" (shrink both sides by this factor; the model's processor resizes it back up).
        level: The quality, radius or factor.
    """

    kind: str
    level: float

    def __post_init__(self) -> None:
        if self.kind not in PERTURBATION_KINDS:
            raise ValueError(
                f"unknown perturbation {self.kind!r}; choose from {', '.join(PERTURBATION_KINDS)}"
            )
        problem = PERTURBATION_KINDS[self.kind][1](self.level)
        if problem:
            raise ValueError(f"{self.kind}:{self.level:g}: {problem}")

    @property
    def name(self) -> str:
        return f"{self.kind}:{self.level:g}"

    def apply(self, image):
        """Returns a degraded copy of an RGB PIL image."""
        return PERTURBATION_KINDS[self.kind][0](image, self.level)


def _jpeg(image, quality: float):
    from PIL import Image

    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def _blur(image, radius: float):
    from PIL import ImageFilter

    return image.filter(ImageFilter.GaussianBlur(radius=radius))


def _downscale(image, factor: float):
    from PIL import Image

    width, height = image.size
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=None)


PERTURBATION_KINDS = {
    "jpeg": (_jpeg, lambda q: None if q == int(q) and 1 <= q <= 100 else "JPEG quality must be 1..100"),
    "blur": (_blur, lambda r: None if r > 0 else "blur radius must be above 0 pixels"),
    "downscale": (_downscale, lambda f: None if 0 < f < 1 else "downscale factor must be between 0 and 1"),
}


def parse_perturbations(specs: Sequence[str]) -> tuple[Perturbation, ...]:
    """Parses ``["jpeg:90,70", "blur:1,2", "downscale:0.5"]`` into one `Perturbation` per level.

    Raises:
        ValueError: The message names the bad spec and the accepted forms.
    """
    accepted = "accepted: jpeg:QUALITY,... blur:RADIUS,... downscale:FACTOR,... (e.g. jpeg:90,70 blur:1,2)"
    parsed = []
    for spec in specs:
        kind, _, levels = spec.partition(":")
        if kind not in PERTURBATION_KINDS or not levels:
            raise ValueError(f"--perturb {spec!r}: not KIND:LEVEL[,LEVEL...] with a known kind; {accepted}")
        for text in levels.split(","):
            try:
                parsed.append(Perturbation(kind, float(text)))
            except ValueError as error:
                raise ValueError(f"--perturb {spec!r}: {error}; {accepted}") from None
    return tuple(parsed)


def _check_items(items: Sequence) -> None:
    for index, item in enumerate(items):
        if item.label not in ROLES:
            raise DetectorError(f"item {index} ({item.path}): label {item.label!r} is not 'real' or 'fake'")


def _check_not_fitted_on(detector, items: Sequence, data: str | None, split: str | None) -> None:
    fitted = detector.settings.fitted_on or {}
    if data is None or not fitted.get("data"):
        return
    same_data = os.path.abspath(data) == fitted["data"] if os.path.exists(data) else data == fitted["data"]
    fitted_splits = fitted.get("split")
    fitted_splits = set(fitted_splits) if isinstance(fitted_splits, list) else {fitted_splits}
    splits = {getattr(item, "split", None) for item in items} - {None} or {split}
    overlap = sorted(str(name) for name in splits & fitted_splits)
    if same_data and overlap:
        raise DetectorError(
            f"the model's thresholds were calibrated on {fitted['data']} ({', '.join(overlap)} split); "
            "reporting on the same images would flatter it. Evaluate another split (--split test), or "
            "recalibrate on a validation split"
        )


def _target_names(roles) -> tuple[str, str]:
    """Row names of the card's report: the checkpoint's own label names (e.g. Realism, Deepfake)."""
    real = "/".join(roles.id2label[i] for i in roles.real_ids)
    fake = "/".join(roles.id2label[i] for i in roles.fake_ids)
    return real, fake


def _perturbed_images(items: Sequence, perturbation: Perturbation, max_pixels: int) -> Iterator:
    for item in items:
        image = try_load_image(item.path, max_pixels=max_pixels)
        yield (
            InputProblem(item.path, str(image)) if isinstance(image, Exception) else perturbation.apply(image)
        )


def _progress(iterable, total: int, description: str, enabled: bool):
    from tqdm import tqdm

    # disable=None: tqdm stays quiet when stderr is not a terminal (logs, CI), like `predict`.
    return tqdm(
        iterable,
        total=total,
        desc=description,
        unit="img",
        file=sys.stderr,
        disable=None if enabled else True,
    )


def _csv_value(value) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def _score_rows(detector, items, images, batch_size: int, description: str, progress: bool, faces=None):
    """One dict per item, in order: its label and metadata with the prediction or the error, and the
    fake threshold that decided it, as the prediction says (its domain's, for a model with domains;
    a video's, for a video). ``label`` is the item's true label; the checkpoint's class names are not
    repeated: ``verdict`` is the answer."""
    rows = []
    # Video files (by suffix) get one row each, scored from sampled frames: video-level metrics.
    predictions = detector.iter_predict_media(images, batch_size=batch_size, faces=faces)
    for item, prediction in _progress(
        zip(items, predictions, strict=True), len(items), description, progress
    ):
        score, threshold = prediction.fake_score, prediction.threshold
        rows.append(
            {
                "path": item.path,
                "label": item.label,
                "source": item.source,
                "group": item.group,
                "split": item.split,
                "fake_score": score,
                "predicted": None if score is None else ("fake" if score >= threshold else "real"),
                "threshold": threshold,
                "verdict": prediction.verdict,
                "error": prediction.error,
                "decided_by": prediction.decided_by,
                "domain": prediction.domain,
                "detector": prediction.detector,
                "ai_declared": None if prediction.provenance is None else prediction.provenance.ai_declared,
                "evidence": bool(prediction.provenance and prediction.provenance.evidence),
            }
        )
    return rows


def _provenance_summary(scored: Sequence[dict], labels, scores, threshold: np.ndarray) -> dict:
    """What provenance decided, and the metrics with its verdicts (a decided image scores 1: fake)
    beside the model's alone, on the same images."""
    decided = np.array([row["decided_by"] == "provenance" for row in scored], dtype=bool)
    with_provenance = np.where(decided, 1.0, scores)

    def metrics(values) -> dict:
        common = {"positive": POSITIVE, "threshold": threshold}
        return {
            "roc_auc": compute_roc_auc(labels, values, positive=POSITIVE),
            "accuracy": compute_accuracy(labels, values, **common),
            "fpr": compute_false_positive_rate(labels, values, **common),
            "fnr": compute_false_negative_rate(labels, values, **common),
        }

    return {
        "scored": len(scored),
        "decided": int(decided.sum()),
        "ai_declared": sum(row["ai_declared"] is True for row in scored),
        "with_evidence": sum(row["evidence"] for row in scored),
        "without": metrics(scores),
        "with": metrics(with_provenance),
    }


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv_value(row.get(column)) for column in columns])


def _robustness(name: str, kind: str, level: float | None, rows: Sequence[dict]):
    scored = [row for row in rows if row["error"] is None]
    labels = np.array([row["label"] for row in scored], dtype=object)
    scores = np.array([row["fake_score"] for row in scored], dtype=np.float64)
    threshold = np.array([row["threshold"] for row in scored], dtype=np.float64)
    return RobustnessResult(
        perturbation=name,
        kind=kind,
        level=level,
        scored=len(scored),
        failed=len(rows) - len(scored),
        roc_auc=compute_roc_auc(labels, scores, positive=POSITIVE),
        accuracy=compute_accuracy(labels, scores, positive=POSITIVE, threshold=threshold),
        false_positive_rate=compute_false_positive_rate(
            labels, scores, positive=POSITIVE, threshold=threshold
        ),
        false_negative_rate=compute_false_negative_rate(
            labels, scores, positive=POSITIVE, threshold=threshold
        ),
    )


def evaluate(
    detector,
    items: Sequence,
    out_dir: str | os.PathLike,
    *,
    perturbations: Sequence[Perturbation] = (),
    batch_size: int = 8,
    n_resamples: int = 1000,
    seed: int = 0,
    data: str | None = None,
    split: str | None = None,
    progress: bool = False,
    faces: FaceChoice = None,
    split_note: str | None = None,
) -> EvaluationReport:
    """Scores labelled images, computes every metric, and writes the report into ``out_dir``.

    Writes ``predictions.csv`` (one row per image, error rows included), ``metrics.json``,
    ``report.md`` and PNG plots (confusion matrix, ROC, precision-recall, reliability diagram), and
    with perturbations ``robustness.csv`` (one row per image and perturbation) and ``robustness.png``.

    Args:
        detector: A loaded `Detector`; its thresholds (``thresholds.fake``) make the decisions.
        items: Labelled images with ``path``, ``label`` ("real"/"fake"), ``source``, ``group`` and
            ``split`` (`deepfake_detector.data.labelled.LabelledImage`).
        out_dir: Folder for the report; created if missing, files in it are overwritten.
        perturbations: Degradations for the robustness sweep (see `parse_perturbations`).
        batch_size: Images per model call.
        n_resamples: Bootstrap resamples for the 95% intervals; 0 skips them.
        seed: Seeds the bootstrap.
        data: Where the items came from, for the report, and to refuse the split the model's
            thresholds were calibrated on.
        split: Which split the items are.
        progress: Show progress bars on stderr.
        faces: Score face crops (as `Detector.iter_predict`), the most-fake face per image: ``True``
            or `FaceOptions`; ``False`` scores whole images; None (default) does what the checkpoint was
            trained on (face crops when its config says so), so a model is evaluated on what it saw.
            Video files (mp4, mov, mkv, webm, avi) are scored per video (`Detector.predict_video`)
            either way, so a manifest of labelled videos gives video-level metrics.
        split_note: What the report must say about the split (`SplitSelection.note`).

    Returns:
        The report, as also written to ``metrics.json``.

    Raises:
        DetectorError: An item has a label other than real/fake, or the checkpoint was calibrated on
            this very split.
    """
    items = list(items)
    _check_items(items)
    _check_not_fitted_on(detector, items, data, split)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [item.path for item in items]
    rows = _score_rows(detector, items, paths, batch_size, "scoring", progress, faces)
    _write_csv(out / "predictions.csv", PREDICTION_COLUMNS, rows)
    scored = [row for row in rows if row["error"] is None]
    labels = np.array([row["label"] for row in scored], dtype=object)
    scores = np.array([row["fake_score"] for row in scored], dtype=np.float64)
    # Each image's own rule: its domain's threshold for a model with domains, else the one threshold.
    threshold = np.array([row["threshold"] for row in scored], dtype=np.float64)
    target_names = _target_names(detector.roles)
    common = {"positive": POSITIVE, "threshold": threshold}

    robustness: list[RobustnessResult] = []
    if perturbations:
        robustness.append(_robustness("none", "none", None, rows))
        perturbed_rows = []
        for perturbation in perturbations:
            images = _perturbed_images(items, perturbation, detector.max_pixels)
            result = _score_rows(detector, items, images, batch_size, perturbation.name, progress, faces)
            robustness.append(_robustness(perturbation.name, perturbation.kind, perturbation.level, result))
            perturbed_rows += [{"perturbation": perturbation.name, **row} for row in result]
        _write_csv(out / "robustness.csv", ROBUSTNESS_COLUMNS, perturbed_rows)

    from deepfake_detector.run_info import git_revision

    options = detector.resolve_faces(faces)
    scoring = {
        **detector.describe_scoring(),
        "faces": None
        if options is None
        else {**options.to_config(), "strategy": options.aggregation.strategy},
    }
    report = EvaluationReport(
        model=detector.model_id,
        revision=detector.revision,
        data=data,
        split=split,
        version=__version__,
        git=git_revision(),
        images=len(rows),
        scored=len(scored),
        failed=len(rows) - len(scored),
        positive=POSITIVE,
        target_names=target_names,
        threshold=detector.thresholds.fake,
        thresholds=detector.thresholds.to_dict(),
        domain_thresholds={
            name: rule.to_dict() for name, rule in detector.calibration.domain_thresholds.items()
        },
        temperature=detector.calibration.temperature,
        calibrated_on=detector.settings.fitted_on,
        classification_report=compute_classification_report(
            labels, scores, target_names=target_names, **common
        ),
        classification_table=compute_classification_table(
            labels, scores, target_names=target_names, **common
        ),
        overall=compute_binary_metrics(labels, scores, n_resamples=n_resamples, seed=seed, **common),
        by_source=compute_metrics_by_group(
            labels,
            scores,
            [row["source"] for row in scored],
            n_resamples=n_resamples,
            seed=seed,
            **common,
        ),
        by_domain=compute_metrics_by_group(
            labels, scores, [row["domain"] for row in scored], n_resamples=n_resamples, seed=seed, **common
        ),
        robustness=tuple(robustness),
        errors=tuple((row["path"], row["error"]) for row in rows if row["error"] is not None),
        scoring=scoring,
        split_note=split_note,
        provenance=None
        if detector.provenance is None
        else _provenance_summary(scored, labels, scores, threshold),
    )
    render_report(report, out, labels=labels, scores=scores)
    return report
