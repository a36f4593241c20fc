"""Detection metrics on labels and scores: pure NumPy and scikit-learn, no torch.

Every function names its positive class (``positive``, the label value the scores are about, e.g.
"fake") and, where a decision is needed, its ``threshold`` (a score at or above it is called positive),
so nothing depends on a label order or a hidden default. They run on any engine's scores (PyTorch,
ONNX) and on a ``predictions.csv`` read back from disk.

Metrics that the data can't define return nan instead of raising: ROC-AUC with one class only, the
false-positive rate without negatives, anything on zero images. `compute_binary_metrics` says why
in ``undefined``.

Scikit-learn prints the classification report and is the reference the tests check against. The
ROC and precision-recall counts are recomputed here in NumPy (a sort and a cumulative sum) because
the bootstrap evaluates them a thousand times per group, and scikit-learn's input validation costs
ten times the arithmetic. Also written here is what scikit-learn lacks: EER, TPR at a fixed FPR,
ECE with its bins, a stratified bootstrap, and the one-class rules.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from deepfake_detector.optional import require

# Bins of the reliability diagram and ECE. Ten equal-width bins is the usual choice (Guo et al. 2017
# use 15 for multi-class); with a test split of a few hundred images per class more bins get noisy.
DEFAULT_BINS = 10
DEFAULT_RESAMPLES = 1000
CONFIDENCE = 0.95
# The fixed operating points the issue asks for: detection rate when at most 1% / 5% of real images
# are flagged.
FPR_POINTS = (0.01, 0.05)

# What each metric needs to exist: "positive" (at least one positive), "negative", "both" or "any"
# (at least one image). Used for the reason given with a nan.
_NEEDS = {
    "accuracy": "any",
    "balanced_accuracy": "both",
    "precision": "any",
    "recall": "positive",
    "f1": "positive",
    "false_positive_rate": "negative",
    "false_negative_rate": "positive",
    "roc_auc": "both",
    "average_precision": "both",
    "eer": "both",
    "tpr_at_1pct_fpr": "both",
    "tpr_at_5pct_fpr": "both",
    "ece": "any",
    "brier": "any",
}
SCALAR_METRICS = tuple(_NEEDS)


def _check(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or scores.ndim != 1 or len(labels) != len(scores):
        raise ValueError(
            f"labels and scores must be 1-D and of equal length, got shapes {labels.shape} and {scores.shape}"
        )
    if not np.isfinite(scores).all():
        raise ValueError("scores contain nan or infinity; drop the images that failed to score first")
    return labels, scores


def _binary(labels, scores, positive) -> tuple[np.ndarray, np.ndarray]:
    """(is_positive, scores) as a bool and a float64 array."""
    labels, scores = _check(labels, scores)
    return labels == positive, scores


def _has(y: np.ndarray, need: str) -> bool:
    positives = int(y.sum())
    negatives = len(y) - positives
    return {
        "any": len(y) > 0,
        "positive": positives > 0,
        "negative": negatives > 0,
        "both": positives > 0 and negatives > 0,
    }[need]


def _rate(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _counts(y: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[int, int, int, int]:
    """(TN, FP, FN, TP) of the decision ``score >= threshold``."""
    called = scores >= threshold
    tp = int(np.sum(called & y))
    fp = int(np.sum(called & ~y))
    fn = int(np.sum(~called & y))
    return len(y) - tp - fp - fn, fp, fn, tp


# --- decisions at a threshold ---------------------------------------------------------------------


def compute_confusion_matrix(labels, scores, *, positive, threshold: float) -> np.ndarray:
    """Counts of true (rows) against predicted (columns) class, negative first: [[TN, FP], [FN, TP]].

    This is scikit-learn's layout with the negative class first; with positive="fake", row 0 is the
    real images and column 1 the images called fake.

    Returns:
        A (2, 2) int64 array.
    """
    y, scores = _binary(labels, scores, positive)
    tn, fp, fn, tp = _counts(y, scores, threshold)
    return np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def compute_accuracy(labels, scores, *, positive, threshold: float) -> float:
    """Share of images whose decision ``score >= threshold`` matches their label (nan when empty)."""
    y, scores = _binary(labels, scores, positive)
    tn, _, _, tp = _counts(y, scores, threshold)
    return _rate(tn + tp, len(y))


def compute_balanced_accuracy(labels, scores, *, positive, threshold: float) -> float:
    """Mean of the true-positive and true-negative rates; nan unless both classes are present."""
    y, scores = _binary(labels, scores, positive)
    tn, fp, fn, tp = _counts(y, scores, threshold)
    if not _has(y, "both"):
        return float("nan")
    return (_rate(tp, tp + fn) + _rate(tn, tn + fp)) / 2


def compute_false_positive_rate(labels, scores, *, positive, threshold: float) -> float:
    """Share of negatives called positive; with positive="fake", the real-image error rate.

    Returns:
        FP / (FP + TN), nan when there are no negatives.
    """
    y, scores = _binary(labels, scores, positive)
    tn, fp, _, _ = _counts(y, scores, threshold)
    return _rate(fp, fp + tn)


def compute_false_negative_rate(labels, scores, *, positive, threshold: float) -> float:
    """Share of positives called negative (missed fakes); nan when there are no positives."""
    y, scores = _binary(labels, scores, positive)
    _, _, fn, tp = _counts(y, scores, threshold)
    return _rate(fn, fn + tp)


def compute_classification_table(
    labels, scores, *, positive, threshold: float, target_names: Sequence[str] = ("real", "fake")
) -> dict:
    """scikit-learn's ``classification_report`` as a dict: precision, recall, F1, support per class.

    Args:
        labels: True class of each image.
        scores: Score of the positive class.
        positive: The label value that counts as positive.
        threshold: Scores at or above it are called positive.
        target_names: Display names of the negative and the positive class, in that order.

    Returns:
        ``{name: {"precision", "recall", "f1-score", "support"}, "accuracy", "macro avg",
        "weighted avg"}``; a ratio with a zero denominator (recall of an absent class) is nan. Empty
        when there are no images.
    """
    y, scores = _binary(labels, scores, positive)
    if not len(y):
        return {}
    metrics = require("sklearn.metrics", "eval")
    return metrics.classification_report(
        y.astype(int),
        (scores >= threshold).astype(int),
        labels=[0, 1],
        target_names=list(target_names),
        output_dict=True,
        zero_division=np.nan,
    )


def compute_classification_report(
    labels,
    scores,
    *,
    positive,
    threshold: float,
    target_names: Sequence[str] = ("real", "fake"),
    digits: int = 4,
) -> str:
    """The model card's classification report: same layout, negative row first, 4 digits.

    Args:
        labels: True class of each image.
        scores: Score of the positive class.
        positive: The label value that counts as positive.
        threshold: Scores at or above it are called positive.
        target_names: Row names of the negative and the positive class (the card: Realism, Deepfake).
        digits: Decimals shown.

    Returns:
        The text scikit-learn's ``classification_report`` prints, which is what the card pasted.
    """
    y, scores = _binary(labels, scores, positive)
    if not len(y):
        return "no scored images\n"
    metrics = require("sklearn.metrics", "eval")
    return metrics.classification_report(
        y.astype(int),
        (scores >= threshold).astype(int),
        labels=[0, 1],
        target_names=list(target_names),
        digits=digits,
        zero_division=np.nan,
    )


# --- threshold-free ranking metrics ---------------------------------------------------------------


def _ranked_counts(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false positives, true positives, threshold) at each distinct score, highest score first.

    The same counts as scikit-learn's ``_binary_clf_curve``, from which its ROC and precision-recall
    curves are made.
    """
    order = np.argsort(-scores, kind="mergesort")
    ranked, hits = scores[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(ranked)), len(ranked) - 1]  # last index of each tied run
    tps = np.cumsum(hits)[ends]
    return ends + 1 - tps, tps, ranked[ends]


