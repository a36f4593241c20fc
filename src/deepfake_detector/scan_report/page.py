"""Write a scan report: one self-contained HTML page of result rows, with thumbnails, made offline.

The page is plain HTML, CSS and JavaScript inlined from this package (``report.html``, ``report.css``,
``report.js``), no framework and no CDN: it must open from a disk with no network, and a static page
over a JSON island needs no build step. Everything the rows say (file names, metadata, error
messages) is attacker-controlled: it travels as JSON inside ``<script type="application/json">``
with ``<``, ``>`` and ``&`` escaped, and the page's script only ever sets it as text. A Content
Security Policy allows only this page's own script and style (by hash) and ``data:`` images, so the
page can't load or send anything even if a future change slips.

The page draws only the cards in view (a virtual grid), so 10,000 rows stay as quick as 100; the
thumbnails are small JPEGs embedded as data, decoded by the browser only for cards in view.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import partial
from importlib.resources import files
from pathlib import Path

from deepfake_detector.scan_report.rows import locate_file
from deepfake_detector.scan_report.settings import RunSettings, resolve_run_settings
from deepfake_detector.scan_report.summary import compute_summary, is_video_row
from deepfake_detector.scan_report.thumbnails import (
    DEFAULT_THUMBNAIL_PX,
    Thumbnail,
    load_image_thumbnail,
    load_thumbnails,
    load_video_thumbnail,
)
from deepfake_detector.scoring import VERDICTS
from deepfake_detector.version import __version__

# Attacker-controlled text is cut to this many characters on a card's record (a metadata field can
# hold megabytes); the cut says how much was left out.
MAX_TEXT_CHARS = 2000
_MARKER = re.compile(r"(\{\{[A-Z]+\}\})")
_SCRIPT_ESCAPES = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


@dataclass(frozen=True)
class ScanReport:
    """A report written to disk.

    Attributes:
        path: The HTML file.
        rows: Result rows it shows.
        pictured: Rows shown with a thumbnail (the rest show why there is none).
        heatmaps: Rows shown with a heatmap overlay.
        size_bytes: The file's size.
        notes: What the report could not do, in words (also shown on the page).
    """

    path: Path
    rows: int
    pictured: int
    heatmaps: int
    size_bytes: int
    notes: tuple[str, ...] = field(default_factory=tuple)


def render_report(
    rows: list[dict],
    path: str | os.PathLike,
    *,
    settings: RunSettings | None = None,
    results_path: str | os.PathLike | None = None,
    overlays: dict[str, Path] | None = None,
    thumbnail_px: int = DEFAULT_THUMBNAIL_PX,
    thumbnails: bool = True,
    workers: int | None = None,
    title: str | None = None,
    notes: tuple[str, ...] = (),
) -> ScanReport:
    """Writes the scan report of ``rows`` as one HTML file.

    Args:
        rows: Result rows (``Prediction.to_dict()`` and ``VideoPrediction.to_dict()``, or
            `load_result_rows`).
        path: The HTML file to write (its folder must exist).
        settings: How the rows were scored, when the caller knows (``predict --report``); else the
            checkpoint's stored thresholds (each domain's, for a model with domains) are used where
            every verdict agrees with its row's rule (`resolve_run_settings`).
        results_path: The results file or shard folder the rows come from: named on the page, and the
            second place relative sources are looked for.
        overlays: Heatmap overlays by source (`load_overlay_paths`); rows of ``explain`` name theirs.
        thumbnail_px: Longer side of the thumbnails, in pixels.
        thumbnails: False leaves pictures out (a much smaller file; cards show the file name only).
        workers: Threads that read the thumbnails; default one per CPU, at most 8.
        title: The page's title; default "Scan report: <results file name>".
        notes: Things to say on the page about how it was made.

    Returns:
        What was written.
    """
    path = Path(path)
    base = None if results_path is None else Path(results_path).resolve().parent
    settings = resolve_run_settings(rows, settings)
    entries = [_entry(index, row, base, overlays or {}) for index, row in enumerate(rows)]
    targets: list[tuple[_Entry, str]] = []  # (entry, "thumbnail" or "heatmap") of each picture job
    jobs = []
    for entry in entries if thumbnails else ():
        targets.append((entry, "thumbnail"))
        jobs.append(_thumbnail_job(entry, thumbnail_px))
        if entry.overlay is not None:
            targets.append((entry, "heatmap"))
            jobs.append(partial(load_image_thumbnail, entry.overlay, thumbnail_px))
    data_urls: list[str] = []
    for (entry, slot), picture in zip(targets, load_thumbnails(jobs, workers=workers), strict=True):
        if picture.jpeg is None:
            entry.card[f"{slot}_note"] = picture.note
            continue
        entry.card[slot] = len(data_urls)
        data_urls.append(picture.data_url())
        if slot == "thumbnail":
            entry.card["source_size"] = list(picture.source_size) if picture.source_size else None
            if entry.frame_faces is not None:  # a video: the boxes of the frame pictured
                entry.card["faces"] = entry.frame_faces.get(picture.frame_index)
    cards = [entry.card for entry in entries]
    summary = compute_summary(rows)
    summary["settings"] = settings.to_dict()
    meta = {
        "title": title or f"Scan report: {Path(results_path).name if results_path else path.stem}",
        "results": None if results_path is None else os.fspath(results_path),
        "built": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "version": __version__,
        "thumbnails": thumbnails,
        "notes": list(notes),
    }
    html = build_page({"meta": meta, "summary": summary, "cards": cards}, data_urls)
    path.write_text(html, encoding="utf-8")
    pictured = sum(card["thumbnail"] is not None for card in cards)
    heatmaps = sum(card["heatmap"] is not None for card in cards)
    return ScanReport(path, len(rows), pictured, heatmaps, path.stat().st_size, tuple(notes))


def build_page(data: dict, data_urls: list[str]) -> str:
    """The HTML of a report: the package's template with its style, script and the data inlined."""
    template = _asset("report.html")
    style, script = _asset("report.css"), _asset("report.js")
    policy = (
        "default-src 'none'; img-src data:; "
        f"style-src '{_hash(style)}'; script-src '{_hash(script)}'; "
        "base-uri 'none'; form-action 'none'"
    )
    replacements = {
        "{{POLICY}}": policy,
        "{{STYLE}}": style,
        "{{SCRIPT}}": script,
        "{{DATA}}": _script_json(data),
        "{{THUMBNAILS}}": _script_json(data_urls),
    }
    # One split of the template: text put in is never searched for markers again.
    return "".join(replacements.get(piece, piece) for piece in _MARKER.split(template))


