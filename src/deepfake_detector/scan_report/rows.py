"""Read result rows that already exist: what ``predict`` wrote, in any of its file formats.

A results file is JSON Lines (``--format jsonl``, also the rows ``explain --format jsonl`` prints), a
JSON array (``--format json``), CSV (``--format csv``), or a folder of shards written by ``predict
--ray`` (Parquet or JSON Lines, `deepfake_detector.io.shards`). Every row comes back as the dict
``Prediction.to_dict()`` / ``VideoPrediction.to_dict()`` makes; flat rows (CSV, Parquet) come back
typed, with their flattened provenance evidence parsed into the nested form JSON rows carry. Rows of
earlier versions lack the keys added since (``domain`` and ``detector``, say): readers take each with
``row.get``, so a missing one reads as None, as in a row that has it empty.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from deepfake_detector.errors import DetectorError

# Columns of flat rows (CSV, Parquet) by type; every other column is text (empty: None).
_FLOAT_COLUMNS = ("fake_score", "threshold", "uncertain_from")
_INT_COLUMNS = ("num_faces", "num_frames", "no_face_frames")
_BOOL_COLUMNS = ("no_face", "ai_declared")


class ResultsFileError(DetectorError):
    """A path does not hold result rows: missing, empty, or not one of ``predict``'s formats."""


def load_result_rows(path: str | os.PathLike, *, allow_empty: bool = False) -> list[dict]:
    """Every row of a results file or shard folder, in file order (shards in name order).

    Args:
        path: A ``.jsonl``/``.ndjson``, ``.json`` or ``.csv`` file, or a folder of ``part-*.parquet`` or
            ``part-*.jsonl`` shards.
        allow_empty: An empty file or a folder without shards gives no rows instead of an error (a run
            that scored nothing new).

    Raises:
        ResultsFileError: The path is missing, holds no rows, or is not in one of those formats; the
            message says which formats are accepted.
    """
    path = Path(path)
    if allow_empty and (
        (path.is_file() and path.stat().st_size == 0) or (path.is_dir() and not _shards(path))
    ):
        return []
    if path.is_dir():
        return _load_shard_folder(path)
    if path.is_file():
        return _load_file(path)
    raise ResultsFileError(f"{path}: no such results file or shard folder")


def _load_file(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ResultsFileError(f"{path}: cannot read ({error})") from None
    if suffix == ".csv":
        return _parse_csv(text, path)
    if suffix == ".json" or (suffix not in (".jsonl", ".ndjson") and text.lstrip().startswith("[")):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise ResultsFileError(f"{path}: not a JSON array of result rows ({error})") from None
        return _checked(rows if isinstance(rows, list) else None, path)
    if suffix in (".jsonl", ".ndjson", ".txt", ""):
        return _parse_jsonl(text, path)
    raise ResultsFileError(
        f"{path}: unknown results format {suffix!r}; give a .jsonl, .json or .csv file written by predict, "
        "or a folder of shards written by predict --ray"
    )


def _parse_jsonl(text: str, path: Path) -> list[dict]:
    rows = []
    lines = text.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines) and not text.endswith("\n"):
                break  # a run killed mid-write leaves a partial last line; `--resume` redoes that input
            raise ResultsFileError(f"{path}, line {number}: not a JSON result row ({error})") from None
    return _checked(rows, path)


def _parse_csv(text: str, path: Path) -> list[dict]:
    reader = csv.DictReader(text.splitlines())
    if reader.fieldnames is None or "source" not in reader.fieldnames:
        raise ResultsFileError(
            f"{path}: CSV header {reader.fieldnames} has no 'source' column; give a predict --format csv file"
        )
    return _checked([parse_flat_row({k: (v or None) for k, v in row.items()}) for row in reader], path)


def _shards(folder: Path) -> list[Path]:
    from deepfake_detector.io.shards import list_shards

    return list_shards(folder)


def _load_shard_folder(folder: Path) -> list[dict]:
    shards = _shards(folder)
    if not shards:
        raise ResultsFileError(
            f"{folder}: no result shards (part-*.parquet or part-*.jsonl) in this folder; give the --output "
            "folder of predict --ray, or a results file"
        )
    rows: list[dict] = []
    for shard in shards:
        if shard.suffix == ".jsonl":
            rows += _parse_jsonl(shard.read_text(encoding="utf-8"), shard)
            continue
        from deepfake_detector.optional import require

        parquet = require("pyarrow.parquet", "ray")
        try:
            table = parquet.read_table(shard)
        except Exception as error:  # pyarrow's errors for a damaged file
            raise ResultsFileError(f"{shard}: not a readable Parquet shard ({error})") from None
        rows += [parse_flat_row(row) for row in table.to_pylist()]
    return _checked(rows, folder)


