"""How far outlier-aware int8 moves the default model's answers, simulated in PyTorch or as built.

    .venv/bin/python benchmarks/int8_smoothquant.py --data ../shared/data --cache runs/quant \
        --variants q+k+v+o+fc1 q+k+v+o+fc1+fc2
    .venv/bin/python benchmarks/int8_smoothquant.py --data ../shared/data --cache runs/quant \
        --runtime onnx --activations token --alpha 0.7 --faces-every 1 --variants "q+k+v+o+fc1+fc2@0,2.fc2"

CLIP's residual stream has a few channels hundreds of times larger than the rest, so per-tensor int8
activations lose everything else (dynamic per-tensor int8 drifts far from float). This measures the
remedy the literature uses before building a runtime for it:

- SmoothQuant-style migration (``--alpha``, default 0.5): each linear layer's input channel j is
  divided by ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` and its weight column multiplied by it (for
  q/k/v and fc1 this folds into the LayerNorm before them, for out_proj into v_proj; fc2 needs an
  explicit multiply). ``max|X_j|`` is measured on calibration images from the *train* split.
- 8-bit activations (``--activations``): static per tensor over [-max, max] (``symmetric``) or
  [min, max] (``asymmetric``) of the smoothed input on those images, or dynamic per token over its
  own [min, max] (``token``, as ``export --quantize int8-static`` builds it); and 7-bit
  per-output-channel weights (what CPUs without VNNI need).
- Only the linear layers named in a variant are quantised (``q``, ``k``, ``v``, ``o`` = out_proj,
  ``fc1``, ``fc2``, each optionally with its own ``:mode``, e.g. ``fc2:token``), in every block but
  those a variant names after ``@`` (0-based, e.g. ``q+k+v+o+fc1@0,1`` keeps blocks 0 and 1 in
  float; ``block.part`` keeps one layer: ``@0,2.fc2``, the export's default, keeps block 0 and
  block 2's fc2); attention's own matmuls, LayerNorms and the heads stay float.

It reports, on the *val* split (all of ``modern/`` val and every ``--faces-every``-th ``faces/`` val
image, by default every third; 1: the whole split), the
agreement with fp32 (domains, verdicts at each domain's stored threshold, fake-score differences) and
ROC-AUC of both, and the same after the export's fp32 re-check of the rows near a decision at each
``--recheck-margins`` value. Fake-quantisation measures accuracy, not speed: the simulated model runs
in fp32. ``--runtime onnx`` builds the export's own int8 graph (``--activations token`` only) and
runs it with ONNX Runtime.
Preprocessed pixels, the fp32 outputs and the channel ranges are cached in ``--cache`` (float16 pixels),
so a second run only simulates.
"""

from __future__ import annotations

import argparse
import copy
import csv
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

from deepfake_detector.evaluation.metrics import compute_roc_auc
from deepfake_detector.export.int8_static import WEIGHT_LEVELS
from deepfake_detector.inference.preprocessing import ImagePreprocessor
from deepfake_detector.io.images import load_image
from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL, load_model_and_processor, resolve_checkpoint
from deepfake_detector.modeling.labels import resolve_label_roles
from deepfake_detector.scoring import (
    ModelOutputs,
    compute_fake_scores,
    compute_probabilities,
    find_near_decisions,
)
from deepfake_detector.stored_settings import StoredSettings

LAYERS = "vision_model.encoder.layers"
BATCH = 16


def select_rows(data: Path, split: str) -> list[tuple[str, str, str, str]]:
    """(dataset, path, label, source) of every ``split`` image of faces/ and modern/."""
    rows = []
    for dataset in ("faces", "modern"):
        with open(data / dataset / "manifest.csv", newline="", encoding="utf-8") as handle:
            for row in csv.DictReader(handle):
                if row["split"] == split:
                    rows.append((dataset, str(data / dataset / row["path"]), row["label"], row["source"]))
    return rows


