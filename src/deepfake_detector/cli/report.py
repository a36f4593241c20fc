"""``deepfake-detector report``: one self-contained HTML page of results that already exist.

Reads what ``predict`` wrote (a JSON Lines, JSON or CSV file, or the shard folder of ``predict
--ray``) and writes `deepfake_detector.scan_report.render_report`'s page; nothing is scored again.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from deepfake_detector.settings import non_negative_int, positive_int

DESCRIPTION = (
    "Write one self-contained HTML page (inline style and script, thumbnails embedded; it opens offline) "
    "of results that predict already wrote: counts per verdict, a histogram of fake scores with the "
    "thresholds (each domain's, for a model with domains), the model that scored them, provenance "
    "findings, and one card per input with its thumbnail, faces, score, evidence, error or per-frame "
    "timeline, sorted and filtered in the page. "
    "Thumbnails are read from the files the rows name; nothing is scored again."
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write an HTML page of results that predict wrote", description=DESCRIPTION
    )
    parser.add_argument(
        "results",
        metavar="RESULTS",
        help="what predict wrote: a .jsonl, .json or .csv file, or the --output folder of predict --ray",
    )
    add_report_arguments(parser, out_flag="--out")
    parser.add_argument(
        "--explanations",
        metavar="PATH",
        help="heatmaps from explain: its --out folder (matched by file name), or its --format jsonl rows "
        "(which name each overlay)",
    )
    parser.add_argument("--title", help="the page's title (default: 'Scan report: RESULTS')")
    parser.add_argument("--quiet", "-q", action="store_true", help="no summary line on stderr")
    parser.set_defaults(run=run)


def add_report_arguments(parser: argparse.ArgumentParser, *, out_flag: str) -> None:
    """The report's flags: ``out_flag`` (``--out`` here, ``--report`` on predict) and the pictures'."""
    group = parser.add_argument_group("scan report")
    group.add_argument(
        out_flag,
        dest="report",
        required=out_flag == "--out",
        metavar="HTML",
        help="write the scan report here: one self-contained HTML page"
        + (" of this run's rows, once they are all written" if out_flag != "--out" else ""),
    )
    group.add_argument(
        "--thumbnail-px",
        type=positive_int,
        default=160,
        metavar="PX",
        help="longer side of the report's thumbnails (%(default)s)",
    )
    group.add_argument(
        "--no-thumbnails",
        action="store_true",
        help="leave the pictures out of the report (a much smaller page)",
    )
    group.add_argument(
        "--report-workers",
        type=non_negative_int,
        metavar="N",
        help="threads that read the report's thumbnails (default: one per CPU, at most 8)",
    )


def check_report_path(path: str, command: str) -> None:
    """Refuses a report path that can't be written, before any work is done."""
    target = Path(path)
    if target.is_dir():
        raise SystemExit(f"deepfake-detector {command}: error: {path} is a folder; name the .html file")
    if not target.parent.is_dir():
        raise SystemExit(
            f"deepfake-detector {command}: error: the folder of {path} does not exist; create it first"
        )


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.scan_report import load_overlay_paths, load_result_rows, render_report

    check_report_path(args.report, "report")
    start = time.perf_counter()
    rows = load_result_rows(args.results)
    overlays, notes = {}, []
    if args.explanations:
        overlays, notes = load_overlay_paths(args.explanations, [str(row.get("source")) for row in rows])
    report = render_report(
        rows,
        args.report,
        results_path=args.results,
        overlays=overlays,
        thumbnail_px=args.thumbnail_px,
        thumbnails=not args.no_thumbnails,
        workers=args.report_workers,
        title=args.title,
        notes=tuple(notes),
    )
    if not args.quiet:
        print_report_line(report, time.perf_counter() - start)
    return 0


def print_report_line(report, elapsed_s: float) -> None:
    """One line on stderr: what the report holds, where, how big, how long it took."""
    mib = report.size_bytes / 2**20
    size = f"{mib:.1f} MiB" if mib >= 1 else f"{report.size_bytes // 1024} kB"
    parts = [f"report of {report.rows} rows in {report.path} ({size}, {elapsed_s:.1f} s)"]
    if report.rows - report.pictured:
        parts.append(f"{report.rows - report.pictured} shown without a picture (each card says why)")
    if report.heatmaps:
        parts.append(f"{report.heatmaps} with a heatmap")
    parts += report.notes
    print("deepfake-detector: " + "; ".join(parts), file=sys.stderr)
