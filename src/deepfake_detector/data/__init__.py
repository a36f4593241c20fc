"""Labelled data for training and evaluation: image folders, CSV manifests and `datasets` datasets."""

from deepfake_detector.data.labelled import DataError, LabelledImage, load_labelled_images

__all__ = ["DataError", "LabelledImage", "load_labelled_images"]
