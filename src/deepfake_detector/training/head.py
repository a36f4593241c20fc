"""Train the CLIP detector's heads on cached frozen features (`frozen_features`), calibrate them on the
validation split and write the bundle the package ships.

The recipe (``configs/clip-b16-v2.yaml``, run with ``deepfake-detector train-head``):

1. provision the pretrained backbone (`clip_backbone.ensure_backbone`);
2. extract features of every dataset (manifest) and view, resumably (`frozen_features.extract_features`),
   into a cache folder per manifest whose name carries the manifest's hash, so a data release that
   changes the file list gets a cache of its own instead of misread rows;
3. standardise the features and fit linear heads (L2-regularised logistic regression), each
   (source, label) group of the training split weighing the same, so a source with many images or a
   one-class source can't dominate, and self-blended pseudo-fakes weighing ``pseudo_fake_weight`` groups.
   With ``domains`` (a model that knows its domain, `clip_detector`):

   - a domain probe, fitted on the clean training images labelled by `training.domains` (every image of
     a ``face_datasets`` manifest is a face; elsewhere dlib decides);
   - the face head: fitted on every training row, or, with ``anchor_model``, that bundled model's head
     (rewritten onto this run's standardisation), as it is or plus a correction fitted on every
     training row (``anchor_correction``: its logit is the fit's fixed offset);
   - the general head: fitted on the rows of ``general_datasets`` (all rows when unset);

4. per domain, a temperature (NLL) and a threshold on the clean validation images the probe sends to
   that domain (`compute_threshold`, the rule ``calibrate`` uses too: no real source of the domain above
   ``target_fpr``); the temperature
   is folded into the domain's head, so the pipeline's probabilities are the calibrated ones;
5. write ``bundle/`` (config, image processor, ``head.safetensors``: the package ships this) and
   ``model/`` (the full ``save_pretrained`` checkpoint) and ``validation.json``.

Heads are fitted by L-BFGS on scikit-learn's objective for L2 logistic regression
(``C * sum(w * log_loss) + |coef|^2 / 2``), written here because scikit-learn's solver takes no fixed
offset per row, which the anchored face head needs; the weights are copied into the very module
inference runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from deepfake_detector.data.labelled import LabelledImage
from deepfake_detector.evaluation.calibration import THRESHOLD_RULE
from deepfake_detector.scoring import Calibration, Thresholds
from deepfake_detector.stored_settings import StoredSettings
from deepfake_detector.training.frozen_features import load_features

FACES_MANIFEST = "../shared/data/faces/manifest.csv"
PSEUDO_FAKE_GROUP = "pseudo_fake/sbi"


@dataclass
class HeadTrainingConfig:
    """One head-training run; every field has a default, a YAML or JSON file overrides them
    (`deepfake_detector.settings.load_config`), and ``--output-dir`` and ``--manifests`` override that."""

    manifests: list[str] = field(
        default_factory=lambda: [FACES_MANIFEST],
        metadata={
            "help": "manifests (path,label,source,split[,group]); each is a dataset named by its folder",
            "flag": "--manifests",
        },
    )
    face_datasets: list[str] = field(
        default_factory=lambda: ["faces"],
        metadata={"help": "datasets whose every image is a face crop (the rest: dlib decides the domain)"},
    )
    output_dir: str = field(
        default="runs/clip-b16-v2",
        metadata={
            "help": "where the bundle, model and reports go",
            "flag": "--output-dir",
            "aliases": ["-o"],
        },
    )
    feature_cache: str = field(default="runs/features", metadata={"help": "cached features (resumable)"})
    backbone: str | None = field(
        default=None,
        metadata={"help": "a CLIPVisionModelWithProjection folder; default: the pinned CLIP ViT-B/16"},
    )
    views: list[str] = field(
        default_factory=lambda: ["clean", "aug1", "sbi1"],
        metadata={"help": "views to extract and train on: [dataset/]view[:splits] (clean, aug<N>, sbi<N>)"},
    )
    feature_blocks: list[int] | None = field(
        default=None, metadata={"help": "class-token blocks the head reads; all when empty"}
    )
    use_mean_patch_token: bool = field(
        default=True, metadata={"help": "also read the last block's mean patch token"}
    )
    domains: list[str] | None = field(
        default=None,
        metadata={"help": "domains with a head each and a probe between them (first: face); none: one head"},
    )
    anchor_model: str | None = field(
        default=None,
        metadata={"help": "a bundled model whose head is the face head, instead of one fitted afresh"},
    )
    anchor_correction: bool = field(
        default=True,
        metadata={"help": "fit a correction on top of anchor_model's head (false: its head as it is)"},
    )
    general_datasets: list[str] | None = field(
        default=None, metadata={"help": "datasets the general head is fitted on; all when empty"}
    )
    inverse_regularization: float = field(
        default=0.003, metadata={"help": "C of the L2-regularised logistic regression (smaller: stronger)"}
    )
    probe_inverse_regularization: float = field(
        default=0.01, metadata={"help": "C of the domain probe's logistic regression"}
    )
    max_iterations: int = field(default=1000, metadata={"help": "L-BFGS iterations at most"})
    pseudo_fake_weight: float = field(
        default=1.0, metadata={"help": "total weight of the SBI views, in groups"}
    )
    target_fpr: float = field(
        default=0.05, metadata={"help": "most false positives allowed in any real val group of a domain"}
    )
    extraction_precision: str = field(
        default="auto",
        metadata={"help": "bf16 or fp32 for the frozen tower; auto: bf16 where the CPU/GPU has it natively"},
    )

    def __post_init__(self) -> None:
        if not self.manifests:
            raise ValueError("manifests must name at least one manifest")
        if self.inverse_regularization <= 0 or self.probe_inverse_regularization <= 0:
            raise ValueError("inverse_regularization and probe_inverse_regularization must be positive")
        if not 0 < self.target_fpr < 1:
            raise ValueError(f"target_fpr must lie in (0, 1), got {self.target_fpr}")
        if self.extraction_precision not in ("auto", "bf16", "fp32"):
            raise ValueError(
                f"extraction_precision must be auto, bf16 or fp32, got {self.extraction_precision!r}"
            )
        if self.domains is not None and len(self.domains) != 2:
            raise ValueError(f"domains must name two domains (face first, then general), got {self.domains}")
        if (self.anchor_model or self.general_datasets) and not self.domains:
            raise ValueError("anchor_model and general_datasets need domains")


def select_tokens(
    features: np.ndarray, num_blocks: int, blocks: Sequence[int] | None, mean_patch: bool
) -> np.ndarray:
    """Flattened head inputs (N, F) from cached tokens (N, num_blocks + 1, D) for a feature choice."""
    chosen = [block - 1 for block in (blocks or range(1, num_blocks + 1))]
    if mean_patch:
        chosen.append(num_blocks)
    return features[:, chosen].reshape(len(features), -1)


@dataclass
class Dataset:
    """One manifest's images and where their features are cached.

    Attributes:
        name: The manifest's folder name ("faces", "modern"): view specs and the general head's
            ``general_datasets`` name datasets by it.
        rows: The labelled images, every split, in the manifest's order (shards index into it).
        cache: ``<feature_cache>/<name>-<first 12 hex digits of the manifest's sha256>``.
        domains: Each row's domain label (`training.domains`); None before `label_domains` runs.
    """

    name: str
    rows: list[LabelledImage]
    cache: Path
    domains: list[str] | None = None


def load_dataset(manifest: str | os.PathLike, feature_cache: str | os.PathLike) -> Dataset:
    from deepfake_detector.data.labelled import load_labelled_images

    manifest = Path(manifest)
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()[:12]
    name = manifest.parent.name
    return Dataset(name, load_labelled_images(manifest), Path(feature_cache) / f"{name}-{digest}")


def parse_view_spec(spec: str) -> tuple[str | None, str]:
    """``[dataset/]view[:splits]`` -> (dataset, or None for every one; the view for `parse_view`)."""
    dataset, _, view = spec.rpartition("/")
    return dataset or None, view


@dataclass
class TrainingSet:
    """Flattened features with what each row is: label (1 fake), group, dataset, weight, and domain
    label (None where the dataset has none yet)."""

    features: np.ndarray
    labels: np.ndarray
    groups: list[str]
    datasets: list[str]
    weights: np.ndarray
    domains: list[str | None] = field(default_factory=list)


def compute_group_weights(groups: Sequence[str], pseudo_fake_weight: float = 1.0) -> np.ndarray:
    """Each group weighs 1 in total whatever its size (pseudo-fakes ``pseudo_fake_weight``), scaled
    so the weights average 1."""
    names, counts = np.unique(groups, return_counts=True)
    size = dict(zip(names, counts, strict=True))
    weights = np.array(
        [(pseudo_fake_weight if group == PSEUDO_FAKE_GROUP else 1.0) / size[group] for group in groups]
    )
    return (weights * len(weights) / weights.sum()).astype(np.float32)


def build_training_set(
    datasets: Sequence[Dataset],
    views: Sequence[str],
    *,
    split: str,
    select: Callable[[np.ndarray], np.ndarray],
    pseudo_fake_weight: float = 1.0,
) -> TrainingSet:
    """Gathers the cached views of one split of every dataset, with balanced group weights.

    Each (source, label) group gets total weight 1 whatever its size; the rows of ``sbi`` views are
    fake (a self-blended real) and form one group of total weight ``pseudo_fake_weight``.
    """
    parts, labels, groups, names, domains = [], [], [], [], []
    for dataset in datasets:
        for spec in views:
            wanted, view = parse_view_spec(spec)
            if wanted not in (None, dataset.name):
                continue
            name = view.partition(":")[0]
            features, indices = load_features(dataset.cache, name)
            keep = [position for position, index in enumerate(indices) if dataset.rows[index].split == split]
            if not keep:
                continue
            parts.append(select(features[keep]))
            pseudo = name.startswith("sbi")
            for position in keep:
                row = dataset.rows[indices[position]]
                labels.append(1 if pseudo or row.label == "fake" else 0)
                groups.append(PSEUDO_FAKE_GROUP if pseudo else f"{row.source}/{row.label}")
                names.append(dataset.name)
                domains.append(dataset.domains[indices[position]] if dataset.domains else None)
    return TrainingSet(
        np.concatenate(parts).astype(np.float32),
        np.array(labels),
        groups,
        names,
        compute_group_weights(groups, pseudo_fake_weight),
        domains,
    )


def fit_logistic(
    features: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    *,
    inverse_regularization: float,
    offset: np.ndarray | None = None,
    max_iterations: int = 1000,
) -> tuple[np.ndarray, float]:
    """L2 logistic regression on standardised ``features`` (N, F): scikit-learn's objective,
    ``C * sum(w * log_loss(offset + x @ coef + intercept)) + |coef|^2 / 2``, minimised by L-BFGS.

    Returns:
        (coef (F,), intercept).
    """
    import torch

    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))  # (N, F)
    y = torch.from_numpy(labels.astype(np.float32))  # (N,)
    w = torch.from_numpy(weights.astype(np.float32))  # (N,)
    fixed = torch.zeros(len(y)) if offset is None else torch.from_numpy(offset.astype(np.float32))
    coef = torch.zeros(x.shape[1], requires_grad=True)
    intercept = torch.zeros(1, requires_grad=True)
    optimiser = torch.optim.LBFGS(
        [coef, intercept],
        max_iter=max_iterations,
        history_size=20,
        tolerance_grad=1e-6,
        tolerance_change=1e-10,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        logits = x @ coef + intercept + fixed  # (N,)
        losses = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none")
        loss = inverse_regularization * (w * losses).sum() + 0.5 * (coef @ coef)
        loss.backward()
        return loss

    optimiser.step(closure)
    return coef.detach().numpy().astype(np.float32), float(intercept.detach())


@dataclass
class LinearScore:
    """A logit that is linear in the standardised features: ``z @ coef + intercept``."""

    coef: np.ndarray
    intercept: float

    def __call__(self, standardised: np.ndarray) -> np.ndarray:
        return standardised @ self.coef + self.intercept  # (N,)

    def scaled(self, factor: float) -> LinearScore:
        return LinearScore(self.coef * factor, self.intercept * factor)

    def plus(self, other: LinearScore) -> LinearScore:
        return LinearScore(self.coef + other.coef, self.intercept + other.intercept)


@dataclass
class Standardiser:
    """The feature standardisation the model stores (``feature_mean``, ``feature_scale``)."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, features: np.ndarray) -> Standardiser:
        mean = features.mean(axis=0, dtype=np.float64)
        scale = np.maximum(features.std(axis=0, dtype=np.float64), 1e-6)
        return cls(mean.astype(np.float32), scale.astype(np.float32))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.scale).astype(np.float32)


