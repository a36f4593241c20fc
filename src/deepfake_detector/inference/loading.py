"""Loading: a checkpoint's name in, the parts a `Detector` is built from out, and what they describe.

`load_detector_parts` resolves everything `Detector.from_pretrained` is asked once: the checkpoint, the
device, the engine and precision, the stored settings with the caller's overrides on top, the face
mode and the provenance stage. `build_model_info` describes a loaded detector (`ModelInfo`, what
``Detector.info`` and the server's ``/info`` report).
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from deepfake_detector.faces.crops import FaceChoice, FaceMode, build_face_mode
from deepfake_detector.inference.engines import (
    EXPORT_INFO_FILE,
    EngineChoice,
    build_engine,
    detect_cpu_features,
    load_export_info,
    recheck_margin_logits,
    resolve_engine,
)
from deepfake_detector.modeling.checkpoints import (
    ResolvedCheckpoint,
    int8_export_folder,
    load_config_and_processor,
    load_model_and_processor,
    resolve_checkpoint,
)
from deepfake_detector.modeling.labels import LabelRoles, resolve_label_roles
from deepfake_detector.provenance import ProvenanceOptions
from deepfake_detector.scoring import find_near_decisions
from deepfake_detector.stored_settings import StoredSettings

if TYPE_CHECKING:
    from deepfake_detector.faces.crops import FaceOptions
    from deepfake_detector.inference.engines import Engine
    from deepfake_detector.scoring import Calibration, Thresholds


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
    engine: str = "torch"
    precision: str = "fp32"
    # An int8-static export: images within this many logits of a decision are scored again in fp32.
    recheck_margin_logits: float | None = None
    # Why this engine and precision run (`EngineChoice.reason`); None when the detector was built by
    # hand rather than by `Detector.from_pretrained`.
    engine_reason: str | None = None
    faces: dict | None = None
    # Models with domains: the domains (face first) and each one's thresholds, which decide verdicts
    # in that domain instead of ``thresholds``.
    domains: list[str] | None = None
    domain_thresholds: dict[str, dict[str, float]] | None = None
    # Video clips: the model's video thresholds (`Calibration.video_thresholds`) and each domain's own,
    # which decide a clip's verdict instead of the image ones; None when it stores none (or a caller's
    # threshold replaced them).
    video_thresholds: dict[str, float] | None = None
    video_domain_thresholds: dict[str, dict[str, float]] | None = None

    def to_dict(self) -> dict:
        # Every field, in declaration order; JSON keys are strings, so the label ids become strings.
        return {**asdict(self), "id2label": {str(k): v for k, v in self.id2label.items()}}


@dataclass(frozen=True)
class DetectorParts:
    """A loaded checkpoint: what `Detector.__init__` takes, and how its engine was chosen.

    Attributes:
        model: The PyTorch model; None for an ONNX export.
        processor: The checkpoint's image processor.
        roles: The checkpoint's labels and which are fake.
        model_id: The checkpoint's name, for the records.
        revision: The checkpoint's revision (the resolved one, else the one asked for).
        calibration: The stored calibration, with the caller's thresholds on top.
        device: The resolved device ("auto" is never left).
        engine: What runs the model step (`build_engine`).
        config: The model's config (the export's, for an ONNX export).
        jpeg_draft: Whether large JPEGs are decoded at reduced scale.
        face_mode: The stored face settings under the caller's ``faces``.
        provenance: The provenance stage's options; None: off.
        settings: What the checkpoint stores (`StoredSettings`).
        engine_choice: Why this engine and precision.
        export_info: ``export.json`` of an ONNX export folder; None otherwise.
        load_explain_model: Loads the PyTorch model that heatmaps need, for a detector that runs the
            checkpoint's int8 export from the cache; None otherwise.
    """

    model: object | None
    processor: object
    roles: LabelRoles
    model_id: str
    revision: str | None
    calibration: Calibration
    device: str
    engine: Engine
    config: object
    jpeg_draft: bool
    face_mode: FaceMode
    provenance: ProvenanceOptions | None
    settings: StoredSettings
    engine_choice: EngineChoice
    export_info: dict | None
    load_explain_model: Callable[[], object] | None = None

    def init_kwargs(self) -> dict:
        """The keyword arguments of `Detector.__init__` (all but the caller's own ``max_pixels`` and
        ``workers``)."""
        skip = ("engine_choice", "export_info")  # set on the detector after it is built
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name not in skip}


def load_detector_parts(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None,
    device: str,
    thresholds: Thresholds | None,
    allow_pickle: bool,
    cache_dir: str | os.PathLike | None,
    local_files_only: bool,
    precision: str,
    engine: str,
    jpeg_draft: bool | None,
    faces: FaceChoice,
    provenance: bool,
    c2pa_trust_anchors: str | os.PathLike | None,
    **model_kwargs,
) -> DetectorParts:
    """Loads a checkpoint and resolves every loading option once, for `Detector.from_pretrained`.

    Args:
        name_or_path: As `Detector.from_pretrained`, which documents every argument; the defaults
            live there alone.
        **model_kwargs: Passed to ``from_pretrained`` of the model.

    Raises:
        CheckpointError: The checkpoint can't be found, trusted or loaded, or its labels can't be
            mapped to real and fake (`LabelMappingError`).
        EngineError: ``precision`` or ``engine`` is unknown or can't run this checkpoint here.
        ProvenanceError: ``c2pa_trust_anchors`` can't be read as PEM certificates.
    """
    provenance_options = (
        ProvenanceOptions(None if c2pa_trust_anchors is None else os.fspath(c2pa_trust_anchors))
        if provenance
        else None
    )
    checkpoint = resolve_checkpoint(
        name_or_path,
        revision=revision,
        allow_pickle=allow_pickle,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
    )
    export_info = load_export_info(checkpoint.folder)
    device = _resolve_device(device, onnx_export=export_info is not None)
    choice = resolve_engine(
        engine,
        precision,
        onnx_precision=export_info["precision"] if export_info else None,
        device=device,
        cpu=detect_cpu_features(),
        cached_int8=None if export_info else find_cached_int8_export(checkpoint.folder),
    )
    load_explain_model = None
    if choice.folder is not None:  # this checkpoint's int8-static export, from the cache
        load_explain_model = functools.partial(_load_model, checkpoint, allow_pickle, model_kwargs)
        checkpoint = ResolvedCheckpoint(checkpoint.name, choice.folder, checkpoint.revision)
        export_info = load_export_info(choice.folder)
    if choice.engine == "onnx":
        model = None
        config, processor = load_config_and_processor(checkpoint)
    else:
        model, processor = load_model_and_processor(checkpoint, allow_pickle=allow_pickle, **model_kwargs)
        config = model.config
    roles = resolve_label_roles(config.id2label)
    settings = StoredSettings.from_config(config, name=checkpoint.name)
    calibration = settings.calibration
    if thresholds is not None:
        calibration = calibration.with_thresholds(thresholds)
    return DetectorParts(
        model=model,
        processor=processor,
        roles=roles,
        model_id=checkpoint.name,
        revision=checkpoint.revision or revision,
        calibration=calibration,
        device=device,
        engine=build_engine(
            choice,
            model=model,
            folder=checkpoint.folder,
            device=device,
            export_info=export_info,
            find_near_decisions=functools.partial(
                find_near_decisions,
                fake_ids=roles.fake_ids,
                calibration=calibration,
                domains=tuple(getattr(config, "domains", None) or ()) or None,
            ),
        ),
        config=config,
        jpeg_draft=not choice.exact if jpeg_draft is None else jpeg_draft,
        face_mode=build_face_mode(faces, settings.faces),
        provenance=provenance_options,
        settings=settings,
        engine_choice=choice,
        export_info=export_info,
        load_explain_model=load_explain_model,
    )


def build_model_info(
    *,
    model_id: str,
    revision: str | None,
    model,
    config,
    processor,
    roles: LabelRoles,
    calibration: Calibration,
    engine: Engine,
    device: str,
    face_options: FaceOptions | None,
    domains: tuple[str, ...] | None,
    export_info: dict | None,
    engine_reason: str | None = None,
) -> ModelInfo:
    """Labels, role mapping, input preprocessing and parameter count of a loaded checkpoint.

    Args:
        model: The PyTorch model; None for an ONNX export, whose architecture comes from ``config``
            and parameter count from ``export_info``.
        face_options: The face options a call that leaves ``faces`` out scores with.
        domains: The checkpoint's domains; None when it has none.
    """
    video = calibration.video_thresholds
    return ModelInfo(
        model=model_id,
        revision=revision,
        architecture=(
            type(model).__name__
            if model is not None
            else f"{(config.architectures or ['unknown'])[0]} (ONNX export)"
        ),
        id2label=dict(roles.id2label),
        roles=roles.to_dict(),
        thresholds=calibration.thresholds.to_dict(),
        temperature=calibration.temperature,
        preprocessing=_describe_processor(processor),
        num_parameters=(
            sum(p.numel() for p in model.parameters())
            if model is not None
            else int((export_info or {}).get("num_parameters", 0))
        ),
        device=device,
        engine=engine.name,
        precision=engine.precision,
        recheck_margin_logits=recheck_margin_logits(export_info),
        engine_reason=engine_reason,
        faces=None if face_options is None else face_options.to_config(),
        domains=list(domains) if domains else None,
        domain_thresholds={
            name: thresholds.to_dict() for name, thresholds in calibration.domain_thresholds.items()
        }
        or None,
        video_thresholds=None if video is None else video.to_dict(),
        video_domain_thresholds={
            name: rule.to_dict() for name, rule in calibration.video_domain_thresholds.items()
        }
        or None,
    )


def find_cached_int8_export(folder) -> Path | None:
    """The int8-static export of the checkpoint at ``folder`` that ``fetch-backbone --int8-static``
    wrote, if it is there."""
    export = int8_export_folder(folder)
    return export if export is not None and (export / EXPORT_INFO_FILE).is_file() else None


def _load_model(checkpoint: ResolvedCheckpoint, allow_pickle: bool, model_kwargs: dict):
    return load_model_and_processor(checkpoint, allow_pickle=allow_pickle, **model_kwargs)[0]


def _resolve_device(device: str, *, onnx_export: bool) -> str:
    """``device``, with "auto" made "cuda" where PyTorch sees a GPU and "cpu" elsewhere.

    An ONNX export runs on the CPU, and a PyTorch built without CUDA or ROCm sees no GPU: both are
    settled without importing PyTorch (1.5 s that a detector running an export never needs).
    """
    if device != "auto":
        return device
    if onnx_export or not _torch_built_with_gpu_support():
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_built_with_gpu_support() -> bool:
    """False when the installed PyTorch's ``version.py`` says it was built without CUDA and ROCm (a
    CPU build); True when it may have been, or can't be read (then PyTorch itself is asked)."""
    import importlib.util

    if "torch" in sys.modules:
        return True
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        return True  # not installed: the import that follows says so
    try:
        version = (Path(spec.origin).parent / "version.py").read_text(encoding="utf-8")
    except OSError:
        return True
    return not _cpu_only_torch_build(version)


def _cpu_only_torch_build(version_py: str) -> bool:
    """Whether the text of PyTorch's ``torch/version.py`` says ``cuda = None`` and ``hip = None``."""
    import re

    return all(
        re.search(rf"^{name}\b[^=\n]*=\s*None\s*$", version_py, re.MULTILINE) for name in ("cuda", "hip")
    )


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