def compute_roc_curve(labels, scores, *, positive) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every point of the ROC curve: (false-positive rates, true-positive rates, thresholds).

    Identical to ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``: the first point is
    (0, 0) at threshold inf, then one point per distinct score, highest first.

    Returns:
        Three empty arrays unless both classes are present.
    """
    y, scores = _binary(labels, scores, positive)
    if not _has(y, "both"):
        return np.array([]), np.array([]), np.array([])
    fps, tps, thresholds = _ranked_counts(y, scores)
    return np.r_[0, fps] / fps[-1], np.r_[0, tps] / tps[-1], np.r_[np.inf, thresholds]


def compute_precision_recall_curve(labels, scores, *, positive) -> tuple[np.ndarray, np.ndarray]:
    """(precision, recall) along the precision-recall curve; empty unless both classes are present."""
    y, scores = _binary(labels, scores, positive)
    if not _has(y, "both"):
        return np.array([]), np.array([])
    metrics = require("sklearn.metrics", "eval")
    precision, recall, _ = metrics.precision_recall_curve(y, scores)
    return precision, recall


def _auc_from_roc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    # Trapezoids under the full ROC curve: what sklearn's roc_auc_score computes.
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)) if len(fpr) else float("nan")


def _eer_from_roc(fpr: np.ndarray, tpr: np.ndarray) -> float:
    if not len(fpr):
        return float("nan")
    gap = (1.0 - tpr) - fpr  # FNR - FPR: +1 at the strictest threshold, -1 at the loosest
    crossing = int(np.argmax(gap <= 0))
    if gap[crossing] == 0 or crossing == 0:
        return float(fpr[crossing])
    # Linear interpolation between the last ROC point with FNR > FPR and the first with FNR <= FPR.
    before, after = gap[crossing - 1], gap[crossing]
    weight = before / (before - after)
    return float(fpr[crossing - 1] + weight * (fpr[crossing] - fpr[crossing - 1]))


def _tpr_at_fpr_from_roc(fpr: np.ndarray, tpr: np.ndarray, max_fpr: float) -> float:
    if not len(fpr):
        return float("nan")
    # An achievable operating point (a real threshold), not an interpolation between two of them.
    return float(tpr[fpr <= max_fpr + 1e-12].max())


def _average_precision(y: np.ndarray, scores: np.ndarray) -> float:
    if not _has(y, "both"):
        return float("nan")
    fps, tps, _ = _ranked_counts(y, scores)
    recall = tps / tps[-1]
    precision = tps / (tps + fps)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def compute_roc_auc(labels, scores, *, positive) -> float:
    """Area under the ROC curve (the chance a random positive outscores a random negative); nan
    unless both classes are present."""
    return _auc_from_roc(*compute_roc_curve(labels, scores, positive=positive)[:2])


def compute_average_precision(labels, scores, *, positive) -> float:
    """Average precision: scikit-learn's ``average_precision_score`` (step-wise area under the
    precision-recall curve).

    Returns:
        nan unless both classes are present: without negatives every ranking scores 1, and without
        positives the quantity does not exist.
    """
    return _average_precision(*_binary(labels, scores, positive))


def compute_eer(labels, scores, *, positive) -> float:
    """Equal error rate: where the false-positive and false-negative rates meet on the ROC curve.

    Between two ROC points the rates are interpolated linearly, the usual convention in face
    anti-spoofing and speaker verification. nan unless both classes are present.
    """
    return _eer_from_roc(*compute_roc_curve(labels, scores, positive=positive)[:2])


def compute_tpr_at_fpr(labels, scores, *, positive, max_fpr: float) -> float:
    """Highest true-positive rate of any threshold whose false-positive rate is at most ``max_fpr``.

    With positive="fake" and max_fpr=0.01: the share of fakes caught while flagging at most 1% of
    real images. nan unless both classes are present.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    return _tpr_at_fpr_from_roc(*compute_roc_curve(labels, scores, positive=positive)[:2], max_fpr)


