"""End-to-end throughput of ``deepfake-detector predict`` against ``transformers.pipeline``, and parity.

    .venv/bin/python benchmarks/throughput.py --images 200
    .venv/bin/python benchmarks/throughput.py --images 200 --variants exact auto onnx-fp32 onnx-int8 \
        --model-step --profile
    .venv/bin/python benchmarks/throughput.py --model ./my-checkpoint --sizes 256x256 --images 300

What it does, all in one run:

1. The model: a ViT-B/16-shaped checkpoint (transformers' ``ViTConfig`` defaults: 224 px, patch 16,
   12 layers of width 768; random weights, seed 0; labels Realism/Deepfake) saved with its
   ``ViTImageProcessor``, or the checkpoint folder given with ``--model`` (for the default model, the
   folder ``python -c "from deepfake_detector.modeling.checkpoints import resolve_checkpoint;
   print(resolve_checkpoint('clip-b16-v1').folder)"`` prints).
2. The images: ``--images`` JPEG files (quality 90) of mixed sizes, by default a quarter of them
   camera-size (4000x3000 and 3000x4000), the rest 1920x1080 down to 512x512. Their content is made up
   (smooth colour fields, shapes, sensor-like noise) but they are real JPEG files, decoded like photos.
3. (a) the baseline: a fresh Python process running ``transformers.pipeline("image-classification")``
   over the files, one call per file (its default batch size of 1), as the model card shows.
   (b) each variant: a fresh ``deepfake-detector predict FOLDER --output rows.jsonl`` process:
   ``auto`` (the defaults; with ``fetch-backbone --int8-static`` done, the default model's cached
   int8 export on a CPU without AMX), ``exact`` (``--precision fp32 --engine torch``), ``bf16``
   (``--precision bf16 --engine torch``), ``int8`` (``--precision int8``: the default model's
   export that ``fetch-backbone --int8-static`` built, on any CPU, AMX included), and ``onnx-fp32`` /
   ``onnx-int8`` / ``onnx-int8-static``, which first ``deepfake-detector export`` the checkpoint (a
   one-time cost, reported apart; int8-static calibrates on ``--calibration-data``, a CLIP detector
   only) and then predict with ``--model EXPORT``.
   Each command is timed from process start to exit (imports and model loading included, for both
   sides); images/s is files over that wall time, "x pipeline" is over (a)'s images/s from this same
   run. Peak memory is each process's maximum resident set size.
4. Parity of each (b) against (a): top-1 agreement and the median and max |fake-score difference|.

``--model-step`` adds the model alone: a large matmul's FLOP/s (this CPU's limit), the model's FLOPs
per image, and images/s per engine at batch 8. ``--profile`` adds where one image's time goes:
reading, decoding (whole and draft), preprocessing, model step. ``--startup`` adds each command on
one image (the first file), a fresh process each time, median of 3: what a user waits for one answer,
nearly all of it imports and loading, against the pipeline's own. The CPU is shared in some setups:
the load average is printed before and after; compare figures only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

# (width, height), cycled over the files: two camera-size photos in every eight.
MIXED_SIZES = [
    (4000, 3000),
    (1920, 1080),
    (1280, 960),
    (640, 480),
    (3000, 4000),
    (1024, 768),
    (800, 600),
    (512, 512),
]
VARIANTS = {
    "exact": ["--precision", "fp32", "--engine", "torch"],
    "bf16": ["--precision", "bf16", "--engine", "torch"],
    "int8": ["--precision", "int8"],
    "auto": [],
    "onnx-fp32": [],
    "onnx-int8": [],
    "onnx-int8-static": [],
}
PIPELINE_SCRIPT = """
import json, sys
from transformers import pipeline
from transformers.utils import logging
from deepfake_detector.modeling.clip_detector import register_auto_classes
register_auto_classes()  # the project's CLIP detector is a custom class, known once registered
logging.set_verbosity_error()
logging.disable_progress_bar()
model, listing, out = sys.argv[1:]
paths = open(listing).read().split("\\n")
pipe = pipeline("image-classification", model=model, device="cpu")
with open(out, "w") as handle:
    for path in paths:
        scores = {row["label"]: row["score"] for row in pipe(path, top_k=None)}
        handle.write(json.dumps({"source": path, "scores": scores}) + "\\n")
