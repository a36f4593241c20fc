"""The loading flags of every command that loads a model, generated from `DetectorConfig` (the face flags
among them), and the one place they become a `DetectorConfig` and a `Detector`."""

from __future__ import annotations

import argparse

from deepfake_detector.aggregation import FACE_STRATEGIES
from deepfake_detector.faces.backends import DEFAULT_FACE_DETECTOR, FACE_DETECTORS
from deepfake_detector.faces.boxes import DEFAULT_MARGIN_RATIO
from deepfake_detector.settings import add_flags, build_from_flags, probability


def _margin(text: str) -> float:
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1.0 (the face box itself), got {value}")
    return value


def _add_jpeg_draft(group, item) -> None:
    group.add_argument(
        "--jpeg-draft",
        choices=("auto", "on", "off"),
        default="auto",
        help=item.metadata["help"].replace("None (auto)", "auto") + " (default: %(default)s)",
    )


def _add_thresholds(group, item) -> None:
    band = group.add_mutually_exclusive_group()
    band.add_argument(
        "--threshold",
        type=probability,
        metavar="T",
        help="call an image fake when its fake score >= T (default: the checkpoint's calibrated "
        "threshold, else 0.5)",
    )
    band.add_argument(
        "--uncertain-band",
        type=probability,
        nargs=2,
        metavar=("LOW", "HIGH"),
        help="real below LOW, fake at or above HIGH, 'uncertain' in between",
    )


FACES_DEFAULT_HELP = (
    "default: on for a checkpoint trained on face crops (its config.json says so, with the detector and "
    "margin it was trained with), else off"
)


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    """--faces/--no-faces, --face-detector, --face-margin and --face-strategy.

    Their defaults are None, so that `face_overrides` can tell a flag given from one left out: the
    library (`resolve_face_options`) lets a flag given win, and fills the rest from the checkpoint's
    face settings, then its own defaults.
    """
    faces = parser.add_argument_group("faces (model loading: the same on every command that loads a model)")
    faces.add_argument(
        "--faces",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="find the faces in images and video frames and score (or explain) a crop of each; an "
        "image's score is its most-fake face (--face-strategy); an image without a face is handled whole "
        "and flagged no_face; " + FACES_DEFAULT_HELP,
    )
    faces.add_argument(
        "--face-detector",
        choices=tuple(FACE_DETECTORS),
        help=f"face detector backend (the checkpoint's, else {DEFAULT_FACE_DETECTOR}; docs/faces.md "
        "compares them)",
    )
    faces.add_argument(
        "--face-margin",
        type=_margin,
        metavar="RATIO",
        help="side of the square crop over the face box's longer side (the checkpoint's, else "
        f"{DEFAULT_MARGIN_RATIO})",
    )
    faces.add_argument(
        "--face-strategy",
        choices=FACE_STRATEGIES,
        help="how the faces of one image or frame combine: max (most-fake face, default), mean, largest",
    )


def face_overrides(args: argparse.Namespace):
    """The `FaceOverrides` the face flags describe: only what was given, for the library to merge over
    the checkpoint's face settings."""
    from deepfake_detector.faces.crops import FaceOverrides

    return FaceOverrides(
        enabled=args.faces,
        detector=args.face_detector,
        margin_ratio=args.face_margin,
        strategy=args.face_strategy,
    )


def add_detector_arguments(parser: argparse.ArgumentParser, *, skip: tuple[str, ...] = ()) -> None:
    """Every loading flag, one or more per field of `DetectorConfig`, so that each command that loads a
    model takes the same ones and a new option reaches every command at once.

    Args:
        parser: The command's parser.
        skip: Fields the command declares itself (``serve`` has its own ``--max-pixels`` limit); they
            are then taken from the same-named flag.
    """
    from deepfake_detector.inference.config import DetectorConfig

    group = parser.add_argument_group("model loading (the same on every command that loads a model)")
    # The fields whose flags are not one flag of the field's own type; the faces get a group of their own.
    custom = {
        "jpeg_draft": _add_jpeg_draft,
        "thresholds": _add_thresholds,
        "faces": lambda group, item: add_face_arguments(parser),
    }
    add_flags(group, DetectorConfig, skip=skip, custom=custom)


def _thresholds(args: argparse.Namespace):
    from deepfake_detector.scoring import Thresholds

    if args.threshold is not None:
        return Thresholds.single(args.threshold)
    if args.uncertain_band is not None:
        low, high = args.uncertain_band
        if low > high:
            raise SystemExit(
                f"deepfake-detector {args.command}: error: --uncertain-band LOW ({low}) exceeds HIGH ({high})"
            )
        return Thresholds(real=low, fake=high)
    return None


def detector_config(args: argparse.Namespace):
    """The `DetectorConfig` the loading flags describe, as given: nothing is decided here."""
    from deepfake_detector.inference.config import DetectorConfig

    readers = {
        "jpeg_draft": lambda args: {"on": True, "off": False}.get(args.jpeg_draft),
        "thresholds": _thresholds,
        "faces": face_overrides,
    }
    return build_from_flags(DetectorConfig, args, readers=readers)


def quiet_libraries() -> None:
    """Hide transformers' load-time progress bars and backend notices; our own errors say what matters."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def load_detector(args: argparse.Namespace):
    """Builds the `Detector` the loading flags describe."""
    from deepfake_detector.inference.detector import Detector

    quiet_libraries()
    return Detector.from_config(detector_config(args))