def _checked(rows: list | None, path: Path) -> list[dict]:
    if rows is None or any(not isinstance(row, dict) or "source" not in row for row in rows):
        raise ResultsFileError(f"{path}: not result rows (each row needs a 'source')")
    if not rows:
        raise ResultsFileError(f"{path}: holds no result rows")
    return rows


def parse_flat_row(row: dict) -> dict:
    """A flat row (CSV text or Parquet values) as the typed dict a JSON row has for the same columns.

    Flattened provenance (``ai_declared``, ``provenance_evidence``) becomes the nested ``provenance``
    object when it holds a finding. Flat columns can't say whether the stage ran and found nothing or
    did not run, so such a row has no record and says so (``provenance_flat``); a row without those
    columns has none, as rows of runs before the provenance stage.
    """
    parsed = dict(row)
    for name in _FLOAT_COLUMNS:
        parsed[name] = _as_float(parsed.get(name))
    for name in _INT_COLUMNS:
        if parsed.get(name) is not None:
            parsed[name] = int(parsed[name])
    for name in _BOOL_COLUMNS:
        if isinstance(parsed.get(name), str):
            parsed[name] = {"true": True, "false": False}.get(parsed[name].lower())
    if "ai_declared" in parsed or "provenance_evidence" in parsed:
        evidence = parse_evidence(parsed.pop("provenance_evidence", None))
        declared = parsed.pop("ai_declared", None)
        parsed["provenance_flat"] = True
        if evidence or declared is not None:
            parsed["provenance"] = {"ai_declared": declared, "evidence": evidence, "c2pa": None}
    if parsed.get("num_frames") is not None and parsed.get("kind") is None:
        parsed["kind"] = "video"  # only video rows count frames
    return parsed


def parse_evidence(text: str | None) -> list[dict]:
    """A flat row's ``provenance_evidence`` as finding dicts, read back by the format's own parser
    (`deepfake_detector.provenance.records.parse_flat_findings`)."""
    from deepfake_detector.provenance.records import parse_flat_findings

    return [finding.to_dict() for finding in parse_flat_findings(text)]


def _as_float(value) -> float | None:
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def load_overlay_paths(path: str | os.PathLike, sources: list[str]) -> tuple[dict[str, Path], list[str]]:
    """Heatmap overlays written by ``explain``, matched to result sources.

    Args:
        path: ``explain``'s output: its ``--format jsonl`` rows (each names its ``source`` and
            ``overlay``: an exact match), or its ``--out`` folder, whose ``<stem>.<method>.png`` files
            are matched by the source's file name without suffix.
        sources: The sources of the result rows.

    Returns:
        ``({source: overlay path}, notes)``: the notes say what could not be matched and why.

    Raises:
        ResultsFileError: ``path`` is neither a folder nor explain's JSON Lines rows.
    """
    path = Path(path)
    notes: list[str] = []
    if path.is_file():
        found = {}
        for row in load_result_rows(path):
            overlay = locate_file(row.get("overlay"), path.parent)
            if overlay is not None:
                found[str(row["source"])] = overlay
        return {source: found[source] for source in sources if source in found}, notes
    if not path.is_dir():
        raise ResultsFileError(
            f"{path}: no such explain output (its --out folder or its --format jsonl rows)"
        )
    by_stem: dict[str, list[Path]] = {}
    for overlay in path.glob("*.png"):
        stem, _, method = overlay.stem.rpartition(".")
        if stem and method in ("rollout", "gradcam"):
            by_stem.setdefault(stem, []).append(overlay)
    stems: dict[str, list[str]] = {}
    for source in sources:
        stems.setdefault(Path(source).stem, []).append(source)
    matched: dict[str, Path] = {}
    repeated = 0
    for stem, named in stems.items():
        overlays = sorted(by_stem.get(stem, []))
        if not overlays:
            continue
        if len(named) > 1:
            repeated += len(named)  # explain numbers repeated names in its own order: no safe match
            continue
        matched[named[0]] = overlays[0]
    if repeated:
        notes.append(
            f"{repeated} inputs share a file name with another input, so their heatmaps in {path} can't be "
            "told apart; pass explain's --format jsonl rows (they name each overlay) instead"
        )
    return matched, notes


def locate_file(name, base: Path | None) -> Path | None:
    """The local file a row names: as given (relative to the current folder), else relative to ``base``
    (the results file's folder, for results moved together with their inputs); None when it names no
    local file (missing, an index, an object-store URI)."""
    from deepfake_detector.io.inputs import is_uri

    if not isinstance(name, str) or not name or is_uri(name):
        return None
    candidates = [Path(name)]
    if base is not None and not Path(name).is_absolute():
        candidates.append(base / name)
    return next((candidate for candidate in candidates if candidate.exists()), None)
