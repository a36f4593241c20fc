"""Each metric against hand-worked values and scikit-learn, including separable and one-class data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn import metrics as sk

from deepfake_detector.evaluation.metrics import (
    SCALAR_METRICS,
    compute_accuracy,
    compute_average_precision,
    compute_balanced_accuracy,
    compute_binary_metrics,
    compute_bootstrap_intervals,
    compute_brier,
    compute_classification_report,
    compute_classification_table,
    compute_confusion_matrix,
    compute_ece,
    compute_eer,
    compute_false_negative_rate,
    compute_false_positive_rate,
    compute_metrics_by_group,
    compute_reliability_bins,
    compute_roc_auc,
    compute_roc_curve,
    compute_tpr_at_fpr,
)

# Worked by hand: two real (0.1, 0.6) and two fake (0.4, 0.9) images.
LABELS = ["real", "real", "fake", "fake"]
SCORES = [0.1, 0.6, 0.4, 0.9]
FAKE = {"positive": "fake"}


def _random(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    is_fake = rng.random(n) < 0.4
    scores = np.clip(rng.normal(0.35 + 0.3 * is_fake, 0.2), 0, 1).round(2)  # rounding makes ties
    return np.where(is_fake, "fake", "real"), scores


def test_hand_worked_example():
    # At threshold 0.5: 0.6 (real) is a false positive, 0.4 (fake) a false negative.
    assert compute_confusion_matrix(LABELS, SCORES, threshold=0.5, **FAKE).tolist() == [[1, 1], [1, 1]]
    assert compute_accuracy(LABELS, SCORES, threshold=0.5, **FAKE) == 0.5
    assert compute_balanced_accuracy(LABELS, SCORES, threshold=0.5, **FAKE) == 0.5
    assert compute_false_positive_rate(LABELS, SCORES, threshold=0.5, **FAKE) == 0.5
    assert compute_false_negative_rate(LABELS, SCORES, threshold=0.5, **FAKE) == 0.5
    # 3 of the 4 (fake, real) pairs are ordered correctly: 0.4 < 0.6 is the one that is not.
    assert compute_roc_auc(LABELS, SCORES, **FAKE) == 0.75
    # Ranked: 0.9 fake (precision 1, recall 1/2), 0.6 real, 0.4 fake (precision 2/3, recall 1).
    assert compute_average_precision(LABELS, SCORES, **FAKE) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # Any threshold in (0.4, 0.6] misses one fake of two and flags one real of two.
    assert compute_eer(LABELS, SCORES, **FAKE) == 0.5
    # With no real image flagged, only the 0.9 fake is caught.
    assert compute_tpr_at_fpr(LABELS, SCORES, max_fpr=0.01, **FAKE) == 0.5
    # (0.1-0)^2 + (0.6-0)^2 + (0.4-1)^2 + (0.9-1)^2 = 0.01 + 0.36 + 0.36 + 0.01
    assert compute_brier(LABELS, SCORES, **FAKE) == pytest.approx(0.74 / 4)


def test_eer_interpolates_between_roc_points():
    # Ranked: 0.9 F, 0.8 F, 0.4 R, 0.3 F, 0.1 R. FNR - FPR goes from +1/3 (FPR 0, FNR 1/3) to -1/6
    # (FPR 1/2, FNR 1/3); the straight line between them crosses zero at FPR = FNR = 1/3.
    labels = ["real", "real", "fake", "fake", "fake"]
    scores = [0.1, 0.4, 0.3, 0.8, 0.9]
    assert compute_eer(labels, scores, **FAKE) == pytest.approx(1 / 3)


def test_tpr_at_fpr_is_an_achievable_operating_point():
    labels = ["real"] * 4 + ["fake"] * 3
    scores = [0.1, 0.2, 0.3, 0.9, 0.5, 0.8, 0.95]
    # One real (0.9) may be flagged at 25% FPR: a threshold of 0.5 then catches every fake.
    assert compute_tpr_at_fpr(labels, scores, max_fpr=0.25, **FAKE) == 1.0
    # None may be flagged at 1%: only 0.95 is above the 0.9 real.
    assert compute_tpr_at_fpr(labels, scores, max_fpr=0.01, **FAKE) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="max_fpr"):
        compute_tpr_at_fpr(labels, scores, max_fpr=1.5, **FAKE)


def test_ranking_and_threshold_metrics_match_scikit_learn():
    labels, scores = _random()
    y = labels == "fake"
    predicted = scores >= 0.5
    assert compute_roc_auc(labels, scores, **FAKE) == pytest.approx(sk.roc_auc_score(y, scores), abs=1e-12)
    assert compute_average_precision(labels, scores, **FAKE) == pytest.approx(
        sk.average_precision_score(y, scores), abs=1e-12
    )
    for ours, theirs in zip(
        compute_roc_curve(labels, scores, **FAKE),
        sk.roc_curve(y, scores, drop_intermediate=False),
        strict=True,
    ):
        np.testing.assert_allclose(ours, theirs)
    assert compute_confusion_matrix(labels, scores, threshold=0.5, **FAKE).tolist() == (
        sk.confusion_matrix(y, predicted, labels=[False, True]).tolist()
    )
    assert compute_balanced_accuracy(labels, scores, threshold=0.5, **FAKE) == pytest.approx(
        sk.balanced_accuracy_score(y, predicted)
    )
    assert compute_brier(labels, scores, **FAKE) == pytest.approx(sk.brier_score_loss(y, scores))
    metrics = compute_binary_metrics(labels, scores, threshold=0.5, **FAKE)
    assert metrics.precision == pytest.approx(sk.precision_score(y, predicted))
    assert metrics.recall == pytest.approx(sk.recall_score(y, predicted))
    assert metrics.f1 == pytest.approx(sk.f1_score(y, predicted))
    assert metrics.roc_auc == pytest.approx(sk.roc_auc_score(y, scores))
    assert metrics.undefined == {}


def test_positive_class_is_explicit():
    labels, scores = _random(seed=1)
    as_fake = compute_binary_metrics(labels, scores, positive="fake", threshold=0.5)
    # The same images seen from the other side: real is positive and its score is 1 - fake score.
    as_real = compute_binary_metrics(labels, 1 - scores, positive="real", threshold=0.5 + 1e-9)
    assert as_real.roc_auc == pytest.approx(as_fake.roc_auc)
    assert as_real.balanced_accuracy == pytest.approx(as_fake.balanced_accuracy)
    assert as_real.false_positive_rate == pytest.approx(as_fake.false_negative_rate)
    # Integer labels work the same with positive=1.
    assert compute_roc_auc((labels == "fake").astype(int), scores, positive=1) == pytest.approx(
        as_fake.roc_auc
    )


def test_classification_report_has_the_cards_layout():
    labels, scores = _random(seed=2)
    y, predicted = labels == "fake", scores >= 0.5
    text = compute_classification_report(
        labels, scores, threshold=0.5, target_names=("Realism", "Deepfake"), **FAKE
    )
    expected = sk.classification_report(y, predicted, target_names=["Realism", "Deepfake"], digits=4)
    assert text == expected
    lines = text.splitlines()
    assert lines[2].split()[0] == "Realism" and lines[3].split()[0] == "Deepfake"
    assert [line.split()[0] for line in lines[5:8]] == ["accuracy", "macro", "weighted"]
    assert all(len(token.split(".")[-1]) == 4 for token in lines[2].split()[1:4])
    table = compute_classification_table(
        labels, scores, threshold=0.5, target_names=("Realism", "Deepfake"), **FAKE
    )
    assert table["Deepfake"]["recall"] == pytest.approx(sk.recall_score(y, predicted))
    assert table["Realism"]["support"] == int((~y).sum())


def test_ece_and_reliability_bins_hand_worked():
    labels = ["real", "fake", "fake", "fake"]
    scores = [0.2, 0.2, 0.8, 0.8]
    # Bin [0.2, 0.3): mean 0.2, half fake -> |0.2 - 0.5| * 2/4; bin [0.8, 0.9): |0.8 - 1| * 2/4.
    assert compute_ece(labels, scores, **FAKE) == pytest.approx(0.15 + 0.10)
    bins = compute_reliability_bins(labels, scores, **FAKE)
    assert [b.count for b in bins] == [0, 0, 2, 0, 0, 0, 0, 0, 2, 0]
    assert bins[2].positive_rate == 0.5 and bins[8].mean_score == pytest.approx(0.8)
    assert math.isnan(bins[0].mean_score)
    # A score of exactly 1.0 belongs to the last bin, not an eleventh one.
    assert compute_reliability_bins(["fake"], [1.0], **FAKE)[-1].count == 1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        compute_ece(labels, [0.2, 0.2, 0.8, 1.5], **FAKE)


def test_perfectly_separable():
    labels = ["real"] * 5 + ["fake"] * 5
    scores = [0.0, 0.1, 0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0]
    metrics = compute_binary_metrics(labels, scores, threshold=0.5, n_resamples=50, **FAKE)
    assert metrics.roc_auc == 1.0 and metrics.average_precision == 1.0
    assert metrics.eer == 0.0
    assert metrics.tpr_at_1pct_fpr == 1.0 and metrics.tpr_at_5pct_fpr == 1.0
    assert metrics.accuracy == 1.0 and metrics.balanced_accuracy == 1.0
    assert metrics.false_positive_rate == 0.0 and metrics.false_negative_rate == 0.0
    assert metrics.confusion_matrix == ((5, 0), (0, 5))
    assert metrics.intervals["roc_auc"] == (1.0, 1.0)  # every resample is separable too
    assert metrics.undefined == {}


@pytest.mark.parametrize("present", ["real", "fake"])
def test_one_class_gives_nan_with_a_reason_never_a_crash(present):
    labels = [present] * 6
    scores = [0.1, 0.2, 0.6, 0.7, 0.3, 0.9]
    metrics = compute_binary_metrics(labels, scores, threshold=0.5, n_resamples=20, **FAKE)
    for name in ("roc_auc", "average_precision", "eer", "tpr_at_1pct_fpr", "balanced_accuracy"):
        assert math.isnan(getattr(metrics, name))
        assert "needs both classes" in metrics.undefined[name]
    assert metrics.accuracy == pytest.approx(0.5)  # three of six on each side of 0.5
    assert not math.isnan(metrics.ece) and not math.isnan(metrics.brier)
    if present == "real":
        assert metrics.false_positive_rate == 0.5
        assert math.isnan(metrics.false_negative_rate)
        assert metrics.undefined["recall"] == "no positive ('fake') images"
    else:
        assert metrics.recall == 0.5
        assert math.isnan(metrics.false_positive_rate)
    assert set(metrics.to_dict()) >= set(SCALAR_METRICS)
    report = compute_classification_report(labels, scores, threshold=0.5, **FAKE)
    assert "accuracy" in report
    assert math.isnan(compute_roc_auc(labels, scores, **FAKE))
    assert compute_roc_curve(labels, scores, **FAKE)[0].size == 0


def test_no_images_at_all():
    metrics = compute_binary_metrics([], [], threshold=0.5, n_resamples=10, **FAKE)
    assert metrics.count == 0
    assert all(math.isnan(value) for value in metrics.scalars().values())
    assert set(metrics.undefined.values()) == {"no scored images"}
    assert compute_classification_report([], [], threshold=0.5, **FAKE) == "no scored images\n"
    assert compute_classification_table([], [], threshold=0.5, **FAKE) == {}


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="equal length"):
        compute_roc_auc(["real", "fake"], [0.1], **FAKE)
    with pytest.raises(ValueError, match="nan"):
        compute_roc_auc(["real", "fake"], [0.1, float("nan")], **FAKE)


def test_bootstrap_is_reproducible_and_brackets_the_estimate():
    labels, scores = _random(seed=3)
    first = compute_binary_metrics(labels, scores, threshold=0.5, n_resamples=200, seed=7, **FAKE)
    second = compute_binary_metrics(labels, scores, threshold=0.5, n_resamples=200, seed=7, **FAKE)
    assert first.intervals == second.intervals
    for name in ("roc_auc", "accuracy", "eer", "average_precision"):
        low, high = first.intervals[name]
        assert low <= getattr(first, name) <= high
        assert high - low < 0.25
    # Resampling within each class keeps both present, so even 2 + 2 images give an AUC interval.
    intervals = compute_bootstrap_intervals(
        LABELS,
        SCORES,
        lambda y, s: {"auc": compute_roc_auc(y, s, positive=True)},
        positive="fake",
        n_resamples=50,
    )
    assert 0.0 <= intervals["auc"][0] <= intervals["auc"][1] <= 1.0


def test_metrics_by_group_match_each_subset():
    labels, scores = _random(seed=4)
    groups = np.array(["a", "b", None] * 100, dtype=object)
    by_group = compute_metrics_by_group(labels, scores, groups, threshold=0.5, **FAKE)
    assert list(by_group) == ["a", "b"]  # no group -> left out of the breakdown
    subset = groups == "a"
    assert by_group["a"].count == int(subset.sum())
    assert by_group["a"].roc_auc == pytest.approx(compute_roc_auc(labels[subset], scores[subset], **FAKE))
    assert compute_metrics_by_group(labels, scores, [None] * len(labels), threshold=0.5, **FAKE) == {}
