"""Expand command-line inputs (files, folders, globs) into a stream of image paths.

Problems with an input (a missing path, a glob that matches nothing, an unreadable folder, a symlink
loop) become `InputProblem` items in the stream so the caller records them as error rows; nothing is
skipped silently and nothing aborts the rest of the run.
"""

from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from deepfake_detector.errors import ManifestError

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".ppm", ".pgm"}
)
VIDEO_SUFFIXES = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi"})
_GLOB_CHARS = frozenset("*?[")
MANIFEST_COLUMN = "path"
URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True)
class InputProblem:
    """An input that named no readable image; it becomes an error row under ``source``."""

    source: str
    error: str


@dataclass
class ScanStats:
    """What folder scans passed over on purpose: files whose suffix is not an image's."""

    skipped_non_images: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def skip(self, path: str) -> None:
        self.skipped_non_images += 1
        if len(self.skipped_examples) < 3:
            self.skipped_examples.append(path)


def is_image_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in IMAGE_SUFFIXES


def is_video_path(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in VIDEO_SUFFIXES


def is_uri(text: str) -> bool:
    """True for ``scheme://...`` (an object store, or ``file://``); plain paths are not URIs."""
    return bool(URI_SCHEME.match(text))


def _scan_folder(
    root: str, recursive: bool, stats: ScanStats, videos: bool = False
) -> Iterator[str | InputProblem]:
    """Yields image (and video) files under ``root`` in sorted order, following symlinks but never looping."""
    visited: set[tuple[int, int]] = set()

    def walk(folder: str) -> Iterator[str | InputProblem]:
        try:
            info = os.stat(folder)
        except OSError as error:
            yield InputProblem(folder, f"{folder}: cannot access folder ({error.strerror or error})")
            return
        key = (info.st_dev, info.st_ino)
        if key in visited:
            yield InputProblem(folder, f"{folder}: directory loop (links back to a folder already scanned)")
            return
        visited.add(key)
        try:
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as error:
            yield InputProblem(folder, f"{folder}: cannot list folder ({error.strerror or error})")
            return
        for name in names:
            path = os.path.join(folder, name)
            if os.path.isdir(path):
                if recursive:
                    yield from walk(path)
            elif is_image_path(path) or (videos and is_video_path(path)) or not os.path.exists(path):
                # A dangling symlink with an image name is reported, not dropped.
                yield path
            else:
                stats.skip(path)

    yield from walk(root)


def expand_inputs(
    inputs: Iterable[str], *, recursive: bool = False, stats: ScanStats | None = None, videos: bool = False
) -> Iterator[str | InputProblem]:
    """Turns files, folders and glob patterns into image paths, lazily, in a stable order.

    Args:
        inputs: What the user named. Files are yielded as given, whatever their suffix (a file named
            explicitly is always attempted). Folders yield their image files (by suffix); with
            ``recursive`` also those of sub-folders. Patterns with ``*``, ``?`` or ``[`` are globbed
            (``**`` spans folders).
        recursive: Descend into sub-folders.
        stats: Receives counts of non-image files that folder scans passed over.
        videos: Folders also yield video files (`VIDEO_SUFFIXES`).

    Yields:
        Paths, or `InputProblem` for inputs that name nothing readable.
    """
    stats = stats if stats is not None else ScanStats()
    for given in inputs:
        if os.path.isdir(given):
            yield from _scan_folder(given, recursive, stats, videos)
        elif os.path.lexists(given) or not (_GLOB_CHARS & set(given)):
            yield given  # the loader reports a missing or unreadable file under its own name
        else:
            matches = sorted(glob.glob(given, recursive=True))
            if not matches:
                yield InputProblem(given, f"{given}: no files match this pattern")
            for match in matches:
                if os.path.isdir(match):
                    yield from _scan_folder(match, recursive, stats, videos)
                else:
                    yield match


def load_manifest(path: str | os.PathLike, *, column: str = MANIFEST_COLUMN) -> list[str]:
    """The inputs a manifest lists, in its order, for scoring jobs too large to name on a command line.

    Args:
        path: A ``.csv`` file or a ``.parquet`` file with a ``column`` column, or any other file as plain
            text with one input per line (blank lines and lines starting with ``#`` are skipped). Each
            input is what a command line could name: a file, folder, glob pattern or URI. Relative
            paths are relative to the manifest's folder, as in the training manifests.
        column: The column of a CSV or Parquet manifest that holds the inputs.

    Raises:
        ManifestError: The file can't be read, or a table has no such column (the message lists its
            columns).
    """
    path = os.fspath(path)
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".parquet":
            from deepfake_detector.optional import require

            parquet = require("pyarrow.parquet", "ray")
            names = parquet.read_schema(path).names
            _check_manifest_column(path, column, names)
            entries = parquet.read_table(path, columns=[column]).column(column).to_pylist()
        elif suffix == ".csv":
            with open(path, newline="", encoding="utf-8-sig") as handle:
                reader = csv.DictReader(handle)
                _check_manifest_column(path, column, reader.fieldnames or [])
                entries = [row[column] for row in reader]
        else:
            with open(path, encoding="utf-8") as handle:
                entries = [line for line in (raw.strip() for raw in handle) if not line.startswith("#")]
    except ManifestError:
        raise
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ManifestError(f"{path}: cannot read manifest ({error})") from None
    except Exception as error:  # pyarrow's errors for a file that is not Parquet
        raise ManifestError(f"{path}: cannot read manifest ({type(error).__name__}: {error})") from None
    base = os.path.dirname(path)
    return [
        entry if is_uri(entry) or os.path.isabs(entry) else os.path.join(base, entry)
        for entry in (str(value).strip() for value in entries if value is not None)
        if entry
    ]


def _check_manifest_column(path: str, column: str, names: list[str]) -> None:
    if column not in names:
        raise ManifestError(
            f"{path}: no {column!r} column; columns are: {', '.join(names) or '(none)'}. List the inputs "
            f"in a {column!r} column, or use a text file with one input per line"
        )
