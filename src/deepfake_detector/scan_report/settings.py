"""What produced a set of results: model, revision, thresholds, engine, as far as it can be known.

Rows carry their ``model`` and ``revision``, not the thresholds or the engine. ``predict --report``
knows them (it holds the detector); a report built later from a results file reads the thresholds the
checkpoint stores in its ``config.json`` (without loading weights, and never over the network) and
keeps them only when every verdict in the rows agrees with them: a run with ``--threshold`` gave
other verdicts. What can't be known is shown as unknown, never guessed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from deepfake_detector.scoring import CONFIG_KEY, Thresholds, compute_verdict


@dataclass(frozen=True)
class RunSettings:
    """How the rows were scored, where known; None means unknown.

    Attributes:
        thresholds: The decision rule that gave the verdicts.
        thresholds_source: Where ``thresholds`` come from, in words; or, when they are unknown, why.
        engine: "torch" or "onnx".
        precision: "fp32", "bf16" or "int8".
        jpeg_draft: Whether large JPEGs were decoded at reduced scale.
    """

    thresholds: Thresholds | None = None
    thresholds_source: str | None = None
    engine: str | None = None
    precision: str | None = None
    jpeg_draft: bool | None = None

    @classmethod
    def from_detector(cls, detector) -> RunSettings:
        """The settings of the `Detector` that is scoring the rows (what ``predict --report`` knows)."""
        scoring = detector.describe_scoring()
        return cls(
            thresholds=detector.thresholds,
            thresholds_source="the detector that scored these rows",
            engine=scoring.get("engine"),
            precision=scoring.get("precision"),
            jpeg_draft=scoring.get("jpeg_draft"),
        )

    def to_dict(self) -> dict:
        return {
            "thresholds": None if self.thresholds is None else self.thresholds.to_dict(),
            "thresholds_source": self.thresholds_source,
            "engine": self.engine,
            "precision": self.precision,
            "jpeg_draft": self.jpeg_draft,
        }


def resolve_run_settings(rows: list[dict], given: RunSettings | None = None) -> RunSettings:
    """``given`` when the caller knows how the rows were scored; else the thresholds the checkpoint
    stores (engine and precision stay unknown). Thresholds are kept only when every verdict that the
    model decided agrees with them: rows resumed from a run with other thresholds, or a run with
    ``--threshold``, make them unknown, with the reason and what the verdicts say instead.

    Args:
        rows: Result rows (`load_result_rows`).
        given: The settings of the run that wrote the rows, when known.
    """
    if given is not None:
        if given.thresholds is None:
            return given
        disagreeing = _count_disagreeing(rows, given.thresholds)
        if not disagreeing:
            return given
        return replace(
            given,
            thresholds=None,
            thresholds_source=f"{disagreeing} verdicts disagree with {_describe(given.thresholds)} "
            f"({given.thresholds_source}): some rows were scored with other thresholds; {_bounds(rows)}",
        )
    models = {(row.get("model"), row.get("revision")) for row in rows}
    if len(models) != 1:
        listed = ", ".join(sorted(str(model) for model, _ in models))
        why = f"the rows come from {len(models)} models ({listed})"
        return RunSettings(thresholds_source=f"{why}; {_bounds(rows)}")
    ((model, revision),) = models
    stored = load_stored_thresholds(model, revision)
    if stored is None:
        why = f"{model}'s config.json can't be found from here"
        return RunSettings(thresholds_source=f"{why}; {_bounds(rows)}")
    disagreeing = _count_disagreeing(rows, stored)
    if disagreeing:
        return RunSettings(
            thresholds_source=f"{disagreeing} verdicts disagree with the thresholds {model} stores "
            f"({_describe(stored)}), so the run set its own (--threshold); {_bounds(rows)}"
        )
    return RunSettings(thresholds=stored, thresholds_source=f"{model}'s config.json; every verdict agrees")


def load_stored_thresholds(model: str | None, revision: str | None = None) -> Thresholds | None:
    """The thresholds a checkpoint's ``config.json`` stores (0.5 when it stores none), read without
    loading weights or touching the network; None when the config is not on this machine."""
    config = _find_config(model, revision)
    if config is None:
        return None
    try:
        stored = json.loads(config.read_text(encoding="utf-8")).get(CONFIG_KEY) or {}
        return Thresholds.from_config(stored.get("thresholds"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _find_config(model: str | None, revision: str | None) -> Path | None:
    from deepfake_detector.errors import CheckpointError
    from deepfake_detector.modeling.checkpoints import BUNDLED_MODELS, MODEL_ALIASES, bundled_model_folder

    if not model:
        return None
    folder = Path(model).expanduser()
    if folder.is_dir():
        config = folder / "config.json"
        return config if config.is_file() else None
    if model in BUNDLED_MODELS:
        try:
            return bundled_model_folder(model) / "config.json"
        except CheckpointError:
            return None
    try:  # a hub id: its cached copy, if any (the rows' revision is the snapshot's commit)
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(MODEL_ALIASES.get(model, model), "config.json", revision=revision)
    except Exception:  # not a valid repo id, or no cache: nothing to read
        return None
    return Path(cached) if isinstance(cached, str) else None


def _count_disagreeing(rows: list[dict], thresholds: Thresholds) -> int:
    return sum(
        1
        for row in _model_decided(rows)
        if row.get("verdict") is not None and compute_verdict(row["fake_score"], thresholds) != row["verdict"]
    )


def _model_decided(rows: list[dict]) -> list[dict]:
    """Scored rows whose verdict the model's score decided (not provenance evidence)."""
    return [
        row
        for row in rows
        if row.get("error") is None
        and isinstance(row.get("fake_score"), (int, float))
        and row.get("decided_by", "model") in (None, "model")
    ]


def _bounds(rows: list[dict]) -> str:
    """What the verdicts say about the fake threshold: it lies above every non-fake score and at or
    below every fake score."""
    scored = [row for row in _model_decided(rows) if row.get("verdict")]
    fake = [row["fake_score"] for row in scored if row["verdict"] == "fake"]
    other = [row["fake_score"] for row in scored if row["verdict"] != "fake"]
    if fake and other:
        return f"the verdicts put the fake threshold above {max(other):.4g} and at most {min(fake):.4g}"
    if fake:
        return f"every scored row is fake, so the fake threshold is at most {min(fake):.4g}"
    if other:
        return f"no row is fake, so the fake threshold is above {max(other):.4g}"
    return "no scored row bounds it"


def _describe(thresholds: Thresholds) -> str:
    if thresholds.real == thresholds.fake:
        return f"fake at or above {thresholds.fake:g}"
    return f"real below {thresholds.real:g}, fake at or above {thresholds.fake:g}"
