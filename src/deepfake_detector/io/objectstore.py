"""Inputs named by URI (``s3://bucket/prefix/``, ``gs://...``, ``file:///...``): list them, fetch them.

Listing and reading go through ``pyarrow.fs``, the filesystem layer Ray Data itself lists and reads
object stores with, so any URI Ray Data can read works here (S3, GCS, HDFS, local ``file://``), with
the same credentials from the environment. Used by batch scoring on Ray (`deepfake_detector.inference
.distributed`), where each actor fetches its own inputs; the local `predict` reads local paths only.

A URI that lists nothing, can't be opened, or can't be read becomes an `InputProblem` (an error row
naming the URI), as a missing local path does; nothing aborts the rest of the run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from deepfake_detector.io.inputs import URI_SCHEME, InputProblem, ScanStats, is_image_path, is_video_path
from deepfake_detector.optional import require


def _open(uri: str):
    """(filesystem, path inside it) for a URI, or an error message naming it."""
    fs = require("pyarrow.fs", "ray")
    try:
        return fs.FileSystem.from_uri(uri)
    except Exception as error:  # pyarrow raises ArrowInvalid/OSError/ValueError by scheme and backend
        return f"{uri}: cannot open ({type(error).__name__}: {error})"


def _join(uri: str, root: str, path: str) -> str:
    """The URI of ``path`` (as the filesystem lists it), given that ``uri`` opened as ``root``.

    What precedes ``root`` in ``uri`` is kept: ``s3://`` (the bucket is in the path), ``file://``,
    or ``hdfs://host:port`` (the host is not). Query options (``?region=...``) are dropped.
    """
    base = uri.split("?", 1)[0].rstrip("/")
    root = root.rstrip("/")
    if root and base.endswith(root):
        return base[: len(base) - len(root)] + path
    return URI_SCHEME.match(uri).group(0) + path.lstrip("/")


def expand_uri(
    uri: str, *, recursive: bool = False, stats: ScanStats | None = None, videos: bool = True
) -> Iterator[str | InputProblem]:
    """The image (and video) files a URI names, as URIs, in sorted order.

    Args:
        uri: One object (yielded as given, whatever its suffix, like a file named on the command line)
            or a prefix/folder (its image files by suffix; with ``recursive`` also those under
            sub-prefixes). Glob patterns are not expanded in URIs.
        recursive: Descend into sub-prefixes.
        stats: Receives counts of files passed over because their suffix is not an image's.
        videos: Folders also yield video files.

    Yields:
        URIs, or `InputProblem` when the URI can't be opened or names nothing.
    """
    fs = require("pyarrow.fs", "ray")
    stats = stats if stats is not None else ScanStats()
    opened = _open(uri)
    if isinstance(opened, str):
        yield InputProblem(uri, opened)
        return
    filesystem, path = opened
    try:
        info = filesystem.get_file_info(path)
        if info.type == fs.FileType.NotFound:
            yield InputProblem(uri, f"{uri}: no such object or folder")
            return
        if info.type == fs.FileType.File:
            yield uri
            return
        listed = filesystem.get_file_info(fs.FileSelector(path, recursive=recursive))
    except Exception as error:  # permissions, network, throttling: one error row for the URI
        yield InputProblem(uri, f"{uri}: cannot list ({type(error).__name__}: {error})")
        return
    for entry in sorted((entry for entry in listed if entry.type == fs.FileType.File), key=lambda e: e.path):
        if is_image_path(entry.path) or (videos and is_video_path(entry.path)):
            yield _join(uri, path, entry.path)
        else:
            stats.skip(_join(uri, path, entry.path))


def fetch_uri(uri: str, destination: str | os.PathLike) -> str | InputProblem:
    """Copies one object to a local file, so the library's loaders read it like any file.

    Returns:
        The local path, or an `InputProblem` naming the URI when it can't be read.
    """
    opened = _open(uri)
    if isinstance(opened, str):
        return InputProblem(uri, opened)
    filesystem, path = opened
    try:
        with filesystem.open_input_stream(path) as stream, open(destination, "wb") as handle:
            while chunk := stream.read(1 << 20):
                handle.write(chunk)
    except FileNotFoundError:
        return InputProblem(uri, f"{uri}: no such file or directory")
    except Exception as error:  # network or permission trouble becomes this input's error row
        return InputProblem(uri, f"{uri}: cannot read ({type(error).__name__}: {error})")
    return str(Path(destination))
