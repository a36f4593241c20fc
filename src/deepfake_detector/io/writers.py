"""Write `Prediction` and `VideoPrediction` records as a table, JSON, JSON Lines or CSV.

JSONL and CSV rows are written and flushed as results arrive, so a run killed halfway keeps every
row it finished, and `load_done_sources` lets a rerun skip them (``--resume``).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from deepfake_detector.results import (
    PROVENANCE_COLUMNS,
    SUMMARY_FIELDS,
    Prediction,
    VideoPrediction,
    format_number,
)

FORMATS = ("table", "json", "jsonl", "csv")
RESUMABLE_FORMATS = ("jsonl", "csv")
_SUFFIX_FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv"}


def infer_format(output: str | None) -> str:
    """The format implied by an output file's suffix; "table" for the terminal or unknown suffixes."""
    if output is None:
        return "table"
    return _SUFFIX_FORMATS.get(Path(output).suffix.lower(), "table")


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # full precision: anyone can recompute from the file
    return str(value)


class ResultWriter:
    """Writes predictions to a text stream in one format."""

    def __init__(self, stream: TextIO, fmt: str, *, write_header: bool = True, summary: bool = False) -> None:
        """``summary`` (face mode) adds the face and frame counts of `SUMMARY_FIELDS` to CSV rows."""
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
        self.stream = stream
        self.format = fmt
        self.count = 0
        self._csv = csv.writer(stream, lineterminator="\n") if fmt == "csv" else None
        self._summary = summary
        if fmt == "csv" and write_header:
            self._csv.writerow(csv_columns(summary))
        elif fmt == "table":
            self.stream.write(f"{'verdict':<10} {'fake_score':>10} {'threshold':>10}  {'domain':<8} source\n")
        elif fmt == "json":
            self.stream.write("[")

    def write(self, prediction: Prediction | VideoPrediction) -> None:
        row = prediction.to_dict()
        if self.format == "jsonl":
            self.stream.write(json.dumps(row) + "\n")
        elif self.format == "csv":
            self._csv.writerow([_csv_value(value) for value in flat_row(prediction, self._summary).values()])
        elif self.format == "json":
            self.stream.write(("," if self.count else "") + "\n  " + json.dumps(row))
        else:
            self.stream.write(_table_row(prediction))
        self.count += 1
        self.stream.flush()

    def close(self) -> None:
        if self.format == "json":
            self.stream.write("\n]\n" if self.count else "]\n")
        self.stream.flush()


def csv_columns(summary: bool = False) -> list[str]:
    """The CSV header: `Prediction`'s columns, plus the face and frame counts in face mode."""
    return Prediction.field_names() + list(PROVENANCE_COLUMNS) + (list(SUMMARY_FIELDS) if summary else [])


def missing_columns(names: Sequence[str], summary: bool = False) -> list[str]:
    """The result columns (`csv_columns`) that a file of an earlier version lacks: those left out of
    ``names`` when the rest are today's, in today's order; empty when none is missing, or when
    ``names`` are not result columns at all."""
    expected = csv_columns(summary)
    missing = [name for name in expected if name not in names]
    return missing if missing and [name for name in expected if name in names] == list(names) else []


def flat_row(prediction: Prediction | VideoPrediction, summary: bool = False) -> dict:
    """One row of flat columns (`csv_columns`), typed: what CSV files and Parquet shards hold.

    Face and frame details stay in JSON rows; ``summary`` (face mode) adds their counts instead.
    """
    row = prediction.to_dict()
    row.update(prediction.provenance_columns())
    if summary:
        row.update(prediction.summary())
    return {name: row[name] for name in csv_columns(summary)}


def _table_row(prediction: Prediction | VideoPrediction) -> str:
    """One line of the table, numbers rounded for people (`format_number`; the files keep them
    whole); the domain is "-" for a checkpoint that can't tell domains."""
    if prediction.error is not None:
        return f"{'ERROR':<10} {'-':>10} {'-':>10}  {'-':<8} {prediction.error}\n"
    score, threshold = format_number(prediction.fake_score), format_number(prediction.threshold)
    domain = prediction.domain or "-"
    return (
        f"{prediction.verdict:<10} {score:>10} {threshold:>10}  {domain:<8} {prediction.source}"
        f"{_table_note(prediction)}\n"
    )


def _table_note(prediction: Prediction | VideoPrediction) -> str:
    """What decided a verdict set by provenance, the uncertain band, and face and frame counts in face
    or video mode."""
    note = ""
    if prediction.decided_by == "provenance":
        decisive = ", ".join(finding.name for finding in prediction.provenance.decisive)
        note = f"  [decided by provenance: {decisive}]"
    if prediction.uncertain_from is not None:
        note += f"  [uncertain from {format_number(prediction.uncertain_from)}]"
    return note + _count_note(prediction)


def _count_note(prediction: Prediction | VideoPrediction) -> str:
    if isinstance(prediction, VideoPrediction):
        parts = [f"{len(prediction.frames)} frames", prediction.aggregation["strategy"]]
        if prediction.threshold_from:
            parts.append(f"{prediction.threshold_from} threshold")
        if prediction.no_face_frames is not None:
            parts.append(f"{prediction.no_face_frames} without a face")
        if prediction.stopped_at_s is not None:
            parts.append(f"decoding stopped at {prediction.stopped_at_s:.2f} s")
        return "  [" + ", ".join(parts) + "]"
    if prediction.faces is None:
        return ""
    count = len(prediction.faces)
    return "  [no face: scored whole]" if count == 0 else f"  [{count} face{'s' if count > 1 else ''}]"


def load_done_sources(path: str | os.PathLike, fmt: str, *, summary: bool = False) -> set[str]:
    """Sources already recorded in a JSONL or CSV results file, for ``--resume``.

    A run killed mid-write can leave a partial last line; it is cut off here (the file is truncated to
    its last complete row) so the rerun appends cleanly and scores that input again.

    Raises:
        ValueError: The format can't be resumed, or the file isn't a results file of that format.
    """
    if fmt not in RESUMABLE_FORMATS:
        raise ValueError(f"--resume needs an appendable format ({', '.join(RESUMABLE_FORMATS)}), not {fmt!r}")
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return set()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    lines = complete.decode("utf-8").splitlines()
    if fmt == "jsonl":
        try:
            return {str(json.loads(line)["source"]) for line in lines if line.strip()}
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(f"{path}: not a JSONL results file ({error}); cannot resume") from None
    rows = list(csv.reader(lines))
    if not rows:
        return set()
    if rows[0] == csv_columns(not summary):
        wanted = "with" if rows[0] == csv_columns(True) else "without"
        raise ValueError(f"{path}: written {wanted} --faces; resume it the same way, so the columns match")
    older = missing_columns(rows[0], summary)
    if older:
        raise ValueError(
            f"{path}: written by an earlier version, without the column(s) {', '.join(older)}; write to a "
            "new file (report still reads this one)"
        )
    if rows[0] != csv_columns(summary):
        raise ValueError(f"{path}: CSV header {rows[0]} is not a results header; cannot resume")
    return {row[0] for row in rows[1:] if row}
