"""`train`: fine-tune or train an image-classification model on labelled images with the transformers
`Trainer`, and write a normal Hugging Face folder that `Detector`, `transformers.pipeline` and the seed
card's snippet all load.

Everything that can be wrong with the config or the data is checked before the first step. The same
call runs single-process or under ``torchrun`` / ``accelerate launch`` (DDP): the Trainer shards the
data, and only the main process writes the output folder.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deepfake_detector.data.labelled import DataError, LabelledImage, load_labelled_images
from deepfake_detector.errors import CheckpointError
from deepfake_detector.modeling.checkpoints import resolve_checkpoint
from deepfake_detector.modeling.labels import LabelRoles, resolve_label_roles
from deepfake_detector.scoring import compute_fake_scores, compute_probabilities
from deepfake_detector.training.augment import build_augmentation
from deepfake_detector.training.config import ConfigError, ModelConfig, TrainConfig
from deepfake_detector.training.dataset import (
    FaceCropScan,
    ImageClassificationDataset,
    UnreadableImage,
    find_face_crops,
    find_unreadable_images,
    sample_images,
)
from deepfake_detector.training.outputs import store_model_settings

logger = logging.getLogger(__name__)

CHECKPOINTS_FOLDER = "checkpoints"
LOGS_FOLDER = "logs"
_SHOWN_PROBLEMS = 5


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    Attributes:
        output_dir: The trained model's folder.
        train_images: Images trained on (after unreadable ones were left out).
        eval_images: Images validated on; 0 without a validation split.
        skipped_images: Unreadable images left out before or during training (this process).
        global_step: Optimizer steps taken, including those of a resumed run.
        epochs: Passes over the training images, fractional when max_steps ended the run.
        train_loss: Mean training loss over the run.
        train_runtime_s: Wall time of `Trainer.train`.
        bf16: Whether bf16 autocast was on.
        eval_metrics: The last validation metrics (``eval_accuracy``, ``eval_roc_auc``, ...).
        no_face_images: With face crops: training and validation images in which no face was found
            (used whole); None without face crops.
    """

    output_dir: str
    train_images: int
    eval_images: int
    skipped_images: int
    global_step: int
    epochs: float
    train_loss: float
    train_runtime_s: float
    bf16: bool
    eval_metrics: dict = field(default_factory=dict)
    no_face_images: int | None = None

    def to_dict(self) -> dict:
        return {
            "output_dir": self.output_dir,
            "train_images": self.train_images,
            "eval_images": self.eval_images,
            "skipped_images": self.skipped_images,
            "global_step": self.global_step,
            "epochs": self.epochs,
            "train_loss": self.train_loss,
            "train_runtime_s": self.train_runtime_s,
            "bf16": self.bf16,
            "eval_metrics": dict(self.eval_metrics),
            "no_face_images": self.no_face_images,
        }


def resolve_bf16(setting: bool | str) -> bool:
    """``"auto"`` becomes True where the device computes in bf16 natively (the check inference's
    ``precision="auto"`` uses too); True/False stay as given."""
    if setting != "auto":
        return bool(setting)
    import torch

    from deepfake_detector.inference.engines import supports_native_bf16

    return supports_native_bf16("cuda" if torch.cuda.is_available() else "cpu")


