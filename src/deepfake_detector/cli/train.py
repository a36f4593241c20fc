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


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train or fine-tune a real/fake classifier (transformers Trainer)",
        description="Train a real/fake image classifier. Settings come from --config (YAML: output_dir, "
        "data, model, augmentation, faces, class_balance, bf16, training), then the flags below, then --set. "
        "The output folder is a normal Hugging Face model folder (plus checkpoints/ and logs/).",
    )
    parser.add_argument("--config", "-c", metavar="YAML", help="training config, e.g. configs/dev-small.yaml")
    parser.add_argument("--data", help="image folder, CSV manifest or `datasets` name/file (sets data.data)")
    parser.add_argument("--output-dir", "-o", metavar="FOLDER", help="where the model goes (sets output_dir)")
    parser.add_argument("--path-column", help="image path column of a CSV or dataset (sets data.path_column)")
    parser.add_argument("--label-column", help="label column of a CSV or dataset (sets data.label_column)")
    parser.add_argument(
        "--faces",
        action="store_true",
        default=None,
        help="train and validate on face crops, cut as `predict --faces` cuts them (sets faces.enabled; "
        "detector and margin: faces.detector, faces.margin_ratio); the trained model then predicts in "
        "face mode by default",
    )
    parser.add_argument(
        "--resume",
        nargs="?",
        const=True,
        metavar="CHECKPOINT",
        help="continue from the last checkpoint in OUTPUT/checkpoints, or from the CHECKPOINT folder given",
    )
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


def _flag_overrides(args: argparse.Namespace) -> list[str]:
    flags = {
        "data.data": args.data,
        "output_dir": args.output_dir,
        "data.path_column": args.path_column,
        "data.label_column": args.label_column,
        "faces.enabled": args.faces,
        "resume_from_checkpoint": args.resume,
    }
    # JSON strings are YAML strings, so a path such as "yes" or "1e3" stays a path.
    return [f"{key}={json.dumps(value)}" for key, value in flags.items() if value is not None]


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.training.config import load_train_config

    config = load_train_config(args.config, [*_flag_overrides(args), *args.set])
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
