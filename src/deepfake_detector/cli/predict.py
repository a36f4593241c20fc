"""``deepfake-detector predict``: score files, folders and globs; write one row per input.

With ``--ray`` the same rows are scored on a Ray cluster into a folder of shards
(`deepfake_detector.cli.ray_scoring`, which says why that is a flag here and not a command of its own).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from deepfake_detector.cli.common import add_detector_arguments, load_detector
from deepfake_detector.cli.media import add_media_arguments, media_options, print_summary, timeline_path
from deepfake_detector.cli.ray_scoring import SHARD_FORMATS, add_ray_arguments, check_ray_arguments
from deepfake_detector.cli.report import add_report_arguments, check_report_path
from deepfake_detector.io.writers import (
    FORMATS,
    RESUMABLE_FORMATS,
    ResultWriter,
    infer_format,
    load_done_sources,
)
from deepfake_detector.settings import positive_int


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="score images: is each one fake, and how sure",
        description="Score images. Each input gives one row; an input that can't be read gives an error "
        "row and the rest are still scored. Exit code 1 when any input failed.",
    )
    parser.add_argument(
        "paths",
        nargs="*",
        metavar="PATH",
        help="image or video files, folders or glob patterns (with --ray also URIs: s3://bucket/prefix/)",
    )
    parser.add_argument(
        "--manifest",
        action="append",
        default=[],
        metavar="FILE",
        help="also score the inputs a manifest lists: a .csv or .parquet file with a 'path' column, or a "
        "text file with one input per line; relative paths are relative to the manifest (repeatable)",
    )
    add_detector_arguments(parser)
    add_media_arguments(parser)
    parser.add_argument(
        "--format",
        choices=(*FORMATS, *(fmt for fmt in SHARD_FORMATS if fmt not in FORMATS)),
        help="output format; default: from the --output suffix (.json, .jsonl, .csv), else table; with "
        "--ray: parquet (default) or jsonl shards",
    )
    parser.add_argument(
        "--output", "-o", metavar="FILE", help="write results here instead of stdout (with --ray: a folder)"
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="images per model call (%(default)s)"
    )
    parser.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    parser.add_argument(
        "--resume",
        action="store_true",
        help=f"skip inputs already in --output and append the rest ({'/'.join(RESUMABLE_FORMATS)} only)",
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary on stderr")
    add_report_arguments(parser, out_flag="--report")
    add_ray_arguments(parser)
    parser.set_defaults(run=run)


def _inputs(args: argparse.Namespace) -> list[str]:
    """The PATH arguments, then the entries of each --manifest."""
    from deepfake_detector.io.inputs import load_manifest

    inputs = list(args.paths)
    for manifest in args.manifest:
        inputs += load_manifest(manifest)
    if not inputs:
        raise SystemExit("deepfake-detector predict: error: name at least one PATH, or a --manifest FILE")
    return inputs


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from deepfake_detector.io.inputs import ScanStats, expand_inputs
    from deepfake_detector.results import VideoPrediction

    check_ray_arguments(args)
    named = _inputs(args)
    if args.report:
        check_report_path(args.report, "predict")
    if args.ray is not None:
        from deepfake_detector.cli.common import detector_config
        from deepfake_detector.cli.ray_scoring import run_ray
        from deepfake_detector.scan_report import RunSettings

        code = run_ray(args, named)
        if args.report:
            # The driver holds no detector: the flags' thresholds when given, else the checkpoint's.
            thresholds = detector_config(args).thresholds
            given = None if thresholds is None else RunSettings(thresholds, "this run's --threshold flags")
            code = code if _write_report(args, None, given) else 1
        return code
    fmt = args.format or infer_format(args.output)
    done: set[str] = set()
    if args.resume and not args.output:
        raise SystemExit("deepfake-detector predict: error: --resume needs --output FILE to resume from")
    detector = load_detector(args)  # face flags included: the detector merges them over the checkpoint's
    options = media_options(args)
    summary = detector.face_options is not None  # face mode: rows carry face counts
    if args.resume:
        try:
            done = load_done_sources(args.output, fmt, summary=summary)
        except ValueError as error:
            raise SystemExit(f"deepfake-detector predict: error: {error}") from None

    stats = ScanStats()
    inputs = (
        item
        for item in expand_inputs(named, recursive=args.recursive, stats=stats, videos=True)
        if (item if isinstance(item, str) else item.source) not in done
    )
    appending = bool(args.resume and done)
    failed = 0
    # This run's rows, for the report; a JSON Lines output holds them exactly, so memory stays flat.
    rows: list[dict] | None = [] if args.report and not (args.output and fmt == "jsonl") else None
    with contextlib.ExitStack() as stack:
        stream = (
            stack.enter_context(open(args.output, "a" if appending else "w", encoding="utf-8", newline=""))
            if args.output
            else sys.stdout
        )
        writer = ResultWriter(stream, fmt, write_header=not appending, summary=summary)
        progress = stack.enter_context(
            tqdm(desc="scoring", unit="img", file=sys.stderr, disable=True if args.quiet else None)
        )
        try:
            timelines: set[str] = set()
            predictions = detector.iter_predict_media(inputs, batch_size=args.batch_size, **options)
            for prediction in predictions:
                writer.write(prediction)
                if rows is not None:
                    rows.append(prediction.to_dict())
                failed += prediction.error is not None
                if args.timeline and isinstance(prediction, VideoPrediction) and prediction.ok:
                    failed += not _write_timeline(args, prediction, timelines)
                progress.update()
        finally:
            writer.close()
    if not args.quiet:
        print_summary(writer.count, failed, len(done), stats, args.output)
    if args.report:  # only now: every row is written and the output closed, whatever the report does
        from deepfake_detector.scan_report import RunSettings

        failed += not _write_report(args, rows, RunSettings.from_detector(detector), resumed=done)
    return 1 if failed else 0


def _write_report(args: argparse.Namespace, rows: list[dict] | None, settings, *, resumed=()) -> bool:
    """Writes ``--report`` from this run's rows (and, with ``--resume``, the earlier rows in --output;
    with ``--ray``, every row of the shard folder); says why on stderr and returns False when it can't.

    Args:
        args: The parsed flags.
        rows: This run's rows; None to read every row from --output (a JSON Lines file, resumed rows
            included, or Ray's shard folder).
        settings: How the rows were scored (`RunSettings`), as far as this run knows.
        resumed: Sources already in --output before this run.
    """
    import time

    from deepfake_detector.cli.report import print_report_line
    from deepfake_detector.scan_report import load_result_rows, render_report

    start = time.perf_counter()
    try:
        if rows is None:  # every row is in --output, as written
            rows = load_result_rows(args.output, allow_empty=True)
        elif resumed:  # the rows of the earlier runs, as --output holds them, then this run's
            earlier = load_result_rows(args.output, allow_empty=True)
            rows = [row for row in earlier if str(row["source"]) in resumed] + rows
        report = render_report(
            rows,
            args.report,
            settings=settings,
            results_path=args.output,
            thumbnail_px=args.thumbnail_px,
            thumbnails=not args.no_thumbnails,
            workers=args.report_workers,
        )
    except Exception as error:  # the rows are written: a report that fails must not hide that
        where = f"; the rows are in {args.output}" if args.output else ""
        print(
            f"deepfake-detector predict: cannot write the report {args.report} ({type(error).__name__}: "
            f"{error}){where}",
            file=sys.stderr,
        )
        return False
    if not args.quiet:
        print_report_line(report, time.perf_counter() - start)
    return True


def _write_timeline(args: argparse.Namespace, prediction, used: set[str]) -> bool:
    from deepfake_detector.video.timeline import render_timeline

    path = timeline_path(args.timeline, str(prediction.source), args.paths, used)
    try:
        render_timeline(prediction, path)  # with the threshold that decided the clip
    except (OSError, ValueError) as error:
        print(
            f"deepfake-detector predict: {prediction.source}: cannot write timeline {path}: {error}",
            file=sys.stderr,
        )
        return False
    if not args.quiet:
        print(f"deepfake-detector: timeline of {prediction.source} in {path}", file=sys.stderr)
    return True
