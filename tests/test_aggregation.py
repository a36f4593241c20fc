"""Face and frame aggregation strategies against values worked out by hand."""

from __future__ import annotations

import pytest

from deepfake_detector.aggregation import (
    FaceAggregation,
    FrameAggregation,
    compute_confident_mean,
    compute_face_score,
    compute_mean,
    compute_median,
    compute_top_k_mean,
)


def test_mean_and_median():
    assert compute_mean([0.1, 0.2, 0.9]) == pytest.approx(0.4)
    assert compute_median([0.1, 0.9, 0.2, 0.3]) == pytest.approx(0.25)  # (0.2 + 0.3) / 2
    assert compute_median([0.1, 0.9, 0.2]) == pytest.approx(0.2)


def test_top_k_mean_takes_the_k_highest():
    assert compute_top_k_mean([0.1, 0.9, 0.2, 0.7], k=2) == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    assert compute_top_k_mean([0.1, 0.9, 0.2, 0.7], k=1) == pytest.approx(0.9)
    assert compute_top_k_mean([0.1, 0.9], k=5) == pytest.approx(0.5)  # fewer than k: all of them


def test_confident_rule_mean_of_confident_fakes():
    # 13 of 32 above 0.8: 13 > 32 // 2.5 = 12 and 13 > 11, so the mean of those 13.
    scores = [0.9] * 13 + [0.5] * 19
    assert compute_confident_mean(scores) == pytest.approx(0.9)


def test_confident_rule_needs_more_than_the_share_of_fakes():
    # 12 of 32: not more than 12, and not 90% confident reals either: the plain mean.
    scores = [0.9] * 12 + [0.5] * 20
    assert compute_confident_mean(scores) == pytest.approx((12 * 0.9 + 20 * 0.5) / 32)


def test_confident_rule_needs_more_than_min_fake_count():
    # 11 of 20 above 0.8: 11 > 20 // 2.5 = 8, but not more than 11: the plain mean.
    scores = [0.95] * 11 + [0.3] * 9
    assert compute_confident_mean(scores) == pytest.approx((11 * 0.95 + 9 * 0.3) / 20)
    assert compute_confident_mean(scores, min_fake_count=10) == pytest.approx(0.95)


def test_confident_rule_mean_of_confident_reals():
    # 30 of 32 below 0.2 (> 0.9 * 32 = 28.8): the mean of those 30.
    assert compute_confident_mean([0.1] * 30 + [0.6] * 2) == pytest.approx(0.1)
    # 28 of 32 (< 28.8): the plain mean.
    assert compute_confident_mean([0.1] * 28 + [0.6] * 4) == pytest.approx((28 * 0.1 + 4 * 0.6) / 32)


def test_face_strategies():
    scores, areas = [0.2, 0.7, 0.4], [900, 100, 2500]
    assert compute_face_score(scores, areas, "max") == pytest.approx(0.7)
    assert compute_face_score(scores, areas, "mean") == pytest.approx(1.3 / 3)
    assert compute_face_score(scores, areas, "largest") == pytest.approx(0.4)
    assert FaceAggregation().compute(scores, areas) == pytest.approx(0.7)  # the default: most-fake face


def test_frame_aggregation_dispatch_and_report():
    scores = [0.1, 0.9, 0.2, 0.7]
    assert FrameAggregation().compute(scores) == pytest.approx(0.475)
    assert FrameAggregation("median").compute(scores) == pytest.approx(0.45)
    assert FrameAggregation("top_k_mean", k=2).compute(scores) == pytest.approx(0.8)
    assert FrameAggregation("confident").compute(scores) == pytest.approx(0.475)
    assert FrameAggregation("top_k_mean", k=3).to_dict() == {"strategy": "top_k_mean", "k": 3}
    assert FrameAggregation("mean").to_dict() == {"strategy": "mean"}
    assert set(FrameAggregation("confident").to_dict()) == {
        "strategy",
        "fake_threshold",
        "real_threshold",
        "min_fake_count",
    }


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: compute_mean([]), "no scores"),
        (lambda: compute_mean([0.5, 1.2]), r"in \[0, 1\]"),
        (lambda: compute_mean([float("nan")]), "finite"),
        (lambda: compute_top_k_mean([0.5], k=0), "k must be at least 1"),
        (lambda: compute_face_score([0.5, 0.6], [10], "largest"), "2 scores but 1 areas"),
        (lambda: FaceAggregation("min"), "unknown face strategy 'min'; choose one of max, mean, largest"),
        (lambda: FrameAggregation("vote"), "unknown frame strategy 'vote'"),
        (lambda: FrameAggregation("confident", real_threshold=0.9, fake_threshold=0.8), "real_threshold"),
    ],
)
def test_bad_arguments_are_refused_with_the_reason(call, message):
    with pytest.raises(ValueError, match=message):
        call()
