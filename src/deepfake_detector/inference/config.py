"""How a `Detector` is loaded, declared once.

`DetectorConfig` holds every loading option of `Detector.from_pretrained`, with its help text. Every
CLI verb that loads a model generates its loading flags from these fields (`deepfake_detector.settings`,
through `deepfake_detector.cli.common.add_detector_arguments`), so a new option appears on every verb at once;
the server and the Ray actors receive the config as it is and load their own detector from it.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from deepfake_detector.errors import DetectorError
from deepfake_detector.faces.crops import FaceChoice, FaceOverrides, build_face_mode
from deepfake_detector.inference.engines import ENGINES, PRECISIONS
from deepfake_detector.io.images import DEFAULT_MAX_PIXELS
from deepfake_detector.modeling.checkpoints import BUNDLED_MODELS, DEFAULT_MODEL, MODEL_ALIASES
from deepfake_detector.scoring import Thresholds
from deepfake_detector.settings import non_negative_int, positive_int

if TYPE_CHECKING:
    from deepfake_detector.faces.crops import FaceOptions


class DetectorConfigError(DetectorError):
    """A loading option is out of range; the message names the parameter and what it accepts."""


@dataclass(frozen=True)
class DetectorConfig:
    """The options a `Detector` is loaded with: the arguments of `Detector.from_pretrained`.

    Load the detector with `Detector.from_config`. Frozen and picklable, so that Ray
    actors and server processes receive it as is and each loads its own copy on its own device.
    """

    model: str = field(
        default=DEFAULT_MODEL,
        metadata={
            "help": f"checkpoint folder, Hugging Face hub id, bundled model ({', '.join(BUNDLED_MODELS)}; "
            "the default is the model shipped with the package), or alias ("
            + ", ".join(f"{alias} = {hub_id}" for alias, hub_id in MODEL_ALIASES.items())
            + ")"
        },
    )
    revision: str | None = field(default=None, metadata={"help": "hub branch, tag or commit to load"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA if available), cpu, cuda, cuda:N"})
    engine: str = field(
        default="auto",
        metadata={
            "choices": ENGINES,
            "help": "torch (PyTorch checkpoints) or onnx (folders from `deepfake-detector export`); auto "
            "picks by what the model folder holds",
        },
    )
    precision: str = field(
        default="auto",
        metadata={
            "choices": PRECISIONS,
            "help": "auto: bf16 on CPUs with AMX/AVX512-BF16, else fp32 (an export: its own precision); "
            "fp32: exactly the transformers pipeline's scores; int8: an `export --quantize int8` folder",
        },
    )
    jpeg_draft: bool | None = field(
        default=None,
        metadata={
            "help": "decode JPEGs far larger than the model input at 1/2-1/8 scale: faster, scores within "
            "the parity bar but not identical; None (auto): on unless the run is exact (PyTorch in fp32, "
            "asked for or chosen by precision auto)"
        },
    )
    thresholds: Thresholds | None = field(
        default=None,
        metadata={
            "help": "decision thresholds on the fake score; None: those stored in the checkpoint by "
            "calibrate, else 0.5"
        },
    )
    faces: FaceOverrides = field(
        default_factory=FaceOverrides,
        metadata={
            "help": "face mode, merged over the checkpoint's own face settings (`resolve_face_options`): "
            "what the detector does when a call leaves ``faces`` out"
        },
    )
    max_pixels: int = field(
        default=DEFAULT_MAX_PIXELS,
        metadata={
            "help": "refuse images with more pixels than this (decompression-bomb guard)",
            "type": positive_int,
        },
    )
    allow_pickle: bool = field(
        default=False,
        metadata={
            "help": "accept checkpoints with only pickle weights (pytorch_model.bin); unpickling can run code"
        },
    )
    workers: int | None = field(
        default=None,
        metadata={
            "type": non_negative_int,
            "help": "threads that decode and preprocess ahead of the model (0: none; None: one per CPU, "
            "at most 4)",
        },
    )
    provenance: bool = field(
        default=True,
        metadata={
            "help": "the provenance stage: C2PA content credentials, generator metadata and the Stable "
            "Diffusion watermark, read before the model (a valid C2PA AI declaration or a watermark match "
            "makes the verdict fake; scores are the same either way)"
        },
    )
    c2pa_trust_anchors: str | None = field(
        default=None,
        metadata={"help": "PEM file of root certificates whose C2PA signers count as trusted"},
    )

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", os.fspath(self.model))
        if self.engine not in ENGINES:
            raise DetectorConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.precision not in PRECISIONS:
            raise DetectorConfigError(
                f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}"
            )
        if self.max_pixels < 1:
            raise DetectorConfigError(f"max_pixels must be at least 1, got {self.max_pixels}")
        if self.workers is not None and self.workers < 0:
            raise DetectorConfigError(f"workers must be 0 or more, got {self.workers}")
        if not isinstance(self.faces, FaceOverrides):
            raise DetectorConfigError(
                f"faces must be a FaceOverrides (its fields None: as the checkpoint says), got {self.faces!r}"
            )

    def resolve_faces(self, faces: FaceChoice = None) -> FaceOptions | None:
        """What a detector built from this config does with ``faces`` (`Detector.resolve_faces`), known
        from the checkpoint's config alone, without loading the weights: for a driver that must know
        before its workers load (Ray's)."""
        from deepfake_detector.stored_settings import load_checkpoint_settings

        stored = load_checkpoint_settings(self.model, revision=self.revision, allow_pickle=self.allow_pickle)
        return build_face_mode(self.faces, stored.faces).resolve(faces)

    def to_dict(self) -> dict:
        """The options as plain values, for run provenance (``resolved_config``-style records)."""
        values = {item.name: getattr(self, item.name) for item in fields(self)}
        values["thresholds"] = None if self.thresholds is None else self.thresholds.to_dict()
        values["faces"] = asdict(self.faces)
        return values