def load_anchor_score(name: str, standardiser: Standardiser) -> LinearScore:
    """A bundled model's head, temperature applied, as a fake-vs-real logit on ``standardiser``'s
    features: its own standardisation rewritten into the new one (an exact linear identity).

    Raises:
        ValueError: The head has not exactly one real and one fake class.
    """
    from safetensors.numpy import load_file

    from deepfake_detector.modeling.checkpoints import bundled_model_folder
    from deepfake_detector.modeling.labels import resolve_label_roles

    folder = bundled_model_folder(name)
    head = load_file(folder / "head.safetensors")
    config = json.loads((folder / "config.json").read_text())
    roles = resolve_label_roles(config["id2label"])  # the fake class by its name, never by position
    if len(roles.fake_ids) != 1 or len(roles.real_ids) != 1:
        raise ValueError(f"{name}: an anchor head needs one real and one fake class, got {roles.to_dict()}")
    (fake,), (real,) = roles.fake_ids, roles.real_ids
    temperature = StoredSettings.from_config(config, name=name).calibration.temperature
    weight, bias = head["classifier.weight"], head["classifier.bias"]  # (2, F), (2,)
    direction = (weight[fake] - weight[real]) / temperature  # (F,) on the anchor's standardisation
    offset = float(bias[fake] - bias[real]) / temperature
    # z_anchor = (x - m_a) / s_a = (z * s + m - m_a) / s_a
    coef = direction * standardiser.scale / head["feature_scale"]
    intercept = offset + float(
        direction @ ((standardiser.mean - head["feature_mean"]) / head["feature_scale"])
    )
    return LinearScore(coef.astype(np.float32), intercept)


