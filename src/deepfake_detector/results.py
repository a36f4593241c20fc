"""Result records. Every output format (table, JSON, CSV, HTTP) is made from these, in one place."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields


@dataclass(frozen=True)
class Prediction:
    """The verdict on one input image.

    Attributes:
        source: The input's path as given, or its index in the call when it was not a file.
        label: The checkpoint's own top label (argmax), e.g. "Deepfake".
        fake_score: Probability of the fake role (the sum over every fake class), in [0, 1].
        verdict: "real", "fake" or "uncertain", from the detector's thresholds.
        model: The checkpoint id or folder that produced the score.
        revision: The checkpoint revision (hub commit) when known.
        error: Why this input could not be scored; when set, label, fake_score and verdict are None.
    """

    source: str | int
    label: str | None
    fake_score: float | None
    verdict: str | None
    model: str
    revision: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]