# --- calibration ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram.

    Attributes:
        lower: Lowest score in the bin's range (inclusive).
        upper: Highest score of the range (exclusive, except 1.0 in the last bin).
        count: Images whose score falls in the range.
        mean_score: Their mean score (nan when empty).
        positive_rate: The share of them that are positive (nan when empty).
    """

    lower: float
    upper: float
    count: int
    mean_score: float
    positive_rate: float

    def to_dict(self) -> dict:
        return asdict(self)


def _check_probabilities(scores: np.ndarray) -> None:
    if len(scores) and (scores.min() < 0 or scores.max() > 1):
        raise ValueError("calibration metrics need probabilities in [0, 1]; got scores outside that range")


def _bin_sums(y: np.ndarray, scores: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width bin: (count, sum of scores, number of positives)."""
    _check_probabilities(scores)
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    index = np.minimum((scores * n_bins).astype(int), n_bins - 1)  # a score of 1.0 joins the last bin
    return (
        np.bincount(index, minlength=n_bins),
        np.bincount(index, weights=scores, minlength=n_bins),
        np.bincount(index, weights=y.astype(np.float64), minlength=n_bins),
    )


def compute_reliability_bins(labels, scores, *, positive, n_bins: int = DEFAULT_BINS) -> list[ReliabilityBin]:
    """Equal-width bins of the positive-class score with the observed positive rate in each.

    A calibrated detector has ``positive_rate == mean_score`` in every bin.
    """
    y, scores = _binary(labels, scores, positive)
    counts, score_sums, positive_sums = _bin_sums(y, scores, n_bins)
    return [
        ReliabilityBin(
            lower=b / n_bins,
            upper=(b + 1) / n_bins,
            count=int(counts[b]),
            mean_score=float(score_sums[b] / counts[b]) if counts[b] else float("nan"),
            positive_rate=float(positive_sums[b] / counts[b]) if counts[b] else float("nan"),
        )
        for b in range(n_bins)
    ]


