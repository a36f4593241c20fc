"""Turn logits into fake scores and verdicts. Pure NumPy, so it works on any engine's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

VERDICTS = ("real", "uncertain", "fake")


@dataclass(frozen=True)
class Thresholds:
    """The decision rule on the fake score.

    A score at or above ``fake`` is "fake", below ``real`` is "real", and in between is "uncertain".
    With both at 0.5 (the default) every image gets a definite verdict.

    Attributes:
        real: Scores below this are called real.
        fake: Scores at or above this are called fake.
    """

    real: float = 0.5
    fake: float = 0.5

    def __post_init__(self) -> None:
        for name in ("real", "fake"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"threshold {name}={value} is outside [0, 1]")
        if self.real > self.fake:
            raise ValueError(
                f"the real threshold ({self.real}) must not exceed the fake threshold ({self.fake}); "
                "scores between them are 'uncertain'"
            )

    @classmethod
    def single(cls, threshold: float) -> Thresholds:
        """One cut-off, no uncertain band."""
        return cls(real=threshold, fake=threshold)

    @classmethod
    def from_config(cls, stored: Mapping | None) -> Thresholds:
        """Reads thresholds stored in a checkpoint's config (``config.deepfake_detector["thresholds"]``)."""
        if not stored:
            return cls()
        return cls(real=float(stored["real"]), fake=float(stored["fake"]))

    def to_dict(self) -> dict[str, float]:
        return {"real": self.real, "fake": self.fake}


def compute_probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, computed in float64 for stability. (B, C) -> (B, C)."""
    shifted = np.asarray(logits, dtype=np.float64)
    shifted = shifted - shifted.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def compute_fake_scores(probabilities: np.ndarray, fake_ids: tuple[int, ...]) -> np.ndarray:
    """Probability of the fake role: the sum over every fake class. (B, C) -> (B,)."""
    return probabilities[:, list(fake_ids)].sum(axis=-1)


def compute_verdict(fake_score: float, thresholds: Thresholds) -> str:
    """ "fake", "real" or "uncertain" for one score."""
    if fake_score >= thresholds.fake:
        return "fake"
    if fake_score < thresholds.real:
        return "real"
    return "uncertain"
