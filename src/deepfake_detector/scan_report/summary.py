"""The figures on top of a scan report, computed once from the rows: counts per verdict, errors, the
histogram of fake scores, the models that scored them, what the models saw (their domains), and what
the provenance checks found."""

from __future__ import annotations

import json
import math
from collections import Counter

from deepfake_detector.scoring import VERDICTS

HISTOGRAM_BINS = 20


def compute_summary(rows: list[dict]) -> dict:
    """Counts of a set of result rows, as the report's summary shows them.

    Returns:
        ``counts`` (total, each verdict, error, image, video), ``histogram`` (``HISTOGRAM_BINS`` equal
        bins of the fake score over [0, 1], counted per verdict), ``models`` (each model and revision
        with its row count), ``faces`` (rows scored in face mode, and those without a face),
        ``domains`` (scored rows per domain, most first, and ``none``: scored rows without one, from a
        checkpoint that can't tell domains or a run before rows carried them), ``video_settings``
        (each video sampling and aggregation with its row count) and ``provenance`` (see
        `compute_provenance_counts`).
    """
    counts = Counter({name: 0 for name in (*VERDICTS, "error", "image", "video")})
    histogram = {verdict: [0] * HISTOGRAM_BINS for verdict in VERDICTS}
    models: Counter = Counter()
    aggregations: Counter = Counter()
    domains: Counter = Counter()
    face_mode = no_face = no_domain = 0
    for row in rows:
        models[(row.get("model"), row.get("revision"))] += 1
        face_mode += row.get("no_face") is not None  # set exactly when faces were searched for
        no_face += row.get("no_face") is True
        if isinstance(row.get("aggregation"), dict):
            aggregations[json.dumps(row["aggregation"], sort_keys=True)] += 1
        counts["video" if is_video_row(row) else "image"] += 1
        if row.get("error") is not None or row.get("verdict") not in VERDICTS:
            counts["error"] += 1
            continue
        counts[row["verdict"]] += 1
        if isinstance(row.get("domain"), str):
            domains[row["domain"]] += 1
        else:
            no_domain += 1
        score = row.get("fake_score")
        if isinstance(score, (int, float)) and math.isfinite(score):
            histogram[row["verdict"]][histogram_bin(score)] += 1
    return {
        "counts": {"total": len(rows), **counts},
        "histogram": {"bins": HISTOGRAM_BINS, "counts": histogram},
        "models": [
            {"model": model, "revision": revision, "rows": number}
            for (model, revision), number in models.most_common()
        ],
        "faces": {"face_mode": face_mode, "no_face": no_face},
        "domains": {"counts": dict(domains.most_common()), "none": no_domain},
        "video_settings": [
            {"aggregation": json.loads(text), "rows": number} for text, number in aggregations.most_common()
        ],
        "provenance": compute_provenance_counts(rows),
    }


def histogram_bin(score: float) -> int:
    """The bin of a fake score: [0, 0.05) is bin 0, ..., [0.95, 1] the last (1.0 falls in it)."""
    return min(max(int(score * HISTOGRAM_BINS), 0), HISTOGRAM_BINS - 1)


def compute_provenance_counts(rows: list[dict]) -> dict:
    """What the provenance stage found across the rows.

    Returns:
        ``checked`` (rows that carry a provenance record; rows of runs without the stage carry
        none), ``flat`` (rows from CSV or Parquet, whose columns only say what was found, not
        whether the stage ran), ``checks`` (rows on which each check ran, where rows say),
        ``ai_declared`` (true, false and unknown among the records), ``decided_by_provenance``,
        ``with_evidence`` (rows with at least one finding), ``by_check`` (rows with a finding of each
        check), ``findings`` ([check, name, rows] of each finding, most frequent first) and
        ``c2pa_states`` (rows per C2PA manifest state).
    """
    declared = Counter({"true": 0, "false": 0, "unknown": 0})
    by_check: Counter = Counter()
    findings: Counter = Counter()
    states: Counter = Counter()
    checks: Counter = Counter()
    checked = with_evidence = decided = flat = 0
    for row in rows:
        decided += row.get("decided_by") == "provenance"
        flat += bool(row.get("provenance_flat"))
        record = row.get("provenance")
        if not isinstance(record, dict):
            continue
        checked += 1
        for check in record.get("checks") or ():
            checks[str(check)] += 1
        value = record.get("ai_declared")
        declared["unknown" if value is None else str(bool(value)).lower()] += 1
        evidence = [item for item in record.get("evidence") or () if isinstance(item, dict)]
        with_evidence += bool(evidence)
        for check in {str(item.get("check")) for item in evidence}:
            by_check[check] += 1
        for key in {(str(item.get("check")), str(item.get("name"))) for item in evidence}:
            findings[key] += 1
        c2pa = record.get("c2pa")
        if isinstance(c2pa, dict) and c2pa.get("state"):
            states[str(c2pa["state"])] += 1
    return {
        "checked": checked,
        "flat": flat,
        "checks": dict(checks.most_common()),
        "ai_declared": dict(declared),
        "decided_by_provenance": decided,
        "with_evidence": with_evidence,
        "by_check": dict(by_check.most_common()),
        "findings": [[check, name, number] for (check, name), number in findings.most_common()],
        "c2pa_states": dict(states.most_common()),
    }


def is_video_row(row: dict) -> bool:
    """Video rows say so (``"kind": "video"``); flat rows without it are told by their suffix."""
    if row.get("kind") is not None:
        return row["kind"] == "video"
    from deepfake_detector.io.inputs import is_video_path

    return isinstance(row.get("source"), str) and is_video_path(row["source"])