def _ece(y: np.ndarray, scores: np.ndarray, n_bins: int) -> float:
    _, score_sums, positive_sums = _bin_sums(y, scores, n_bins)
    # sum_b (n_b / N) * |sum_scores_b / n_b - positives_b / n_b| = sum_b |sum_scores_b - positives_b| / N
    return float(np.abs(score_sums - positive_sums).sum() / len(y)) if len(y) else float("nan")


def compute_ece(labels, scores, *, positive, n_bins: int = DEFAULT_BINS) -> float:
    """Expected calibration error of the positive-class score over equal-width bins.

    ``sum_b (n_b / N) * |mean score_b - positive rate_b|``, on the same bins as the reliability
    diagram. It is defined on one class too (all-real data: how far the scores are from 0).
    nan when empty.
    """
    return _ece(*_binary(labels, scores, positive), n_bins)


def compute_brier(labels, scores, *, positive) -> float:
    """Mean squared difference between the positive-class score and the 0/1 label; nan when empty."""
    y, scores = _binary(labels, scores, positive)
    _check_probabilities(scores)
    return float(np.mean((scores - y) ** 2)) if len(y) else float("nan")


# --- everything at once, with intervals and per-source breakdowns ---------------------------------


def _scalar_metrics(y: np.ndarray, scores: np.ndarray, threshold: float, n_bins: int) -> dict[str, float]:
    """Every scalar metric, from one ROC curve. ``y`` is the bool positive mask."""
    tn, fp, fn, tp = _counts(y, scores, threshold)
    fpr, tpr, _ = compute_roc_curve(y, scores, positive=True)
    precision = _rate(tp, tp + fp)
    recall = _rate(tp, tp + fn)
    values = {
        "accuracy": _rate(tn + tp, len(y)),
        "balanced_accuracy": (recall + _rate(tn, tn + fp)) / 2 if _has(y, "both") else float("nan"),
        "precision": precision,
        "recall": recall,
        "f1": _rate(2 * tp, 2 * tp + fp + fn) if tp + fn else float("nan"),
        "false_positive_rate": _rate(fp, fp + tn),
        "false_negative_rate": _rate(fn, fn + tp),
        "roc_auc": _auc_from_roc(fpr, tpr),
        "average_precision": _average_precision(y, scores),
        "eer": _eer_from_roc(fpr, tpr),
        "tpr_at_1pct_fpr": _tpr_at_fpr_from_roc(fpr, tpr, FPR_POINTS[0]),
        "tpr_at_5pct_fpr": _tpr_at_fpr_from_roc(fpr, tpr, FPR_POINTS[1]),
        "ece": _ece(y, scores, n_bins),
        "brier": compute_brier(y, scores, positive=True),
    }
    return values


