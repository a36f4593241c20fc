"""Train the CLIP detector's head on cached frozen features (`frozen_features`), calibrate it on the
validation split and write the bundle the package ships.

The recipe (``configs/clip-b16-v1.yaml``, run with ``deepfake-detector train-head``):

1. provision the pretrained backbone (`clip_backbone.ensure_backbone`);
2. extract features for every view, resumably (`frozen_features.extract_features`);
3. standardise the features and fit a linear head (L2-regularised logistic regression), each
   (source, label) group of the training split weighing the same, so a source with many images or a
   one-class source can't dominate, and self-blended pseudo-fakes weighing ``pseudo_fake_weight`` groups;
4. fit a temperature (NLL) and a threshold on the clean validation features: the lowest threshold at
   which no real group of the validation split exceeds ``target_fpr`` false positives;
5. write ``bundle/`` (config, image processor, ``head.safetensors``: the package ships this) and
   ``model/`` (the full ``save_pretrained`` checkpoint) and ``validation.json``.

The head is fitted by scikit-learn and copied into the very module inference runs
(`ClipDetectorForImageClassification.classifier`).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepfake_detector.data.labelled import LabelledImage
from deepfake_detector.training.frozen_features import load_features


@dataclass
class HeadTrainingConfig:
    """One head-training run; every field has a default, a YAML file overrides them."""

    manifest: str = field(
        default="../shared/data/faces/manifest.csv",
        metadata={"help": "faces manifest (path,label,source,split)"},
    )
    output_dir: str = field(
        default="runs/clip-b16-v1", metadata={"help": "where the bundle, model and reports go"}
    )
    feature_cache: str = field(default="runs/features", metadata={"help": "cached features (resumable)"})
    backbone: str | None = field(
        default=None,
        metadata={"help": "a CLIPVisionModelWithProjection folder; default: the pinned CLIP ViT-B/16"},
    )
    views: list[str] = field(
        default_factory=lambda: ["clean", "aug1", "sbi1"],
        metadata={"help": "views to extract and train on (clean, aug<N>, sbi<N>)"},
    )
    feature_blocks: list[int] | None = field(
        default=None, metadata={"help": "class-token blocks the head reads; all when empty"}
    )
    use_mean_patch_token: bool = field(
        default=True, metadata={"help": "also read the last block's mean patch token"}
    )
    inverse_regularization: float = field(
        default=0.003, metadata={"help": "C of the L2-regularised logistic regression (smaller: stronger)"}
    )
    max_iterations: int = field(default=1000, metadata={"help": "L-BFGS iterations at most"})
    pseudo_fake_weight: float = field(
        default=1.0, metadata={"help": "total weight of the SBI views, in groups"}
    )
    target_fpr: float = field(
        default=0.05, metadata={"help": "most false positives allowed in any real val group"}
    )
    extraction_precision: str = field(
        default="auto",
        metadata={"help": "bf16 or fp32 for the frozen tower; auto: bf16 where the CPU/GPU has it natively"},
    )

    def __post_init__(self) -> None:
        if self.inverse_regularization <= 0:
            raise ValueError(f"inverse_regularization must be positive, got {self.inverse_regularization}")
        if not 0 < self.target_fpr < 1:
            raise ValueError(f"target_fpr must lie in (0, 1), got {self.target_fpr}")
        if self.extraction_precision not in ("auto", "bf16", "fp32"):
            raise ValueError(
                f"extraction_precision must be auto, bf16 or fp32, got {self.extraction_precision!r}"
            )


def select_tokens(
    features: np.ndarray, num_blocks: int, blocks: Sequence[int] | None, mean_patch: bool
) -> np.ndarray:
    """Flattened head inputs (N, F) from cached tokens (N, num_blocks + 1, D) for a feature choice."""
    chosen = [block - 1 for block in (blocks or range(1, num_blocks + 1))]
    if mean_patch:
        chosen.append(num_blocks)
    return features[:, chosen].reshape(len(features), -1)


@dataclass
class TrainingSet:
    """Flattened features with what each row is: label (1 fake), group name and sample weight."""

    features: np.ndarray
    labels: np.ndarray
    groups: list[str]
    weights: np.ndarray


def build_training_set(
    cache: str | os.PathLike,
    rows: Sequence[LabelledImage],
    views: Sequence[str],
    *,
    split: str,
    select: Callable[[np.ndarray], np.ndarray],
    pseudo_fake_weight: float = 1.0,
) -> TrainingSet:
    """Gathers the cached views of one split with balanced group weights.

    Each (source, label) group gets total weight 1 whatever its size; the rows of ``sbi`` views are
    fake (a self-blended real) and form one group of total weight ``pseudo_fake_weight``. Weights are
    then scaled to average 1.
    """
    parts, labels, groups = [], [], []
    for view in views:
        features, indices = load_features(cache, view)
        keep = [position for position, index in enumerate(indices) if rows[index].split == split]
        if not keep:
            continue
        parts.append(select(features[keep]))
        for position in keep:
            row = rows[indices[position]]
            pseudo = view.startswith("sbi")
            labels.append(1 if pseudo or row.label == "fake" else 0)
            groups.append("pseudo_fake/sbi" if pseudo else f"{row.source}/{row.label}")
    names, counts = np.unique(groups, return_counts=True)
    size = dict(zip(names, counts, strict=True))
    weights = np.array(
        [(pseudo_fake_weight if group == "pseudo_fake/sbi" else 1.0) / size[group] for group in groups]
    )
    weights *= len(weights) / weights.sum()
    return TrainingSet(
        np.concatenate(parts).astype(np.float32), np.array(labels), groups, weights.astype(np.float32)
    )


def fit_head(
    model, data: TrainingSet, config: HeadTrainingConfig, log: Callable[[str], None] | None = None
) -> None:
    """Fits ``model``'s standardisation buffers and linear classifier on ``data`` (the tower is untouched).

    The classifier is scikit-learn's L2-regularised logistic regression (L-BFGS) on the standardised
    features, written into the two-logit linear layer as ``(-z / 2, z / 2)``, so the softmax's fake
    probability is the regression's sigmoid. In our trial, plain gradient descent on 10k features
    overfitted to overconfident logits where the regularised fit did not.
    """
    import torch
    from sklearn.linear_model import LogisticRegression

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    mean = data.features.mean(axis=0, dtype=np.float64)
    scale = np.maximum(data.features.std(axis=0, dtype=np.float64), 1e-6)
    standardised = ((data.features - mean) / scale).astype(np.float32)  # (N, F)
    started = time.perf_counter()
    regression = LogisticRegression(C=config.inverse_regularization, max_iter=config.max_iterations)
    regression.fit(standardised, data.labels, sample_weight=data.weights)
    log(f"logistic regression: {regression.n_iter_[0]} iterations in {time.perf_counter() - started:.0f} s")
    coefficients = torch.from_numpy(regression.coef_[0].astype(np.float32))  # (F,)
    intercept = float(regression.intercept_[0])
    with torch.no_grad():
        model.feature_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
        model.feature_scale.copy_(torch.from_numpy(scale.astype(np.float32)))
        model.classifier.weight.copy_(torch.stack([-coefficients / 2, coefficients / 2]))
        model.classifier.bias.copy_(torch.tensor([-intercept / 2, intercept / 2]))


def compute_head_logits(model, features: np.ndarray) -> np.ndarray:
    """Logits (N, 2) of the head for flattened features (N, F)."""
    import torch

    with torch.inference_mode():
        return model.classify_features(torch.from_numpy(features)).numpy()


def choose_threshold(
    scores: np.ndarray, groups: Sequence[str], labels: np.ndarray, target_fpr: float
) -> float:
    """The lowest threshold at which every real group's false-positive rate is at most ``target_fpr``
    (`compute_threshold_at_fpr` per group, the strictest wins), and never below 0.5 (the argmax
    rule), so a clean validation split can't pull it under even odds."""
    from deepfake_detector.evaluation.calibration import compute_threshold_at_fpr

    groups = np.asarray(groups)
    real_groups = sorted(set(groups[labels == 0]))
    return max(
        [0.5]
        + [
            compute_threshold_at_fpr(
                labels[groups == group], scores[groups == group], positive=1, target_fpr=target_fpr
            )
            for group in real_groups
        ]
    )