def write_heads(
    model, standardiser: Standardiser, heads: Sequence[LinearScore], probe: LinearScore | None
) -> None:
    """Copies the standardisation, the heads (face first) and the probe into ``model``.

    A fake-vs-real logit ``l`` becomes the two-logit layer ``(-l / 2, l / 2)``, so the softmax's fake
    probability is its sigmoid; the probe's ``p`` (face vs general) becomes ``(p / 2, -p / 2)``.
    """
    import torch

    def two_logits(score: LinearScore, sign: float) -> tuple[torch.Tensor, torch.Tensor]:
        coef = torch.from_numpy(score.coef) * sign / 2
        intercept = torch.tensor(score.intercept * sign / 2)
        return torch.stack([-coef, coef]), torch.stack([-intercept, intercept])

    layers = [model.classifier, *model.domain_classifiers]
    if len(layers) != len(heads):
        raise ValueError(f"the model has {len(layers)} heads, {len(heads)} were fitted")
    with torch.no_grad():
        model.feature_mean.copy_(torch.from_numpy(standardiser.mean))
        model.feature_scale.copy_(torch.from_numpy(standardiser.scale))
        for layer, score in zip(layers, heads, strict=True):
            weight, bias = two_logits(score, 1.0)
            layer.weight.copy_(weight)
            layer.bias.copy_(bias)
        if probe is not None:
            weight, bias = two_logits(probe, -1.0)  # (general, face) order flipped: face is index 0
            model.domain_classifier.weight.copy_(weight)
            model.domain_classifier.bias.copy_(bias)