"""


BUILD_SCRIPT = """
import sys, torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
folder = sys.argv[1]
labels = {0: "Realism", 1: "Deepfake"}
torch.manual_seed(0)
config = ViTConfig(num_labels=2, id2label=labels, label2id={name: i for i, name in labels.items()})
ViTForImageClassification(config).save_pretrained(folder)
ViTImageProcessor(size={"height": config.image_size, "width": config.image_size}).save_pretrained(folder)
"""


def build_vit_b16(folder: Path) -> Path:
    """Saves a randomly initialised ViT-B/16 (``ViTConfig`` defaults) and its image processor.

    In a child process, so that this process stays small (see `LAUNCHER_SCRIPT`).
    """
    if not (folder / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(folder)], check=True, capture_output=True)
    return folder


def _photo(width: int, height: int, rng: np.random.Generator) -> Image.Image:
    """A made-up photo: smooth colour field, a few hard-edged shapes, fine noise (so JPEG has work)."""
    from PIL import ImageDraw

    coarse = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
    draw = ImageDraw.Draw(image)
    for _ in range(12):
        x0, x1 = sorted(rng.integers(0, width, size=2))
        y0, y1 = sorted(rng.integers(0, height, size=2))
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    tile = rng.normal(0, 6, size=(256, 256, 3))  # tiled: drawing 12 MP of fresh noise per file is slow
    reps = (-(-height // 256), -(-width // 256), 1)
    noisy = np.asarray(image, dtype=np.float32) + np.tile(tile, reps)[:height, :width]
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def write_jpegs(folder: Path, count: int, sizes: list[tuple[int, int]]) -> list[Path]:
    """Writes ``count`` JPEG files cycling through ``sizes``; reuses them when already there."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        width, height = sizes[index % len(sizes)]
        path = folder / f"{index:05d}-{width}x{height}.jpg"
        if not path.is_file():
            _photo(width, height, rng).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


# Linux starts a forked child's peak memory at its parent's lifetime peak (the memory map is copied
# with its high-water mark), so a command started straight from this process, which drew camera-size
# JPEGs, would report at least that. This small launcher starts each command instead, and reports its
# wall time and its own peak (the launcher's children: the command alone).
LAUNCHER_SCRIPT = """
import json, resource, subprocess, sys, time
report, command = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
code = subprocess.call(command)
wall_s = time.perf_counter() - start
peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # Linux reports KiB
with open(report, "w") as handle:
    json.dump({"code": code, "wall_s": wall_s, "peak_kib": peak_kib}, handle)
"""


def run_timed(command: list[str], log: Path) -> tuple[float, float]:
    """Runs ``command`` through the launcher; returns (wall seconds from the command's start to its
    exit, its peak resident memory in MiB). Raises if it fails."""
    report = log.with_suffix(".timing.json")
    with open(log, "w") as handle:
        subprocess.run(
            [sys.executable, "-c", LAUNCHER_SCRIPT, str(report), *command],
            stdout=handle,
            stderr=subprocess.STDOUT,
            check=True,
        )
    timing = json.loads(report.read_text())
    if timing["code"] != 0:
        raise SystemExit(
            f"{' '.join(command[:4])} ... exited with {timing['code']}; see {log}:\n{log.read_text()[-3000:]}"
        )
    return timing["wall_s"], timing["peak_kib"] / 1024


# "Top-1" is the side of 0.5 the fake score falls on (the checkpoint's argmax for two classes), for
# both programs: predict's `label` follows its calibrated verdict, which the pipeline knows nothing of.


def _pipeline_rows(path: Path, fake_labels: set[str]) -> dict[str, tuple[float, bool]]:
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        fake_score = sum(row["scores"][name] for name in fake_labels)
        rows[row["source"]] = (fake_score, fake_score >= 0.5)
    return rows


