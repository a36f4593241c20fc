"""How closely two runs of a checkpoint agree: the bar every fast engine and precision must meet.

Pure NumPy, so it compares any engine's logits (PyTorch, ONNX Runtime) or the rows two programs wrote.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from deepfake_detector.scoring import Calibration, ModelOutputs, compute_scores

# The bar of issue 5: a faster engine may change a score a little but must keep the answer. At 99.5%
# agreement at most 1 image in 200 changes its answer; a median fake-score shift of 0.01 is well
# below the spacing of any threshold a user would set.
MIN_AGREEMENT = 0.995
MAX_MEDIAN_SCORE_DIFF = 0.01


@dataclass(frozen=True)
class ParityReport:
    """Agreement of candidate scores with reference scores on the same inputs.

    Attributes:
        count: Number of inputs compared.
        agreement: Fraction of inputs whose answer (``compared``) is the same, in [0, 1].
        max_score_diff: Largest |fake-score difference|.
        median_score_diff: Median |fake-score difference|.
        compared: Which answer: "top-1" (the top label) or "verdict" (at the checkpoint's thresholds).
    """

    count: int
    agreement: float
    max_score_diff: float
    median_score_diff: float
    compared: str = "top-1"

    @property
    def passed(self) -> bool:
        """Whether the candidate meets the bar (`MIN_AGREEMENT`, `MAX_MEDIAN_SCORE_DIFF`)."""
        return self.agreement >= MIN_AGREEMENT and self.median_score_diff <= MAX_MEDIAN_SCORE_DIFF

    def describe(self) -> str:
        return (
            f"{self.compared} agreement {self.agreement:.1%} over {self.count} inputs (bar >= "
            f"{MIN_AGREEMENT:.1%}), |fake-score difference| median {self.median_score_diff:.2g} "
            f"(bar <= {MAX_MEDIAN_SCORE_DIFF}), max {self.max_score_diff:.2g}"
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


def compute_score_parity(
    reference_scores: np.ndarray,
    scores: np.ndarray,
    reference_labels: np.ndarray,
    labels: np.ndarray,
    compared: str = "top-1",
) -> ParityReport:
    """Compares fake scores and answers (top labels, or verdicts) of two runs over the same inputs.

    Args:
        reference_scores: Fake scores of the reference run, shape (N,).
        scores: Fake scores of the candidate run, shape (N,).
        reference_labels: Answer per input of the reference run (top label index or name, or
            verdict), shape (N,).
        labels: Answer per input of the candidate run, shape (N,).
        compared: What the labels are, for the report: "top-1" or "verdict".

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
        agreement=float(np.mean(np.asarray(reference_labels) == np.asarray(labels))),
        max_score_diff=float(diff.max()),
        median_score_diff=float(np.median(diff)),
        compared=compared,
    )


def compute_verdict_parity(
    reference: ModelOutputs,
    candidate: ModelOutputs,
    *,
    fake_ids: tuple[int, ...],
    calibration: Calibration,
    domains: tuple[str, ...] | None = None,
) -> ParityReport:
    """Compares two engines' outputs for the same inputs as a user sees them: fake scores and verdicts
    by the checkpoint's own rule (`compute_scores`: temperature, each domain's thresholds)."""
    expected = compute_scores(reference, fake_ids=fake_ids, calibration=calibration, domains=domains)
    scored = compute_scores(candidate, fake_ids=fake_ids, calibration=calibration, domains=domains)
    return compute_score_parity(
        [score.fake_score for score in expected],
        [score.fake_score for score in scored],
        [score.verdict for score in expected],
        [score.verdict for score in scored],
        compared="verdict",
    )
