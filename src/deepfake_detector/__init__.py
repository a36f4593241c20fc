"""Detect deepfake images with Hugging Face image-classification checkpoints.

The public API is re-exported lazily so that ``import deepfake_detector`` (and the CLI's ``--help``)
does not import torch or transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from deepfake_detector.version import __version__

_EXPORTS = {
    "Detector": "deepfake_detector.inference.detector",
    "ModelInfo": "deepfake_detector.inference.detector",
    "DetectorConfig": "deepfake_detector.inference.config",
    "Prediction": "deepfake_detector.results",
    "VideoPrediction": "deepfake_detector.results",
    "FaceOptions": "deepfake_detector.faces.crops",
    "FaceOverrides": "deepfake_detector.faces.crops",
    "FaceAggregation": "deepfake_detector.aggregation",
    "FrameAggregation": "deepfake_detector.aggregation",
    "FrameSampling": "deepfake_detector.video.decode",
    "Thresholds": "deepfake_detector.scoring",
    "LabelRoles": "deepfake_detector.modeling.labels",
    "DetectorError": "deepfake_detector.errors",
    "CheckpointError": "deepfake_detector.errors",
    "ImageLoadError": "deepfake_detector.errors",
    "LabelMappingError": "deepfake_detector.errors",
    "export_onnx": "deepfake_detector.export.onnx",
}

__all__ = [  # noqa: RUF022 - grouped by kind, like _EXPORTS
    "__version__",
    "Detector",
    "ModelInfo",
    "DetectorConfig",
    "Prediction",
    "VideoPrediction",
    "FaceOptions",
    "FaceOverrides",
    "FaceAggregation",
    "FrameAggregation",
    "FrameSampling",
    "Thresholds",
    "LabelRoles",
    "DetectorError",
    "CheckpointError",
    "ImageLoadError",
    "LabelMappingError",
    "export_onnx",
]

if TYPE_CHECKING:
    from deepfake_detector.aggregation import FaceAggregation, FrameAggregation
    from deepfake_detector.errors import CheckpointError, DetectorError, ImageLoadError, LabelMappingError
    from deepfake_detector.export.onnx import export_onnx
    from deepfake_detector.faces.crops import FaceOptions, FaceOverrides
    from deepfake_detector.inference.config import DetectorConfig
    from deepfake_detector.inference.detector import Detector, ModelInfo
    from deepfake_detector.modeling.labels import LabelRoles
    from deepfake_detector.results import Prediction, VideoPrediction
    from deepfake_detector.scoring import Thresholds
    from deepfake_detector.video.decode import FrameSampling


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'deepfake_detector' has no attribute {name!r}")