def _predict_rows(path: Path) -> dict[str, tuple[float, bool]]:
    rows = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row["error"]:
            raise SystemExit(f"predict failed on {row['source']}: {row['error']}")
        rows[row["source"]] = (row["fake_score"], row["fake_score"] >= 0.5)
    return rows


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def measure_model_step(model_folder: Path, exports: dict[str, Path], batch_size: int = 8) -> None:
    """Prints this CPU's matmul limits, the model's FLOPs per image, and each engine's images/s."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from deepfake_detector import Detector
    from deepfake_detector.inference.engines import ONNX_FILE, OnnxEngine, detect_cpu_features
    from deepfake_detector.inference.loading import find_cached_int8_export

    cpu = detect_cpu_features()
    cached = find_cached_int8_export(model_folder)  # fetch-backbone --int8-static's, if any
    print(f"\n## Model step (batch {batch_size}), CPU features: {cpu.describe()}; load {_load_average()}")
    limits = {"fp32": _torch_matmul_flops(torch.float32)}
    if cpu.native_bf16:
        limits["bf16"] = _torch_matmul_flops(torch.bfloat16)
    else:
        print("bf16 matmul: not measured (no AMX/AVX512-BF16: PyTorch emulates it, far below fp32)")
    if exports or cached is not None:
        limits["int8"] = _int8_matmul_ops()
    for precision, limit in limits.items():
        kernel = "ONNX Runtime MatMulInteger" if precision == "int8" else "torch"
        print(f"4096x4096 {precision} matmul ({kernel}, best of 3): {limit / 1e9:.1f} G op/s")
    detector = Detector.from_pretrained(model_folder, precision="fp32", engine="torch")
    shape = detector.preprocessor(Image.new("RGB", (640, 480))).shape  # (3, H, W), the checkpoint's size
    pixels = np.random.default_rng(0).normal(size=(batch_size, *shape)).astype(np.float32)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        detector.model(pixel_values=torch.from_numpy(pixels[:1]))
    flops = counter.get_total_flops()
    print(f"model: {flops / 1e9:.1f} G op per image (matmuls and convolutions)")
    candidates = [("torch", "fp32", model_folder)]
    if cpu.native_bf16:
        candidates.insert(1, ("torch", "bf16", model_folder))
    candidates += [("onnx", form, folder) for form, folder in exports.items()]
    if cached is not None and "int8-static" not in exports:
        candidates.append(("onnx", "int8-static", cached))
    print("| engine | precision | images/s | images/s at the matmul limit | share |")
    print("| --- | --- | --- | --- | --- |")
    for engine, form, folder in candidates:
        precision = form.removesuffix("-static")  # an int8-static export is int8 to the detector
        if form == "int8-static":  # its int8 graph alone: which rows it re-checks depends on the images
            model_step = OnnxEngine(folder / ONNX_FILE, precision="int8")
        else:
            model_step = Detector.from_pretrained(folder, precision=precision, engine=engine).engine
        model_step.compute_logits(pixels)  # warm-up
        runs = []
        for _ in range(3):
            start = time.perf_counter()
            model_step.compute_logits(pixels)
            runs.append(batch_size / (time.perf_counter() - start))
        best = max(runs)
        if form == "int8-static":  # part int8, part fp32: neither matmul limit applies
            print(f"| {engine} | {form} (int8 graph, no re-check) | {best:.2f} | (mixed) | |")
            continue
        ceiling = limits.get(precision, limits["fp32"]) / flops
        print(f"| {engine} | {form} | {best:.2f} | {ceiling:.2f} | {best / ceiling:.0%} |")


def _torch_matmul_flops(dtype, side: int = 4096) -> float:
    """Best of 3 large square matmuls in PyTorch, in FLOP/s."""
    import torch

    a, b = torch.randn(side, side, dtype=dtype), torch.randn(side, side, dtype=dtype)
    a @ b  # warm-up
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        a @ b
        runs.append(2 * side**3 / (time.perf_counter() - start))
    return max(runs)


def _int8_matmul_ops(side: int = 4096) -> float:
    """Best of 3 int8 x int8 -> int32 matmuls in ONNX Runtime (the kernel its int8 models run)."""
    import onnxruntime
    from onnx import TensorProto, helper

    from deepfake_detector.inference.engines import available_cpus

    inputs = [
        helper.make_tensor_value_info("a", TensorProto.UINT8, [side, side]),
        helper.make_tensor_value_info("b", TensorProto.INT8, [side, side]),
    ]
    output = helper.make_tensor_value_info("y", TensorProto.INT32, [side, side])
    graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "b"], ["y"])], "mm", inputs, [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = available_cpus()
    session = onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.integers(0, 256, (side, side), dtype=np.uint8),
        "b": rng.integers(-64, 64, (side, side), dtype=np.int8),
    }
    session.run(None, feed)  # warm-up
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        session.run(None, feed)
        runs.append(2 * side**3 / (time.perf_counter() - start))
    return max(runs)


def profile_stages(model_folder: Path, paths: list[Path], batch_size: int = 8) -> None:
    """Prints the mean time per image of each stage, one thread, over the benchmark's files."""
    from deepfake_detector import Detector
    from deepfake_detector.io.images import load_image

    print(
        f"\n## Where one image's time goes (one thread, mean over {len(paths)} files; load {_load_average()})"
    )
    detector = Detector.from_pretrained(model_folder, workers=0)
    draft_size = (448, 448) if detector.preprocessor.draft_size is None else detector.preprocessor.draft_size
    totals = dict.fromkeys(("read", "decode whole", "decode draft", "preprocess (after draft)"), 0.0)
    pixels = []
    for path in paths:
        start = time.perf_counter()
        data = path.read_bytes()
        totals["read"] += time.perf_counter() - start
        start = time.perf_counter()
        load_image(data)
        totals["decode whole"] += time.perf_counter() - start
        start = time.perf_counter()
        image = load_image(data, draft_size=draft_size)
        totals["decode draft"] += time.perf_counter() - start
        start = time.perf_counter()
        pixels.append(detector.preprocessor(image))
        totals["preprocess (after draft)"] += time.perf_counter() - start
    batch = np.stack(pixels[:batch_size])
    detector.engine.compute_logits(batch)  # warm-up
    start = time.perf_counter()
    detector.engine.compute_logits(batch)
    model_s = (time.perf_counter() - start) / len(batch)
    print(f"| stage | ms per image | engine: {detector.engine.name} {detector.engine.precision} |")
    print("| --- | --- | --- |")
    for stage, seconds in totals.items():
        print(f"| {stage} | {seconds / len(paths) * 1000:.1f} | |")
    print(f"| model step (batch {batch_size}) | {model_s * 1000:.1f} | |")


