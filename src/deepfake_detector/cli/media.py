"""What the commands that score files share: the video flags and what they build, where a timeline goes,
and the run's summary line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from deepfake_detector.aggregation import FRAME_STRATEGIES
from deepfake_detector.settings import positive_int
from deepfake_detector.video.decode import DEFAULT_NUM_FRAMES

TIMELINE_SUFFIXES = (".png", ".svg", ".pdf")


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {value}")
    return value


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


def print_summary(count: int, failed: int, resumed: int, stats, output: str | None) -> None:
    """The run's last line on stderr: scored, failed, skipped as done, passed over, where the rows are."""
    parts = [f"scored {count - failed} of {count} inputs"]
    if failed:
        parts.append(f"{failed} failed (see their error rows)")
    if resumed:
        parts.append(f"{resumed} already in {output} were skipped")
    if stats.skipped_non_images:
        examples = ", ".join(stats.skipped_examples)
        parts.append(
            f"{stats.skipped_non_images} non-image files in folders were not scored (e.g. {examples})"
        )
    print(
        "deepfake-detector: " + "; ".join(parts) + (f"; results in {output}" if output else ""),
        file=sys.stderr,
    )
