"""``deepfake-detector export``: write a checkpoint as an ONNX folder that ``predict --model`` loads."""

from __future__ import annotations

import argparse
import sys

from deepfake_detector.modeling.checkpoints import MODEL_ALIASES


def add_parser(subparsers) -> None:
    from deepfake_detector.export.int8_static import DEFAULT_CALIBRATION_COUNT
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
        "checked against the parity bar); int8-static: outlier-aware static int8 for CLIP detectors "
        "(the default model), calibrated on --calibration-data, or on the statistics the checkpoint ships "
        "(the default model does); default: fp32",
    )
    parser.add_argument(
        "--calibration-data",
        nargs="+",
        metavar="DATA",
        help="int8-static: labelled data (manifest, class folder or dataset), each giving an equal share "
        "of the calibration images, and the parity check's images unless --check-images is given",
    )
    parser.add_argument(
        "--save-calibration",
        metavar="FILE",
        help="int8-static: also write the statistics measured on --calibration-data to FILE; a checkpoint "
        "folder holding it as int8_calibration.safetensors exports without --calibration-data",
    )
    parser.add_argument(
        "--calibration-split", default="train", help="split of --calibration-data to draw from (%(default)s)"
    )
    parser.add_argument(
        "--calibration-count",
        type=int,
        default=DEFAULT_CALIBRATION_COUNT,
        help="int8-static: images whose activation ranges fix the scales (%(default)s)",
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
    calibration_images = None
    if args.calibration_data:
        from deepfake_detector.export.int8_static import select_calibration_images

        calibration_images, held_out = select_calibration_images(
            args.calibration_data, split=args.calibration_split, count=args.calibration_count
        )
        check_images = check_images or held_out
    quiet_libraries()
    result = export_onnx(
        args.model,
        args.out,
        quantize=args.quantize,
        revision=args.revision,
        allow_pickle=args.allow_pickle,
        check_images=check_images,
        calibration_images=calibration_images,
        save_calibration=args.save_calibration,
    )
    print(
        f"deepfake-detector: wrote the {result.precision} ONNX export to {result.folder}; against PyTorch: "
        f"{result.parity.describe()}, max |logit difference| {result.max_logit_diff:.3g}. "
        f"Score with: deepfake-detector predict --model {result.folder} PATH...",
        file=sys.stderr,
    )
    return 0