def measure_startup(
    args, model: Path, exports: dict[str, Path], image: Path, work: Path, runs: int = 3
) -> None:
    """Prints each command's wall time on one image (imports, loading, one model step), median of
    ``runs`` fresh processes, and how many times faster than the pipeline's that is."""
    listing = work / "one-file.txt"
    listing.write_text(str(image))
    cli = [sys.executable, "-m", "deepfake_detector"]
    commands = [
        (
            "(a) transformers.pipeline",
            [sys.executable, "-c", PIPELINE_SCRIPT, str(model), str(listing), os.devnull],
        )
    ]
    for variant in args.variants:
        folder = exports[variant.removeprefix("onnx-")] if variant.startswith("onnx-") else model
        out = str(work / "startup.jsonl")
        predict = [*cli, "predict", str(image), "--model", str(folder), "--output", out, "--quiet"]
        commands.append((f"(b) {variant}", [*predict, *VARIANTS[variant]]))
    print(f"\n## Start-up: one image, a fresh process each run (median of {runs}); load {_load_average()}")
    print("| run | seconds | x pipeline | peak MiB |")
    print("| --- | --- | --- | --- |")
    baseline_s = None
    for name, command in commands:
        timed = [run_timed(command, work / "startup.log") for _ in range(runs)]
        wall_s = float(np.median([wall for wall, _ in timed]))
        baseline_s = baseline_s or wall_s
        peak = max(peak for _, peak in timed)
        print(f"| {name} | {wall_s:.2f} | {baseline_s / wall_s:.2f} | {peak:.0f} |")


def run_variants(args, model: Path, images: Path, work: Path) -> tuple[list, dict[str, Path], list[str]]:
    """Times each predict variant; returns (results, export folders, export notes)."""
    results, exports, notes = [], {}, []
    cli = [sys.executable, "-m", "deepfake_detector"]
    for variant in args.variants:
        flags, model_flag, shown_model = list(VARIANTS[variant]), str(model), "M"
        if variant.startswith("onnx-"):
            form = variant.removeprefix("onnx-")  # fp32, int8 or int8-static
            folder = work / f"export-{form}"
            shutil.rmtree(folder, ignore_errors=True)
            quantize = [] if form == "fp32" else ["--quantize", form]
            if form == "int8-static":
                quantize += ["--calibration-data", *args.calibration_data]
            log = work / f"export-{form}.log"
            export_s, _ = run_timed(
                [*cli, "export", *quantize, "--model", str(model), "--out", str(folder)], log
            )
            notes.append(f"export {form} (once, {export_s:.0f} s): {log.read_text().strip()}")
            exports[form], model_flag, shown_model = folder, str(folder), "EXPORT"
        out = work / f"predict-{variant}.jsonl"
        command = [*cli, "predict", str(images), "--model", model_flag, "--output", str(out), "--quiet"]
        command += ["--batch-size", str(args.batch_size), *flags]
        wall_s, peak = run_timed(command, work / f"predict-{variant}.log")
        shown = " ".join(["deepfake-detector predict IMAGES --model", shown_model, *flags])
        results.append((f"(b) {variant}", shown, wall_s, peak, _predict_rows(out)))
        if variant == "auto":  # what auto chose here, in its own words
            info = subprocess.run(
                [*cli, "info", "--model", str(model), "--format", "json"], capture_output=True, text=True
            )
            chosen = json.loads(info.stdout) if info.returncode == 0 else {}
            notes.append(
                f"auto ran {chosen.get('engine')} ({chosen.get('precision')}): {chosen.get('engine_reason')}"
            )
    return results, exports, notes


