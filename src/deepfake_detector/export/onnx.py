"""Export a checkpoint to ONNX (optionally int8) as a folder that `Detector.from_pretrained` loads.

The folder holds ``model.onnx`` (pixel values in, logits out, any batch size), the checkpoint's own
``config.json`` (labels, calibration) and ``preprocessor_config.json``, and ``export.json`` (precision,
the parity it measured, versions, git revision). The graph comes from ``torch.onnx.export`` (the
dynamo exporter); ``optimum`` would do the same but pins transformers below 5. int8 is ONNX
Runtime's dynamic quantisation: 7-bit weights per output channel, activations quantised per batch.
int8-static is the outlier-aware form for CLIP towers (`export.int8_static`): outliers migrated into
the weights on ranges measured on calibration images (or shipped with the checkpoint), activations
quantised per token, the layers that break kept in fp32.

Every export checks itself: the new file and the PyTorch model score the same preprocessed images
(``check_images``, or synthetic photographs), and an export that misses the parity bar is deleted
and reported as an `ExportError`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake_detector.errors import ExportError
from deepfake_detector.inference.detector import DEFAULT_BATCH_SIZE
from deepfake_detector.inference.engines import (
    EXACT_ONNX_FILE,
    EXPORT_INFO_FILE,
    ONNX_FILE,
    EngineChoice,
    TorchEngine,
    build_engine,
)
from deepfake_detector.inference.parity import ParityReport, compute_verdict_parity
from deepfake_detector.inference.preprocessing import ImagePreprocessor
from deepfake_detector.optional import require
from deepfake_detector.scoring import ModelOutputs, find_near_decisions
from deepfake_detector.stored_settings import StoredSettings

QUANTIZE_CHOICES = ("int8", "int8-static")
FORMATS = ("onnx",)
# An fp32 export only reorders float arithmetic: logits stay this close to PyTorch's.
FP32_MAX_LOGIT_DIFF = 1e-3
DEFAULT_CHECK_COUNT = 32


@dataclass(frozen=True)
class ExportResult:
    """What `export_onnx` wrote and how closely it matches PyTorch.

    Attributes:
        folder: The export folder, loadable with ``Detector.from_pretrained(folder)``.
        precision: "fp32" or "int8".
        parity: Agreement with the PyTorch fp32 model on the check images.
        max_logit_diff: Largest |logit difference| on the check images.
    """

    folder: Path
    precision: str
    parity: ParityReport
    max_logit_diff: float

    def to_dict(self) -> dict:
        return {
            "folder": str(self.folder),
            "precision": self.precision,
            "parity": self.parity.to_dict(),
            "max_logit_diff": self.max_logit_diff,
        }


def export_onnx(
    model: str | os.PathLike,
    out: str | os.PathLike,
    *,
    quantize: str | None = None,
    revision: str | None = None,
    allow_pickle: bool = False,
    check_images: list | None = None,
    calibration_images: list | None = None,
    recipe=None,
    save_calibration: str | os.PathLike | None = None,
) -> ExportResult:
    """Exports a checkpoint to an ONNX folder and checks it against the PyTorch model.

    Args:
        model: Checkpoint folder, hub id or alias, as for `Detector.from_pretrained`.
        out: The folder to create; it must not exist yet, or be empty.
        quantize: None for fp32, "int8" (dynamic quantisation) or "int8-static" (outlier-aware static
            quantisation of a CLIP tower; needs ``calibration_images`` unless the checkpoint folder
            ships its calibration statistics, `int8_static.CALIBRATION_FILE`, as the default model
            does).
        revision: Hub revision of ``model``.
        allow_pickle: Accept pickle-only checkpoints (trusted files only).
        check_images: Inputs to check parity on (paths, bytes, PIL images, arrays); default:
            `DEFAULT_CHECK_COUNT` synthetic photographs (int8-static: `int8_static.HELD_OUT_CHECK_COUNT`,
            enough to measure its bar). Use images like the ones you will score.
        calibration_images: For "int8-static": images like the ones you will score (from the training
            split, never the test split), whose activation ranges fix the int8 scales;
            `int8_static.select_calibration_images` picks them, and held-out ``check_images``, from
            labelled data (as ``export --calibration-data`` does).
        recipe: For "int8-static": an `int8_static.Int8Recipe` (which layers); default: the one
            measured for ViT-B/16.
        save_calibration: For "int8-static" with ``calibration_images``: also write the statistics
            measured on them to this file; a checkpoint folder holding it as
            `int8_static.CALIBRATION_FILE` exports without calibration images.

    Returns:
        What was written and the parity it measured.

    Raises:
        ExportError: ``out`` is not empty, the export failed, or the export misses the parity bar
            (fp32: logits within `FP32_MAX_LOGIT_DIFF`; int8: `inference.parity`'s bar); nothing is
            left at ``out`` then.
        MissingExtraError: onnx, onnxscript or onnxruntime is not installed (extra ``onnx``).
    """
    from deepfake_detector.export.int8_static import CALIBRATION_FILE, HELD_OUT_CHECK_COUNT
    from deepfake_detector.io.images import load_image
    from deepfake_detector.modeling.checkpoints import load_model_and_processor, resolve_checkpoint
    from deepfake_detector.modeling.labels import resolve_label_roles

    if quantize not in (None, *QUANTIZE_CHOICES):
        raise ExportError(
            f"--quantize {quantize!r} is not supported; choose one of: {', '.join(QUANTIZE_CHOICES)}"
        )
    if quantize != "int8-static" and (calibration_images or save_calibration):
        raise ExportError("calibration images and --save-calibration are for --quantize int8-static only")
    if save_calibration and not calibration_images:
        raise ExportError(
            "--save-calibration writes what calibration images measure: give --calibration-data"
        )
    for module in ("onnx", "onnxscript", "onnxruntime"):
        require(module, "onnx")
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"--out {out} already exists and is not an empty folder; choose a new folder")

    checkpoint = resolve_checkpoint(model, revision=revision, allow_pickle=allow_pickle)
    shipped = checkpoint.folder / CALIBRATION_FILE
    if quantize == "int8-static" and not calibration_images and not shipped.is_file():
        raise ExportError(
            f"--quantize int8-static needs calibration images (--calibration-data): {checkpoint.name!r} "
            f"ships no calibration statistics ({CALIBRATION_FILE})"
        )
    torch_model, processor = load_model_and_processor(checkpoint, allow_pickle=allow_pickle)
    roles = resolve_label_roles(torch_model.config.id2label)
    preprocessor = ImagePreprocessor(processor)
    if check_images:
        images = [load_image(image) for image in check_images]
    else:
        images = _synthetic_photos(HELD_OUT_CHECK_COUNT if quantize == "int8-static" else DEFAULT_CHECK_COUNT)
    pixel_values = np.stack([preprocessor(image) for image in images])  # (N, 3, H, W)
    precision = "int8" if quantize else "fp32"

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        quantization = None
        if quantize == "int8-static":
            quantization = _export_int8_static(
                torch_model,
                preprocessor,
                pixel_values[:2],
                staging / ONNX_FILE,
                calibration_images=calibration_images,
                shipped=shipped,
                recipe=recipe,
                save_calibration=save_calibration,
            )
        else:
            _export_graph(torch_model, pixel_values[:2], staging / ONNX_FILE)
        if quantize == "int8":
            _quantize_int8(staging / ONNX_FILE)
            quantization = {"method": "dynamic"}
        domains = getattr(torch_model.config, "domains", None)
        domains = tuple(domains) if domains else None
        calibration = StoredSettings.from_config(torch_model.config).calibration
        # The export as `predict` will run it: an int8-static export scores its rows near a decision
        # again in fp32, at the checkpoint's own thresholds.
        engine = build_engine(
            EngineChoice("onnx", precision, "the export being checked"),
            folder=staging,
            export_info={"quantization": quantization},
            find_near_decisions=functools.partial(
                find_near_decisions, fake_ids=roles.fake_ids, calibration=calibration, domains=domains
            ),
        )
        reference = _compute_in_batches(TorchEngine(torch_model), pixel_values)
        exported = _compute_in_batches(engine, pixel_values)
        parity = compute_verdict_parity(
            reference, exported, fake_ids=roles.fake_ids, calibration=calibration, domains=domains
        )
        max_logit_diff = float(np.abs(reference.logits - exported.logits).max())
        if not parity.passed or (precision == "fp32" and max_logit_diff > FP32_MAX_LOGIT_DIFF):
            raise ExportError(
                f"the {precision} ONNX export does not score like the PyTorch model: {parity.describe()}; "
                f"max |logit difference| {max_logit_diff:.3g}"
                + (f" (bar <= {FP32_MAX_LOGIT_DIFF})" if precision == "fp32" else "")
                + "; nothing was written"
                + ("; try the fp32 export (no --quantize)" if quantize else "")
            )
        torch_model.config.save_pretrained(staging)
        processor.save_pretrained(staging)
        info = _export_info(checkpoint, precision, torch_model, parity, max_logit_diff, len(images))
        if quantization:
            info["quantization"] = quantization
        (staging / EXPORT_INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        umask = os.umask(0)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; the export is an ordinary folder
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(out, precision, parity, max_logit_diff)


def export_int8_to_cache(model: str | os.PathLike) -> tuple[Path, ExportResult | None]:
    """Writes the int8-static export of ``model``, a model assembled in the cache (a bundled one such
    as the default), where `Detector.from_pretrained` finds it (`checkpoints.int8_export_folder`):
    "auto" then runs it on CPUs without AMX. Its calibration statistics must ship with it.

    Returns:
        ``(folder, result)``; result is None when the export was there already.

    Raises:
        ExportError: ``model`` is not assembled in the cache, or as `export_onnx`.
    """
    from deepfake_detector.modeling.checkpoints import int8_export_folder, resolve_checkpoint

    checkpoint = resolve_checkpoint(model)
    folder = int8_export_folder(checkpoint.folder)
    if folder is None:
        raise ExportError(
            f"{checkpoint.name!r} is not a bundled model assembled in the cache; export it with "
            "`deepfake-detector export --quantize int8-static --out DIR` and load DIR instead"
        )
    if (folder / EXPORT_INFO_FILE).is_file():
        return folder, None
    return folder, export_onnx(model, folder, quantize="int8-static")


def _compute_in_batches(
    engine, pixel_values: np.ndarray, batch_size: int = DEFAULT_BATCH_SIZE
) -> ModelOutputs:
    """Outputs in batches of ``predict``'s default size: dynamic int8 quantises activations per batch."""
    batches = [pixel_values[start : start + batch_size] for start in range(0, len(pixel_values), batch_size)]
    outputs = [engine.compute_outputs(batch) for batch in batches]
    domain_logits = [output.domain_logits for output in outputs]
    return ModelOutputs(
        np.concatenate([output.logits for output in outputs]),  # (N, C)
        None if domain_logits[0] is None else np.concatenate(domain_logits),  # (N, domains)
    )


def _export_graph(model, example: np.ndarray, path: Path) -> None:
    """Writes the model as ONNX: ``pixel_values`` (batch, 3, H, W) float32 -> ``logits`` (batch, C),
    and ``domain_logits`` (batch, domains) for a model with domains."""
    import warnings

    import torch

    with_domains = bool(getattr(model.config, "domains", None))

    class TensorsOnly(torch.nn.Module):
        """The exporter wants tensors out, not a transformers output dataclass."""

        def __init__(self, wrapped) -> None:
            super().__init__()
            self.wrapped = wrapped

        def forward(self, pixel_values):
            outputs = self.wrapped(pixel_values=pixel_values)
            return (outputs.logits, outputs.domain_logits) if with_domains else outputs.logits

    batch = torch.export.Dim("batch", min=1)
    try:
        # The exporter's notes on torchvision ops (not installed, and not in these models) are noise.
        with warnings.catch_warnings(), _quiet_logger("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                TensorsOnly(model.eval()),
                (torch.from_numpy(example),),
                dynamo=True,
                input_names=["pixel_values"],
                output_names=["logits", "domain_logits"] if with_domains else ["logits"],
                dynamic_shapes={"pixel_values": {0: batch}},
                verbose=False,
            )
        program.save(os.fspath(path))
    except Exception as error:  # the exporter raises many types; the message is what helps
        raise ExportError(
            f"torch.onnx.export failed for this model: {type(error).__name__}: {error}"
        ) from error


def _export_int8_static(
    model,
    preprocessor,
    example: np.ndarray,
    path: Path,
    *,
    calibration_images: list | None,
    shipped: Path,
    recipe,
    save_calibration: str | os.PathLike | None,
) -> dict:
    """Writes the outlier-aware static int8 graph of ``model`` to ``path``, calibrated on
    ``calibration_images``, or else on the statistics the checkpoint ships (``shipped``); returns what
    export.json records of it."""
    from deepfake_detector.export import int8_static
    from deepfake_detector.io.images import load_image

    recipe = recipe or int8_static.Int8Recipe()
    if calibration_images:
        pixel_values = np.stack([preprocessor(load_image(image)) for image in calibration_images])

        def batches():
            step = int8_static.CALIBRATION_BATCH
            return (pixel_values[start : start + step] for start in range(0, len(pixel_values), step))

        # Every layer's ranges, in the same single pass: what --save-calibration writes fits any recipe.
        ranges = int8_static.collect_input_ranges(model, batches(), int8_static.every_linear_layer(model))
        image_count, source = len(pixel_values), "images"
        if save_calibration:
            int8_static.save_input_ranges(save_calibration, ranges, image_count)
    else:
        batches = None
        ranges, image_count = int8_static.load_input_ranges(shipped)
        source = shipped.name
    _export_graph(int8_static.prepare_model(model, batches, recipe, ranges), example, path)
    int8_static.quantize_per_token(path, recipe.quantised_layers(model))
    if recipe.recheck_margin_logits is not None:
        _export_graph(model, example, path.with_name(EXACT_ONNX_FILE))  # scores rows near a decision
    return {
        "method": "static",
        **recipe.to_dict(),
        "calibration_images": image_count,
        "calibration_source": source,
    }


def _quantize_int8(path: Path) -> None:
    """Replaces the fp32 file at ``path`` with ONNX Runtime's dynamic int8 quantisation of it."""
    quantization = require("onnxruntime.quantization", "onnx")
    quantized = path.with_name("model.int8.onnx")
    # It logs a generic tip (run its shape-inference pre-processing) on the root logger; keep the
    # output to our own messages.
    with _quiet_logger(None):
        quantization.quantize_dynamic(
            path,
            quantized,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,  # one scale per output channel: fewer flipped answers than per tensor
            # 7-bit weights: without VNNI, x86 sums u8 x s8 products in saturating int16 pairs; on
            # ViT-B/16 this halved the median fake-score change (0.012 -> 0.0063) at the same speed.
            reduce_range=True,
            op_types_to_quantize=["MatMul", "Gemm"],  # the transformer's matmuls; the patch conv stays fp32
        )
    quantized.replace(path)


@contextlib.contextmanager
def _quiet_logger(name: str | None) -> Iterator[None]:
    """Raises a library logger to ERROR for the duration (None: the root logger)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _synthetic_photos(count: int = DEFAULT_CHECK_COUNT, seed: int = 0) -> list:
    """Smooth colour fields with edges and noise, at photo-like sizes; enough to exercise every weight."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    photos = []
    for _ in range(count):
        height, width = rng.integers(160, 640, size=2)
        y, x = np.mgrid[0:height, 0:width] / max(height, width)
        channels = [
            127 + 110 * np.sin(x * rng.uniform(2, 20) + y * rng.uniform(2, 20) + rng.uniform(0, 6))
            for _ in range(3)
        ]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, rng.uniform(2, 30), size=(height, width, 3))
        photos.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return photos


def _export_info(checkpoint, precision, model, parity, max_logit_diff, check_count) -> dict:
    import onnx
    import onnxruntime
    import torch
    import transformers

    from deepfake_detector.run_info import git_revision
    from deepfake_detector.version import __version__

    return {
        "format": "onnx",
        "precision": precision,
        "source_model": checkpoint.name,
        "source_revision": checkpoint.revision,
        "architecture": type(model).__name__,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "parity": {**parity.to_dict(), "max_logit_diff": max_logit_diff, "check_images": check_count},
        "versions": {
            "deepfake_detector": __version__,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
        },
        "git": git_revision(),
    }