@dataclass
class _Entry:
    """One row on its way to the page: its card's record, and where its pictures come from."""

    card: dict
    local: Path | None  # the input file, when it is on this machine
    overlay: Path | None  # its heatmap overlay, when explain made one
    frame_faces: dict | None  # a video's faces by frame index, for the frame its thumbnail shows


def _entry(index: int, row: dict, base: Path | None, overlays: dict[str, Path]) -> _Entry:
    """One input's record on the page: what its card and its details show."""
    source = row.get("source")
    video = is_video_row(row)
    local = locate_file(source, base)
    card = {
        "index": index,
        "source": _text(str(source)),
        "kind": "video" if video else "image",
        "verdict": _verdict(row.get("verdict")) if row.get("error") is None else None,
        "fake_score": _number(row.get("fake_score")),
        # The rule that decided the row, as the row says it (None in rows written before rows carried
        # it: the page then uses the run's rule). The deprecated ``label`` is not shown: ``verdict`` is.
        "threshold": _number(row.get("threshold")),
        "uncertain_from": _number(row.get("uncertain_from")),
        "threshold_from": _text(row.get("threshold_from")),
        "error": _text(row.get("error")),
        "model": _text(row.get("model")),
        "revision": _text(row.get("revision")),
        "decided_by": _text(row.get("decided_by")),
        "domain": _text(row.get("domain")),  # None: the model can't tell domains, or rows predate them
        "detector": _text(row.get("detector")),
        "provenance": _provenance(row.get("provenance")),
        "no_face": row.get("no_face"),
        "faces": None if video else _faces(row.get("faces")),
        "file": None if local is None else local.resolve().as_uri(),
        "thumbnail": None,
        "heatmap": None,
    }
    frame_faces = None
    if video:
        frames = [frame for frame in row.get("frames") or () if isinstance(frame, dict)]
        aggregation = row.get("aggregation") if isinstance(row.get("aggregation"), dict) else None
        card["video"] = {
            "duration_s": row.get("duration_s"),
            "num_frames": row.get("num_frames", len(frames) if "frames" in row else None),
            "no_face_frames": row.get("no_face_frames"),
            "stopped_at_s": row.get("stopped_at_s"),
            "decode_problem": _text(row.get("decode_problem")),
            "aggregation": aggregation,
            "timeline": [
                [
                    _number(frame.get("timestamp_s")),
                    _number(frame.get("fake_score")),
                    _text(frame.get("domain")),
                ]
                for frame in frames
            ],
        }
        frame_faces = {frame.get("index"): _faces(frame.get("faces")) for frame in frames}
    overlay = overlays.get(str(source)) or locate_file(row.get("overlay"), base)
    return _Entry(card, local, overlay, frame_faces)


