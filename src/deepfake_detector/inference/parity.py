"""How closely two runs of a checkpoint agree: the bar every fast engine and precision must meet.

Pure NumPy, so it compares any engine's logits (PyTorch, ONNX Runtime) or the rows two programs wrote.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from deepfake_detector.scoring import compute_fake_scores, compute_probabilities

# The bar of issue 5: a faster engine may change a score a little but must keep the answer. At 99.5%
# top-1 agreement at most 1 image in 200 changes its label; a median fake-score shift of 0.01 is well
# below the spacing of any threshold a user would set.
MIN_TOP1_AGREEMENT = 0.995
MAX_MEDIAN_SCORE_DIFF = 0.01


@dataclass(frozen=True)
class ParityReport:
    """Agreement of candidate scores with reference scores on the same inputs.

    Attributes:
        count: Number of inputs compared.
        top1_agreement: Fraction of inputs whose top label is the same, in [0, 1].
        max_score_diff: Largest |fake-score difference|.
        median_score_diff: Median |fake-score difference|.
    """

    count: int
    top1_agreement: float
    max_score_diff: float
    median_score_diff: float

    @property
    def passed(self) -> bool:
        """Whether the candidate meets the bar (`MIN_TOP1_AGREEMENT`, `MAX_MEDIAN_SCORE_DIFF`)."""
        return self.top1_agreement >= MIN_TOP1_AGREEMENT and self.median_score_diff <= MAX_MEDIAN_SCORE_DIFF

    def describe(self) -> str:
        return (
            f"top-1 agreement {self.top1_agreement:.1%} over {self.count} inputs (bar >= "
            f"{MIN_TOP1_AGREEMENT:.1%}), |fake-score difference| median {self.median_score_diff:.2g} "
            f"(bar <= {MAX_MEDIAN_SCORE_DIFF}), max {self.max_score_diff:.2g}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def compute_score_parity(
    reference_scores: np.ndarray,
    scores: np.ndarray,
    reference_labels: np.ndarray,
    labels: np.ndarray,
) -> ParityReport:
    """Compares fake scores and top labels of two runs over the same inputs.

    Args:
        reference_scores: Fake scores of the reference run, shape (N,).
        scores: Fake scores of the candidate run, shape (N,).
        reference_labels: Top label (index or name) per input of the reference run, shape (N,).
        labels: Top label per input of the candidate run, shape (N,).

    Raises:
        ValueError: The runs have different lengths or are empty.
    """
    reference_scores, scores = np.asarray(reference_scores, float), np.asarray(scores, float)
    lengths = {len(reference_scores), len(scores), len(reference_labels), len(labels)}
    if len(lengths) != 1:
        raise ValueError(f"cannot compare runs of different lengths ({sorted(lengths)} inputs)")
    if len(scores) == 0:
        raise ValueError("cannot compare empty runs")
    diff = np.abs(reference_scores - scores)  # (N,)
    return ParityReport(
        count=len(scores),
        top1_agreement=float(np.mean(np.asarray(reference_labels) == np.asarray(labels))),
        max_score_diff=float(diff.max()),
        median_score_diff=float(np.median(diff)),
    )


def compute_logit_parity(
    reference_logits: np.ndarray, logits: np.ndarray, fake_ids: tuple[int, ...]
) -> ParityReport:
    """Compares two engines' logits for the same inputs, both shape (N, C)."""
    reference_scores = compute_fake_scores(compute_probabilities(reference_logits), fake_ids)  # (N,)
    scores = compute_fake_scores(compute_probabilities(logits), fake_ids)  # (N,)
    return compute_score_parity(
        reference_scores, scores, np.argmax(reference_logits, axis=-1), np.argmax(logits, axis=-1)
    )