def summarise_scores(
    scores: np.ndarray, labels: np.ndarray, sources: Sequence[str], threshold: float | np.ndarray
) -> dict:
    """Per-source ROC-AUC (mixed sources), false-positive rate (real images) and detection rate (fakes);
    ``threshold`` one number or one per image (its domain's). The metrics are evaluate's own."""
    from deepfake_detector.evaluation.metrics import (
        compute_false_negative_rate,
        compute_false_positive_rate,
        compute_roc_auc,
    )

    summary: dict[str, dict] = {}
    sources = np.asarray(sources)
    thresholds = np.broadcast_to(threshold, np.shape(scores))  # (N,) each image's own
    for source in ["all", *sorted(set(sources))]:
        chosen = np.ones(len(labels), bool) if source == "all" else sources == source
        y, s, at = labels[chosen], scores[chosen], thresholds[chosen]
        entry: dict = {"images": int(chosen.sum())}
        if len(set(y)) == 2:
            entry["roc_auc"] = compute_roc_auc(y, s, positive=1)
        if (y == 0).any():
            entry["false_positive_rate"] = compute_false_positive_rate(y, s, positive=1, threshold=at)
        if (y == 1).any():
            entry["detection_rate"] = 1.0 - compute_false_negative_rate(y, s, positive=1, threshold=at)
        summary[source] = entry
    return summary


