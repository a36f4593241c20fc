"""Turn logits into fake scores and verdicts. Pure NumPy, so it works on any engine's outputs."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

VERDICTS = ("real", "uncertain", "fake")

# Calibration lives in the checkpoint's config.json under this key, so it travels with the weights:
# {"temperature": 1.0, "thresholds": {"real": 0.5, "fake": 0.5}}. `calibrate` writes it.
CONFIG_KEY = "deepfake_detector"


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


@dataclass(frozen=True)
class Calibration:
    """How logits become a calibrated fake score and a verdict for one checkpoint.

    Attributes:
        temperature: Logits are divided by this before the softmax (temperature scaling). 1.0 keeps
            the model's own probabilities, and so exact parity with the transformers pipeline.
        thresholds: The decision rule on the fake score.
    """

    temperature: float = 1.0
    thresholds: Thresholds = Thresholds()

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")

    @classmethod
    def from_config(cls, config) -> Calibration:
        """Reads ``config.deepfake_detector`` of a transformers config (missing: the identity)."""
        stored = getattr(config, CONFIG_KEY, None) or {}
        return cls(
            temperature=float(stored.get("temperature", 1.0)),
            thresholds=Thresholds.from_config(stored.get("thresholds")),
        )

    def to_dict(self) -> dict:
        return {"temperature": self.temperature, "thresholds": self.thresholds.to_dict()}


def compute_probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Softmax over the last axis of ``logits / temperature``, in float64. (B, C) -> (B, C)."""
    shifted = np.asarray(logits, dtype=np.float64) / temperature
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


@dataclass(frozen=True)
class Score:
    """What one row of logits means: the checkpoint's top label, the fake score and the verdict."""

    label: str
    fake_score: float
    verdict: str


def compute_scores(
    logits: np.ndarray, *, id2label: Mapping[int, str], fake_ids: tuple[int, ...], calibration: Calibration
) -> list[Score]:
    """The one rule that turns logits into label, fake score and verdict, for every engine and mode.

    Args:
        logits: Raw model outputs, shape (B, C).
        id2label: The checkpoint's class names.
        fake_ids: Class indices of the fake role (`LabelRoles.fake_ids`).
        calibration: Temperature and thresholds.

    Returns:
        One `Score` per row.
    """
    probabilities = compute_probabilities(logits, calibration.temperature)  # (B, C)
    fake_scores = compute_fake_scores(probabilities, fake_ids)  # (B,)
    return [
        Score(
            label=id2label[int(np.argmax(probs))],
            fake_score=float(fake_score),
            verdict=compute_verdict(float(fake_score), calibration.thresholds),
        )
        for probs, fake_score in zip(probabilities, fake_scores, strict=True)
    ]