def summarise_scores(
    scores: np.ndarray, labels: np.ndarray, sources: Sequence[str], threshold: float
) -> dict:
    """Per-source ROC-AUC (mixed sources), false-positive rate (real images) and detection rate (fakes)."""
    from sklearn.metrics import roc_auc_score

    summary: dict[str, dict] = {}
    sources = np.asarray(sources)
    for source in ["all", *sorted(set(sources))]:
        chosen = np.ones(len(labels), bool) if source == "all" else sources == source
        y, s = labels[chosen], scores[chosen]
        entry: dict = {"images": int(chosen.sum())}
        if len(set(y)) == 2:
            entry["roc_auc"] = float(roc_auc_score(y, s))
        if (y == 0).any():
            entry["false_positive_rate"] = float(np.mean(s[y == 0] >= threshold))
        if (y == 1).any():
            entry["detection_rate"] = float(np.mean(s[y == 1] >= threshold))
        summary[source] = entry
    return summary


def write_bundle(model, processor, folder: str | os.PathLike, *, calibration: dict) -> Path:
    """Writes what the package ships: config (with calibration), image processor, ``head.safetensors``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.config.deepfake_detector = calibration
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    processor.save_pretrained(folder)
    head = {
        name: value.detach().contiguous()
        for name, value in model.state_dict().items()
        if not name.startswith("vision_model.")
    }
    save_file(dict(sorted(head.items())), folder / "head.safetensors", metadata={"format": "pt"})
    return folder


def write_json(path: str | os.PathLike, value) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(value, indent=2, default=str) + "\n")


def describe_config(config: HeadTrainingConfig) -> dict:
    return {**asdict(config), "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_head_training(config: HeadTrainingConfig, *, log: Callable[[str], None] | None = None) -> Path:
    """The whole recipe (module docstring): backbone, features, head, calibration, bundle.

    Every step resumes: the backbone and the feature shards are cached; the head fit takes minutes.

    Returns:
        The output folder (``bundle/``, ``model/``, ``validation.json``, ``training_run.json``).
    """
    from deepfake_detector.data.labelled import load_labelled_images
    from deepfake_detector.evaluation.calibration import compute_temperature
    from deepfake_detector.inference.preprocessing import ImagePreprocessor
    from deepfake_detector.modeling.clip_backbone import (
        BACKBONE_SHA256,
        UPSTREAM_ID,
        WHEEL_REQUIREMENT,
        ensure_backbone,
    )
    from deepfake_detector.modeling.clip_detector import build_clip_detector, build_image_processor
    from deepfake_detector.run_info import git_revision
    from deepfake_detector.scoring import compute_fake_scores, compute_probabilities
    from deepfake_detector.training.frozen_features import (
        extract_features,
        parse_view,
        write_cache_info,
    )
    from deepfake_detector.training.outputs import collect_versions

    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    output = Path(config.output_dir)
    backbone = Path(config.backbone) if config.backbone else ensure_backbone()
    model = build_clip_detector(
        backbone,
        id2label={0: "Realism", 1: "Deepfake"},
        feature_blocks=config.feature_blocks,
        use_mean_patch_token=config.use_mean_patch_token,
    )
    processor = build_image_processor(model.config.vision_config.image_size)
    rows = load_labelled_images(config.manifest)  # every split, in the manifest's order
    views = [parse_view(view) for view in config.views]
    if "clean" not in config.views:
        views.append(parse_view("clean"))  # calibration and validation read the clean val features
    precision = config.extraction_precision
    if precision == "auto":
        from deepfake_detector.inference.engines import supports_native_bf16

        # Emulated bf16 (AVX2-only CPUs) is slower than fp32; native bf16 runs the tower ~2x faster.
        precision = "bf16" if supports_native_bf16("cpu") else "fp32"
    write_cache_info(
        config.feature_cache, {"backbone": str(backbone), "manifest": config.manifest, "precision": precision}
    )
    extract_features(
        model, ImagePreprocessor(processor), rows, views, config.feature_cache, precision=precision, log=log
    )
    # The cache holds every block's class token and the mean patch token; the head reads its choice.
    num_blocks = model.config.vision_config.num_hidden_layers

    def select(features: np.ndarray) -> np.ndarray:
        return select_tokens(features, num_blocks, config.feature_blocks, config.use_mean_patch_token)

    data = build_training_set(
        config.feature_cache,
        rows,
        config.views,
        split="train",
        select=select,
        pseudo_fake_weight=config.pseudo_fake_weight,
    )
    log(f"training the head on {len(data.labels)} feature rows ({int(data.labels.sum())} fake)")
    fit_head(model, data, config, log=log)

    features, indices = load_features(config.feature_cache, "clean")
    chosen = [position for position, index in enumerate(indices) if rows[index].split == "val"]
    val_rows = [rows[indices[position]] for position in chosen]
    labels = np.array([row.label == "fake" for row in val_rows], dtype=int)
    logits = compute_head_logits(model, select(features[chosen]))
    fake_ids = (1,)  # the head's own labels: {0: Realism, 1: Deepfake}
    temperature = compute_temperature(logits, labels.astype(bool), fake_ids)
    scores = compute_fake_scores(compute_probabilities(logits, temperature), fake_ids)
    groups = [f"{row.source}/{row.label}" for row in val_rows]
    threshold = choose_threshold(scores, groups, labels, config.target_fpr)
    summary = summarise_scores(scores, labels, [row.source for row in val_rows], threshold)
    calibration = {
        "temperature": temperature,
        "thresholds": {"fake": threshold, "real": threshold},
        "fitted_on": {
            "data": f"{Path(config.manifest).parent.name}/{Path(config.manifest).name}",
            "split": "val",
            "images": len(val_rows),
            "target_fpr": config.target_fpr,
            "rule": "every real source's false-positive rate at most target_fpr",
        },
        "backbone": (
            {"upstream": UPSTREAM_ID, "from": WHEEL_REQUIREMENT, "sha256": BACKBONE_SHA256}
            if config.backbone is None
            else {"folder": backbone.name}
        ),
    }
    bundle = write_bundle(model, processor, output / "bundle", calibration=calibration)
    assembled = output / "model"  # the same model whole: what `--model` and the pipeline load
    model.save_pretrained(assembled)
    processor.save_pretrained(assembled)
    write_json(
        output / "validation.json", {"threshold": threshold, "temperature": temperature, "val": summary}
    )
    write_json(
        output / "training_run.json",
        {
            "versions": collect_versions(),
            "git": git_revision(),
            "command": sys.argv,
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": describe_config(config),
            "train_rows": {
                group: int(count)
                for group, count in zip(*np.unique(data.groups, return_counts=True), strict=True)
            },
            "full_checkpoint": str(assembled),
        },
    )
    log(
        f"temperature {temperature:.3f}, threshold {threshold:.4f}; "
        f"val ROC-AUC {summary['all'].get('roc_auc', 0):.4f}; bundle in {bundle}, "
        f"full checkpoint in {assembled}"
    )
    return output