def write_bundle(model, processor, folder: str | os.PathLike, *, settings: StoredSettings) -> Path:
    """Writes what the package ships: config (with its stored settings), image processor,
    ``head.safetensors``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    settings.write(model.config)
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


@dataclass
class ValidationSet:
    """The clean validation images of every dataset, with their features and what they are."""

    features: np.ndarray  # (N, F), standardised
    labels: np.ndarray  # (N,), 1 fake
    groups: list[str]
    sources: list[str]
    domains: list[str] | None  # the domain labels, where known

    @classmethod
    def gather(cls, datasets: Sequence[Dataset], select, standardiser: Standardiser) -> ValidationSet:
        features, labels, groups, sources, domains = [], [], [], [], []
        for dataset in datasets:
            cached, rows, row_domains = load_clean_split(dataset, "val", select, standardiser)
            features.append(cached)
            labels += [int(row.label == "fake") for row in rows]
            groups += [f"{row.source}/{row.label}" for row in rows]
            sources += [row.source for row in rows]
            domains += row_domains
        return cls(np.concatenate(features), np.array(labels), groups, sources, domains)


def load_clean_split(
    dataset: Dataset, split: str, select, standardiser: Standardiser
) -> tuple[np.ndarray, list[LabelledImage], list[str | None]]:
    """One split's cached clean features, standardised (N, F), with their rows and domain labels."""
    cached, indices = load_features(dataset.cache, "clean")
    keep = [position for position, index in enumerate(indices) if dataset.rows[index].split == split]
    rows = [dataset.rows[indices[position]] for position in keep]
    domains = [dataset.domains[indices[position]] if dataset.domains else None for position in keep]
    return standardiser(select(cached[keep])), rows, domains


def calibrate_domain(
    logits: np.ndarray, labels: np.ndarray, groups: Sequence[str], target_fpr: float
) -> tuple[float, float]:
    """(temperature, threshold) of one domain's validation logits (fake-vs-real, (N,)): the NLL
    temperature (1.0 when the domain's images are of one class) and `compute_threshold` (the one rule,
    per real source: ``groups`` are "source/label") on the scores with that temperature."""
    from deepfake_detector.evaluation.calibration import compute_temperature, compute_threshold

    two = np.stack([-logits / 2, logits / 2], axis=1)  # (N, 2) as the model's layer gives them
    temperature = compute_temperature(two, labels.astype(bool), (1,)) if len(set(labels)) == 2 else 1.0
    scores = 1 / (1 + np.exp(-logits / temperature))
    if not (labels == 0).any():
        raise ValueError("a domain's threshold needs real validation images in it")
    return temperature, compute_threshold(labels, scores, target_fpr=target_fpr, sources=groups, positive=1)


