"""The `Detector`: a checkpoint, its preprocessing and its label roles, turned into verdicts.

Data flows one way: inputs are loaded (``io.images``), preprocessed by the checkpoint's own image
processor, run through the model, and the logits become scores and verdicts (``scoring``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice

import numpy as np

from deepfake_detector.errors import DetectorError, ImageLoadError
from deepfake_detector.io.images import DEFAULT_MAX_PIXELS, ImageInput, describe_source, load_image
from deepfake_detector.io.inputs import InputProblem
from deepfake_detector.modeling.checkpoints import (
    DEFAULT_MODEL,
    load_model_and_processor,
    resolve_checkpoint,
)
from deepfake_detector.modeling.labels import LabelRoles, resolve_label_roles
from deepfake_detector.results import Prediction
from deepfake_detector.scoring import (
    Calibration,
    Thresholds,
    compute_fake_scores,
    compute_probabilities,
    compute_verdict,
)

DEFAULT_BATCH_SIZE = 8


@dataclass(frozen=True)
class ModelInfo:
    """What a loaded checkpoint is: labels, roles, preprocessing and size."""

    model: str
    revision: str | None
    architecture: str
    id2label: dict[int, str]
    roles: dict[str, list[str]]
    thresholds: dict[str, float]
    temperature: float = 1.0
    preprocessing: dict = field(default_factory=dict)
    num_parameters: int = 0
    device: str = "cpu"

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "revision": self.revision,
            "architecture": self.architecture,
            "id2label": {str(k): v for k, v in self.id2label.items()},
            "roles": self.roles,
            "thresholds": self.thresholds,
            "temperature": self.temperature,
            "preprocessing": self.preprocessing,
            "num_parameters": self.num_parameters,
            "device": self.device,
        }


def _resolve_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _describe_processor(processor) -> dict:
    settings = processor.to_dict()
    keys = (
        "image_processor_type",
        "size",
        "crop_size",
        "do_resize",
        "do_center_crop",
        "resample",
        "do_rescale",
        "rescale_factor",
        "do_normalize",
        "image_mean",
        "image_std",
    )
    return {key: settings[key] for key in keys if settings.get(key) is not None}


class Detector:
    """Scores images as real or fake with a Hugging Face image-classification checkpoint.

    Build one with `Detector.from_pretrained`; the constructor takes already-loaded parts.
    """

    def __init__(
        self,
        model,
        processor,
        roles: LabelRoles,
        *,
        model_id: str,
        revision: str | None = None,
        calibration: Calibration | None = None,
        device: str = "cpu",
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.model = model.to(device)
        self.processor = processor
        self.roles = roles
        self.model_id = model_id
        self.revision = revision
        self.calibration = calibration or Calibration()
        self.device = device
        self.max_pixels = max_pixels

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike = DEFAULT_MODEL,
        *,
        revision: str | None = None,
        device: str = "auto",
        thresholds: Thresholds | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_pickle: bool = False,
        cache_dir: str | os.PathLike | None = None,
        local_files_only: bool = False,
        **model_kwargs,
    ) -> Detector:
        """Loads a checkpoint from a local folder, a hub id, or an alias such as ``seed-v2``.

        Args:
            name_or_path: Folder written by ``save_pretrained`` or a Hugging Face hub id.
            revision: Hub branch, tag or commit.
            device: "auto" (CUDA when available, else CPU), "cpu", "cuda", "cuda:1", ...
            thresholds: Decision thresholds; by default those stored in the checkpoint's config by
                ``calibrate`` (``deepfake_detector.thresholds``), else 0.5/0.5. The stored
                temperature is always applied.
            max_pixels: Decompression-bomb limit: images with more pixels are refused.
            allow_pickle: Accept pickle-only (``pytorch_model.bin``) checkpoints. Only for trusted files.
            cache_dir: Hugging Face cache folder.
            local_files_only: Do not use the network.
            **model_kwargs: Passed to ``from_pretrained`` of the model.

        Raises:
            CheckpointError: The checkpoint can't be found, trusted or loaded, or its labels can't be
                mapped to real and fake (`LabelMappingError`).
        """
        checkpoint = resolve_checkpoint(
            name_or_path,
            revision=revision,
            allow_pickle=allow_pickle,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
        )
        model, processor = load_model_and_processor(checkpoint, allow_pickle=allow_pickle, **model_kwargs)
        roles = resolve_label_roles(model.config.id2label)
        calibration = Calibration.from_config(model.config)
        if thresholds is not None:
            calibration = replace(calibration, thresholds=thresholds)
        return cls(
            model,
            processor,
            roles,
            model_id=checkpoint.name,
            revision=checkpoint.revision or revision,
            calibration=calibration,
            device=_resolve_device(device),
            max_pixels=max_pixels,
        )

    @property
    def thresholds(self) -> Thresholds:
        return self.calibration.thresholds

    def info(self) -> ModelInfo:
        """Labels, role mapping, input preprocessing and parameter count of the loaded checkpoint."""
        return ModelInfo(
            model=self.model_id,
            revision=self.revision,
            architecture=type(self.model).__name__,
            id2label=dict(self.roles.id2label),
            roles=self.roles.to_dict(),
            thresholds=self.thresholds.to_dict(),
            temperature=self.calibration.temperature,
            preprocessing=_describe_processor(self.processor),
            num_parameters=sum(p.numel() for p in self.model.parameters()),
            device=self.device,
        )

    def compute_logits(self, images: Sequence) -> np.ndarray:
        """Runs preprocessing and the model on already-loaded RGB images.

        Args:
            images: RGB PIL images (see `deepfake_detector.io.images.load_image`).

        Returns:
            Float32 logits, shape (B, num_labels).
        """
        import torch

        inputs = self.processor(images=list(images), return_tensors="pt")
        inputs = {key: value.to(self.device) for key, value in inputs.items()}
        with torch.inference_mode():
            logits = self.model(**inputs).logits  # (B, C)
        return logits.float().cpu().numpy()

    def predict(self, images: ImageInput | Iterable[ImageInput], *, batch_size: int = DEFAULT_BATCH_SIZE):
        """Scores one image or many.

        Args:
            images: One input or a list of them: paths, encoded bytes, PIL images, NumPy arrays.
            batch_size: Images per model call.

        Returns:
            A `Prediction` for a single input, else a list in input order. An input that can't be
            read gives a `Prediction` with ``error`` set; it never stops the others.
        """
        if _is_single(images):
            return next(self.iter_predict([images], batch_size=1))
        return list(self.iter_predict(images, batch_size=batch_size))

    def iter_predict(
        self, images: Iterable[ImageInput | InputProblem], *, batch_size: int = DEFAULT_BATCH_SIZE
    ) -> Iterator[Prediction]:
        """Like `predict`, but lazy: reads and scores ``batch_size`` inputs at a time, in order."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        indexed = enumerate(images)
        while batch := list(islice(indexed, batch_size)):
            yield from self._predict_batch(batch)

    def _load(self, index: int, item) -> tuple[str | int, object]:
        if isinstance(item, InputProblem):
            return item.source, ImageLoadError(item.error)
        source = describe_source(item, index)
        try:
            return source, load_image(
                item,
                name=str(source) if isinstance(source, str) else f"input {index}",
                max_pixels=self.max_pixels,
            )
        except ImageLoadError as error:
            return source, error
        except Exception as error:  # a hostile file can trip any decoder bug; keep it in its own row
            return source, ImageLoadError(f"{source}: cannot decode ({type(error).__name__}: {error})")

    def _error(self, source: str | int, error: Exception) -> Prediction:
        return Prediction(source, None, None, None, self.model_id, self.revision, error=str(error))

    def _predict_batch(self, batch: list[tuple[int, object]]) -> list[Prediction]:
        loaded = [self._load(index, item) for index, item in batch]
        good = [
            (position, image)
            for position, (_, image) in enumerate(loaded)
            if not isinstance(image, Exception)
        ]
        results: list[Prediction | None] = [
            self._error(source, image) if isinstance(image, Exception) else None for source, image in loaded
        ]
        if good:
            try:
                logits = self.compute_logits([image for _, image in good])
            except (RuntimeError, ValueError, DetectorError) as error:
                for position, _ in good:
                    results[position] = self._error(
                        loaded[position][0], DetectorError(f"model failed: {error}")
                    )
                return results
            probabilities = compute_probabilities(logits, self.calibration.temperature)  # (B, C)
            fake_scores = compute_fake_scores(probabilities, self.roles.fake_ids)  # (B,)
            for (position, _), probs, fake_score in zip(good, probabilities, fake_scores, strict=True):
                score = float(fake_score)
                results[position] = Prediction(
                    source=loaded[position][0],
                    label=self.roles.id2label[int(np.argmax(probs))],
                    fake_score=score,
                    verdict=compute_verdict(score, self.thresholds),
                    model=self.model_id,
                    revision=self.revision,
                )
        return results


def _is_single(images) -> bool:
    from PIL import Image

    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview, Image.Image, np.ndarray))
