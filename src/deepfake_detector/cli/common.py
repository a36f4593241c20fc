"""Flags shared by every command that loads a model, and the one place they become a `Detector`."""

from __future__ import annotations

import argparse

from deepfake_detector.io.images import DEFAULT_MAX_PIXELS
from deepfake_detector.modeling.checkpoints import BUNDLED_MODELS, DEFAULT_MODEL, MODEL_ALIASES


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model")
    aliases = ", ".join(f"{alias} = {hub_id}" for alias, hub_id in MODEL_ALIASES.items())
    group.add_argument(
        "--model",
        default=DEFAULT_MODEL,
        help=(
            f"checkpoint folder, Hugging Face hub id, bundled model ({', '.join(BUNDLED_MODELS)}), or alias "
            f"({aliases}); default: %(default)s, the model shipped with the package"
        ),
    )
    group.add_argument("--revision", help="hub branch, tag or commit to load")
    group.add_argument("--device", default="auto", help="auto (CUDA if available), cpu, cuda, cuda:N")
    group.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept checkpoints with only pickle weights (pytorch_model.bin); unpickling can run code",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """--precision, --engine, --jpeg-draft and --workers: how fast, and how exact, scoring is."""
    from deepfake_detector.inference.engines import ENGINES, PRECISIONS

    group = parser.add_argument_group("speed")
    group.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="auto: bf16 on CPUs with AMX/AVX512-BF16, else fp32 (an export: its own precision); fp32: "
        "exactly the transformers pipeline's scores; int8: an `export --quantize int8` folder "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="torch (PyTorch checkpoints) or onnx (folders from `deepfake-detector export`); auto picks "
        "by what --model holds (default: %(default)s)",
    )
    group.add_argument(
        "--jpeg-draft",
        choices=("auto", "on", "off"),
        default="auto",
        help="decode JPEGs far larger than the model input at 1/2-1/8 scale: faster, scores within "
        "the parity bar but not identical; auto: on unless --precision fp32 (default: %(default)s)",
    )
    group.add_argument(
        "--workers",
        type=non_negative_int,
        help="threads that decode and preprocess ahead of the model (0: none; default: one per CPU, "
        "at most 4)",
    )


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--max-pixels",
        type=positive_int,
        default=DEFAULT_MAX_PIXELS,
        help="refuse images with more pixels than this (decompression-bomb guard); default: %(default)s",
    )


def detector_spec(args: argparse.Namespace, thresholds=None):
    """The `DetectorSpec` (the arguments of `Detector.from_pretrained`) the flags describe."""
    from deepfake_detector.inference.distributed import DetectorSpec

    return DetectorSpec(
        model=args.model,
        revision=args.revision,
        device=args.device,
        thresholds=thresholds,
        max_pixels=getattr(args, "max_pixels", DEFAULT_MAX_PIXELS),
        allow_pickle=args.allow_pickle,
        precision=getattr(args, "precision", "auto"),
        engine=getattr(args, "engine", "auto"),
        jpeg_draft={"on": True, "off": False}.get(getattr(args, "jpeg_draft", "auto")),
        workers=getattr(args, "workers", None),
    )


def load_detector(args: argparse.Namespace, thresholds=None):
    """Builds the `Detector` the flags describe."""
    from deepfake_detector.cli.main import quiet_libraries

    quiet_libraries()
    return detector_spec(args, thresholds).build()
