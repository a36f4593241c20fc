"""``deepfake-detector evaluate``: score a labelled split and write metrics, plots and a report."""

from __future__ import annotations

import argparse
import math
import sys

from deepfake_detector.cli.common import add_detector_arguments, load_detector
from deepfake_detector.settings import positive_int

DEFAULT_PERTURBATIONS_HELP = "jpeg:90,70,50,30 blur:1,2 downscale:0.5,0.25"


def add_data_arguments(parser: argparse.ArgumentParser, *, split: str | None) -> None:
    """The flags that say which labelled images to read (shared with ``calibrate``)."""
    group = parser.add_argument_group("data")
    group.add_argument(
        "--data",
        required=True,
        help="image folder with one sub-folder per class, CSV manifest (path,label[,split,source,group]), "
        "or a `datasets` dataset (hub name, save_to_disk folder, .parquet/.arrow/.json file)",
    )
    group.add_argument(
        "--split",
        default=split,
        help="which split to use: train, val, test, or 'all' ("
        + (
            f"default: {split}"
            if split is not None
            else "default: test when the data has splits of its own, else every row; a split named for "
            "data without one is computed here, with --val-fraction/--test-fraction, and the report says so"
        )
        + ")",
    )
    group.add_argument("--path-column", default="path", help="column with the image path (%(default)s)")
    group.add_argument("--label-column", default="label", help="column with the class name (%(default)s)")
    group.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of images in 'val' when the data has no split of its own (%(default)s)",
    )
    group.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of images in 'test' when the data has no split of its own (%(default)s)",
    )
    group.add_argument("--split-seed", type=int, default=0, help="seed of the computed split (%(default)s)")


def select_items(args: argparse.Namespace):
    """The `SplitSelection` evaluate reports on, as the data flags describe it."""
    from deepfake_detector.data.labelled import select_evaluation_split

    return select_evaluation_split(
        args.data,
        split=args.split,
        path_column=args.path_column,
        label_column=args.label_column,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.split_seed,
    )


def load_items(args: argparse.Namespace):
    """The labelled images the data flags describe."""
    from deepfake_detector.data.labelled import load_labelled_images

    return load_labelled_images(
        args.data,
        split=None if args.split == "all" else args.split,
        path_column=args.path_column,
        label_column=args.label_column,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        seed=args.split_seed,
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="measure a model on labelled images: metrics, plots, report, robustness sweep",
        description="Score a labelled split and write predictions.csv (one row per image), metrics.json, "
        "report.md and plots into --out. Decisions use the checkpoint's own threshold (set it with "
        "`calibrate` on a validation split). Exit code 1 when any image failed (see its error row).",
    )
    add_detector_arguments(parser)  # face flags too: video files in the data are scored per video
    add_data_arguments(parser, split=None)
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the report (created)")
    parser.add_argument(
        "--perturb",
        nargs="+",
        default=[],
        metavar="KIND:LEVELS",
        help=f"robustness sweep: re-score under each perturbation level, e.g. {DEFAULT_PERTURBATIONS_HELP}",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="images per model call (%(default)s)"
    )
    parser.add_argument(
        "--bootstrap",
        type=int,
        default=1000,
        metavar="N",
        help="bootstrap resamples for 95%% intervals; 0 skips them (%(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (%(default)s)")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bars or summary")
    parser.set_defaults(run=run)


def _format(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.4f}"


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.evaluation.evaluate import evaluate, parse_perturbations

    if args.bootstrap < 0:
        raise SystemExit(
            f"deepfake-detector evaluate: error: --bootstrap must be 0 or more, got {args.bootstrap}"
        )
    try:
        perturbations = parse_perturbations(args.perturb)
    except ValueError as error:
        raise SystemExit(f"deepfake-detector evaluate: error: {error}") from None
    selection = select_items(args)
    if selection.note:  # loudly, before minutes of scoring: the report is not on what one may assume
        print(f"deepfake-detector evaluate: note: {selection.note}", file=sys.stderr)
    detector = load_detector(args)
    report = evaluate(
        detector,
        selection.images,
        args.out,
        perturbations=perturbations,
        batch_size=args.batch_size,
        n_resamples=args.bootstrap,
        seed=args.seed,
        data=args.data,
        split=selection.split,
        progress=not args.quiet,
        split_note=selection.note,
    )
    if not args.quiet:
        if (options := detector.face_options) is not None:
            print(
                f"face crops: {options.detector}, margin {options.margin_ratio:g}, faces combined by "
                f"{options.aggregation.strategy}"
            )
        metrics = report.overall
        print(report.classification_report.rstrip("\n"))
        print()
        print(
            f"ROC-AUC {_format(metrics.roc_auc)}  AP {_format(metrics.average_precision)}  "
            f"EER {_format(metrics.eer)}  balanced accuracy {_format(metrics.balanced_accuracy)}"
        )
        print(
            f"TPR at 1% FPR {_format(metrics.tpr_at_1pct_fpr)}  "
            f"TPR at 5% FPR {_format(metrics.tpr_at_5pct_fpr)}  "
            f"real-image error rate {_format(metrics.false_positive_rate)}  "
            f"(threshold {report.threshold:.4g})"
        )
        print(f"ECE {_format(metrics.ece)}  Brier {_format(metrics.brier)}")
        for row in report.robustness:
            print(f"{row.perturbation:<16} ROC-AUC {_format(row.roc_auc)}  accuracy {_format(row.accuracy)}")
        print(
            f"scored {report.scored} of {report.images} images"
            + (f", {report.failed} failed (see predictions.csv)" if report.failed else "")
            + f"; report in {args.out}/report.md"
        )
    return 1 if report.failed else 0
