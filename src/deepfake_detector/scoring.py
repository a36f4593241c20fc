"""Turn logits into fake scores and verdicts. Pure NumPy, so it works on any engine's outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

VERDICTS = ("real", "uncertain", "fake")
# The domain of a face the face head can judge; a model with domains lists it first (`config.domains`).
FACE_DOMAIN = "face"

# Whose thresholds decided a row (`DecisionRule.origin`, the rows' ``threshold_from``): the model's
# image thresholds (its domain's own, where it has them), the model's video thresholds (a video clip
# of a domain that has them), or the caller's (``--threshold``/``--uncertain-band``, ``thresholds=``).
THRESHOLD_ORIGINS = ("image", "video", "caller")


@dataclass(frozen=True, eq=False)  # eq=False: NumPy arrays have no single truth value to compare by
class ModelOutputs:
    """What the model step gives for a batch.

    Attributes:
        logits: (B, C) class logits: with domains, each row's from the head of its domain.
        domain_logits: (B, domains) logits of the domain probe; None for a model without domains.
    """

    logits: np.ndarray
    domain_logits: np.ndarray | None = None

    def rows(self, start: int, stop: int) -> ModelOutputs:
        """Rows ``start:stop`` of the batch."""
        domains = None if self.domain_logits is None else self.domain_logits[start:stop]
        return ModelOutputs(self.logits[start:stop], domains)

    def replace_rows(self, rows: np.ndarray, other: ModelOutputs) -> ModelOutputs:
        """These outputs with the rows selected by the boolean mask ``rows`` (B,) taken from ``other``,
        which holds only those rows, in order."""
        logits = self.logits.copy()
        logits[rows] = other.logits
        if self.domain_logits is None:
            return ModelOutputs(logits)
        domain_logits = self.domain_logits.copy()
        domain_logits[rows] = other.domain_logits
        return ModelOutputs(logits, domain_logits)

    @classmethod
    def concatenate(cls, parts: list[ModelOutputs]) -> ModelOutputs:
        logits = np.concatenate([part.logits for part in parts])
        if any(part.domain_logits is None for part in parts):
            return cls(logits)
        return cls(logits, np.concatenate([part.domain_logits for part in parts]))


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

    def to_dict(self) -> dict[str, float]:
        return {"real": self.real, "fake": self.fake}


@dataclass(frozen=True)
class DecisionRule:
    """The thresholds that decide one row, and whose they are: what every row reports beside its
    verdict (`row_fields`), so that nobody has to re-derive it.

    Attributes:
        thresholds: The rule on the fake score.
        origin: One of `THRESHOLD_ORIGINS`: "image", "video" or "caller".
    """

    thresholds: Thresholds
    origin: str = "image"

    def __post_init__(self) -> None:
        if self.origin not in THRESHOLD_ORIGINS:
            raise ValueError(f"origin must be one of {', '.join(THRESHOLD_ORIGINS)}, got {self.origin!r}")

    def decide(self, fake_score: float) -> str:
        """ "fake", "real" or "uncertain" for one score (`compute_verdict`)."""
        return compute_verdict(fake_score, self.thresholds)

    def row_fields(self) -> dict:
        """The columns every result row carries: ``threshold`` (scores at or above it are fake),
        ``uncertain_from`` (scores from it up to ``threshold`` are uncertain; None without an uncertain
        band, where everything below ``threshold`` is real) and ``threshold_from`` (``origin``)."""
        real, fake = self.thresholds.real, self.thresholds.fake
        band = real if real < fake else None
        return {"threshold": fake, "uncertain_from": band, "threshold_from": self.origin}


@dataclass(frozen=True)
class Calibration:
    """How logits become a calibrated fake score and a verdict for one checkpoint. The checkpoint
    stores it (`deepfake_detector.stored_settings.StoredSettings`, which reads and writes it).

    Attributes:
        temperature: Logits are divided by this before the softmax (temperature scaling). 1.0 keeps
            the model's own probabilities, and so exact parity with the transformers pipeline.
        thresholds: The decision rule on the fake score (for a model with domains: of any domain
            without thresholds of its own).
        domain_thresholds: Each domain's own rule, fitted on that domain's validation images. A
            caller's thresholds replace them all (`with_thresholds`).
        video_thresholds: The rule of a video clip's aggregated score, for every clip (a model
            without domains) or for clips of a domain without a video rule of its own; None: clips are
            decided by the image rule of their domain. Frame scores are image scores, but a clip's
            mean over many frames is distributed differently, so it needs a rule of its own.
        video_domain_thresholds: Each domain's own video rule (a model with domains), fitted on clips
            of that domain.
        caller: True when the thresholds are the caller's (`with_thresholds`): then they decide every
            row, images and videos alike.
    """

    temperature: float = 1.0
    thresholds: Thresholds = Thresholds()
    domain_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)
    video_thresholds: Thresholds | None = None
    video_domain_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)
    caller: bool = False

    def thresholds_for(self, domain: str | None) -> Thresholds:
        """The image rule for a score of ``domain`` (None: the model can't tell domains)."""
        return self.domain_thresholds.get(domain, self.thresholds) if domain else self.thresholds

    def rule_for(self, domain: str | None, *, video: bool = False) -> DecisionRule:
        """The rule that decides a row of ``domain``, and whose it is: the one place that chooses.

        The caller's thresholds decide everything; a video clip is decided by the video rule of its
        domain (else the model's pooled video rule) when the model stores one; everything else by the
        image rule of its domain (`thresholds_for`).

        Args:
            domain: The row's domain (None: the model can't tell domains).
            video: The row is a video clip's aggregated score.
        """
        if self.caller:
            return DecisionRule(self.thresholds, "caller")
        if video:
            stored = self.video_domain_thresholds.get(domain) if domain else None
            stored = stored or self.video_thresholds
            if stored is not None:
                return DecisionRule(stored, "video")
        return DecisionRule(self.thresholds_for(domain), "image")

    def with_thresholds(self, thresholds: Thresholds) -> Calibration:
        """The caller's thresholds for every domain and for videos, the stored temperature kept."""
        return Calibration(temperature=self.temperature, thresholds=thresholds, caller=True)

    def __post_init__(self) -> None:
        if not (self.temperature > 0 and np.isfinite(self.temperature)):
            raise ValueError(f"temperature must be a positive number, got {self.temperature}")


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
    """What one row of logits means: the fake score, the verdict, the domain whose head gave the
    score (None for a model without domains) and the rule that decided."""

    fake_score: float
    verdict: str
    domain: str | None = None
    rule: DecisionRule = DecisionRule(Thresholds())


def compute_domains(domain_logits: np.ndarray | None, domains: Sequence[str] | None, rows: int) -> list:
    """Each row's domain name: the domain probe's argmax (as the model routes), None without domains."""
    if domain_logits is None or not domains:
        return [None] * rows
    return [domains[int(index)] for index in np.argmax(domain_logits, axis=-1)]


def compute_scores(
    outputs: ModelOutputs,
    *,
    fake_ids: tuple[int, ...],
    calibration: Calibration,
    domains: Sequence[str] | None = None,
) -> list[Score]:
    """The one rule that turns model outputs into fake score, verdict and domain, for every engine
    and mode.

    The verdict is the only answer: the checkpoint's top class (its argmax, i.e. the verdict at 0.5)
    is not computed, so no row can carry a class name that disagrees with its verdict.

    Args:
        outputs: The model step's outputs for B rows.
        fake_ids: Class indices of the fake role (`LabelRoles.fake_ids`).
        calibration: Temperature and thresholds (each domain's own, where it has them).
        domains: The checkpoint's domain names (``config.domains``), in the probe's order.

    Returns:
        One `Score` per row.
    """
    probabilities = compute_probabilities(outputs.logits, calibration.temperature)  # (B, C)
    fake_scores = compute_fake_scores(probabilities, fake_ids)  # (B,)
    names = compute_domains(outputs.domain_logits, domains, len(fake_scores))
    scores = []
    for fake_score, domain in zip(fake_scores, names, strict=True):
        rule = calibration.rule_for(domain)
        scores.append(Score(float(fake_score), rule.decide(float(fake_score)), domain, rule))
    return scores


def find_near_decisions(
    outputs: ModelOutputs,
    *,
    fake_ids: tuple[int, ...],
    calibration: Calibration,
    domains: Sequence[str] | None,
    margin_logits: float,
) -> np.ndarray:
    """Which rows an approximate engine (int8) may have decided differently from the exact one: those
    whose fake score lies within ``margin_logits`` of a threshold of their rule, measured in logits
    (log-odds, where an engine's error is about the same size at every score), and those whose
    domain probe's top two logits lie within ``margin_logits`` of each other (the row could have gone
    to the other head). (B,) bool.
    """
    scores = compute_scores(outputs, fake_ids=fake_ids, calibration=calibration, domains=domains)
    near = np.zeros(len(scores), dtype=bool)
    for row, score in enumerate(scores):
        thresholds = score.rule.thresholds
        near[row] = any(
            abs(_log_odds(score.fake_score) - _log_odds(threshold)) < margin_logits
            for threshold in {thresholds.real, thresholds.fake}
        )
    if outputs.domain_logits is not None and outputs.domain_logits.shape[1] > 1:
        top_two = np.sort(outputs.domain_logits, axis=1)[:, -2:]  # (B, 2)
        near |= top_two[:, 1] - top_two[:, 0] < margin_logits
    return near


def _log_odds(probability: float) -> float:
    probability = min(max(probability, 1e-12), 1 - 1e-12)
    return float(np.log(probability / (1 - probability)))
