"""``deepfake-detector calibrate``: fit temperature and thresholds on a validation split, store them in
the checkpoint's config, where ``predict`` and ``evaluate`` pick them up."""

from __future__ import annotations

import argparse

from deepfake_detector.cli.common import add_detector_arguments, load_detector
from deepfake_detector.cli.evaluate import add_data_arguments, load_items
from deepfake_detector.settings import positive_int, probability


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="fit temperature scaling and thresholds on a validation split; store them in the checkpoint",
        description="Fit temperature scaling and decision thresholds on held-out labelled images and write "
        "them into the checkpoint's config.json (in place, or into a copy with --output-model). "
        "`evaluate` refuses to report on the split used here.",
    )
    add_detector_arguments(parser)
    add_data_arguments(parser, split="val")
    parser.add_argument(
        "--target-fpr",
        type=probability,
        default=0.05,
        metavar="RATE",
        help="fake threshold: call at most this share of real images fake (%(default)s)",
    )
    parser.add_argument(
        "--target-fnr",
        type=probability,
        metavar="RATE",
        help="real threshold: call at most this share of fake images real; scores between the two "
        "thresholds are 'uncertain' (default: no uncertain band)",
    )
    parser.add_argument(
        "--output-model",
        metavar="DIR",
        help="write a calibrated copy of the checkpoint here instead of updating --model in place",
    )
    parser.add_argument(
        "--batch-size", type=positive_int, default=8, help="images per model call (%(default)s)"
    )
    parser.set_defaults(run=run)


def _bound_note(result) -> str:
    if not result.temperature_at_bound:
        return ""
    if result.calibration.temperature > 1:
        return " (the upper search bound: the scores carry little information about these images)"
    return " (the lower search bound: these images are perfectly separated, or too few)"


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.evaluation.calibration import calibrate, check_calibration_target, save_calibration

    check_calibration_target(args.model, args.output_model)  # before minutes of scoring
    items = load_items(args)
    detector = load_detector(args)
    result = calibrate(
        detector,
        items,
        target_fpr=args.target_fpr,
        target_fnr=args.target_fnr,
        batch_size=args.batch_size,
        data=args.data,
        split=args.split,
    )
    folder = save_calibration(result, args.model, output_folder=args.output_model, revision=args.revision)
    calibration = result.calibration
    print(
        f"temperature {calibration.temperature:.4g}: negative log-likelihood {result.nll_before:.4f} -> "
        f"{result.nll_after:.4f}, ECE {result.ece_before:.4f} -> {result.ece_after:.4f}" + _bound_note(result)
    )
    print(
        f"thresholds: fake >= {calibration.thresholds.fake:.6g} (real-image error rate "
        f"{result.false_positive_rate:.4f} on {result.real} real, target {result.target_fpr}), "
        f"real < {calibration.thresholds.real:.6g}"
        + (
            f" (missed-fake rate {result.false_negative_rate:.4f} on {result.fake} fake, "
            f"target {result.target_fnr})"
            if result.target_fnr is not None
            else " (no uncertain band)"
        )
    )
    failed = len(result.errors)
    print(
        f"fitted on {result.scored} of {result.images} images of {args.data} ({args.split} split)"
        + (
            f"; {failed} could not be read: {result.errors[0][1]}" + (" ..." if failed > 1 else "")
            if failed
            else ""
        )
        + f"; written to {folder / 'config.json'}"
    )
    return 1 if failed else 0