def run_head_training(config: HeadTrainingConfig, *, log: Callable[[str], None] | None = None) -> Path:
    """The whole recipe (module docstring): backbone, features, heads, calibration, bundle.

    Every step resumes: the backbone, the feature shards and the domain labels are cached; the fits take
    minutes.

    Returns:
        The output folder (``bundle/``, ``model/``, ``validation.json``, ``training_run.json``).
    """
    from deepfake_detector.inference.preprocessing import ImagePreprocessor
    from deepfake_detector.modeling.clip_backbone import (
        BACKBONE_SHA256,
        UPSTREAM_ID,
        WHEEL_REQUIREMENT,
        ensure_backbone,
    )
    from deepfake_detector.modeling.clip_detector import build_clip_detector, build_image_processor
    from deepfake_detector.run_info import git_revision
    from deepfake_detector.training.domains import label_domains
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
        domains=config.domains,
    )
    processor = build_image_processor(model.config.vision_config.image_size)
    datasets = [load_dataset(manifest, config.feature_cache) for manifest in config.manifests]
    precision = config.extraction_precision
    if precision == "auto":
        from deepfake_detector.inference.engines import supports_native_bf16

        # Emulated bf16 (AVX2-only CPUs) is slower than fp32; native bf16 runs the tower ~2x faster.
        precision = "bf16" if supports_native_bf16("cpu") else "fp32"
    specs = list(config.views) if "clean" in config.views else [*config.views, "clean"]
    for dataset, manifest in zip(datasets, config.manifests, strict=True):
        write_cache_info(
            dataset.cache, {"backbone": str(backbone), "manifest": manifest, "precision": precision}
        )
        views = [
            parse_view(view) for wanted, view in map(parse_view_spec, specs) if wanted in (None, dataset.name)
        ]
        extract_features(
            model,
            ImagePreprocessor(processor),
            dataset.rows,
            views,
            dataset.cache,
            precision=precision,
            log=log,
        )
        if config.domains:
            dataset.domains = label_domains(
                dataset.rows,
                dataset.cache / "domains.json",
                all_faces=dataset.name in config.face_datasets,
                log=log,
            )
    # The cache holds every block's class token and the mean patch token; the heads read their choice.
    num_blocks = model.config.vision_config.num_hidden_layers

    def select(features: np.ndarray) -> np.ndarray:
        return select_tokens(features, num_blocks, config.feature_blocks, config.use_mean_patch_token)

    data = build_training_set(
        datasets, config.views, split="train", select=select, pseudo_fake_weight=config.pseudo_fake_weight
    )
    log(f"training on {len(data.labels)} feature rows ({int(data.labels.sum())} fake)")
    standardiser, heads, probe = fit_heads(data, datasets, select, config)
    val = ValidationSet.gather(datasets, select, standardiser)
    names = config.domains or [None]
    calibrated, domain_entries, scores, thresholds = calibrate_heads(val, heads, probe, names, config)
    summary = summarise_scores(scores, val.labels, val.sources, thresholds)
    face = domain_entries[names[0]]
    temperature = 1.0
    if config.domains:
        write_heads(model, standardiser, calibrated, probe)
    else:  # one head: its temperature stays a stored number, as before domains
        temperature = face["fitted_on"].pop("temperature")
        face["fitted_on"].pop("temperature_folded_into_head")
        face["fitted_on"].pop("routed_by")
        write_heads(model, standardiser, heads, None)
    domain_rules = domain_entries if config.domains else {}  # one head: its rule is the pooled one
    settings = StoredSettings(
        calibration=Calibration(
            temperature=temperature,
            thresholds=face["thresholds"],
            domain_thresholds={name: entry["thresholds"] for name, entry in domain_rules.items()},
        ),
        fitted_on=face["fitted_on"],
        domain_fitted_on={name: entry["fitted_on"] for name, entry in domain_rules.items()},
        backbone=(
            {"upstream": UPSTREAM_ID, "from": WHEEL_REQUIREMENT, "sha256": BACKBONE_SHA256}
            if config.backbone is None
            else {"folder": backbone.name}
        ),
    )
    bundle = write_bundle(model, processor, output / "bundle", settings=settings)
    assembled = output / "model"  # the same model whole: what `--model` and the pipeline load
    model.save_pretrained(assembled)
    processor.save_pretrained(assembled)
    domain_share = {}
    if probe is not None and val.domains is not None:
        known = np.array([domain is not None for domain in val.domains])
        truth = np.array([domain == names[0] for domain in val.domains])
        said_face = probe(val.features) >= 0  # (N,) as the model routes
        domain_share = {"probe_agreement_with_labels": float(np.mean(said_face[known] == truth[known]))}
    write_json(
        output / "validation.json",
        {
            "domains": {name: entry["thresholds"].fake for name, entry in domain_entries.items()},
            "threshold": face["thresholds"].fake,
            **domain_share,
            "val": summary,
        },
    )
    write_json(
        output / "training_run.json",
        {
            "versions": collect_versions(),
            "git": git_revision(),
            "command": [Path(sys.argv[0]).name, *sys.argv[1:]],  # no machine path in what ships
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": describe_config(config),
            "caches": {dataset.name: dataset.cache.name for dataset in datasets},
            "train_rows": {
                group: int(count)
                for group, count in zip(*np.unique(data.groups, return_counts=True), strict=True)
            },
            "full_checkpoint": str(assembled),
        },
    )
    fitted_thresholds = {name: round(entry["thresholds"].fake, 4) for name, entry in domain_entries.items()}
    log(
        f"thresholds {json.dumps(fitted_thresholds)}; val ROC-AUC {summary['all'].get('roc_auc', 0):.4f}; "
        f"bundle in {bundle}, full checkpoint in {assembled}"
    )
    return output


