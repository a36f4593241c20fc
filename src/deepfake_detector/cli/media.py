"""Flags for face mode and video input, shared by the commands that score files, and what they build."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from deepfake_detector.aggregation import FACE_STRATEGIES, FRAME_STRATEGIES
from deepfake_detector.cli.common import positive_int
from deepfake_detector.faces.backends import DEFAULT_FACE_DETECTOR, FACE_DETECTORS
from deepfake_detector.faces.boxes import DEFAULT_MARGIN_RATIO
from deepfake_detector.video.decode import DEFAULT_NUM_FRAMES

TIMELINE_SUFFIXES = (".png", ".svg", ".pdf")


def _margin(text: str) -> float:
    value = float(text)
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be at least 1.0 (the face box itself), got {value}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return value


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


def add_media_arguments(parser: argparse.ArgumentParser) -> None:
    """Video sampling and aggregation, and --timeline (the face flags are loading flags:
    `deepfake_detector.cli.common.add_detector_arguments`)."""
    video = parser.add_argument_group("video (mp4, m4v, mov, mkv, webm, avi)")
    sampling = video.add_mutually_exclusive_group()
    sampling.add_argument(
        "--frames",
        type=positive_int,
        default=DEFAULT_NUM_FRAMES,
        metavar="N",
        help="frames sampled per video, evenly spaced in time (%(default)s)",
    )
    sampling.add_argument(
        "--every", type=_seconds, metavar="SECONDS", help="sample one frame every SECONDS instead of --frames"
    )
    video.add_argument(
        "--video-strategy",
        choices=FRAME_STRATEGIES,
        default="mean",
        help="how frame scores become the video's: mean (default), median, top_k_mean, confident "
        "(the DFDC winner's rule)",
    )
    video.add_argument(
        "--top-k",
        type=positive_int,
        default=8,
        metavar="K",
        help="frames averaged by top_k_mean (%(default)s)",
    )
    video.add_argument(
        "--timeline",
        metavar="PATH",
        help="plot each video's fake score over time, with the threshold: a .png/.svg/.pdf file when the "
        "command names one video file, else a folder with one <video name>.png per video (a file name "
        "becomes a folder of that name without its suffix)",
    )


def media_options(args: argparse.Namespace) -> dict:
    """The keyword arguments of `Detector.iter_predict_media` that the video flags describe (face mode
    travels in the `DetectorConfig`)."""
    from deepfake_detector.aggregation import FrameAggregation
    from deepfake_detector.video.decode import FrameSampling

    return {
        "sampling": FrameSampling(num_frames=args.frames, every_s=args.every),
        "aggregation": FrameAggregation(strategy=args.video_strategy, k=args.top_k),
    }


def timeline_path(option: str, video: str, paths: list[str], used: set[str]) -> Path:
    """Where the timeline of ``video`` goes: ``option`` itself when it names a file and the command
    named exactly one video, else ``<option folder>/<video name>.png`` (numbered when names repeat)."""
    from deepfake_detector.io.inputs import is_video_path

    is_file = Path(option).suffix.lower() in TIMELINE_SUFFIXES
    if is_file and len(paths) == 1 and is_video_path(paths[0]) and os.path.isfile(paths[0]):
        return Path(option)
    folder = Path(option).with_suffix("") if is_file else Path(option)
    folder.mkdir(parents=True, exist_ok=True)
    stem, candidate, number = Path(video).stem, Path(video).stem, 1
    while candidate in used:
        number += 1
        candidate = f"{stem}-{number}"
    used.add(candidate)
    return folder / f"{candidate}.png"
