"""A folder of result shards: Parquet or JSON Lines files that together hold one row per input.

Large scoring jobs (`deepfake_detector.inference.ray_scoring`) write their rows here in pieces. The
folder is the job's state: a shard is written to a hidden temporary file and renamed into place once
complete, so a job killed at any moment leaves only whole shards, and a rerun skips every source they
hold (`load_shard_sources`). The rows are those of the local ``predict``: JSON Lines shards hold
exactly its ``--format jsonl`` lines (`ResultWriter`), Parquet shards its ``--format csv`` columns
(`flat_row`), typed.

One job writes to a folder at a time; temporary files left by a killed job are removed when the next
one opens the folder.
"""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterable
from pathlib import Path

from deepfake_detector.errors import DetectorError
from deepfake_detector.io.writers import (
    ResultWriter,
    csv_columns,
    flat_row,
    load_done_sources,
    missing_columns,
)
from deepfake_detector.optional import require
from deepfake_detector.results import Prediction, VideoPrediction

SHARD_FORMATS = ("parquet", "jsonl")
SHARD_PREFIX = "part-"
_TEMPORARY_SUFFIX = ".tmp"
# Arrow types of the flat columns (`csv_columns`); a column missing here fails in `shard_schema`.
_COLUMN_TYPES = {
    "source": "string",
    "label": "string",
    "fake_score": "float64",
    "verdict": "string",
    "model": "string",
    "revision": "string",
    "error": "string",
    "decided_by": "string",
    "domain": "string",
    "detector": "string",
    "threshold": "float64",
    "uncertain_from": "float64",
    "threshold_from": "string",
    "ai_declared": "bool_",
    "provenance_evidence": "string",
    "num_faces": "int64",
    "no_face": "bool_",
    "num_frames": "int64",
    "no_face_frames": "int64",
}
# JSON Lines shards travel between Ray and the writer as these columns; ``line`` is the file's line.
_JSONL_COLUMNS = ("source", "error", "line")


class ShardFolderError(DetectorError):
    """An output folder can't hold this job's shards: not a folder, or shards of another kind."""


def shard_schema(fmt: str, *, summary: bool = False):
    """The Arrow schema of the rows a job of this format passes to `ShardWriter`.

    Parquet: the typed `csv_columns` (plus face and frame counts with ``summary``). JSON Lines:
    ``source``, ``error`` and the row's ``line``.
    """
    pa = require("pyarrow", "ray")
    _check_format(fmt)
    if fmt == "jsonl":
        return pa.schema([(name, pa.string()) for name in _JSONL_COLUMNS])
    untyped = [name for name in csv_columns(summary) if name not in _COLUMN_TYPES]
    if untyped:  # a field added to the results: say which type its column has, here, once
        raise TypeError(f"no Parquet type for result column(s) {untyped}; add them to _COLUMN_TYPES")
    return pa.schema([(name, getattr(pa, _COLUMN_TYPES[name])()) for name in csv_columns(summary)])


def encode_rows(predictions: Iterable[Prediction | VideoPrediction], fmt: str, *, summary: bool = False):
    """Predictions as an Arrow table of `shard_schema` rows, ready for `ShardWriter.add`."""
    pa = require("pyarrow", "ray")
    predictions = list(predictions)
    schema = shard_schema(fmt, summary=summary)
    if fmt == "parquet":
        rows = [flat_row(prediction, summary) for prediction in predictions]
        return pa.Table.from_pylist(rows, schema=schema)
    buffer = io.StringIO()
    writer = ResultWriter(buffer, "jsonl")  # the very lines `predict --format jsonl` writes
    for prediction in predictions:
        writer.write(prediction)
    columns = {
        "source": [str(prediction.source) for prediction in predictions],
        "error": [prediction.error for prediction in predictions],
        "line": buffer.getvalue().splitlines(),
    }
    return pa.Table.from_pydict(columns, schema=schema)


