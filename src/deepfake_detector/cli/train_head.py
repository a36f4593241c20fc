"""``deepfake-detector train-head``: the CLIP detector's recipe (frozen features, then a light head)."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Provision the CLIP backbone, extract features per view (resumable shards), fit the head, calibrate "
    "it on the val split and write bundle/ (what the package ships) and model/."
)


def add_parser(subparsers) -> None:
    summary = "train the CLIP detector's heads on cached frozen features (configs/clip-b16-v2.yaml)"
    parser = subparsers.add_parser("train-head", help=summary, description=DESCRIPTION)
    parser.add_argument("--config", "-c", required=True, help="YAML file of HeadTrainingConfig fields")
    parser.add_argument("--output-dir", "-o", help="overrides the config's output_dir")
    parser.add_argument(
        "--manifests", nargs="+", help="override the config's manifests (path,label,source,split[,group])"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from transformers import HfArgumentParser

    from deepfake_detector.training.head import HeadTrainingConfig, run_head_training

    (config,) = HfArgumentParser(HeadTrainingConfig).parse_yaml_file(args.config)
    overrides = {key: value for key in ("output_dir", "manifests") if (value := getattr(args, key))}
    run_head_training(replace(config, **overrides))
    return 0