def compute_bootstrap_intervals(
    labels,
    scores,
    statistic: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    *,
    positive,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
    aligned: np.ndarray | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals, resampling positives and negatives separately.

    Stratified on purpose: a plain resample of a small split can draw no negatives at all, which
    leaves ROC-AUC undefined; the class counts are fixed by the test split anyway. scipy's
    ``bootstrap`` can't stratify, so the loop is here.

    Args:
        labels: True class of each image.
        scores: Score of the positive class.
        statistic: ``f(is_positive, scores) -> {name: value}`` on one resample.
        positive: The label value that counts as positive.
        n_resamples: Number of resamples.
        confidence: Coverage of the interval (0.95: the 2.5th to 97.5th percentile).
        seed: Seeds the resampling, so a report is reproducible.
        aligned: One value per image resampled with it (e.g. each image's own threshold); when
            given, ``statistic`` is called as ``f(is_positive, scores, aligned)``.

    Returns:
        ``{name: (low, high)}``. Resamples on which a metric is undefined (precision when nothing is
        called positive) are left out of its interval; (nan, nan) when it is undefined on all.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be at least 1, got {n_resamples}")
    y, scores = _binary(labels, scores, positive)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y), np.flatnonzero(~y)]
    draws: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        chosen = np.concatenate([rng.choice(s, size=len(s), replace=True) for s in strata if len(s)])
        extra = () if aligned is None else (aligned[chosen],)
        for name, value in statistic(y[chosen], scores[chosen], *extra).items():
            draws.setdefault(name, []).append(value)
    tail = (1.0 - confidence) / 2 * 100
    intervals = {}
    for name, values in draws.items():
        values = np.asarray(values, dtype=np.float64)
        values = values[~np.isnan(values)]
        if len(values):
            low, high = np.percentile(values, [tail, 100 - tail])
            intervals[name] = (float(low), float(high))
        else:
            intervals[name] = (float("nan"), float("nan"))
    return intervals


@dataclass(frozen=True)
class BinaryMetrics:
    """Every metric of one set of scored images at one threshold.

    Attributes:
        count: Images scored.
        positives: How many of them are positive (fake).
        negatives: How many are negative (real).
        threshold: The decision rule: a score at or above it is called positive; nan when each image
            was decided at its own (domain's) threshold.
        accuracy: Share of correct decisions.
        balanced_accuracy: Mean of the true-positive and true-negative rates.
        precision: Of the images called positive, the share that are.
        recall: Of the positives, the share called positive (TPR).
        f1: Harmonic mean of precision and recall.
        false_positive_rate: Of the negatives, the share called positive: the real-image error rate.
        false_negative_rate: Of the positives, the share missed.
        roc_auc: Area under the ROC curve.
        average_precision: Area under the precision-recall curve.
        eer: Equal error rate.
        tpr_at_1pct_fpr: Best TPR with at most 1% of negatives called positive.
        tpr_at_5pct_fpr: Best TPR with at most 5% of negatives called positive.
        ece: Expected calibration error of the scores.
        brier: Brier score of the scores.
        confusion_matrix: [[TN, FP], [FN, TP]], negative (real) first.
        reliability: The bins of the reliability diagram.
        intervals: Bootstrap 95% interval of each scalar metric (empty when not computed).
        undefined: Why each nan metric is nan.
    """

    count: int
    positives: int
    negatives: int
    threshold: float
    accuracy: float
    balanced_accuracy: float
    precision: float
    recall: float
    f1: float
    false_positive_rate: float
    false_negative_rate: float
    roc_auc: float
    average_precision: float
    eer: float
    tpr_at_1pct_fpr: float
    tpr_at_5pct_fpr: float
    ece: float
    brier: float
    confusion_matrix: tuple[tuple[int, int], tuple[int, int]]
    reliability: tuple[ReliabilityBin, ...] = ()
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    undefined: dict[str, str] = field(default_factory=dict)

    def scalars(self) -> dict[str, float]:
        """The scalar metrics by name, in a fixed order."""
        return {name: getattr(self, name) for name in SCALAR_METRICS}

    def to_dict(self) -> dict:
        return {
            "count": self.count,
            "positives": self.positives,
            "negatives": self.negatives,
            "threshold": self.threshold,
            **self.scalars(),
            "confusion_matrix": [list(row) for row in self.confusion_matrix],
            "reliability": [b.to_dict() for b in self.reliability],
            "intervals": {name: list(bounds) for name, bounds in self.intervals.items()},
            "undefined": dict(self.undefined),
        }