def build_model_and_processor(config: ModelConfig):
    """The model to train (with the config's labels) and the image processor that goes with it.

    Args:
        config: A checkpoint to fine-tune (its classifier head is replaced when its labels differ) or an
            architecture to initialise at random.

    Returns:
        ``(model, processor)``.

    Raises:
        CheckpointError: ``base`` can't be found or loaded.
        ConfigError: ``architecture`` or ``processor`` names something transformers doesn't know.
    """
    import transformers
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForImageClassification

    id2label = dict(config.labels)
    label2id = {name: index for index, name in id2label.items()}
    if config.base is not None:
        try:
            checkpoint = resolve_checkpoint(config.base, revision=config.revision)
        except CheckpointError as error:
            raise CheckpointError(
                f"model.base: {error}. For `train`, point model.base at that folder (--set model.base=FOLDER)"
            ) from None
        model = AutoModelForImageClassification.from_pretrained(
            checkpoint.folder,
            num_labels=len(id2label),
            id2label=id2label,
            label2id=label2id,
            ignore_mismatched_sizes=True,  # a new head when the base has other classes (in21k: 21,843)
            use_safetensors=True,
        )
        return model, AutoImageProcessor.from_pretrained(checkpoint.folder)
    settings = dict(config.architecture)
    model_type = settings.pop("model_type")
    try:
        model_config = AutoConfig.for_model(
            model_type, num_labels=len(id2label), id2label=id2label, label2id=label2id, **settings
        )
        model = AutoModelForImageClassification.from_config(model_config)
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"model.architecture: cannot build {model_type!r} for image classification ({error})"
        ) from None
    processor_settings = dict(config.processor or {})
    processor_type = processor_settings.pop("image_processor_type", "ViTImageProcessor")
    processor_class = getattr(transformers, processor_type, None)
    if processor_class is None or not processor_type.endswith("ImageProcessor"):
        raise ConfigError(f"model.processor: unknown image_processor_type {processor_type!r}")
    if processor_type == "ViTImageProcessor":
        processor_settings.setdefault("size", {"height": config.image_size, "width": config.image_size})
    return model, processor_class(**processor_settings)


def _label_ids(roles: LabelRoles) -> dict[str, int]:
    return {"real": roles.real_ids[0], "fake": roles.fake_ids[0]}


def _describe(images: list[LabelledImage]) -> str:
    counts = Counter(image.label for image in images)
    return f"{len(images)} images ({counts['real']} real, {counts['fake']} fake)"


def _drop_unreadable(
    images: list[LabelledImage], what: str, max_bad_fraction: float, *, log: bool
) -> tuple[list[LabelledImage], list[UnreadableImage]]:
    problems = find_unreadable_images(images)
    if not problems:
        return images, []
    examples = "; ".join(f"{problem.path}: {problem.error}" for problem in problems[:_SHOWN_PROBLEMS])
    if len(problems) > max_bad_fraction * len(images):
        raise DataError(
            f"{len(problems)} of {len(images)} {what} images can't be read (more than "
            f"data.max_bad_fraction = {max_bad_fraction}), e.g. {examples}. Fix or remove them, or raise "
            "data.max_bad_fraction to skip them"
        )
    if log:
        logger.warning("skipping %d unreadable %s images, e.g. %s", len(problems), what, examples)
    bad = {problem.path for problem in problems}
    kept = [image for image in images if image.path not in bad]
    return kept, problems


def _load_split(config: TrainConfig, split: str, limit: int | None) -> list[LabelledImage]:
    data = config.data
    images = load_labelled_images(
        data.data,
        split=split,
        path_column=data.path_column,
        label_column=data.label_column,
        val_fraction=data.val_fraction,
        test_fraction=data.test_fraction,
        seed=data.split_seed,
    )
    return sample_images(images, limit, seed=data.split_seed)


def _scan_faces(
    config: TrainConfig, images: list[LabelledImage], what: str, face_detector, *, log: bool
) -> FaceCropScan:
    options = config.faces.options()
    scan = find_face_crops(images, face_detector, options, progress=log)
    if log:
        found = sum(box is not None for box in scan.crop_boxes)
        logger.info(
            "face crops (%s, margin %g): cropped %d of %d %s images to their largest face; %d without a "
            "face are used whole%s",
            options.detector,
            options.margin_ratio,
            found,
            len(images),
            what,
            len(scan.no_face),
            f", e.g. {', '.join(scan.no_face[:_SHOWN_PROBLEMS])}" if scan.no_face else "",
        )
    return scan


def build_compute_metrics(roles: LabelRoles):
    """Validation metrics from the Trainer's logits: accuracy, balanced accuracy, F1 and ROC-AUC (fake)."""
    from deepfake_detector.optional import require

    metrics = require("sklearn.metrics", "train")
    fake_ids = set(roles.fake_ids)

    def compute_metrics(prediction) -> dict[str, float]:
        logits, labels = prediction.predictions, np.asarray(prediction.label_ids)
        fake_scores = compute_fake_scores(compute_probabilities(logits), roles.fake_ids)  # (N,)
        is_fake = np.isin(labels, list(fake_ids)).astype(int)
        called_fake = (fake_scores >= 0.5).astype(int)
        result = {
            "accuracy": float(metrics.accuracy_score(is_fake, called_fake)),
            "balanced_accuracy": float(metrics.balanced_accuracy_score(is_fake, called_fake)),
            "f1": float(metrics.f1_score(is_fake, called_fake, zero_division=0)),
        }
        if 0 < is_fake.sum() < len(is_fake):
            result["roc_auc"] = float(metrics.roc_auc_score(is_fake, fake_scores))
        return result

    return compute_metrics


