"""The evaluation report as a record, and the files made from it: metrics.json, report.md, PNG plots.

Every number in ``report.md`` is read from the `EvaluationReport` that ``metrics.json`` is written
from, so the two can't disagree. Plots are drawn with matplotlib's object API (``Figure``), never
pyplot, so rendering does not touch a global backend or need a display.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfake_detector.evaluation.metrics import (
    BinaryMetrics,
    compute_precision_recall_curve,
    compute_roc_curve,
)
from deepfake_detector.optional import require

PLOT_FILES = {
    "confusion_matrix": "confusion_matrix.png",
    "roc": "roc.png",
    "precision_recall": "precision_recall.png",
    "reliability": "reliability.png",
    "robustness": "robustness.png",
}
# Headline metrics of report.md, in order, with their display names.
HEADLINE = {
    "accuracy": "accuracy",
    "balanced_accuracy": "balanced accuracy",
    "roc_auc": "ROC-AUC",
    "average_precision": "average precision (fake)",
    "eer": "equal error rate",
    "tpr_at_1pct_fpr": "TPR at 1% FPR",
    "tpr_at_5pct_fpr": "TPR at 5% FPR",
    "false_positive_rate": "real-image error rate (real called fake)",
    "false_negative_rate": "missed-fake rate (fake called real)",
    "precision": "precision (fake)",
    "recall": "recall (fake)",
    "f1": "F1 (fake)",
    "ece": "expected calibration error",
    "brier": "Brier score",
}


@dataclass(frozen=True)
class RobustnessResult:
    """Metrics of the test images under one perturbation.

    Attributes:
        perturbation: Its name ("jpeg:70"), or "none" for the unperturbed baseline.
        kind: "jpeg", "blur", "downscale" or "none".
        level: The quality, radius or factor (None for the baseline).
        scored: Images scored.
        failed: Images that could not be read or scored.
        roc_auc: ROC-AUC of the fake score.
        accuracy: Accuracy at the report's threshold.
        false_positive_rate: Real images called fake.
        false_negative_rate: Fake images called real.
    """

    perturbation: str
    kind: str
    level: float | None
    scored: int
    failed: int
    roc_auc: float
    accuracy: float
    false_positive_rate: float
    false_negative_rate: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass(frozen=True)
class EvaluationReport:
    """Everything ``evaluate`` measured on one labelled split.

    Attributes:
        model: The checkpoint id or folder.
        revision: Its hub revision, when known.
        data: Where the images came from.
        split: Which split was scored.
        version: The deepfake-detector version that made the report.
        git: ``{"commit", "dirty"}`` of the source checkout that made it, None outside a git checkout.
        images: Images given.
        scored: Images scored.
        failed: Images that could not be read or scored (error rows in predictions.csv).
        positive: The positive class of every metric ("fake").
        target_names: The checkpoint's names for the real and the fake class (the card's row names).
        threshold: Decision threshold: a fake score at or above it is called fake (for a model with
            domains, of images in a domain without thresholds of its own).
        thresholds: The checkpoint's stored thresholds (real, fake).
        domain_thresholds: Each domain's thresholds, which decide its images instead (empty for a
            model without domains).
        temperature: The temperature the scores were computed with.
        calibrated_on: Where the checkpoint's calibration was fitted (``fitted_on``), if it was.
        classification_report: The card's classification report, as text.
        classification_table: The same as a dict (per class precision, recall, F1, support).
        overall: Metrics of all scored images, with bootstrap intervals.
        by_source: Metrics per ``source`` of the data.
        by_domain: Metrics per domain the model saw (empty for a model without domains).
        robustness: The sweep's results, baseline first; empty without perturbations.
        errors: ``(path, message)`` of every image that failed.
        scoring: How the images were scored: engine, precision, JPEG draft decoding, face crops
            (`Detector.describe_scoring`), so that the numbers can be reproduced.
        provenance: What the provenance stage did (`deepfake_detector.evaluation.evaluate`): how many
            images it decided, declared AI or carried evidence, and the metrics with its verdicts
            beside the model's alone. None when the stage was off.
        split_note: What the report must say about the split (every row evaluated because the data
            has none of its own, or a split computed here); None when the data's own split was used.
    """

    model: str
    revision: str | None
    data: str | None
    split: str | None
    version: str
    git: dict | None
    images: int
    scored: int
    failed: int
    positive: str
    target_names: tuple[str, str]
    threshold: float
    thresholds: dict[str, float]
    temperature: float
    calibrated_on: dict | None
    classification_report: str
    classification_table: dict
    overall: BinaryMetrics
    by_source: dict[str, BinaryMetrics] = field(default_factory=dict)
    by_domain: dict[str, BinaryMetrics] = field(default_factory=dict)
    domain_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    robustness: tuple[RobustnessResult, ...] = ()
    errors: tuple[tuple[str, str], ...] = ()
    scoring: dict | None = None
    split_note: str | None = None
    provenance: dict | None = None

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "revision": self.revision,
            "data": self.data,
            "split": self.split,
            "version": self.version,
            "git": self.git,
            "images": self.images,
            "scored": self.scored,
            "failed": self.failed,
            "positive": self.positive,
            "target_names": list(self.target_names),
            "threshold": self.threshold,
            "thresholds": dict(self.thresholds),
            "temperature": self.temperature,
            "calibrated_on": self.calibrated_on,
            "classification_report": self.classification_report,
            "classification_table": self.classification_table,
            "overall": self.overall.to_dict(),
            "by_source": {name: metrics.to_dict() for name, metrics in self.by_source.items()},
            "by_domain": {name: metrics.to_dict() for name, metrics in self.by_domain.items()},
            "domain_thresholds": dict(self.domain_thresholds),
            "robustness": [row.to_dict() for row in self.robustness],
            "errors": [list(error) for error in self.errors],
            "scoring": self.scoring,
            "split_note": self.split_note,
            "provenance": self.provenance,
        }


def _json_safe(value):
    """nan and infinity become null: JSON has no such numbers, and null reads as "not defined"."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return _json_safe(value.item())
    return value


