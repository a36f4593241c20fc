"""``deepfake-detector train-head``: the CLIP detector's recipe (frozen features, then a light head)."""

from __future__ import annotations

import argparse

from deepfake_detector.settings import add_file_flags, file_flag_values

DESCRIPTION = (
    "Provision the CLIP backbone, extract features per view (resumable shards), fit the head, calibrate "
    "it on the val split and write bundle/ (what the package ships) and model/."
)


def add_parser(subparsers) -> None:
    from deepfake_detector.training.head import HeadTrainingConfig

    summary = "train the CLIP detector's heads on cached frozen features (configs/clip-b16-v2.yaml)"
    parser = subparsers.add_parser("train-head", help=summary, description=DESCRIPTION)
    parser.add_argument(
        "--config", "-c", required=True, help="YAML (or JSON) file of HeadTrainingConfig fields"
    )
    add_file_flags(parser, HeadTrainingConfig)  # --output-dir, --manifests: the fields name them
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.settings import load_config
    from deepfake_detector.training.config import ConfigError
    from deepfake_detector.training.head import HeadTrainingConfig, run_head_training

    flags = file_flag_values(HeadTrainingConfig, args)
    run_head_training(load_config(HeadTrainingConfig, args.config, flags=flags, error=ConfigError))
    return 0