def _class_weights(labels: list[int], num_labels: int) -> np.ndarray:
    # "Balanced" weights n / (C * n_c): every class contributes the same total to the loss.
    counts = np.bincount(labels, minlength=num_labels).astype(np.float64)
    return np.where(counts > 0, len(labels) / (num_labels * np.maximum(counts, 1)), 0.0)


def build_weighted_loss(weights: np.ndarray):
    """A ``compute_loss_func`` for the Trainer: class-weighted cross-entropy, summed and divided by the
    number of items in the (accumulated, all-process) batch, as the Trainer expects such losses to be."""
    import torch
    import torch.nn.functional as F

    class_weights = torch.tensor(weights, dtype=torch.float32)

    def compute_loss(outputs, labels, num_items_in_batch=None):
        logits = outputs["logits"].float()  # (B, C)
        loss = F.cross_entropy(logits, labels, weight=class_weights.to(logits.device), reduction="sum")
        return loss / (num_items_in_batch if num_items_in_batch is not None else labels.numel())

    return compute_loss


def _final_eval_metrics(trainer) -> dict:
    """The final model's validation metrics, reusing the end-of-training evaluation when there was one."""
    evaluations = [entry for entry in trainer.state.log_history if "eval_loss" in entry]
    last_is_final = bool(evaluations) and evaluations[-1].get("step") == trainer.state.global_step
    if last_is_final and not trainer.args.load_best_model_at_end:
        return {key: value for key, value in evaluations[-1].items() if key.startswith("eval_")}
    from transformers.integrations import TensorBoardCallback

    # Its writer was closed when training ended; logging again would open a second one elsewhere.
    trainer.remove_callback(TensorBoardCallback)
    return trainer.evaluate()


def _trainer_class():
    from transformers import Trainer

    class DetectorTrainer(Trainer):
        """The stock Trainer, plus an oversampling sampler when ``class_balance: sampler``."""

        def __init__(self, *args, sample_weights=None, **kwargs):
            super().__init__(*args, **kwargs)
            self.sample_weights = sample_weights

        def _get_train_sampler(self, train_dataset=None):
            if self.sample_weights is None:
                return super()._get_train_sampler(train_dataset)
            import torch

            generator = torch.Generator().manual_seed(self.args.data_seed or self.args.seed)
            return torch.utils.data.WeightedRandomSampler(
                self.sample_weights,
                num_samples=len(self.sample_weights),
                replacement=True,
                generator=generator,
            )

    return DetectorTrainer


def _build_training_arguments(config: TrainConfig, output: Path, bf16: bool, has_eval: bool):
    import torch
    from transformers import TrainingArguments

    settings = config.training_arguments()
    if not has_eval:
        settings.update(eval_strategy="no", load_best_model_at_end=False)
    has_gpu = torch.cuda.is_available()
    settings.setdefault("dataloader_pin_memory", has_gpu)  # pinning only helps copies to a GPU
    if not has_gpu and not torch.backends.mps.is_available():
        # accelerate sets up multi-process CPU DDP (gloo) under torchrun only when told it runs on the CPU.
        settings.setdefault("use_cpu", True)
    settings.update(
        output_dir=str(output / CHECKPOINTS_FOLDER),
        bf16=bf16,
        remove_unused_columns=False,  # keep pixel_values/labels as our dataset makes them
        label_names=["labels"],
    )
    try:
        return TrainingArguments(**settings)
    except TypeError as error:
        raise ConfigError(
            f"training: {error}; the training section takes transformers.TrainingArguments settings"
        ) from None
    except ValueError as error:
        raise ConfigError(f"training: {error}") from None


