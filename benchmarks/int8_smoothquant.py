"""How far outlier-aware static int8 moves the default model's answers, simulated in PyTorch.

    .venv/bin/python benchmarks/int8_smoothquant.py --data ../shared/data --cache runs/quant \
        --variants q+k+v+o+fc1 q+k+v+o+fc1+fc2

CLIP's residual stream has a few channels hundreds of times larger than the rest, so per-tensor int8
activations lose everything else (dynamic per-tensor int8 drifts far from float). This measures the
remedy the literature uses before building a runtime for it:

- SmoothQuant-style migration (``--alpha``, default 0.5): each linear layer's input channel j is
  divided by ``s_j = max|X_j|^alpha / max|W_j|^(1-alpha)`` and its weight column multiplied by it (for
  q/k/v and fc1 this folds into the LayerNorm before them, for out_proj into v_proj; fc2 needs an
  explicit multiply). ``max|X_j|`` is measured on calibration images from the *train* split.
- Static per-tensor 8-bit activations over [-max, max] of the smoothed input on those images, and
  7-bit per-output-channel weights (what ONNX Runtime's ``reduce_range`` uses on CPUs without VNNI).
- Only the linear layers named in a variant are quantised (``q``, ``k``, ``v``, ``o`` = out_proj,
  ``fc1``, ``fc2``), in every block but those a variant names after ``@`` (0-based, e.g.
  ``q+k+v+o+fc1@0,1`` keeps blocks 0 and 1 in float); attention's own matmuls, LayerNorms and the
  heads stay float.

It reports, on the *val* split (all of ``modern/`` val and every third ``faces/`` val image), the
agreement with fp32 (domains, verdicts at each domain's stored threshold, fake-score differences) and
ROC-AUC of both. Fake-quantisation measures accuracy, not speed: the simulated model runs in fp32.
Preprocessed pixels, the fp32 outputs and the channel maxima are cached in ``--cache`` (float16 pixels),
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
from deepfake_detector.inference.preprocessing import ImagePreprocessor
from deepfake_detector.io.images import load_image
from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL, load_model_and_processor, resolve_checkpoint
from deepfake_detector.modeling.labels import resolve_label_roles
from deepfake_detector.scoring import compute_fake_scores, compute_probabilities
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


def collect_channel_maxima(model, pixels: np.ndarray) -> dict[str, torch.Tensor]:
    """max |input| per channel of every linear layer in the blocks, over ``pixels``."""
    maxima: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, inputs, output):
            value = inputs[0].detach().abs().reshape(-1, inputs[0].shape[-1]).amax(0)  # (in,)
            maxima[name] = torch.maximum(maxima[name], value) if name in maxima else value

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and name.startswith(LAYERS)
    ]
    compute_outputs(model, pixels)
    for handle in handles:
        handle.remove()
    return maxima


class FakeQuantLinear(torch.nn.Module):
    """A linear layer whose smoothed input is quantised to 8 bits per tensor (static range) and whose
    smoothed weight is quantised to ``weight_bits`` per output channel."""

    def __init__(self, linear: torch.nn.Linear, smoothing: torch.Tensor, input_max: float, weight_bits=7):
        super().__init__()
        weight = linear.weight.detach() * smoothing[None, :]  # (out, in)
        top = 2 ** (weight_bits - 1) - 1
        step = weight.abs().amax(1, keepdim=True).clamp(min=1e-8) / top  # (out, 1)
        self.register_buffer("weight", torch.round(weight / step).clamp(-top - 1, top) * step)
        self.register_buffer("bias", linear.bias.detach().clone())
        self.register_buffer("inverse", 1.0 / smoothing)
        self.step = float(input_max) / 127.5

    def forward(self, x):
        x = x * self.inverse
        x = torch.clamp(torch.round(x / self.step), -128, 127) * self.step
        return torch.nn.functional.linear(x, self.weight, self.bias)


def build_fake_quant(
    model, maxima: dict, parts: set[str], alpha: float, float_blocks: set[int] = frozenset()
):
    """A copy of ``model`` with the named linear layers of every block but ``float_blocks`` (0-based)
    fake-quantised."""

    def smoothing(name: str, weights: list[torch.Tensor]) -> torch.Tensor:
        weight_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0)  # (in,)
        return (maxima[name].clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)).clamp(
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
                if part in parts:
                    linear = getattr(attention, f"{part}_proj")
                    top = (maxima[qkv] / shared).max()
                    setattr(attention, f"{part}_proj", FakeQuantLinear(linear, shared, top))
            for part, owner, attribute, name in (
                ("o", attention, "out_proj", f"{LAYERS}.{index}.self_attn.out_proj"),
                ("fc1", mlp, "fc1", f"{LAYERS}.{index}.mlp.fc1"),
                ("fc2", mlp, "fc2", f"{LAYERS}.{index}.mlp.fc2"),
            ):
                if part in parts:
                    linear = getattr(owner, attribute)
                    scale = smoothing(name, [linear.weight])
                    setattr(owner, attribute, FakeQuantLinear(linear, scale, (maxima[name] / scale).max()))
    return quantised


def describe(name, rows, reference, candidate, fake_ids, thresholds) -> str:
    (ref_logits, ref_domains), (logits, domains) = reference, candidate
    ref_scores = compute_fake_scores(compute_probabilities(ref_logits), fake_ids)
    scores = compute_fake_scores(compute_probabilities(logits), fake_ids)
    ref_domain, domain = ref_domains.argmax(1), domains.argmax(1)
    ref_verdict, verdict = ref_scores >= thresholds[ref_domain], scores >= thresholds[domain]
    diff = np.abs(ref_scores - scores)
    parts = [
        f"{name}: domains agree {np.mean(ref_domain == domain):.2%}",
        f"verdicts agree {np.mean(ref_verdict == verdict):.2%} ({int(np.sum(ref_verdict != verdict))} of "
        f"{len(rows)} differ)",
        f"|score diff| median {np.median(diff):.4f} p99 {np.quantile(diff, 0.99):.3f}",
    ]
    labels = np.array([row[2] for row in rows], dtype=object)
    datasets = np.array([row[0] for row in rows])
    for dataset in ("faces", "modern"):
        mask = datasets == dataset
        before = compute_roc_auc(labels[mask], ref_scores[mask], positive="fake")
        after = compute_roc_auc(labels[mask], scores[mask], positive="fake")
        parts.append(f"{dataset} ROC-AUC fp32 {before:.4f} int8 {after:.4f} ({after - before:+.4f})")
    return " | ".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="folder holding faces/ and modern/")
    parser.add_argument("--cache", type=Path, required=True, help="folder for cached arrays")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint with domains (%(default)s)")
    parser.add_argument("--alpha", type=float, default=0.5, help="SmoothQuant migration strength")
    parser.add_argument("--variants", nargs="+", default=["q+k+v+o+fc1", "q+k+v+o+fc1+fc2"])
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
    reference_path = args.cache / "val_fp32_logits.npy"
    if reference_path.is_file():
        reference = np.load(reference_path), np.load(args.cache / "val_fp32_domain.npy")
    else:
        reference = compute_outputs(model, val_pixels)
        np.save(reference_path, reference[0])
        np.save(args.cache / "val_fp32_domain.npy", reference[1])
    maxima_path = args.cache / "amax.pt"
    if maxima_path.is_file():
        maxima = torch.load(maxima_path)
    else:
        maxima = collect_channel_maxima(model, calibration_pixels)
        torch.save(maxima, maxima_path)

    keep = np.array([i for i, row in enumerate(val) if row[0] == "modern" or i % 3 == 0])
    rows = [val[i] for i in keep]
    reference = reference[0][keep], reference[1][keep]
    print(
        f"{checkpoint.name}: {len(calibration)} train images for calibration, {len(rows)} val images "
        f"({time.perf_counter() - started:.0f} s for the fp32 pass and the statistics)",
        flush=True,
    )
    for variant in args.variants:
        parts, _, blocks = variant.partition("@")
        float_blocks = {int(block) for block in blocks.split(",") if block}
        quantised = build_fake_quant(model, maxima, set(parts.split("+")), args.alpha, float_blocks)
        candidate = compute_outputs(quantised, val_pixels[keep])
        print(
            describe(f"alpha {args.alpha} {variant}", rows, reference, candidate, fake_ids, thresholds),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
