"""``deepfake-detector train``: train a real/fake classifier from a YAML config plus overrides.

Runs the same under ``torchrun --nproc_per_node N -m deepfake_detector train ...`` or
``accelerate launch -m deepfake_detector train ...`` (DDP).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from deepfake_detector.settings import add_file_flags, file_flag_values


def add_parser(subparsers) -> None:
    from deepfake_detector.training.config import TrainConfig

    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a real/fake classifier (transformers Trainer)",
        description="Train a real/fake image classifier. Settings come from --config (YAML: output_dir, "
        "data, model, augmentation, faces, class_balance, bf16, training), then the flags below, then --set. "
        "The output folder is a normal Hugging Face model folder (plus checkpoints/ and logs/).",
    )
    parser.add_argument(
        "--config", "-c", metavar="YAML", help="training config (YAML, or JSON), e.g. configs/dev-small.yaml"
    )
    add_file_flags(parser, TrainConfig)  # --data, --output-dir, --faces, --resume...: the fields name them
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. training.learning_rate=1e-4 (value read as YAML; repeatable)",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config as YAML and exit without training",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.training.config import TrainConfig, load_train_config

    config = load_train_config(args.config, args.set, flags=file_flag_values(TrainConfig, args))
    if args.print_config:
        import yaml

        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from deepfake_detector.training.trainer import train

    result = train(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun/accelerate, one summary, from the main process
        print(json.dumps(result.to_dict(), indent=2))
        print(f"deepfake-detector train: model written to {result.output_dir}", file=sys.stderr)
    return 0