def _resume_checkpoint(config: TrainConfig, checkpoints: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    existing = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    resume = config.resume_from_checkpoint
    if resume is True:
        if existing is None:
            raise ConfigError(f"--resume: no checkpoint to resume from in {checkpoints}")
        return existing
    if resume:
        if not Path(resume).is_dir():
            raise ConfigError(f"--resume {resume}: no such checkpoint folder")
        return str(resume)
    if existing is not None:
        raise ConfigError(
            f"{checkpoints} already holds checkpoints of an earlier run ({Path(existing).name}); pass "
            "--resume to continue it, or choose another --output-dir"
        )
    return None


def train(config: TrainConfig) -> TrainResult:
    """Trains a real/fake classifier and writes it as a Hugging Face folder.

    The output folder gets ``config.json`` (with ``id2label``), ``model.safetensors``, the image
    processor, a model card ``README.md`` with YAML metadata and the validation results,
    ``training_config.yaml`` (the resolved config and every TrainingArguments value) and
    ``training_run.json`` (package version, git revision, data counts, skipped images, metrics).
    Checkpoints for resuming go to ``checkpoints/`` and TensorBoard logs to ``logs/`` inside it.

    Args:
        config: The run. ``config.data.data`` and ``config.output_dir`` must be set.

    Returns:
        What the run produced.

    Raises:
        ConfigError: An invalid setting, or a resume that has nothing to resume.
        DataError: Missing columns, unknown labels, a class with no images, or too many unreadable files.
        CheckpointError: The base checkpoint can't be loaded.
    """
    if not config.data.data:
        raise ConfigError("no training data: set data.data in the config or pass --data")
    if not config.output_dir:
        raise ConfigError("no output folder: set output_dir in the config or pass --output-dir")
    output = Path(config.output_dir)
    started = time.time()
    bf16 = resolve_bf16(config.bf16)
    checkpoint = _resume_checkpoint(config, output / CHECKPOINTS_FOLDER)
    has_eval = config.data.eval_split is not None
    args = _build_training_arguments(config, output, bf16, has_eval)
    main_process = args.process_index == 0
    face_options = config.faces.options()
    face_detector = face_options.build_detector() if face_options else None  # a missing extra: now

    train_images = _load_split(config, config.data.train_split, config.data.max_train_samples)
    eval_images = (
        _load_split(config, config.data.eval_split, config.data.max_eval_samples) if has_eval else []
    )
    train_images, unreadable = _drop_unreadable(
        train_images, "training", config.data.max_bad_fraction, log=main_process
    )
    if has_eval:
        eval_images, eval_unreadable = _drop_unreadable(eval_images, "validation", 1.0, log=main_process)
        unreadable += eval_unreadable
    if main_process:
        logger.info("training on %s", _describe(train_images))
        if has_eval:
            logger.info("validating on %s", _describe(eval_images))
    train_faces = eval_faces = None
    if face_detector is not None:
        # Every process scans every image (the Trainer shards batches, not this list); same result.
        train_faces = _scan_faces(config, train_images, "training", face_detector, log=main_process)
        if has_eval:
            eval_faces = _scan_faces(config, eval_images, "validation", face_detector, log=main_process)

    model, processor = build_model_and_processor(config.model)
    # Before training, so that the resumable checkpoints carry the face settings too.
    store_model_settings(model.config, config)
    roles = resolve_label_roles(model.config.id2label)
    label_ids = _label_ids(roles)
    train_dataset = ImageClassificationDataset(
        train_images,
        processor,
        label_ids,
        augment=build_augmentation(config.augmentation),
        crop_boxes=train_faces.crop_boxes if train_faces else None,
        pseudo_fakes=round(config.pseudo_fakes.share * sum(image.label == "real" for image in train_images)),
    )
    if main_process and train_dataset.pseudo_fakes:
        logger.info("adding %d self-blended pseudo-fakes to every epoch", train_dataset.pseudo_fakes)
    eval_dataset = (
        ImageClassificationDataset(
            eval_images, processor, label_ids, crop_boxes=eval_faces.crop_boxes if eval_faces else None
        )
        if has_eval
        else None
    )
    train_labels = train_dataset.labels()
    weights = _class_weights(train_labels, len(roles.id2label))
    trainer = _trainer_class()(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        processing_class=processor,
        compute_metrics=build_compute_metrics(roles) if has_eval else None,
        compute_loss_func=build_weighted_loss(weights) if config.class_balance == "loss" else None,
        sample_weights=weights[train_labels].tolist() if config.class_balance == "sampler" else None,
        callbacks=[
            *_tensorboard_callbacks(config, output, main_process),
            *([_time_limit_callback(config.max_train_minutes)] if config.max_train_minutes else []),
        ],
    )
    if main_process:
        logger.info(
            "model %s (%s parameters), bf16 autocast %s, class balance %s, %d process(es)",
            type(model).__name__,
            f"{sum(p.numel() for p in model.parameters()):,}",
            "on" if bf16 else "off",
            config.class_balance,
            args.world_size,
        )
    outcome = trainer.train(resume_from_checkpoint=checkpoint)
    eval_metrics = _final_eval_metrics(trainer) if has_eval else {}
    skipped = [*unreadable, *train_dataset.skipped, *(eval_dataset.skipped if eval_dataset else [])]
    result = TrainResult(
        output_dir=str(output),
        train_images=len(train_images),
        eval_images=len(eval_images),
        skipped_images=len(skipped),
        global_step=trainer.state.global_step,
        epochs=float(trainer.state.epoch or 0.0),
        train_loss=float(outcome.training_loss),
        train_runtime_s=float(outcome.metrics.get("train_runtime", time.time() - started)),
        bf16=bf16,
        eval_metrics={key: float(value) for key, value in eval_metrics.items()},
        no_face_images=(
            len(train_faces.no_face) + (len(eval_faces.no_face) if eval_faces else 0) if train_faces else None
        ),
    )
    # Every process takes part: under FSDP the weights are sharded and gathering them is collective
    # (under DDP this is the plain state dict). Only the main process writes them.
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if main_process:
        logger.info("left out %d unreadable images in all (listed in training_run.json)", len(skipped))
        from deepfake_detector.training.outputs import write_training_outputs

        write_training_outputs(
            trainer.accelerator.unwrap_model(trainer.model),
            processor,
            config,
            args,
            result,
            skipped=skipped,
            counts={
                "train": {**_counts(train_images, train_faces), "pseudo_fakes": train_dataset.pseudo_fakes},
                "eval": _counts(eval_images, eval_faces),
            },
            started=started,
            state_dict=state_dict,
        )
        logger.info("wrote the trained model to %s", output)
    trainer.accelerator.wait_for_everyone()
    return result


def _counts(images: list[LabelledImage], faces: FaceCropScan | None = None) -> dict:
    by_source = Counter((image.source or "", image.label) for image in images)
    counts = {
        "images": len(images),
        "real": sum(image.label == "real" for image in images),
        "fake": sum(image.label == "fake" for image in images),
        "by_source": {
            source: {"real": by_source[(source, "real")], "fake": by_source[(source, "fake")]}
            for source in sorted({source for source, _ in by_source})
            if source
        },
    }
    if faces is not None:  # face crops: the images used whole because no face was found in them
        counts.update(no_face=len(faces.no_face), no_face_paths=list(faces.no_face))
    return counts


def _tensorboard_callbacks(config: TrainConfig, output: Path, main_process: bool) -> list:
    if not config.tensorboard:
        return []
    from deepfake_detector.optional import require

    require("tensorboard", "train")
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    # Only the main process writes events; the others get a callback that stays idle.
    writer = SummaryWriter(log_dir=str(output / LOGS_FOLDER)) if main_process else None
    return [TensorBoardCallback(tb_writer=writer)]


def _time_limit_callback(minutes: float):
    import torch
    from transformers import TrainerCallback

    class TimeLimit(TrainerCallback):
        """Ends training after ``minutes``, as if the last step had been planned: validation, saving and
        the model card still happen. Under DDP every process stops at the same step (any one's clock)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.deadline = time.monotonic() + minutes * 60.0

        def on_step_end(self, args, state, control, **kwargs):
            # On the training device: NCCL can only reduce GPU tensors.
            stop = torch.tensor([float(time.monotonic() > self.deadline)], device=args.device)
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
            if stop.item() and not control.should_training_stop:
                logger.info("max_train_minutes = %g reached at step %d; stopping", minutes, state.global_step)
                control.should_training_stop = True
            return control

    return TimeLimit()
