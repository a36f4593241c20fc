"""Does the int8-static export keep its answers on a CPU older than this one? ONNX Runtime picks its
kernels from the CPU it runs on (its int8 products, LayerNorms and activations have AVX2, AVX-512 and
VNNI forms), so this runs the export's int8 graph on the same pixels twice: natively, and under QEMU's
user-mode emulator with an older CPU model (default Haswell: AVX2 and FMA, no AVX-512, no VNNI, like
the AVX2-only EPYC's), and compares each with fp32 as the export's own check does. Emulation is two
orders of magnitude slower and says nothing about speed.

    apt-get install qemu-user    # QEMU 7.2 or later emulates AVX2
    .venv/bin/python benchmarks/int8_emulated_cpu.py \
        --data ../shared/data/faces/manifest.csv ../shared/data/modern/manifest.csv --split val

The images: up to ``--per-group`` of each (data, source, label) group of ``--split``, drawn with a
fixed seed; their pixels are made once, natively, by the export's own preprocessor (JPEG drafts off).
The reference is the export's fp32 graph, run natively. Per CPU the table gives the int8 graph alone
against it (verdicts at the checkpoint's thresholds, each domain's; |fake-score difference|) and the
export as ``predict`` runs it: the rows near a decision (`scoring.find_near_decisions` at the export's
re-check margin) scored again in fp32. Those rows take the native fp32 graph's outputs; ``--fp32-check``
images are also run through the fp32 graph under emulation, and the largest logit difference to the
native run is printed, to show that the fp32 graph does not depend on the CPU.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from deepfake_detector.inference.engines import (
    EXACT_ONNX_FILE,
    ONNX_FILE,
    OnnxEngine,
    load_export_info,
    recheck_margin_logits,
)
from deepfake_detector.scoring import ModelOutputs

BATCH = 8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--export",
        type=Path,
        help="int8-static export folder; default: the default "
        "model's, built by `fetch-backbone --int8-static`",
    )
    parser.add_argument("--data", nargs="+", help="labelled data (manifests or folders)")
    parser.add_argument("--split", default="val", help="which split to draw from (%(default)s; never test)")
    parser.add_argument(
        "--per-group", type=int, default=3, help="images per (data, source, label) (%(default)s)"
    )
    parser.add_argument("--cpu", default="Haswell", help="QEMU CPU model to emulate (%(default)s)")
    parser.add_argument("--qemu", default="qemu-x86_64", help="QEMU user-mode emulator (%(default)s)")
    parser.add_argument(
        "--fp32-check",
        type=int,
        default=2,
        help="images whose fp32 graph also runs emulated (%(default)s; about a minute each)",
    )
    parser.add_argument("--work", type=Path, default=Path("runs/int8-emulated"), help="pixels and outputs")
    parser.add_argument("--worker", nargs=3, metavar=("PIXELS", "GRAPH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        pixels, graph, out = args.worker
        return _run_graph(Path(graph), np.load(pixels), Path(out))
    if not args.data:
        parser.error("--data is required")
    qemu = shutil.which(args.qemu)
    if qemu is None:
        raise SystemExit(
            f"{args.qemu} not found: install QEMU's user-mode emulator (apt-get install qemu-user)"
        )

    from deepfake_detector.inference.detector import Detector

    export = args.export or _default_export()
    detector = Detector.from_pretrained(export, jpeg_draft=False)
    margin = recheck_margin_logits(load_export_info(export))
    if margin is None:
        raise SystemExit(
            f"{export}: not an int8-static export with a re-check (its export.json names no margin)"
        )
    images = _draw_images(args.data, args.split, args.per_group)
    args.work.mkdir(parents=True, exist_ok=True)
    pixels_path = args.work / "pixels.npy"
    from deepfake_detector.io.images import load_image

    np.save(pixels_path, np.stack([detector.preprocessor(load_image(image.path)) for image in images]))
    print(
        f"export: {export}; {len(images)} images of the {args.split} split ({args.per_group} per group); "
        f"re-check margin {margin} logits"
    )

    def run(graph: str, name: str, emulated: bool, pixels: Path = pixels_path) -> ModelOutputs:
        """One graph's outputs, from a worker process; reused from an earlier run of the same graph on
        the same pixels (an emulated run takes half an hour)."""
        out, key_file = args.work / f"{name}.npz", args.work / f"{name}.key"
        stat = (export / graph).stat()
        key = hashlib.sha256(
            np.load(pixels).tobytes() + f"{export / graph}:{stat.st_size}:{stat.st_mtime_ns}".encode()
        )
        if out.is_file() and key_file.is_file() and key_file.read_text(encoding="utf-8") == key.hexdigest():
            print(f"{name}: reused from {out}")
        else:
            command = [sys.executable, __file__, "--worker", str(pixels), str(export / graph), str(out)]
            if emulated:
                command = [qemu, "-cpu", args.cpu, *command]
            start = time.perf_counter()
            subprocess.run(command, check=True, stderr=subprocess.DEVNULL if emulated else None)
            key_file.write_text(key.hexdigest(), encoding="utf-8")
            print(f"{name}: {time.perf_counter() - start:.0f} s")
        saved = np.load(out)
        return ModelOutputs(saved["logits"], saved.get("domain_logits"))

    reference = run(EXACT_ONNX_FILE, "fp32-native", emulated=False)
    outputs = {
        "this CPU (native)": run(ONNX_FILE, "int8-native", emulated=False),
        f"{args.cpu} (QEMU)": run(ONNX_FILE, f"int8-{args.cpu}", emulated=True),
    }
    if args.fp32_check:
        few = args.work / "pixels-fp32-check.npy"
        np.save(few, np.load(pixels_path)[: args.fp32_check])
        emulated_fp32 = run(EXACT_ONNX_FILE, f"fp32-{args.cpu}", emulated=True, pixels=few)
        difference = np.abs(emulated_fp32.logits - reference.logits[: args.fp32_check]).max()
        print(
            f"fp32 graph, {args.cpu} against native, {args.fp32_check} images: max |logit difference| "
            f"{difference:.2g}"
        )
    native, emulated = outputs.values()
    print(
        f"int8 graph, {args.cpu} against native, {len(images)} images: max |logit difference| "
        f"{np.abs(emulated.logits - native.logits).max():.2g}"
    )
    _print_table(detector, reference, outputs, margin)
    return 0


def _run_graph(graph: Path, pixels: np.ndarray, out: Path) -> int:
    """The worker: one ONNX graph over ``pixels`` in batches, outputs saved to ``out``."""
    engine = OnnxEngine(graph, precision="int8" if graph.name == ONNX_FILE else "fp32")
    outputs = ModelOutputs.concatenate(
        [engine.compute_outputs(pixels[start : start + BATCH]) for start in range(0, len(pixels), BATCH)]
    )
    arrays = {"logits": outputs.logits}
    if outputs.domain_logits is not None:
        arrays["domain_logits"] = outputs.domain_logits
    np.savez(out, **arrays)
    return 0


def _print_table(detector, reference: ModelOutputs, outputs: dict[str, ModelOutputs], margin: float) -> None:
    from deepfake_detector.inference.parity import compute_verdict_parity
    from deepfake_detector.scoring import find_near_decisions

    settings = {
        "fake_ids": detector.roles.fake_ids,
        "calibration": detector.calibration,
        "domains": detector.domains,
    }
    print(
        "| CPU | images | int8 graph alone: verdicts as fp32's | its \\|fake-score difference\\| "
        "median / max | re-checked in fp32 | as predict runs it: verdicts as fp32's | its median / max |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for cpu, int8 in outputs.items():
        near = find_near_decisions(int8, margin_logits=margin, **settings)
        exact = ModelOutputs(
            reference.logits[near], None if reference.domain_logits is None else reference.domain_logits[near]
        )
        rechecked = int8.replace_rows(near, exact) if near.any() else int8
        alone = compute_verdict_parity(reference, int8, **settings)
        final = compute_verdict_parity(reference, rechecked, **settings)
        print(
            f"| {cpu} | {alone.count} | {alone.agreement:.1%} | {alone.median_score_diff:.2g} / "
            f"{alone.max_score_diff:.2g} | {int(near.sum())} | {final.agreement:.1%} | "
            f"{final.median_score_diff:.2g} / {final.max_score_diff:.2g} |"
        )


def _default_export() -> Path:
    from deepfake_detector.inference.loading import find_cached_int8_export
    from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL, resolve_checkpoint

    export = find_cached_int8_export(resolve_checkpoint(DEFAULT_MODEL).folder)
    if export is None:
        raise SystemExit(
            "no cached int8 export: run `deepfake-detector fetch-backbone --int8-static`, or give --export"
        )
    return export


def _draw_images(data: list[str], split: str, per_group: int) -> list:
    """Up to ``per_group`` images of each (data, source, label) group of ``split``, seed 0."""
    from deepfake_detector.data.labelled import load_labelled_images

    if split == "test":
        raise SystemExit("--split test: choose on train or val; the test split is reported once, elsewhere")
    rng = random.Random(0)
    drawn = []
    for given in data:
        groups: dict[tuple, list] = {}
        for image in load_labelled_images(given, split=split):
            groups.setdefault((image.source, image.label), []).append(image)
        for key in sorted(groups, key=str):
            drawn += rng.sample(groups[key], min(per_group, len(groups[key])))
    return drawn


if __name__ == "__main__":
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    sys.exit(main())
