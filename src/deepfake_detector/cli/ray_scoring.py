"""``deepfake-detector predict ... --ray [ADDRESS]``: the same scoring, on a Ray cluster, into shards.

A flag of ``predict`` rather than a command of its own, because nothing about the rows changes: the
inputs, the model, engine, precision, face and video flags, the rows (error rows included) and the
exit codes are ``predict``'s. Only where the work runs (`score_with_ray`) and where the rows go (a
folder of Parquet or JSON Lines shards, resumed by every rerun) differ.
"""

from __future__ import annotations

import argparse
import re
import sys

from deepfake_detector.io.shards import SHARD_FORMATS
from deepfake_detector.settings import add_flags, build_from_flags

# host:port, [v6]:port or ray://host:port; "auto" and "local" are Ray's own words.
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d+$")

# Fields of `RayScoringConfig` that take predict's own flags: --batch-size, --format and --quiet.
_PREDICT_FLAGS = {
    "format": lambda args: args.format or "parquet",
    "verbose": lambda args: not args.quiet,
}


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    """--ray [ADDRESS] and the other flags of `RayScoringConfig`'s fields."""
    from deepfake_detector.inference.ray_scoring import RayScoringConfig

    group = parser.add_argument_group(
        "Ray: score on a cluster, into a folder of shards (pip install 'deepfake-detector[ray]')",
        description="--ray scores with a pool of Ray actors, each holding one detector. --output is then a "
        "folder of shards (--format parquet, the default, or jsonl), and a rerun skips the inputs its "
        "shards hold. Put --ray after the inputs, or write --ray=ADDRESS",
    )
    add_flags(group, RayScoringConfig, skip=("batch_size", *_PREDICT_FLAGS))


def ray_scoring_config(args: argparse.Namespace):
    """The `RayScoringConfig` the flags describe, as given (``batch_size`` from ``--batch-size``)."""
    from deepfake_detector.inference.ray_scoring import RayScoringConfig

    readers = {"address": lambda args: args.ray or None, **_PREDICT_FLAGS}
    return build_from_flags(RayScoringConfig, args, readers=readers)


def check_ray_arguments(args: argparse.Namespace) -> None:
    """Refuses flag combinations that mean nothing with ``--ray``, naming the fix."""
    prefix = "deepfake-detector predict: error:"
    if args.ray is None:
        if args.format == "parquet":
            raise SystemExit(f"{prefix} --format parquet writes shards, which needs --ray")
        return
    if args.ray and args.ray not in ("auto", "local") and not _ADDRESS.match(args.ray):
        raise SystemExit(
            f"{prefix} --ray took {args.ray!r} as the cluster's address; an address is HOST:PORT, "
            "ray://HOST:PORT, auto or local. Put --ray after the inputs, or write --ray=ADDRESS"
        )
    if not args.output:
        raise SystemExit(f"{prefix} --ray needs --output FOLDER for the shards")
    if args.format not in (None, *SHARD_FORMATS):
        raise SystemExit(f"{prefix} --ray writes {' or '.join(SHARD_FORMATS)} shards, not {args.format}")
    if args.timeline:
        raise SystemExit(f"{prefix} --timeline draws plots locally; it can't be combined with --ray")


def run_ray(args: argparse.Namespace, inputs: list[str]) -> int:
    """Scores ``inputs`` with `score_with_ray` as the flags say; prints predict's summary line."""
    from tqdm import tqdm

    from deepfake_detector.cli.common import detector_config, quiet_libraries
    from deepfake_detector.cli.media import media_options, print_summary
    from deepfake_detector.inference.ray_scoring import score_with_ray
    from deepfake_detector.io.inputs import ScanStats

    quiet_libraries()
    spec = detector_config(args)  # as given, face flags included: every actor loads its detector from it
    options = media_options(args)
    config = ray_scoring_config(args)
    stats = ScanStats()
    with tqdm(desc="scoring", unit="img", file=sys.stderr, disable=True if args.quiet else None) as progress:
        result = score_with_ray(
            inputs,
            args.output,
            spec,
            config,
            recursive=args.recursive,
            stats=stats,
            on_rows=progress.update,
            **options,  # preflight: the same loading errors as local predict, before any actor starts
        )
    if not args.quiet:
        print_summary(result.scored, result.failed, result.skipped, stats, args.output)
        print(
            f"deepfake-detector: {len(result.shards)} new shards from {result.num_actors} Ray actors in "
            f"{result.elapsed_s:.1f} s",
            file=sys.stderr,
        )
    return 1 if result.failed else 0
