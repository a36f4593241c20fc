"""Typed training configuration: data, model, augmentation, and the run itself.

The optimisation settings are not re-declared here: the ``training`` section is passed to the
transformers `TrainingArguments`, which validates it. A YAML (or JSON) file gives the sections, the flags
that fields name (``--data``, ``--faces``) and ``key.sub=value`` overrides from the command line are
applied on top (`deepfake_detector.settings`), and the resolved result is written into the run's output
folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from deepfake_detector.errors import DetectorError
from deepfake_detector.faces.backends import DEFAULT_FACE_DETECTOR, FACE_DETECTORS
from deepfake_detector.faces.boxes import DEFAULT_MARGIN_RATIO
from deepfake_detector.modeling.labels import resolve_label_roles
from deepfake_detector.settings import load_config

CLASS_BALANCE_MODES = ("loss", "sampler", "none")

# Our default recipe, merged under the config's ``training`` section; docs/training.md says where and
# why it differs from the seed card's (configs/seed-vit-base.yaml).
DEFAULT_TRAINING_ARGUMENTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "per_device_train_batch_size": 32,
    "per_device_eval_batch_size": 32,
    "num_train_epochs": 3,
    "weight_decay": 0.05,
    "warmup_steps": 0.1,
    "lr_scheduler_type": "cosine",
    "eval_strategy": "epoch",
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "logging_steps": 20,
    "seed": 0,
    "report_to": "none",  # TensorBoard is wired by `train` itself (see TrainConfig.tensorboard)
}
# TrainingArguments that `train` sets itself, and the top-level key that controls each one.
RESERVED_TRAINING_ARGUMENTS = {
    "output_dir": "output_dir (checkpoints go to OUTPUT/checkpoints)",
    "logging_dir": "tensorboard (logs go to OUTPUT/logs)",
    "bf16": "bf16 (auto, true or false)",
    "resume_from_checkpoint": "resume_from_checkpoint",
    "remove_unused_columns": "nothing: the trainer needs every column",
    "label_names": "nothing: the label column is always 'labels'",
}


class ConfigError(DetectorError):
    """The training configuration is invalid; the message names the key and what is accepted."""


def _check_probability(owner: str, name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"{owner}.{name} must be between 0 and 1, got {value}")


def _check_range(owner: str, name: str, value, low: float, high: float) -> tuple[float, float] | None:
    if value is None:
        return None
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ConfigError(f"{owner}.{name} must be a [min, max] pair, got {value!r}")
    first, second = float(value[0]), float(value[1])
    if not low <= first <= second <= high:
        raise ConfigError(f"{owner}.{name} must satisfy {low} <= min <= max <= {high}, got {list(value)}")
    return first, second


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled images come from and which of them to train and validate on."""

    data: str | None = field(
        default=None,
        metadata={
            "help": "image folder (one sub-folder per class), CSV manifest, or `datasets` name or local file",
            "flag": "--data",
        },
    )
    path_column: str = field(
        default="path",
        metadata={"help": "column with the image path (CSV) or image (`datasets`)", "flag": "--path-column"},
    )
    label_column: str = field(
        default="label",
        metadata={"help": "column with the class name (real/fake and synonyms)", "flag": "--label-column"},
    )
    train_split: str = field(default="train", metadata={"help": "split to train on"})
    eval_split: str | None = field(
        default="val", metadata={"help": "split to validate on after each epoch; null to skip validation"}
    )
    val_fraction: float = field(
        default=0.1, metadata={"help": "share held out for val when the data has no split column"}
    )
    test_fraction: float = field(
        default=0.1, metadata={"help": "share held out for test when the data has no split column"}
    )
    split_seed: int = field(
        default=0, metadata={"help": "seed of the computed split (same seed, same split as `evaluate`)"}
    )
    max_train_samples: int | None = field(
        default=None, metadata={"help": "train on a seeded random subset of this size (quick runs)"}
    )
    max_eval_samples: int | None = field(
        default=None, metadata={"help": "validate on a seeded random subset of this size"}
    )
    max_bad_fraction: float = field(
        default=0.01,
        metadata={
            "help": "share of unreadable training images skipped (and counted) before training refuses"
        },
    )

    def __post_init__(self) -> None:
        for name in ("max_train_samples", "max_eval_samples"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise ConfigError(f"data.{name} must be at least 1 (or null for all), got {value}")
        _check_probability("data", "max_bad_fraction", self.max_bad_fraction)


@dataclass(frozen=True)
class ModelConfig:
    """The network to train: a checkpoint to fine-tune, or an architecture to train from scratch."""

    base: str | None = field(
        default=None,
        metadata={"help": "checkpoint folder or hub id to fine-tune (its image processor is reused)"},
    )
    architecture: dict | None = field(
        default=None,
        metadata={
            "help": "transformers config to train from scratch, e.g. {model_type: resnet, depths: [1, 1]}"
        },
    )
    processor: dict | None = field(
        default=None,
        metadata={"help": "image processor for `architecture` (default: ViTImageProcessor at image_size)"},
    )
    image_size: int = field(
        default=224, metadata={"help": "input size in pixels when training an `architecture` from scratch"}
    )
    labels: dict = field(
        default_factory=lambda: {0: "Realism", 1: "Deepfake"},
        metadata={"help": "class index -> name; one real and one fake name"},
    )
    revision: str | None = field(default=None, metadata={"help": "hub revision of `base`"})

    def __post_init__(self) -> None:
        if (self.base is None) == (self.architecture is None):
            raise ConfigError(
                "model: set exactly one of model.base (a checkpoint to fine-tune) and model.architecture "
                "(a transformers config to train from scratch)"
            )
        if self.architecture is not None and "model_type" not in self.architecture:
            raise ConfigError("model.architecture needs a model_type (e.g. resnet, vit, convnext)")
        if int(self.image_size) < 8:
            raise ConfigError(f"model.image_size must be at least 8 pixels, got {self.image_size}")
        labels = {int(index): str(name) for index, name in self.labels.items()}
        if sorted(labels) != list(range(len(labels))):
            raise ConfigError(f"model.labels must be numbered 0..N-1, got {sorted(labels)}")
        roles = resolve_label_roles(labels)  # LabelMappingError names the accepted names
        if len(roles.real_ids) != 1 or len(roles.fake_ids) != 1:
            raise ConfigError(f"model.labels must have exactly one real and one fake class, got {labels}")
        object.__setattr__(self, "labels", labels)


@dataclass(frozen=True)
class AugmentationConfig:
    """Training-time augmentations, applied in this order to the RGB image before the processor.

    The defaults are our recipe (docs/training.md); null (or 0) turns one off. Crop, rotation and
    sharpness are the seed card's; blur, downscale and JPEG target its stated weakness, compressed and
    low-resolution images, and are applied to both classes alike, so file quality can't give a label away.
    """

    crop_scale: tuple[float, float] | None = field(
        default=(0.6, 1.0), metadata={"help": "random resized crop: area range (seed: [0.08, 1.0])"}
    )
    crop_ratio: tuple[float, float] = field(
        default=(3 / 4, 4 / 3), metadata={"help": "random resized crop: aspect-ratio range"}
    )
    rotation_degrees: float = field(
        default=0.0, metadata={"help": "random rotation within +/- this many degrees"}
    )
    horizontal_flip_probability: float = field(default=0.5, metadata={"help": "chance of a horizontal flip"})
    color_jitter: float | None = field(
        default=0.1, metadata={"help": "brightness/contrast/saturation change up to +/- this share"}
    )
    color_jitter_probability: float = field(
        default=0.8, metadata={"help": "chance of colour jitter when color_jitter is set"}
    )
    sharpness_factor: float | None = field(
        default=None, metadata={"help": "random sharpness: adjust by this factor (2.0 = seed)"}
    )
    sharpness_probability: float = field(default=0.5, metadata={"help": "chance of the sharpness adjustment"})
    blur_sigma: tuple[float, float] | None = field(
        default=(0.1, 1.5), metadata={"help": "Gaussian blur sigma range in pixels"}
    )
    blur_probability: float = field(default=0.2, metadata={"help": "chance of a blur when blur_sigma is set"})
    downscale_factor: tuple[float, float] | None = field(
        default=(0.4, 1.0), metadata={"help": "downscale-then-upscale factor range"}
    )
    downscale_probability: float = field(
        default=0.2, metadata={"help": "chance of a downscale when downscale_factor is set"}
    )
    jpeg_quality: tuple[float, float] | None = field(
        default=(40, 95), metadata={"help": "JPEG re-compression quality range"}
    )
    jpeg_probability: float = field(
        default=0.3, metadata={"help": "chance of JPEG re-compression when jpeg_quality is set"}
    )

    def __post_init__(self) -> None:
        checked = {
            "crop_scale": _check_range("augmentation", "crop_scale", self.crop_scale, 1e-3, 1.0),
            "crop_ratio": _check_range("augmentation", "crop_ratio", self.crop_ratio, 1e-2, 100.0),
            "blur_sigma": _check_range("augmentation", "blur_sigma", self.blur_sigma, 0.0, 50.0),
            "downscale_factor": _check_range(
                "augmentation", "downscale_factor", self.downscale_factor, 0.01, 1.0
            ),
            "jpeg_quality": _check_range("augmentation", "jpeg_quality", self.jpeg_quality, 1, 100),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)
        if not 0.0 <= float(self.rotation_degrees) <= 180.0:
            raise ConfigError(
                f"augmentation.rotation_degrees must be in [0, 180], got {self.rotation_degrees}"
            )
        if self.color_jitter is not None and not 0.0 <= float(self.color_jitter) < 1.0:
            raise ConfigError(f"augmentation.color_jitter must be in [0, 1), got {self.color_jitter}")
        if self.sharpness_factor is not None and float(self.sharpness_factor) < 0:
            raise ConfigError(f"augmentation.sharpness_factor must be >= 0, got {self.sharpness_factor}")
        for item in fields(self):
            if item.name.endswith("_probability"):
                _check_probability("augmentation", item.name, getattr(self, item.name))


@dataclass(frozen=True)
class PseudoFakeConfig:
    """Self-blended pseudo-fakes (`deepfake_detector.training.pseudo_fakes`) added to the training set.

    Each epoch draws ``share`` x (real training images) extra items; each is a randomly chosen real
    image blended with an altered copy of itself, labelled fake, then augmented like any other image.
    They teach the blending seam that swaps and retouching leave, rather than one dataset's identities.
    """

    share: float = field(
        default=0.0,
        metadata={"help": "pseudo-fakes per epoch as a share of the real training images (0: off)"},
    )

    def __post_init__(self) -> None:
        if isinstance(self.share, bool) or not isinstance(self.share, (int, float)):
            raise ConfigError(f"pseudo_fakes.share must be a number, got {self.share!r}")
        if not 0.0 <= self.share <= 4.0:
            raise ConfigError(f"pseudo_fakes.share must be between 0 and 4, got {self.share}")
        object.__setattr__(self, "share", float(self.share))


@dataclass(frozen=True)
class FaceCropConfig:
    """Train and validate on face crops, cut exactly as ``predict --faces`` cuts them.

    Each image is cropped to its largest face by the same detector, margin and crop function that
    inference uses (`deepfake_detector.faces.crops.crop_largest_face`); an image where no face is
    found is used whole, and counted in the log and in ``training_run.json``. The settings are written
    into the trained model's ``config.json`` (``deepfake_detector.faces``), so ``predict``, ``evaluate``,
    ``calibrate`` and ``explain`` use face mode with them by default.
    """

    enabled: bool = field(
        default=False,
        metadata={
            "help": "crop every training and validation image to its largest face, as `predict --faces` "
            "crops (detector and margin: faces.detector, faces.margin_ratio); the trained model then "
            "predicts in face mode by default",
            "flag": "--faces",
        },
    )
    detector: str = field(
        default=DEFAULT_FACE_DETECTOR,
        metadata={"help": f"face detector: {', '.join(FACE_DETECTORS)} (docs/faces.md compares them)"},
    )
    margin_ratio: float = field(
        default=DEFAULT_MARGIN_RATIO,
        metadata={"help": "side of the square crop over the face box's longer side (1.3: FaceForensics++)"},
    )

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ConfigError(f"faces.enabled must be true or false, got {self.enabled!r}")
        if self.detector not in FACE_DETECTORS:
            raise ConfigError(
                f"faces.detector must be one of {', '.join(FACE_DETECTORS)}, got {self.detector!r}"
            )
        if isinstance(self.margin_ratio, bool) or not isinstance(self.margin_ratio, (int, float)):
            raise ConfigError(f"faces.margin_ratio must be a number, got {self.margin_ratio!r}")
        if not self.margin_ratio >= 1.0:
            raise ConfigError(
                f"faces.margin_ratio must be at least 1.0 (the face box itself), got {self.margin_ratio}"
            )
        object.__setattr__(self, "margin_ratio", float(self.margin_ratio))

    def options(self):
        """The `FaceOptions` inference uses for the same crops; None when face crops are off."""
        from deepfake_detector.faces.crops import FaceOptions

        return FaceOptions(detector=self.detector, margin_ratio=self.margin_ratio) if self.enabled else None


@dataclass(frozen=True)
class TrainConfig:
    """One training run: what to train on, what to train, how, and where the result goes."""

    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "folder for the trained model, logs and checkpoints",
            "flag": "--output-dir",
            "aliases": ["-o"],
            "metavar": "FOLDER",
        },
    )
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "the labelled data"})
    model: ModelConfig | None = field(default=None, metadata={"help": "the network (required)"})
    augmentation: AugmentationConfig = field(
        default_factory=AugmentationConfig, metadata={"help": "training-time augmentations"}
    )
    faces: FaceCropConfig = field(
        default_factory=FaceCropConfig,
        metadata={
            "help": "train on face crops (off by default); `faces: true` turns it on with defaults",
            "shorthand": "enabled",
        },
    )
    pseudo_fakes: PseudoFakeConfig = field(
        default_factory=PseudoFakeConfig,
        metadata={"help": "self-blended pseudo-fakes made from real training images (off by default)"},
    )
    class_balance: str = field(
        default="loss",
        metadata={"help": "loss: class-weighted cross-entropy; sampler: oversample the rare class; none"},
    )
    bf16: bool | str = field(
        default="auto", metadata={"help": "bf16 autocast: auto (when the CPU/GPU supports it), true, false"}
    )
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard logs to OUTPUT/logs"})
    resume_from_checkpoint: bool | str | None = field(
        default=None,
        metadata={
            "help": "true (the flag alone): continue from the last checkpoint in OUTPUT/checkpoints; or the "
            "CHECKPOINT folder given",
            "flag": "--resume",
            "nargs": "?",
            "const": True,
            "metavar": "CHECKPOINT",
        },
    )
    max_train_minutes: float | None = field(
        default=None,
        metadata={"help": "stop training (then validate and save as usual) after this many minutes"},
    )
    keep_checkpoints: bool = field(
        default=True,
        metadata={"help": "keep OUTPUT/checkpoints (optimizer state, for resuming) after training"},
    )
    training: dict = field(
        default_factory=dict, metadata={"help": "transformers TrainingArguments, merged over our defaults"}
    )

    def __post_init__(self) -> None:
        if self.model is None:
            raise ConfigError(
                "no model to train: set model.base (a checkpoint to fine-tune) or model.architecture "
                "(a transformers config to train from scratch)"
            )
        if self.class_balance not in CLASS_BALANCE_MODES:
            raise ConfigError(
                f"class_balance must be one of {', '.join(CLASS_BALANCE_MODES)}, got {self.class_balance!r}"
            )
        if self.max_train_minutes is not None and not float(self.max_train_minutes) > 0:
            raise ConfigError(f"max_train_minutes must be positive (or null), got {self.max_train_minutes}")
        if self.bf16 not in (True, False, "auto"):
            raise ConfigError(f"bf16 must be true, false or auto, got {self.bf16!r}")
        for key, instead in RESERVED_TRAINING_ARGUMENTS.items():
            if key in self.training:
                raise ConfigError(f"training.{key} is set by the trainer; set the top-level {instead}")

    def to_dict(self) -> dict:
        return asdict(self)

    def training_arguments(self) -> dict[str, Any]:
        """Our defaults with the config's ``training`` section on top (before the trainer's own keys)."""
        return {**DEFAULT_TRAINING_ARGUMENTS, **self.training}


def load_train_config(
    path: str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    *,
    flags: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """Reads a YAML (or JSON) training config and applies flags, then ``key.sub=value`` overrides, on top.

    Args:
        path: The file (``.json``: JSON, else YAML 1.2); None starts from the defaults.
        overrides: Items like ``training.learning_rate=1e-4`` or ``data.data=faces/manifest.csv``;
            values are parsed as YAML (numbers, booleans, lists, null).
        flags: Keys like ``data.path_column`` with their values, as the command's flags give them
            (`deepfake_detector.settings.file_flag_values`), applied before ``overrides``.

    Raises:
        ConfigError: The file can't be read or parsed, an override is malformed, or a value is invalid.
    """
    return load_config(TrainConfig, path, flags=flags, assignments=overrides, error=ConfigError)
