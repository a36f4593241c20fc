"""Train a real/fake classifier on labelled images with the transformers Trainer."""

from deepfake_detector.training.config import (
    AugmentationConfig,
    ConfigError,
    DataConfig,
    FaceCropConfig,
    ModelConfig,
    TrainConfig,
    load_train_config,
)
from deepfake_detector.training.trainer import TrainResult, train

__all__ = [
    "AugmentationConfig",
    "ConfigError",
    "DataConfig",
    "FaceCropConfig",
    "ModelConfig",
    "TrainConfig",
    "TrainResult",
    "load_train_config",
    "train",
]