def render_metrics_json(report: EvaluationReport, path: Path) -> Path:
    """Writes ``report.to_dict()`` as JSON, undefined numbers as null."""
    path.write_text(
        json.dumps(_json_safe(report.to_dict()), indent=2, allow_nan=False) + "\n", encoding="utf-8"
    )
    return path


def _number(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _interval(metrics: BinaryMetrics, name: str) -> str:
    low, high = metrics.intervals.get(name, (math.nan, math.nan))
    return "" if not (math.isfinite(low) and math.isfinite(high)) else f"[{low:.4f}, {high:.4f}]"


def _scoring_line(scoring: dict) -> str:
    faces = scoring.get("faces")
    return (
        f"Scored with the {scoring['engine']} engine in {scoring['precision']}, JPEG draft decoding "
        f"{'on' if scoring['jpeg_draft'] else 'off'}, "
        + (
            f"on face crops ({faces['detector']}, margin {faces['margin_ratio']:g}, faces combined by "
            f"{faces['strategy']})."
            if faces
            else "on whole images."
        )
    )


def _provenance_lines(provenance: dict) -> list[str]:
    lines = [
        "",
        "## Provenance",
        "",
        f"Decided by provenance (valid C2PA AI declaration or Stable Diffusion watermark): "
        f"{provenance['decided']} of {provenance['scored']} scored images; AI declared by any evidence: "
        f"{provenance['ai_declared']}; with any evidence: {provenance['with_evidence']}. "
        "With provenance, a decided image counts as fake (score 1).",
        "",
    ]
    rows = [
        [name, *(_number(provenance[key][metric]) for metric in ("roc_auc", "accuracy", "fpr", "fnr"))]
        for name, key in (("model alone", "without"), ("with provenance", "with"))
    ]
    return lines + _table(["scores", "ROC-AUC", "accuracy", "real error", "missed fakes"], rows)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _calibration_line(report: EvaluationReport) -> str:
    fitted = report.calibrated_on
    band = report.thresholds.get("real", report.threshold)
    uncertain = (
        f" Scores in [{band:.4g}, {report.threshold:.4g}) are 'uncertain' for predict; here they count "
        "as real."
        if band < report.threshold
        else ""
    )
    return _threshold_source(report, fitted) + uncertain


def _rule(report: EvaluationReport) -> str:
    """The decision rule in words, for table captions."""
    if report.domain_thresholds:
        return (
            "each image's domain threshold ("
            + ", ".join(f"{name} {rule['fake']:.4g}" for name, rule in report.domain_thresholds.items())
            + ")"
        )
    return f"threshold {report.threshold:.4g}"


def _threshold_source(report: EvaluationReport, fitted: dict | None) -> str:
    if report.domain_thresholds:
        rules = ", ".join(f"{name} {rule['fake']:.4g}" for name, rule in report.domain_thresholds.items())
        return (
            f"Each image is decided at the threshold of the domain the model saw ({rules}), fitted per "
            f"domain on {fitted.get('data') if fitted else 'the checkpoint calibration data'} "
            f"({fitted.get('split') if fitted else 'unknown'} split), not on the images reported here; "
            f"temperature {report.temperature:.4g}."
        )
    if fitted:
        return (
            f"Threshold {report.threshold:.4g} and temperature {report.temperature:.4g} come from the "
            f"checkpoint's calibration, fitted on {fitted.get('data')} ({fitted.get('split')} split, "
            f"{fitted.get('images')} images, target FPR {fitted.get('target_fpr')}), not on the images "
            "reported here."
        )
    return (
        f"Threshold {report.threshold:.4g} (temperature {report.temperature:.4g}) is the checkpoint's stored "
        "or default decision rule; it was not chosen on the images reported here."
    )


def render_markdown(report: EvaluationReport, path: Path, plots: Mapping[str, str]) -> Path:
    """Writes ``report.md``: the card's classification report, headline metrics with intervals,
    calibration, per-source breakdown, robustness table and links to the plots."""
    overall = report.overall
    real_name, fake_name = report.target_names
    lines = [
        f"# Evaluation of {report.model}" + (f" @ {report.revision}" if report.revision else ""),
        "",
        f"Data: {report.data or '(given records)'}"
        + (f", {report.split} split" if report.split else "")
        + f"; {report.scored} of {report.images} images scored ({overall.negatives} real, "
        f"{overall.positives} fake), {report.failed} failed (error rows in predictions.csv). "
        f"deepfake-detector {report.version}"
        + (
            f" (git {report.git['commit'][:12]}{', modified' if report.git['dirty'] else ''})"
            if report.git
            else ""
        )
        + ".",
        "",
        *([f"**Split: {report.split_note}.**", ""] if report.split_note else []),
        *([_scoring_line(report.scoring), ""] if report.scoring else []),
        _calibration_line(report) + " Positive class: fake.",
        "",
        "## Classification report",
        "",
        "```",
        report.classification_report.rstrip("\n"),
        "```",
        "",
        "## Confusion matrix",
        "",
        f"Rows are the true class, columns the predicted class at {_rule(report)}.",
        "",
    ]
    (tn, fp), (fn, tp) = overall.confusion_matrix
    lines += _table(
        ["", f"predicted {real_name}", f"predicted {fake_name}"],
        [[f"true {real_name}", str(tn), str(fp)], [f"true {fake_name}", str(fn), str(tp)]],
    )
    lines += ["", "## Metrics", "", "95% intervals: stratified bootstrap percentiles.", ""]
    lines += _table(
        ["metric", "value", "95% interval"],
        [
            [label, _number(getattr(overall, name)), _interval(overall, name)]
            for name, label in HEADLINE.items()
        ],
    )
    if overall.undefined:
        lines += ["", "Not defined on this data:"]
        lines += [f"- {HEADLINE.get(name, name)}: {reason}" for name, reason in overall.undefined.items()]
    lines += ["", "## Calibration", "", "Reliability bins of the fake score (equal width):", ""]
    lines += _table(
        ["bin", "images", "mean fake score", "share fake"],
        [
            [
                f"{b.lower:.1f}-{b.upper:.1f}",
                str(b.count),
                _number(b.mean_score, 3),
                _number(b.positive_rate, 3),
            ]
            for b in overall.reliability
        ],
    )
    for title, key, groups in (
        ("Per source", "source", report.by_source),
        ("Per domain", "domain", report.by_domain),
    ):
        if not groups:
            continue
        lines += ["", f"## {title}", ""]
        lines += _table(
            [
                key,
                "real",
                "fake",
                "accuracy",
                "balanced acc.",
                "ROC-AUC",
                "AP",
                "EER",
                "real error",
                "fakes caught",
                "TPR@1%FPR",
                "ECE",
            ],
            [
                [
                    name,
                    str(m.negatives),
                    str(m.positives),
                    *(
                        _number(getattr(m, key))
                        for key in (
                            "accuracy",
                            "balanced_accuracy",
                            "roc_auc",
                            "average_precision",
                            "eer",
                            "false_positive_rate",
                            "recall",
                            "tpr_at_1pct_fpr",
                            "ece",
                        )
                    ),
                ]
                for name, m in groups.items()
            ],
        )
        lines += ["", f"Every metric per {key}, with intervals, is in metrics.json (`by_{key}`)."]
    if report.robustness:
        lines += [
            "",
            "## Robustness",
            "",
            f"The same images, perturbed; {_rule(report)}.",
            "",
        ]
        lines += _table(
            ["perturbation", "scored", "failed", "ROC-AUC", "accuracy", "real error", "missed fakes"],
            [
                [
                    row.perturbation,
                    str(row.scored),
                    str(row.failed),
                    _number(row.roc_auc),
                    _number(row.accuracy),
                    _number(row.false_positive_rate),
                    _number(row.false_negative_rate),
                ]
                for row in report.robustness
            ],
        )
    if report.provenance is not None:
        lines += _provenance_lines(report.provenance)
    if plots:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({file})" for name, file in plots.items()]
    if report.errors:
        lines += ["", f"## Failed images ({len(report.errors)})", ""]
        lines += [f"- {message}" for _, message in report.errors[:20]]
        if len(report.errors) > 20:
            lines.append(f"- ... {len(report.errors) - 20} more in predictions.csv")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _figure(width: float = 5.0, height: float = 4.5):
    figure_module = require("matplotlib.figure", "eval")
    return figure_module.Figure(figsize=(width, height), layout="constrained")


def _plot_confusion(report: EvaluationReport, path: Path) -> None:
    figure = _figure(4.5, 4.0)
    axes = figure.add_subplot()
    counts = np.array(report.overall.confusion_matrix)
    axes.imshow(counts, cmap="Blues")
    for (row, column), value in np.ndenumerate(counts):
        shade = "white" if value > counts.max() / 2 else "black"
        axes.text(column, row, str(value), ha="center", va="center", color=shade, fontsize=13)
    axes.set_xticks([0, 1], [f"predicted\n{name}" for name in report.target_names])
    axes.set_yticks([0, 1], [f"true\n{name}" for name in report.target_names])
    axes.set_title(f"Confusion matrix (threshold {report.threshold:.3g})")
    figure.savefig(path, dpi=100)


def _plot_roc(report: EvaluationReport, labels, scores, path: Path) -> None:
    figure = _figure()
    axes = figure.add_subplot()
    fpr, tpr, _ = compute_roc_curve(labels, scores, positive=report.positive)
    metrics = report.overall
    if len(fpr):
        axes.plot(fpr, tpr, label=f"ROC-AUC {metrics.roc_auc:.4f}, EER {metrics.eer:.4f}")
        axes.plot(
            [metrics.false_positive_rate],
            [metrics.recall],
            "o",
            label=f"threshold {report.threshold:.3g}",
        )
        axes.legend(loc="lower right")
    else:
        axes.text(0.5, 0.5, "needs real and fake images", ha="center", va="center")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(xlabel="false-positive rate (real called fake)", ylabel="true-positive rate (fakes caught)")
    axes.set(xlim=(0, 1), ylim=(0, 1.01), title="ROC curve")
    figure.savefig(path, dpi=100)


def _plot_precision_recall(report: EvaluationReport, labels, scores, path: Path) -> None:
    figure = _figure()
    axes = figure.add_subplot()
    precision, recall = compute_precision_recall_curve(labels, scores, positive=report.positive)
    metrics = report.overall
    if len(precision):
        axes.step(recall, precision, where="post", label=f"AP {metrics.average_precision:.4f}")
        axes.axhline(metrics.positives / metrics.count, ls=":", color="grey", label="share of fakes")
        axes.legend(loc="lower left")
    else:
        axes.text(0.5, 0.5, "needs real and fake images", ha="center", va="center")
    axes.set(xlabel="recall (fakes caught)", ylabel="precision (called fake that are)", xlim=(0, 1))
    axes.set(ylim=(0, 1.01), title="Precision-recall curve (positive: fake)")
    figure.savefig(path, dpi=100)


def _plot_reliability(report: EvaluationReport, path: Path) -> None:
    figure = _figure(5.0, 5.5)
    top, bottom = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    bins = [b for b in report.overall.reliability if b.count]
    top.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    top.plot([b.mean_score for b in bins], [b.positive_rate for b in bins], "o-", label="this model")
    top.set(
        ylabel="share that is fake", ylim=(0, 1), title=f"Reliability (ECE {_number(report.overall.ece)})"
    )
    top.legend(loc="upper left")
    all_bins = report.overall.reliability
    width = all_bins[0].upper - all_bins[0].lower if all_bins else 0.1
    bottom.bar([b.lower for b in all_bins], [b.count for b in all_bins], width=width, align="edge")
    bottom.set(xlabel="fake score", ylabel="images", xlim=(0, 1))
    figure.savefig(path, dpi=100)


def _plot_robustness(report: EvaluationReport, path: Path) -> None:
    baseline = next(row for row in report.robustness if row.kind == "none")
    kinds = list(dict.fromkeys(row.kind for row in report.robustness if row.kind != "none"))
    figure = _figure(4.0 * len(kinds), 4.0)
    for axes, kind in zip(np.atleast_1d(figure.subplots(1, len(kinds), sharey=True)), kinds, strict=True):
        rows = [row for row in report.robustness if row.kind == kind]
        positions = range(len(rows))
        axes.plot(positions, [row.roc_auc for row in rows], "o-", label="ROC-AUC")
        axes.plot(positions, [row.accuracy for row in rows], "s-", label="accuracy")
        axes.axhline(baseline.roc_auc, ls=":", color="C0", label="ROC-AUC, unperturbed")
        axes.axhline(baseline.accuracy, ls=":", color="C1", label="accuracy, unperturbed")
        axes.set_xticks(list(positions), [f"{row.level:g}" for row in rows])
        axes.set(
            xlabel={"jpeg": "JPEG quality", "blur": "blur radius (px)", "downscale": "scale factor"}[kind]
        )
        axes.set(ylim=(0, 1.02), title=kind)
    figure.axes[0].set_ylabel("metric")
    figure.axes[0].legend(loc="lower left", fontsize="small")
    figure.savefig(path, dpi=100)


def render_plots(report: EvaluationReport, out_dir: Path, *, labels, scores) -> dict[str, str]:
    """Draws the PNG plots into ``out_dir``.

    Returns:
        ``{plot name: file name}`` of the plots written.
    """
    written = {}
    _plot_confusion(report, out_dir / PLOT_FILES["confusion_matrix"])
    _plot_roc(report, labels, scores, out_dir / PLOT_FILES["roc"])
    _plot_precision_recall(report, labels, scores, out_dir / PLOT_FILES["precision_recall"])
    _plot_reliability(report, out_dir / PLOT_FILES["reliability"])
    written.update(
        {name: PLOT_FILES[name] for name in ("confusion_matrix", "roc", "precision_recall", "reliability")}
    )
    if report.robustness:
        _plot_robustness(report, out_dir / PLOT_FILES["robustness"])
        written["robustness"] = PLOT_FILES["robustness"]
    return written


def render_report(report: EvaluationReport, out_dir: str | Path, *, labels, scores) -> list[Path]:
    """Writes metrics.json, the plots and report.md into ``out_dir``.

    Args:
        report: The results.
        out_dir: An existing folder.
        labels: True class of each scored image (for the curves).
        scores: Their fake scores.

    Returns:
        The paths written.
    """
    out = Path(out_dir)
    plots = render_plots(report, out, labels=labels, scores=scores)
    return [
        render_metrics_json(report, out / "metrics.json"),
        render_markdown(report, out / "report.md", plots),
        *(out / file for file in plots.values()),
    ]