def _undefined_reasons(y: np.ndarray, values: Mapping[str, float], positive) -> dict[str, str]:
    positives = int(y.sum())
    missing = {
        "any": "no scored images",
        "positive": f"no positive ({positive!r}) images",
        "negative": f"no negative (non-{positive!r}) images",
    }
    reasons = {}
    for name, value in values.items():
        if not np.isnan(value):
            continue
        need = _NEEDS[name]
        if not len(y):
            reasons[name] = missing["any"]
        elif need == "both":
            absent = "positive" if not positives else "negative"
            reasons[name] = f"{missing[absent]}; needs both classes"
        elif not _has(y, need):
            reasons[name] = missing[need]
        else:
            # e.g. precision when nothing was called positive at this threshold
            reasons[name] = "zero denominator at this threshold (no images called positive)"
    return reasons


def compute_binary_metrics(
    labels,
    scores,
    *,
    positive,
    threshold: float | np.ndarray,
    n_bins: int = DEFAULT_BINS,
    n_resamples: int = 0,
    seed: int = 0,
) -> BinaryMetrics:
    """Every metric of the report on one set of scores.

    Args:
        labels: True class of each image.
        scores: Score (probability) of the positive class, in [0, 1].
        positive: The label value that counts as positive, e.g. "fake".
        threshold: Scores at or above it are called positive: one number, or one per image (a model
            with domains decides each image at its domain's threshold). Choose it on other data (a
            validation split), never on these labels.
        n_bins: Bins of the reliability diagram and ECE.
        n_resamples: Bootstrap resamples for 95% intervals; 0 skips them.
        seed: Seeds the bootstrap.

    Returns:
        The metrics; metrics the data can't define are nan, with the reason in ``undefined``.
    """
    y, scores = _binary(labels, scores, positive)
    per_image = np.ndim(threshold) > 0
    values = _scalar_metrics(y, scores, threshold, n_bins)
    tn, fp, fn, tp = _counts(y, scores, threshold)
    intervals = {}
    if n_resamples and len(y):
        intervals = compute_bootstrap_intervals(
            y,
            scores,
            lambda yy, ss, tt=threshold: _scalar_metrics(yy, ss, tt, n_bins),
            positive=True,
            n_resamples=n_resamples,
            seed=seed,
            aligned=np.asarray(threshold, dtype=np.float64) if per_image else None,
        )
    return BinaryMetrics(
        count=len(y),
        positives=int(y.sum()),
        negatives=int((~y).sum()),
        threshold=_one_threshold(threshold),
        **values,
        confusion_matrix=((tn, fp), (fn, tp)),
        reliability=tuple(compute_reliability_bins(y, scores, positive=True, n_bins=n_bins)),
        intervals=intervals,
        undefined=_undefined_reasons(y, values, positive),
    )


def _one_threshold(threshold: float | np.ndarray) -> float:
    """The threshold a `BinaryMetrics` records: the number, or nan when images had their own."""
    values = np.unique(np.asarray(threshold, dtype=np.float64))
    return float(values[0]) if len(values) == 1 else float("nan")


def compute_metrics_by_group(
    labels,
    scores,
    groups,
    *,
    positive,
    threshold: float | np.ndarray,
    n_bins: int = DEFAULT_BINS,
    n_resamples: int = 0,
    seed: int = 0,
) -> dict[str, BinaryMetrics]:
    """`compute_binary_metrics` for each distinct value of ``groups`` (e.g. the data's ``source``).

    Images whose group is None or "" are left out of the breakdown (they still count overall).

    Returns:
        ``{group: metrics}`` in sorted group order; empty when no image has a group.
    """
    labels, scores = _check(labels, scores)
    groups = np.asarray([None if g in (None, "") else str(g) for g in groups], dtype=object)
    if len(groups) != len(labels):
        raise ValueError(f"groups has {len(groups)} entries for {len(labels)} labels")
    names = sorted({g for g in groups if g is not None})
    return {
        name: compute_binary_metrics(
            labels[groups == name],
            scores[groups == name],
            positive=positive,
            threshold=threshold[groups == name] if np.ndim(threshold) else threshold,
            n_bins=n_bins,
            n_resamples=n_resamples,
            seed=seed,
        )
        for name in names
    }
