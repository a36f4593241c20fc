"""What produced a set of results: model, revision, thresholds, engine, as far as it can be known.

Rows carry their ``model``, ``revision``, ``domain`` and (from this release) the threshold that decided
each (``threshold``, ``uncertain_from``, ``threshold_from``), which each card shows; not the engine. The
run's rules, for the summary and for rows written before rows carried their threshold: ``predict
--report`` knows them (it holds the detector); a report built later from a results file reads the
thresholds the checkpoint stores in its config (each domain's own, for a model with domains), without
loading weights and never over the network, and keeps them only when every verdict in the rows agrees
with its domain's rule: a run with ``--threshold`` gave other verdicts. What can't be known is shown as
unknown, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from deepfake_detector.scoring import Calibration, Thresholds, compute_verdict


@dataclass(frozen=True)
class RunSettings:
    """How the rows were scored, where known; None means unknown.

    Attributes:
        thresholds: The decision rule that gave the verdicts (for a model with domains: of rows without
            a domain, and of any domain without a rule of its own).
        thresholds_source: Where ``thresholds`` come from, in words; or, when they are unknown, why.
        engine: "torch" or "onnx".
        precision: "fp32", "bf16" or "int8".
        jpeg_draft: Whether large JPEGs were decoded at reduced scale.
        domain_thresholds: Each domain's own rule, as the checkpoint's `Calibration` holds them; empty
            when one rule decided every row (a model without domains, or a run with ``--threshold``).
    """

    thresholds: Thresholds | None = None
    thresholds_source: str | None = None
    engine: str | None = None
    precision: str | None = None
    jpeg_draft: bool | None = None
    domain_thresholds: Mapping[str, Thresholds] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.domain_thresholds and self.thresholds is None:
            raise ValueError(
                "domain_thresholds need the thresholds of rows without a domain too; "
                "unknown thresholds are thresholds=None and no domain_thresholds"
            )

    @classmethod
    def from_calibration(cls, calibration: Calibration, source: str, **scoring) -> RunSettings:
        """The rules of a checkpoint's (or a detector's) `Calibration`, every domain's included.

        Args:
            calibration: The scoring rule.
            source: Where it comes from, in words.
            **scoring: ``engine``, ``precision`` and ``jpeg_draft``, where known.
        """
        return cls(
            thresholds=calibration.thresholds,
            thresholds_source=source,
            domain_thresholds=dict(calibration.domain_thresholds),
            **scoring,
        )

    @classmethod
    def from_detector(cls, detector) -> RunSettings:
        """The settings of the `Detector` that is scoring the rows (what ``predict --report`` knows)."""
        scoring = detector.describe_scoring()
        return cls.from_calibration(
            detector.calibration,
            "the detector that scored these rows",
            engine=scoring.get("engine"),
            precision=scoring.get("precision"),
            jpeg_draft=scoring.get("jpeg_draft"),
        )

    def thresholds_for(self, domain: str | None) -> Thresholds | None:
        """The rule that gave a row of ``domain`` its verdict, as scoring chose it
        (`Calibration.thresholds_for`); None when the thresholds are unknown."""
        if self.thresholds is None:
            return None
        rules = Calibration(thresholds=self.thresholds, domain_thresholds=self.domain_thresholds)
        return rules.thresholds_for(domain)

    def to_dict(self) -> dict:
        return {
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
            "domain_thresholds": {name: rule.to_dict() for name, rule in self.domain_thresholds.items()}
            or None,
            "thresholds_source": self.thresholds_source,
            "engine": self.engine,
            "precision": self.precision,
            "jpeg_draft": self.jpeg_draft,
        }


def resolve_run_settings(rows: list[dict], given: RunSettings | None = None) -> RunSettings:
    """``given`` when the caller knows how the rows were scored; else the thresholds the checkpoint
    stores (engine and precision stay unknown). Thresholds are kept only when every verdict that the
    model decided agrees with the rule of its row's domain: rows resumed from a run with other
    thresholds, or a run with ``--threshold``, make them unknown, with the reason and what the verdicts
    say instead.

    Args:
        rows: Result rows (`load_result_rows`).
        given: The settings of the run that wrote the rows, when known.
    """
    if given is not None:
        if given.thresholds is None:
            return given
        disagreeing = _count_disagreeing(rows, given)
        if not disagreeing:
            return given
        return replace(
            given,
            thresholds=None,
            domain_thresholds={},
            thresholds_source=f"{disagreeing} verdicts disagree with {_describe_rules(given)} "
            f"({given.thresholds_source}): some rows were scored with other thresholds; {_bounds(rows)}",
        )
    models = {(row.get("model"), row.get("revision")) for row in rows}
    if len(models) != 1:
        listed = ", ".join(sorted(str(model) for model, _ in models))
        why = f"the rows come from {len(models)} models ({listed})"
        return RunSettings(thresholds_source=f"{why}; {_bounds(rows)}")
    ((model, revision),) = models
    stored = load_stored_calibration(model, revision)
    if stored is None:
        why = f"{model}'s config.json can't be found from here"
        return RunSettings(thresholds_source=f"{why}; {_bounds(rows)}")
    settings = RunSettings.from_calibration(stored, f"{model}'s config.json; every verdict agrees")
    disagreeing = _count_disagreeing(rows, settings)
    if disagreeing:
        return RunSettings(
            thresholds_source=f"{disagreeing} verdicts disagree with the thresholds {model} stores "
            f"({_describe_rules(settings)}), so the run set its own (--threshold); {_bounds(rows)}"
        )
    return settings


def load_stored_calibration(model: str | None, revision: str | None = None) -> Calibration | None:
    """The scoring rule a checkpoint stores (every domain's thresholds; 0.5 when it stores none), read
    by the reader `Detector.from_pretrained` uses (`load_settings`) but without loading weights or
    touching the network; None when the config is not on this machine or can't be read."""
    from deepfake_detector.errors import CheckpointError
    from deepfake_detector.modeling.checkpoints import find_local_config
    from deepfake_detector.stored_settings import load_settings

    config = find_local_config(model, revision)
    if config is None:
        return None
    try:
        return load_settings(config.parent).calibration
    except CheckpointError:
        return None


def _count_disagreeing(rows: list[dict], settings: RunSettings) -> int:
    """Rows whose verdict is not what the rule of their own domain gives their score."""
    return sum(
        1
        for row in _model_decided(rows)
        if row.get("verdict") is not None
        and compute_verdict(row["fake_score"], settings.thresholds_for(_domain(row))) != row["verdict"]
    )


def _model_decided(rows: list[dict]) -> list[dict]:
    """Scored rows whose verdict the model's score decided (not provenance evidence) by an image rule:
    a video clip decided by the model's video threshold says so (``threshold_from``) and is left out,
    as the run's settings are its image rules."""
    return [
        row
        for row in rows
        if row.get("error") is None
        and isinstance(row.get("fake_score"), (int, float))
        and row.get("decided_by", "model") in (None, "model")
        and row.get("threshold_from") != "video"
    ]


def _domain(row: dict) -> str | None:
    """The domain whose head scored a row; None for rows without one (a model without domains, or a
    run before rows carried them)."""
    domain = row.get("domain")
    return domain if isinstance(domain, str) else None


def _bounds(rows: list[dict]) -> str:
    """What the verdicts say about the fake threshold: it lies above every non-fake score and at or
    below every fake score; for rows of several domains, each domain's on its own."""
    scored = [row for row in _model_decided(rows) if row.get("verdict")]
    by_domain: dict[str | None, list[dict]] = {}
    for row in scored:
        by_domain.setdefault(_domain(row), []).append(row)
    if set(by_domain) <= {None}:
        return _bounds_of(scored)
    return "; ".join(
        f"{domain or 'rows without a domain'}: {_bounds_of(domain_rows)}"
        for domain, domain_rows in sorted(
            by_domain.items(), key=lambda item: (item[0] is None, item[0] or "")
        )
    )


def _bounds_of(scored: list[dict]) -> str:
    fake = [row["fake_score"] for row in scored if row["verdict"] == "fake"]
    other = [row["fake_score"] for row in scored if row["verdict"] != "fake"]
    if fake and other:
        return f"the verdicts put the fake threshold above {max(other):.4g} and at most {min(fake):.4g}"
    if fake:
        return f"every scored row is fake, so the fake threshold is at most {min(fake):.4g}"
    if other:
        return f"no row is fake, so the fake threshold is above {max(other):.4g}"
    return "no scored row bounds it"


def _describe_rules(settings: RunSettings) -> str:
    """Each domain's rule, then the one of every other row; a single rule alone."""
    if not settings.domain_thresholds:
        return _describe(settings.thresholds)
    rules = [f"{domain}: {_describe(rule)}" for domain, rule in settings.domain_thresholds.items()]
    return "; ".join([*rules, f"others: {_describe(settings.thresholds)}"])


def _describe(thresholds: Thresholds) -> str:
    if thresholds.real == thresholds.fake:
        return f"fake at or above {thresholds.fake:g}"
    return f"real below {thresholds.real:g}, fake at or above {thresholds.fake:g}"
