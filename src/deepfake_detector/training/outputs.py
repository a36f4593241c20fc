"""The files a training run leaves beside its weights: the model card, the resolved config, and a record
of the run (package version, git revision, data, skipped images, metrics), so the model can be traced
back to exactly what made it.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from deepfake_detector.optional import require
from deepfake_detector.run_info import git_revision
from deepfake_detector.stored_settings import SETTINGS_KEY, StoredSettings
from deepfake_detector.version import __version__

CONFIG_FILE = "training_config.yaml"
RUN_FILE = "training_run.json"
CARD_FILE = "README.md"


def collect_versions() -> dict:
    """Versions of the package, Python, torch and transformers, for a run's record."""
    import torch
    import transformers

    return {
        "deepfake_detector": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def render_model_card(config, arguments: dict, result, counts: dict, model) -> str:
    """The model card: YAML metadata (with a model-index of the validation results) and a short body.

    Args:
        config: The run's `TrainConfig`.
        arguments: The resolved TrainingArguments, as plain values.
        result: The `TrainResult`.
        counts: Image counts of the train and eval sets.
        model: The trained model.
    """
    yaml = require("yaml", "train")

    name = Path(result.output_dir).name
    metrics = result.eval_metrics
    shown = [
        ("eval_accuracy", "accuracy", "Accuracy"),
        ("eval_balanced_accuracy", "balanced_accuracy", "Balanced accuracy"),
    ]
    shown += [("eval_f1", "f1", "F1 (fake)"), ("eval_roc_auc", "roc_auc", "ROC-AUC")]
    metadata: dict = {
        "library_name": "transformers",
        "pipeline_tag": "image-classification",
        "tags": ["deepfake-detection", "image-classification", "deepfake-detector"],
    }
    if config.model.base:
        metadata["base_model"] = [config.model.base]
    if metrics:
        metadata["model-index"] = [
            {
                "name": name,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Deepfake detection"},
                        "dataset": {
                            "name": str(config.data.data),
                            "type": "imagefolder",
                            "split": config.data.eval_split,
                        },
                        "metrics": [
                            {"type": kind, "value": round(metrics[key], 4), "name": label}
                            for key, kind, label in shown
                            if key in metrics
                        ],
                    }
                ],
            }
        ]
    labels = ", ".join(f'{index}: "{label}"' for index, label in sorted(model.config.id2label.items()))
    train = counts["train"]
    origin = f"fine-tuned from `{config.model.base}`" if config.model.base else "trained from scratch"
    augmentations = [
        f"`{key}: {value}`"
        for key, value in config.augmentation.__dict__.items()
        if value not in (None, 0.0)
        and key != "crop_ratio"
        and (key == "horizontal_flip_probability" or not key.endswith("_probability"))
    ]
    lines = [
        "---",
        yaml.safe_dump(metadata, sort_keys=False).strip(),
        "---",
        "",
        f"# {name}",
        "",
        f"A real/fake image classifier ({type(model).__name__}, {origin}) trained with "
        f"`deepfake-detector train` {__version__}. Labels: {{{labels}}}.",
        "",
        "## Training",
        "",
        f"- Data: `{config.data.data}`, split `{config.data.train_split}`: {train['images']} images "
        f"({train['real']} real, {train['fake']} fake); {result.skipped_images} unreadable images left out.",
        f"- Optimiser: {arguments['optim']}, learning rate {arguments['learning_rate']}, "
        f"batch {arguments['per_device_train_batch_size']} per device, "
        f"{result.epochs:g} epochs ({result.global_step} steps), "
        f"weight decay {arguments['weight_decay']}.",
        f"- Class balance: {config.class_balance}; bf16 autocast: {'on' if result.bf16 else 'off'}.",
        f"- Augmentations: {', '.join(augmentations) or 'none'}.",
        _describe_faces(config, counts),
        "- The full resolved configuration is in `training_config.yaml`; the run record (package version, "
        "git revision, data counts) in `training_run.json`.",
        "",
        "## Validation results",
        "",
    ]
    if metrics:
        lines += [
            f"On `{config.data.eval_split}` ({counts['eval']['images']} images: "
            f"{counts['eval']['real']} real, {counts['eval']['fake']} fake), "
            "called fake when the fake score is at least 0.5:",
            "",
            "| metric | value |",
            "| --- | --- |",
            *(f"| {label} | {metrics[key]:.4f} |" for key, _, label in shown if key in metrics),
            "",
            "These are validation figures from training. Run `deepfake-detector evaluate` on a held-out "
            "test split for the full report (confidence intervals, per-source metrics, calibration).",
        ]
    else:
        lines.append("Not validated during training (no validation split).")
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "from deepfake_detector import Detector",
        "",
        f'detector = Detector.from_pretrained("path/to/{name}")  # this folder',
        'print(detector.predict("photo.jpg"))',
        "```",
        "",
        f'or `transformers.pipeline("image-classification", model="path/to/{name}")`.',
        "",
    ]
    return "\n".join(lines)


def _describe_faces(config, counts: dict) -> str:
    if not config.faces.enabled:
        return "- Input: whole images."
    no_face = counts["train"].get("no_face", 0)
    return (
        f"- Input: face crops ({config.faces.detector}, margin {config.faces.margin_ratio:g}; the largest "
        f"face of each image; {no_face} training images without a face were used whole). `config.json` "
        f"records this (`{SETTINGS_KEY}.faces`), so `deepfake-detector predict` uses face mode by default."
    )


def store_model_settings(model_config, config) -> None:
    """Writes this package's settings into the trained model's config (`StoredSettings`).

    Written afresh: a calibration inherited from the base checkpoint was fitted on the base's logits and
    does not hold for the new weights (run ``calibrate`` on the trained model). With face crops, their
    settings are stored (`StoredSettings.faces`), where `Detector` finds them and defaults to face mode.
    """
    StoredSettings(faces=config.faces.options()).write(model_config)


def write_training_outputs(
    model, processor, config, args, result, *, skipped, counts: dict, started: float, state_dict=None
) -> None:
    """Writes the trained model's folder: weights, processor, card, resolved config and run record.

    Args:
        model: The trained model (unwrapped from DDP).
        processor: Its image processor.
        config: The `TrainConfig` of the run.
        args: The resolved `TrainingArguments`.
        result: The `TrainResult`.
        skipped: `UnreadableImage` records of the images left out.
        counts: Image counts of the train and eval sets.
        started: When the run began (``time.time()``).
        state_dict: The full weights when ``model``'s own are sharded (FSDP); None: ``model``'s.
    """
    yaml = require("yaml", "train")

    output = Path(result.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output, state_dict=state_dict)  # config.json + model.safetensors, no pickles
    processor.save_pretrained(output)
    resolved = config.to_dict()
    arguments = json.loads(args.to_json_string())  # every TrainingArguments value, defaults too
    resolved["training"] = arguments
    (output / CONFIG_FILE).write_text(yaml.safe_dump(resolved, sort_keys=False), encoding="utf-8")
    record = {
        "versions": collect_versions(),
        "git": git_revision(),
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "world_size": args.world_size,
        "data": counts,
        "result": result.to_dict(),
        "skipped_images": [problem.to_dict() for problem in skipped],
    }
    (output / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (output / CARD_FILE).write_text(
        render_model_card(config, arguments, result, counts, model), encoding="utf-8"
    )
    if not config.keep_checkpoints:
        import shutil

        shutil.rmtree(Path(args.output_dir), ignore_errors=True)