def _thumbnail_job(entry: _Entry, max_px: int):
    if entry.local is None:
        return partial(Thumbnail, note="no picture: not a file on this machine")
    if entry.card["kind"] == "video":
        return partial(load_video_thumbnail, entry.local, max_px, entry.card["video"]["aggregation"])
    return partial(load_image_thumbnail, entry.local, max_px)


def _faces(faces) -> list[dict] | None:
    if not isinstance(faces, list):
        return None
    return [
        {
            "box": face.get("box"),
            "fake_score": _number(face.get("fake_score")),
            "verdict": _verdict(face.get("verdict")),
            "detection_score": _number(face.get("detection_score")),
        }
        for face in faces
        if isinstance(face, dict)
    ]


def _provenance(record) -> dict | None:
    if not isinstance(record, dict):
        return None
    c2pa = record.get("c2pa") if isinstance(record.get("c2pa"), dict) else None
    return {
        "ai_declared": record.get("ai_declared"),
        "checks": [_text(check) for check in record.get("checks") or ()],
        "evidence": [
            {
                "check": _text(item.get("check")),
                "name": _text(item.get("name")),
                "detail": _text(item.get("detail")),
            }
            for item in record.get("evidence") or ()
            if isinstance(item, dict)
        ],
        "c2pa": None
        if c2pa is None
        else {
            "state": _text(c2pa.get("state")),
            "claim_generator": _text(c2pa.get("claim_generator")),
            "ai_generated": c2pa.get("ai_generated"),
            "digital_source_type": _text(c2pa.get("digital_source_type")),
            "problems": [_text(problem) for problem in c2pa.get("problems") or ()],
        },
    }


def _verdict(value) -> str | None:
    """A verdict the page knows ("real", "uncertain", "fake"); anything else is no verdict."""
    return value if value in VERDICTS else None


def _number(value) -> float | None:
    """A finite number, or None (a results file is input like any other: it may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value) -> str | None:
    """Text for the page, cut to `MAX_TEXT_CHARS`; None stays None."""
    if value is None:
        return None
    text = str(value)
    if len(text) <= MAX_TEXT_CHARS:
        return text
    return f"{text[:MAX_TEXT_CHARS]}… ({len(text) - MAX_TEXT_CHARS:,} more characters not shown)"


def _script_json(value) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, no ``<!--``, whatever the
    strings hold (``<``, ``>`` and ``&`` become JSON escapes, which parse back to the same text)."""
    text = json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return text.translate(_SCRIPT_ESCAPES)


def _finite(value):
    """``value`` with NaN and infinities as None (unknown): JavaScript's JSON has no word for them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _asset(name: str) -> str:
    return (files("deepfake_detector.scan_report") / name).read_text(encoding="utf-8")