def fit_domain_probe(
    datasets: Sequence[Dataset], select, standardiser: Standardiser, config: HeadTrainingConfig
) -> LinearScore:
    """The face-vs-general logit (positive: face) fitted on the clean training images' domain labels,
    each (dataset, domain) group weighing the same."""
    features, labels, groups = [], [], []
    for dataset in datasets:
        cached, _, domains = load_clean_split(dataset, "train", select, standardiser)
        features.append(cached)
        labels += [int(domain == config.domains[0]) for domain in domains]
        groups += [f"{dataset.name}/{domain}" for domain in domains]
    return LinearScore(
        *fit_logistic(
            np.concatenate(features),
            np.array(labels),
            compute_group_weights(groups),
            inverse_regularization=config.probe_inverse_regularization,
            max_iterations=config.max_iterations,
        )
    )


def fit_heads(
    data: TrainingSet, datasets: Sequence[Dataset], select, config: HeadTrainingConfig
) -> tuple[Standardiser, list[LinearScore], LinearScore | None]:
    """The standardisation, the heads (face first; one without domains) and the domain probe."""
    standardiser = Standardiser.fit(data.features)
    standardised = standardiser(data.features)  # (N, F)
    fit = dict(inverse_regularization=config.inverse_regularization, max_iterations=config.max_iterations)
    anchor = load_anchor_score(config.anchor_model, standardiser) if config.anchor_model else None
    if anchor is not None and not config.anchor_correction:
        face_head = anchor
    else:
        offset = anchor(standardised) if anchor is not None else None
        fitted = LinearScore(*fit_logistic(standardised, data.labels, data.weights, offset=offset, **fit))
        face_head = anchor.plus(fitted) if anchor is not None else fitted
    if not config.domains:
        return standardiser, [face_head], None
    chosen = np.array([name in (config.general_datasets or [name]) for name in data.datasets])
    groups = [group for group, keep in zip(data.groups, chosen, strict=True) if keep]
    weights = compute_group_weights(groups, config.pseudo_fake_weight)
    general_head = LinearScore(*fit_logistic(standardised[chosen], data.labels[chosen], weights, **fit))
    return standardiser, [face_head, general_head], fit_domain_probe(datasets, select, standardiser, config)


def calibrate_heads(
    val: ValidationSet,
    heads: Sequence[LinearScore],
    probe: LinearScore | None,
    names: Sequence[str | None],
    config: HeadTrainingConfig,
) -> tuple[list[LinearScore], dict, np.ndarray, np.ndarray]:
    """Per domain, on the val images the probe routes there (`calibrate_domain`): the heads with their
    temperature folded in, each domain's stored entry (thresholds and how they were fitted), and every
    val image's calibrated score and threshold."""
    routed = (
        np.where(probe(val.features) >= 0, 0, 1) if probe is not None else np.zeros(len(val.labels), int)
    )  # (N,) each image's head, as the model routes it
    calibrated, entries = [], {}
    scores, thresholds = np.zeros(len(val.labels)), np.zeros(len(val.labels))
    data = [f"{Path(manifest).parent.name}/{Path(manifest).name}" for manifest in config.manifests]
    for index, (name, head) in enumerate(zip(names, heads, strict=True)):
        mine = routed == index
        groups = [group for group, keep in zip(val.groups, mine, strict=True) if keep]
        temperature, threshold = calibrate_domain(
            head(val.features[mine]), val.labels[mine], groups, config.target_fpr
        )
        calibrated.append(head.scaled(1 / temperature))
        scores[mine] = 1 / (1 + np.exp(-calibrated[-1](val.features[mine])))
        thresholds[mine] = threshold
        entries[name] = {
            "thresholds": Thresholds.single(threshold),
            "fitted_on": {
                "data": data,
                "split": "val",
                "images": int(mine.sum()),
                "target_fpr": config.target_fpr,
                "rule": THRESHOLD_RULE,
                "routed_by": "the domain probe: the val images it sends to this domain",
                "temperature": temperature,
                "temperature_folded_into_head": True,
            },
        }
    return calibrated, entries, scores, thresholds
