"""The loading flags of every command that loads a model, generated from `DetectorConfig` (the face flags
among them), and the one place they become a `DetectorConfig` and a `Detector`."""

from __future__ import annotations

import argparse

from deepfake_detector.settings import add_flags, build_from_flags, probability


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


def add_face_arguments(parser: argparse.ArgumentParser) -> None:
    """--faces/--no-faces, --face-detector, --face-margin and --face-strategy, made from `FaceOverrides`.

    Their defaults are None, so that `face_overrides` can tell a flag given from one left out: the
    library (`resolve_face_options`) lets a flag given win, and fills the rest from the checkpoint's
    face settings, then its own defaults.
    """
    from deepfake_detector.faces.crops import FaceOverrides

    group = parser.add_argument_group("faces (model loading: the same on every command that loads a model)")
    add_flags(group, FaceOverrides)


def face_overrides(args: argparse.Namespace):
    """The `FaceOverrides` the face flags describe: only what was given, for the library to merge over
    the checkpoint's face settings."""
    from deepfake_detector.faces.crops import FaceOverrides

    return build_from_flags(FaceOverrides, args)


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
    """Hide transformers' load-time progress bars and backend notices; our own errors say what matters.

    Without importing transformers (which imports PyTorch, seconds a detector running an ONNX export
    never needs): transformers reads its verbosity from the environment and its progress-bar switch
    from huggingface_hub's when it is first imported; if it already is, it is told directly.
    """
    import os
    import sys

    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    else:
        os.environ["TRANSFORMERS_VERBOSITY"] = "error"


def load_detector(args: argparse.Namespace):
    """Builds the `Detector` the loading flags describe."""
    from deepfake_detector.inference.detector import Detector

    quiet_libraries()
    return Detector.from_config(detector_config(args))
