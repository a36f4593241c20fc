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

from deepfake_detector.cli.common import non_negative_int, positive_int
from deepfake_detector.io.shards import SHARD_FORMATS

# host:port, [v6]:port or ray://host:port; "auto" and "local" are Ray's own words.
_ADDRESS = re.compile(r"^(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d+$")


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "Ray: score on a cluster, into a folder of shards (pip install 'deepfake-detector[ray]')"
    )
    group.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="score with a pool of Ray actors, each holding one detector: without ADDRESS on the cluster "
        "`ray start` started on this machine (or RAY_ADDRESS), else on a local one; or on the cluster at "
        "HOST:6379 (auto, ray://HOST:10001). --output is then a folder of shards (--format parquet, the "
        "default, or jsonl), and a rerun skips the inputs its shards hold. Put --ray after the inputs",
    )
    group.add_argument(
        "--ray-actors",
        type=positive_int,
        metavar="N",
        help="actors (default: as many as the cluster's CPUs, or GPUs with --ray-gpus-per-actor, allow)",
    )
    group.add_argument(
        "--ray-cpus-per-actor",
        type=_positive_float,
        default=1.0,
        metavar="CPUS",
        help="CPUs reserved per actor, also its PyTorch threads (%(default)s)",
    )
    group.add_argument(
        "--ray-gpus-per-actor",
        type=_non_negative_float,
        default=0.0,
        metavar="GPUS",
        help="GPUs reserved per actor (0.5: two actors per GPU; default %(default)s: score on CPUs)",
    )
    group.add_argument(
        "--ray-retries",
        type=non_negative_int,
        default=3,
        metavar="N",
        help="times Ray restarts an actor that died and retries its batch (%(default)s)",
    )
    group.add_argument(
        "--rows-per-shard",
        type=positive_int,
        default=1024,
        metavar="N",
        help="rows per output shard (%(default)s)",
    )


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
    from deepfake_detector.inference.ray_scoring import RayScoringConfig, score_with_ray
    from deepfake_detector.io.inputs import ScanStats

    quiet_libraries()
    spec = detector_config(args)  # as given, face flags included: every actor loads its detector from it
    options = media_options(args)
    config = RayScoringConfig(
        address=args.ray or None,
        num_actors=args.ray_actors,
        num_cpus_per_actor=args.ray_cpus_per_actor,
        num_gpus_per_actor=args.ray_gpus_per_actor,
        batch_size=args.batch_size,
        rows_per_shard=args.rows_per_shard,
        format=args.format or "parquet",
        max_restarts=args.ray_retries,
        max_task_retries=args.ray_retries,
        verbose=not args.quiet,
    )
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