def print_table(results: list, baseline: dict, paths: list[Path]) -> None:
    from deepfake_detector.inference.parity import compute_score_parity

    print(
        "| run | command | wall s | images/s | x pipeline | peak MiB | top-1 agree | median diff | max diff |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    baseline_rate = len(paths) / results[0][2]
    sources = [str(path) for path in paths]
    for name, shown, wall_s, peak, rows in results:
        rate = len(paths) / wall_s
        parity = "(reference) | | "
        if rows is not None:
            report = compute_score_parity(
                [baseline[s][0] for s in sources],
                [rows[s][0] for s in sources],
                [baseline[s][1] for s in sources],
                [rows[s][1] for s in sources],
            )
            parity = f"{report.agreement:.1%} | {report.median_score_diff:.2g} | {report.max_score_diff:.2g}"
        speed = f"{wall_s:.1f} | {rate:.2f} | {rate / baseline_rate:.2f}"
        print(f"| {name} | `{shown}` | {speed} | {peak:.0f} | {parity} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="number of JPEG files (%(default)s)")
    parser.add_argument("--model", type=Path, help="checkpoint folder; default: a random ViT-B/16")
    parser.add_argument(
        "--sizes",
        nargs="+",
        metavar="WxH",
        help="image sizes to cycle through, e.g. 256x256; default: the camera-heavy mix in the docstring",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=["auto", "onnx-int8"],
        help="predict configurations to time against the pipeline (%(default)s)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="predict --batch-size (%(default)s)")
    parser.add_argument(
        "--calibration-data",
        nargs="+",
        default=[],
        metavar="DATA",
        help="labelled data for the onnx-int8-static export's calibration (its train split)",
    )
    parser.add_argument("--work", type=Path, help="folder for the model, images and outputs (kept; reused)")
    parser.add_argument("--model-step", action="store_true", help="also measure the model step alone")
    parser.add_argument("--profile", action="store_true", help="also time each stage for one image")
    parser.add_argument("--startup", action="store_true", help="also time each command on one image")
    args = parser.parse_args(argv)
    if "onnx-int8-static" in args.variants and not args.calibration_data:
        parser.error("onnx-int8-static needs --calibration-data")

    from deepfake_detector.modeling.labels import resolve_label_roles

    work = args.work or Path(tempfile.mkdtemp(prefix="throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes] if args.sizes else MIXED_SIZES
    model = args.model or build_vit_b16(work / "vit-b16")
    images = work / f"images-{args.images}-{'-'.join(f'{w}x{h}' for w, h in sizes)}"
    paths = write_jpegs(images, args.images, sizes)
    listing = work / "files.txt"
    listing.write_text("\n".join(str(path) for path in paths))
    # Read config.json directly: importing transformers (and torch) here would inflate the children's
    # peak memory (see build_vit_b16).
    id2label = json.loads((Path(model) / "config.json").read_text())["id2label"]
    roles = resolve_label_roles({int(index): name for index, name in id2label.items()})

    load_before = _load_average()
    baseline_out = work / "pipeline.jsonl"
    command = [sys.executable, "-c", PIPELINE_SCRIPT, str(model), str(listing), str(baseline_out)]
    wall_s, peak = run_timed(command, work / "pipeline.log")
    baseline = _pipeline_rows(baseline_out, {roles.id2label[i] for i in roles.fake_ids})
    results = [("(a) transformers.pipeline", "pipeline(path) per file", wall_s, peak, None)]
    variant_results, exports, notes = run_variants(args, Path(model), images, work)
    load_after = _load_average()

    print(f"model: {model}; {len(paths)} JPEG files in {images}")
    print(f"sizes (cycled): {', '.join(f'{w}x{h}' for w, h in sizes)}")
    print(f"load average (1/5/15 min) before: {load_before}; after: {load_after}; {os.cpu_count()} CPUs")
    print_table(results + variant_results, baseline, paths)
    for note in notes:
        print(note)
    if args.startup:
        measure_startup(args, Path(model), exports, paths[0], work)
    if args.model_step:
        measure_model_step(Path(model), exports)
    if args.profile:
        profile_stages(Path(model), paths)
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
