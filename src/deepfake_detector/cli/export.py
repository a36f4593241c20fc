"""``deepfake-detector export``: write a checkpoint as an ONNX folder that ``predict --model`` loads."""

from __future__ import annotations

import argparse
import sys

from deepfake_detector.modeling.checkpoints import MODEL_ALIASES


def add_parser(subparsers) -> None:
    from deepfake_detector.export.onnx import FORMATS, QUANTIZE_CHOICES

    parser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (optionally int8) for faster CPU scoring",
        description="Export a checkpoint to a folder holding model.onnx, its config and image processor, "
        "which `predict --model DIR` loads with ONNX Runtime. The export scores check images with both "
        "the new file and PyTorch, and fails (writing nothing) when they disagree beyond the parity bar.",
    )
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="export format (%(default)s)")
    parser.add_argument(
        "--quantize",
        choices=QUANTIZE_CHOICES,
        help="int8: dynamic quantisation of the matrix multiplies (smaller, faster on CPUs; answers "
        "checked against the parity bar); default: fp32",
    )
    aliases = ", ".join(f"{alias} = {hub_id}" for alias, hub_id in MODEL_ALIASES.items())
    parser.add_argument(
        "--model", required=True, help=f"checkpoint folder, Hugging Face hub id, or alias ({aliases})"
    )
    parser.add_argument("--revision", help="hub branch, tag or commit to load")
    parser.add_argument(
        "--allow-pickle",
        action="store_true",
        help="accept checkpoints with only pickle weights (pytorch_model.bin); unpickling can run code",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to create (must not exist)")
    parser.add_argument(
        "--check-images",
        nargs="+",
        metavar="PATH",
        help="images (files, folders, globs) to check parity on; default: synthetic photographs. "
        "Images like those you will score make the check meaningful",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.cli.common import quiet_libraries
    from deepfake_detector.export.onnx import export_onnx
    from deepfake_detector.io.inputs import InputProblem, expand_inputs

    check_images = None
    if args.check_images:
        check_images = list(expand_inputs(args.check_images, recursive=True))
        problems = [item.error for item in check_images if isinstance(item, InputProblem)]
        if problems or not check_images:
            raise SystemExit(
                "deepfake-detector export: error: --check-images: "
                + ("; ".join(problems) or "no image files found")
            )
    quiet_libraries()
    result = export_onnx(
        args.model,
        args.out,
        quantize=args.quantize,
        revision=args.revision,
        allow_pickle=args.allow_pickle,
        check_images=check_images,
    )
    print(
        f"deepfake-detector: wrote the {result.precision} ONNX export to {result.folder}; against PyTorch: "
        f"{result.parity.describe()}, max |logit difference| {result.max_logit_diff:.3g}. "
        f"Score with: deepfake-detector predict --model {result.folder} PATH...",
        file=sys.stderr,
    )
    return 0
