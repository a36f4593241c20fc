"""Does `torch.compile` pay for the default model's bf16 step on this CPU? Eager bf16 against compiled
bf16 (inductor, frozen weights), in one process, on the same random batch, with fp32 eager as the
reference for the answers.

    .venv/bin/python benchmarks/bf16_compile.py [--model clip-b16-v2] [--batch-size 8] [--repeats 4]

Prints each variant's first call (the compile is in the compiled one's), its images/s over the
repeats after it, its ratio to eager bf16, and the largest |logit difference| to fp32. bf16 is only
worth measuring where the CPU computes it natively (AMX or AVX512-BF16); elsewhere PyTorch emulates it.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

import torch

from deepfake_detector.inference.engines import detect_cpu_features
from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL, load_model_and_processor, resolve_checkpoint


def measure(step, pixels: torch.Tensor, repeats: int) -> tuple[float, float, torch.Tensor]:
    """(first call s, images/s over ``repeats`` calls after it, logits as float32)."""
    with torch.inference_mode():
        started = time.perf_counter()
        step(pixels)
        first = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(repeats):
            logits = step(pixels)
        per_call = (time.perf_counter() - started) / repeats
    return first, len(pixels) / per_call, logits.float()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint (%(default)s)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per call (%(default)s)")
    parser.add_argument("--repeats", type=int, default=4, help="timed calls after the first (%(default)s)")
    args = parser.parse_args(argv)
    import torch._inductor.config as inductor_config

    from domain_heads_cost import cpu_name  # this folder's, run as a script

    model, _ = load_model_and_processor(resolve_checkpoint(args.model))
    size = getattr(model.config, "vision_config", model.config).image_size  # the checkpoint's own input
    pixels = torch.randn(args.batch_size, 3, size, size, generator=torch.Generator().manual_seed(0))
    cpu = detect_cpu_features()
    print(f"{cpu_name()} ({cpu.describe()}), {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{args.model}, batch {args.batch_size}, {args.repeats} timed calls after the first")
    bf16 = copy.deepcopy(model).to(torch.bfloat16).eval()
    inductor_config.freezing = True  # weights as constants: what makes inductor's CPU kernels pay
    compiled = torch.compile(bf16)
    variants = [
        ("fp32 eager", lambda x: model(pixel_values=x).logits, pixels),
        ("bf16 eager", lambda x: bf16(pixel_values=x).logits, pixels.bfloat16()),
        ("bf16 compiled", lambda x: compiled(pixel_values=x).logits, pixels.bfloat16()),
    ]
    measured = {name: measure(step, inputs, args.repeats) for name, step, inputs in variants}
    reference, baseline = measured["fp32 eager"][2], measured["bf16 eager"][1]
    print("| variant | first call s | images/s | x bf16 eager | max abs logit diff to fp32 |")
    print("| --- | --- | --- | --- | --- |")
    for name, (first, rate, logits) in measured.items():
        difference = float((logits - reference).abs().max())
        print(f"| {name} | {first:.1f} | {rate:.2f} | {rate / baseline:.2f} | {difference:.4f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
