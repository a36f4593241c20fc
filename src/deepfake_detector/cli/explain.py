"""``deepfake-detector explain``: a heatmap of where the model sees the fake, drawn over each image."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deepfake_detector.cli.common import add_detector_arguments, load_detector
from deepfake_detector.explain.heatmaps import METHODS


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "explain",
        help="draw where the model sees the fake over each image (ViT and convolutional checkpoints)",
        description="Write a heatmap overlay (PNG) per image into --out, and print one row per input. An "
        "input that can't be read gives an error row and the rest are still explained. Exit code 1 when "
        "any input failed.",
    )
    parser.add_argument("paths", nargs="+", metavar="IMAGE", help="image files, folders or glob patterns")
    add_detector_arguments(parser)
    parser.add_argument(
        "--method",
        choices=METHODS,
        default="auto",
        help="auto: rollout for a ViT, gradcam for a convolutional model (ResNet, ConvNeXt, RegNet); "
        "rollout: attention rollout into the class token (not class-specific; ViT only); gradcam: "
        "Grad-CAM of fake against real on a ViT's last-block patch tokens (fragile there; see "
        "docs/explain.md) or a conv model's last stage; file names carry the method used; "
        "default: %(default)s",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="folder for the overlays (created)")
    parser.add_argument(
        "--save-npy",
        action="store_true",
        help="also save each raw heatmap (H, W), float32 in [0, 1], as .npy",
    )
    parser.add_argument("--recursive", "-r", action="store_true", help="descend into sub-folders")
    parser.add_argument("--format", choices=("table", "jsonl"), default="table", help="row format on stdout")
    parser.set_defaults(run=run)


def _unique_stem(source: str, method: str, used: set[str]) -> str:
    """``photo.rollout``, or ``photo-2.rollout`` when another input was also called photo."""
    stem, number = Path(source).stem, 1
    while (name := f"{stem}{'' if number == 1 else f'-{number}'}.{method}") in used:
        number += 1
    used.add(name)
    return name


def _write_files(explanation, out: Path, stem: str, save_npy: bool, max_pixels: int) -> dict:
    from deepfake_detector.explain.overlay import export_heatmap, render_overlay
    from deepfake_detector.io.images import load_image

    image = load_image(explanation.source, max_pixels=max_pixels)  # read again: Explanation holds no pixels
    overlay = render_overlay(out / f"{stem}.png", image, explanation.heatmap, faces=explanation.faces or ())
    files = {"overlay": str(overlay)}
    if save_npy:
        files["heatmap_npy"] = str(export_heatmap(out / f"{stem}.npy", explanation.heatmap))
    return files


def _table_row(row: dict) -> str:
    """One line of the table; the score rounded for people (`format_number`), whole in ``--format jsonl``."""
    from deepfake_detector.results import format_number

    if row["error"] is not None:
        return f"{'ERROR':<10} {'-':>10}  {'-':<11} {row['error']}\n"
    peak = "{},{}".format(*row["peak_xy"])
    faces = ""
    if "faces" in row:
        count = len(row["faces"])
        faces = "  [no face: whole image]" if count == 0 else f"  [{count} face{'s' if count > 1 else ''}]"
    score = format_number(row["fake_score"])
    return f"{row['verdict']:<10} {score:>10}  {peak:<11} {row['source']} -> {row['overlay']}{faces}\n"


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.errors import ExplainError, ImageLoadError
    from deepfake_detector.io.inputs import expand_inputs

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ExplainError(
            f"--out {args.out!r}: cannot create the folder ({error.strerror or error})"
        ) from None
    detector = load_detector(args)
    if args.format == "table":
        sys.stdout.write(f"{'verdict':<10} {'fake_score':>10}  {'peak_xy':<11} source -> overlay\n")
    used: set[str] = set()
    failed = 0
    inputs = expand_inputs(args.paths, recursive=args.recursive)
    for explanation in detector.iter_explain(inputs, method=args.method):  # face mode: as loaded
        row = {**explanation.to_dict(), "overlay": None, "heatmap_npy": None}
        if explanation.ok:
            # The method the library resolved ("auto" becomes rollout or gradcam), so names say which.
            stem = _unique_stem(str(explanation.source), explanation.method, used)
            try:
                row.update(_write_files(explanation, out, stem, args.save_npy, args.max_pixels))
            except (OSError, ImageLoadError) as error:  # a missing extra is not per file: it stops the run
                row["error"] = f"{explanation.source}: cannot write the overlay ({error})"
        failed += row["error"] is not None
        sys.stdout.write(json.dumps(row) + "\n" if args.format == "jsonl" else _table_row(row))
        sys.stdout.flush()
    return 1 if failed else 0