def list_shards(folder: str | os.PathLike, fmt: str | None = None) -> list[Path]:
    """The complete shards in a folder, sorted by name; of one format, or of any when ``fmt`` is None."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    suffixes = SHARD_FORMATS if fmt is None else (fmt,)
    return sorted(
        path
        for path in folder.iterdir()
        if path.name.startswith(SHARD_PREFIX) and path.suffix.lstrip(".") in suffixes and path.is_file()
    )


def open_shard_folder(folder: str | os.PathLike, fmt: str, *, summary: bool = False) -> set[str]:
    """Prepares a folder for a job's shards and returns the sources its complete shards already hold.

    Creates the folder when missing and deletes temporary files left by a killed job.

    Raises:
        ShardFolderError: ``folder`` is a file, holds shards of the other format, or (Parquet) shards
            written with different columns (with or without face mode).
    """
    _check_format(fmt)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ShardFolderError(f"{folder}: is a file; the output of a sharded job is a folder of shards")
    folder.mkdir(parents=True, exist_ok=True)
    for leftover in folder.glob(f".{SHARD_PREFIX}*{_TEMPORARY_SUFFIX}"):
        leftover.unlink(missing_ok=True)  # a killed job's incomplete shard: never counted, never kept
    others = [path.name for path in list_shards(folder) if path.suffix != f".{fmt}"]
    if others:
        raise ShardFolderError(
            f"{folder}: already holds shards of another format ({', '.join(others[:3])}); rerun with "
            f"that format, or choose another output folder"
        )
    return load_shard_sources(folder, fmt, summary=summary)


def load_shard_sources(folder: str | os.PathLike, fmt: str, *, summary: bool = False) -> set[str]:
    """The sources held by the complete shards of one format in a folder (none when it is missing).

    Raises:
        ShardFolderError: A Parquet shard's columns are not this job's (another face mode, an earlier
            version), or a shard is not readable.
    """
    done: set[str] = set()
    for path in list_shards(folder, fmt):
        if fmt == "jsonl":
            try:
                done |= load_done_sources(path, "jsonl")
            except ValueError as error:
                raise ShardFolderError(str(error)) from None
            continue
        parquet = require("pyarrow.parquet", "ray")
        try:
            names = parquet.read_schema(path).names
            if names == csv_columns(not summary):
                raise ShardFolderError(
                    f"{path}: written {'without' if summary else 'with'} face mode (--faces); rerun it the "
                    "same way, so the columns match, or choose another output folder"
                )
            older = missing_columns(names, summary)
            if older:
                raise ShardFolderError(
                    f"{path}: written by an earlier version, without the column(s) {', '.join(older)}; "
                    "choose another output folder (report still reads this one)"
                )
            if names != csv_columns(summary):
                raise ShardFolderError(f"{path}: columns {names} are not result columns; cannot resume")
            done.update(parquet.read_table(path, columns=["source"]).column("source").to_pylist())
        except ShardFolderError:
            raise
        except Exception as error:  # pyarrow's errors for a damaged file
            raise ShardFolderError(f"{path}: not a readable Parquet shard ({error})") from None
    return done


class ShardWriter:
    """Collects rows and writes them as shards of at least ``rows_per_shard`` rows, each atomically.

    Shard names carry the job's start time and a random tag, so reruns never overwrite earlier shards.
    """

    def __init__(self, folder: str | os.PathLike, fmt: str, *, rows_per_shard: int = 1024) -> None:
        _check_format(fmt)
        if rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
        self.folder = Path(folder)
        self.format = fmt
        self.rows_per_shard = rows_per_shard
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.written: list[Path] = []
        self.rows = 0
        self.failed = 0
        self._pending: list = []  # Arrow tables of rows not yet in a shard
        self._pending_rows = 0

    def add(self, table) -> list[Path]:
        """Adds rows (an Arrow table from `encode_rows`); returns the shards this completed."""
        if table.num_rows == 0:
            return []
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.rows_per_shard:
            return [self._flush()]
        return []

    def close(self) -> list[Path]:
        """Writes the remaining rows as a last, smaller shard; returns it (or nothing)."""
        return [self._flush()] if self._pending_rows else []

    def _flush(self) -> Path:
        pa = require("pyarrow", "ray")
        table = pa.concat_tables(self._pending)
        path = self.folder / f"{SHARD_PREFIX}{self.run_id}-{len(self.written):05d}.{self.format}"
        if self.format == "parquet":
            parquet = require("pyarrow.parquet", "ray")
            _write_atomically(path, lambda handle: parquet.write_table(table, handle))
        else:
            text = "".join(line + "\n" for line in table.column("line").to_pylist())
            _write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))
        self.rows += table.num_rows
        self.failed += table.num_rows - table.column("error").null_count
        self.written.append(path)
        self._pending, self._pending_rows = [], 0
        return path


def _write_atomically(path: Path, write) -> None:
    """Writes through a hidden temporary file renamed into place: the shard is whole or absent."""
    temporary = path.with_name(f".{path.name}{_TEMPORARY_SUFFIX}")
    try:
        with open(temporary, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())  # the rename must not reach the disk before the data does
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _check_format(fmt: str) -> None:
    if fmt not in SHARD_FORMATS:
        raise ValueError(f"unknown shard format {fmt!r}; choose one of {', '.join(SHARD_FORMATS)}")