def cached_pixels(cache: Path, name: str, rows: list, processor) -> np.ndarray:
    """Preprocessed pixels (N, 3, H, W) as float16, cached with the row list they belong to."""
    pixels_path, rows_path = cache / f"{name}_px.npy", cache / f"{name}_rows.csv"
    if pixels_path.is_file() and rows_path.is_file():
        with open(rows_path, newline="") as handle:
            if [tuple(row) for row in csv.reader(handle)] == rows:
                return np.load(pixels_path)
    preprocessor = ImagePreprocessor(processor)
    pixels = np.stack([preprocessor(load_image(row[1])) for row in rows]).astype(np.float16)
    np.save(pixels_path, pixels)
    with open(rows_path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return pixels


def compute_outputs(model, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Routed logits (N, C) and domain logits (N, domains)."""
    logits, domains = [], []
    with torch.inference_mode():
        for start in range(0, len(pixels), BATCH):
            outputs = model(pixel_values=torch.from_numpy(pixels[start : start + BATCH].astype(np.float32)))
            logits.append(outputs.logits.numpy())
            domains.append(outputs.domain_logits.numpy())
    return np.concatenate(logits), np.concatenate(domains)


def collect_channel_ranges(model, pixels: np.ndarray) -> dict[str, torch.Tensor]:
    """(min, max) of the input per channel, (2, in), of every linear layer in the blocks, over ``pixels``
    (`int8_static.collect_input_ranges`, as the export measures them)."""
    from deepfake_detector.export.int8_static import collect_input_ranges

    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(LAYERS)
    ]
    batches = (pixels[start : start + BATCH].astype(np.float32) for start in range(0, len(pixels), BATCH))
    return {
        name: torch.from_numpy(value) for name, value in collect_input_ranges(model, batches, names).items()
    }


class FakeQuantLinear(torch.nn.Module):
    """A linear layer whose smoothed input is quantised to 8 bits and whose smoothed weight is quantised
    to the export's 7-bit grid per output channel (`int8_static.WEIGHT_LEVELS`).

    ``mode``: "symmetric" (static per-tensor range [-max, max]), "asymmetric" (static per-tensor
    [min, max] with a zero point, as ONNX Runtime's static uint8 activations) or "token" (dynamic,
    one asymmetric range per token, measured on the input itself).
    """

    def __init__(self, linear: torch.nn.Linear, smoothing: torch.Tensor, ranges: torch.Tensor, mode: str):
        super().__init__()
        weight = linear.weight.detach() * smoothing[None, :]  # (out, in)
        # The export's own grid (integers in [-64, 64], a step of max|row| / 64), not merely one like it:
        # with only block 1's fc2 in int8 (4 val images), a grid of [-64, 63] (a step of max / 63)
        # moved the logits by 0.06 on average and the export's by 0.29, though its weights are closer.
        step = weight.abs().amax(1, keepdim=True).clamp(min=1e-8) / WEIGHT_LEVELS  # (out, 1)
        self.register_buffer("weight", torch.round(weight / step).clamp(-WEIGHT_LEVELS, WEIGHT_LEVELS) * step)
        self.register_buffer("bias", linear.bias.detach().clone())
        self.register_buffer("inverse", 1.0 / smoothing)
        low, high = (
            float((ranges[0] / smoothing).min().clamp(max=0)),
            float((ranges[1] / smoothing).max().clamp(min=0)),
        )
        self.mode = mode
        if mode == "symmetric":
            self.low, self.step = -max(-low, high), max(-low, high) / 127.5
        else:
            self.low, self.step = low, (high - low) / 255

    def forward(self, x):
        x = x * self.inverse
        if self.mode == "token":
            low = x.amin(-1, keepdim=True).clamp(max=0)
            step = (x.amax(-1, keepdim=True).clamp(min=0) - low).clamp(min=1e-8) / 255
        else:
            low, step = self.low, self.step
        zero = torch.round(-low / step) if self.mode == "token" else round(-low / step)
        x = (torch.clamp(torch.round(x / step) + zero, 0, 255) - zero) * step
        return torch.nn.functional.linear(x, self.weight, self.bias)


def build_fake_quant(
    model,
    ranges: dict,
    parts: dict[str, str],
    alpha: float,
    float_blocks: set[int] = frozenset(),
    float_layers: tuple[str, ...] = (),
):
    """A copy of ``model`` with the linear layers named in ``parts`` (part -> activation mode) of every
    block but ``float_blocks`` (0-based) fake-quantised, but for ``float_layers`` ("block.part")."""

    def smoothing(name: str, weights: list[torch.Tensor]) -> torch.Tensor:
        weight_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0)  # (in,)
        input_max = ranges[name].abs().amax(0)
        return (input_max.clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(
            min=1e-5
        )

    quantised = copy.deepcopy(model)
    with torch.no_grad():
        for index, layer in enumerate(quantised.vision_model.encoder.layers):
            if index in float_blocks:
                continue
            attention, mlp = layer.self_attn, layer.mlp
            qkv = f"{LAYERS}.{index}.self_attn.q_proj"  # q, k and v read the same input
            shared = smoothing(
                qkv, [attention.q_proj.weight, attention.k_proj.weight, attention.v_proj.weight]
            )
            for part in ("q", "k", "v"):
                if part in parts and f"{index}.{part}" not in float_layers:
                    linear = getattr(attention, f"{part}_proj")
                    setattr(
                        attention, f"{part}_proj", FakeQuantLinear(linear, shared, ranges[qkv], parts[part])
                    )
            for part, owner, attribute, name in (
                ("o", attention, "out_proj", f"{LAYERS}.{index}.self_attn.out_proj"),
                ("fc1", mlp, "fc1", f"{LAYERS}.{index}.mlp.fc1"),
                ("fc2", mlp, "fc2", f"{LAYERS}.{index}.mlp.fc2"),
            ):
                if part in parts and f"{index}.{part}" not in float_layers:
                    linear = getattr(owner, attribute)
                    scale = smoothing(name, [linear.weight])
                    setattr(owner, attribute, FakeQuantLinear(linear, scale, ranges[name], parts[part]))
    return quantised


def compute_onnx_outputs(
    model, parts, float_blocks, float_layers, alpha, weight_rounding, calibration, pixels, cache: Path
):
    """Routed and domain logits of ``export --quantize int8-static``'s int8 graph for this variant
    (without its fp32 re-check near decisions, which `describe` applies)."""
    from deepfake_detector.export.int8_static import (
        CALIBRATION_BATCH,
        Int8Recipe,
        prepare_model,
        quantize_per_token,
    )
    from deepfake_detector.export.onnx import _export_graph
    from deepfake_detector.inference.engines import OnnxEngine

    if set(parts.values()) != {"token"}:
        raise SystemExit("--runtime onnx builds activations quantised per token only (--activations token)")
    recipe = Int8Recipe(
        parts=tuple(parts),
        float_blocks=tuple(sorted(float_blocks)),
        float_layers=float_layers,
        alpha=alpha,
        weight_rounding=weight_rounding,
    )
    calibration = calibration.astype(np.float32)

    def batches():
        step = CALIBRATION_BATCH
        return (calibration[start : start + step] for start in range(0, len(calibration), step))

    path = cache / "onnx" / "model.onnx"
    path.parent.mkdir(exist_ok=True)
    _export_graph(prepare_model(model, batches, recipe), calibration[:2], path)
    quantize_per_token(path, recipe.quantised_layers(model))
    engine = OnnxEngine(path, precision="int8")
    outputs = [
        engine.compute_outputs(pixels[start : start + BATCH].astype(np.float32))
        for start in range(0, len(pixels), BATCH)
    ]
    return np.concatenate([o.logits for o in outputs]), np.concatenate([o.domain_logits for o in outputs])


def parse_variant(variant: str, default_mode: str) -> tuple[dict[str, str], set[int], tuple[str, ...]]:
    """ "q+k+v+o+fc1+fc2:token@0,2.fc2" -> ({part: mode}, float blocks {0}, float layers ("2.fc2",))."""
    names, _, kept = variant.partition("@")
    parts = {}
    for item in names.split("+"):
        part, _, mode = item.partition(":")
        parts[part] = mode or default_mode
    kept = [item for item in kept.split(",") if item]
    return parts, {int(item) for item in kept if "." not in item}, tuple(item for item in kept if "." in item)


def describe(name, rows, reference, candidate, fake_ids, thresholds) -> str:
    (ref_logits, ref_domains), (logits, domains) = reference, candidate
    ref_scores = compute_fake_scores(compute_probabilities(ref_logits), fake_ids)
    scores = compute_fake_scores(compute_probabilities(logits), fake_ids)
    ref_domain, domain = ref_domains.argmax(1), domains.argmax(1)
    ref_verdict, verdict = ref_scores >= thresholds[ref_domain], scores >= thresholds[domain]
    diff = np.abs(ref_scores - scores)
    ref_top1, top1 = ref_scores >= 0.5, scores >= 0.5
    parts = [
        f"{name}: domains agree {np.mean(ref_domain == domain):.2%}",
        f"top-1 agree {np.mean(ref_top1 == top1):.2%}",
        f"verdicts agree {np.mean(ref_verdict == verdict):.2%} ({int(np.sum(ref_verdict != verdict))} of "
        f"{len(rows)} differ)",
        f"|score diff| mean {np.mean(diff):.4f} median {np.median(diff):.4f} "
        f"p99 {np.quantile(diff, 0.99):.3f}",
    ]
    labels = np.array([row[2] for row in rows], dtype=object)
    datasets = np.array([row[0] for row in rows])
    for dataset in ("faces", "modern"):
        mask = datasets == dataset
        before = compute_roc_auc(labels[mask], ref_scores[mask], positive="fake")
        after = compute_roc_auc(labels[mask], scores[mask], positive="fake")
        parts.append(f"{dataset} ROC-AUC fp32 {before:.4f} int8 {after:.4f} ({after - before:+.4f})")
    return " | ".join(parts)


def describe_recheck(rows, reference, candidate, fake_ids, calibration, domains, margin: float) -> str:
    """``describe`` of the candidate after the export's re-check: the rows `find_near_decisions` picks
    at ``margin`` get the fp32 reference's outputs (PyTorch's here; the export's fp32 graph is within
    1e-3 of them in the logits)."""
    outputs = ModelOutputs(*candidate)
    near = find_near_decisions(
        outputs, fake_ids=fake_ids, calibration=calibration, domains=domains, margin_logits=margin
    )  # (N,) bool
    rechecked = outputs.replace_rows(near, ModelOutputs(reference[0][near], reference[1][near]))
    thresholds = np.array([calibration.thresholds_for(name).fake for name in domains])
    return describe(
        f"  re-checked within {margin} logits ({near.mean():.1%} of rows in fp32)",
        rows,
        reference,
        (rechecked.logits, rechecked.domain_logits),
        fake_ids,
        thresholds,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding faces/ and modern/")
    parser.add_argument("--cache", type=Path, required=True, help="folder for cached arrays")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint with domains (%(default)s)")
    parser.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    parser.add_argument("--variants", nargs="+", default=["q+k+v+o+fc1", "q+k+v+o+fc1+fc2"])
    parser.add_argument(
        "--activations",
        choices=("symmetric", "asymmetric", "token"),
        default="symmetric",
        help="activation ranges of parts without a :mode suffix (%(default)s)",
    )
    parser.add_argument(
        "--runtime",
        choices=("simulated", "onnx"),
        default="simulated",
        help="simulated: fake quantisation in PyTorch; onnx: the graph `export --quantize int8-static` "
        "builds (activations per token only), run by ONNX Runtime (%(default)s)",
    )
    parser.add_argument(
        "--weight-rounding",
        choices=("gptq", "nearest"),
        default="nearest",
        help="--runtime onnx: how the export rounds weights (%(default)s); the simulation rounds to nearest",
    )
    parser.add_argument(
        "--recheck-margins",
        nargs="*",
        type=float,
        default=[0.5, 0.75, 1.0],
        help="also report each variant with the rows near a decision at these margins (logits) scored "
        "in fp32, as the export's re-check does (%(default)s)",
    )
    parser.add_argument(
        "--faces-every", type=int, default=3, help="score every n-th faces/ val image (%(default)s; 1: all)"
    )
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    args.cache.mkdir(parents=True, exist_ok=True)

    checkpoint = resolve_checkpoint(args.model)
    model, processor = load_model_and_processor(checkpoint)
    model.eval()
    fake_ids = resolve_label_roles(model.config.id2label).fake_ids
    stored = StoredSettings.from_config(model.config).calibration
    thresholds = np.array([stored.thresholds_for(name).fake for name in model.config.domains])

    train = select_rows(args.data, "train")
    rng = random.Random(0)
    calibration = rng.sample([r for r in train if r[0] == "faces"], 192)
    calibration += rng.sample([r for r in train if r[0] == "modern"], 128)
    calibration_pixels = cached_pixels(args.cache, "calib", calibration, processor)
    val = select_rows(args.data, "val")
    val_pixels = cached_pixels(args.cache, "val", val, processor)

    started = time.perf_counter()
    every = args.faces_every
    keep = np.array([i for i, row in enumerate(val) if row[0] == "modern" or i % every == 0])
    rows = [val[i] for i in keep]
    kept = "kept" if every == 3 else f"every{every}"  # "kept": the name of the first cache, every third
    reference_path = args.cache / f"val_{kept}_fp32_logits.npy"
    if reference_path.is_file():
        reference = np.load(reference_path), np.load(args.cache / f"val_{kept}_fp32_domain.npy")
    else:
        reference = compute_outputs(model, val_pixels[keep])
        np.save(reference_path, reference[0])
        np.save(args.cache / f"val_{kept}_fp32_domain.npy", reference[1])
    ranges_path = args.cache / "ranges.pt"
    if ranges_path.is_file():
        ranges = torch.load(ranges_path)
    else:
        ranges = collect_channel_ranges(model, calibration_pixels)
        torch.save(ranges, ranges_path)

    print(
        f"{checkpoint.name}: {len(calibration)} train images for calibration, {len(rows)} val images "
        f"({time.perf_counter() - started:.0f} s for the fp32 pass and the statistics)",
        flush=True,
    )
    for variant in args.variants:
        parts, float_blocks, float_layers = parse_variant(variant, args.activations)
        if args.runtime == "onnx":
            candidate = compute_onnx_outputs(
                model,
                parts,
                float_blocks,
                float_layers,
                args.alpha,
                args.weight_rounding,
                calibration_pixels,
                val_pixels[keep],
                args.cache,
            )
        else:
            quantised = build_fake_quant(model, ranges, parts, args.alpha, float_blocks, float_layers)
            candidate = compute_outputs(quantised, val_pixels[keep])
        print(
            describe(
                f"{args.runtime} alpha {args.alpha} {args.activations} {variant}"
                + (f" weights {args.weight_rounding}" if args.runtime == "onnx" else ""),
                rows,
                reference,
                candidate,
                fake_ids,
                thresholds,
            ),
            flush=True,
        )
        for margin in args.recheck_margins:
            print(
                describe_recheck(
                    rows, reference, candidate, fake_ids, stored, tuple(model.config.domains), margin
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
