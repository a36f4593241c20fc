"""What knowing the domain costs: the default (a probe and two heads) against clip-b16-v1 (one head),
and what scoring native-resolution tiles would cost, per image, at the same engine and precision.

    .venv/bin/python benchmarks/domain_heads_cost.py
    .venv/bin/python benchmarks/domain_heads_cost.py --images 64 --rounds 5 --precision fp32

Both detectors score the same JPEG files (made up, mixed sizes, decoded like photos) through
``Detector.predict`` in one process, alternating round by round so that both see the same machine
state; the figure per round is images/s, and the median over rounds is printed with the ratio. The
tile line scores, for the new model, the whole image plus four 224 px crops at the image's own
resolution (`training.frozen_features.compute_tile_boxes`): five tower passes where the default makes
one. The load average is printed before and after: compare figures within one run only.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

SIZES = [(1920, 1080), (640, 480), (1024, 768), (512, 512)]


def write_images(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for index in range(count):
        width, height = SIZES[index % len(SIZES)]
        base = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((width, height), Image.Resampling.BICUBIC)
        pixels = np.asarray(image).astype(np.int16) + rng.integers(-8, 9, (height, width, 3))
        path = folder / f"image-{index:03d}.jpg"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(path)
    return paths


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=48, help="files per round (48)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--precision", default="auto", help="auto, fp32 or bf16 (auto)")
    parser.add_argument("--new", default="clip-b16-v2", help="the model with domains (clip-b16-v2)")
    parser.add_argument("--old", default="clip-b16-v1", help="the baseline (clip-b16-v1)")
    args = parser.parse_args(argv)

    from deepfake_detector import Detector
    from deepfake_detector.io.images import load_image
    from deepfake_detector.training.frozen_features import compute_tile_boxes

    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; load average before {os.getloadavg()}")
    detectors = {
        name: Detector.from_pretrained(name, precision=args.precision, provenance=False)
        for name in (args.old, args.new)
    }
    new = detectors[args.new]
    print(f"engine {new.engine.name}, precision {new.engine.precision} (both)")
    with tempfile.TemporaryDirectory() as scratch:
        paths = write_images(Path(scratch), args.images)
        for detector in detectors.values():
            detector.predict(paths[:8])  # warm-up

        def tiles_round() -> float:
            started = time.perf_counter()
            for path in paths:
                image = load_image(path)
                side = new.config.vision_config.image_size
                crops = [image] + [image.crop(box) for box in compute_tile_boxes(*image.size, side)]
                new.compute_outputs(crops)
            return len(paths) / (time.perf_counter() - started)

        rates: dict[str, list[float]] = {name: [] for name in detectors} | {"tiles": []}
        for _ in range(args.rounds):
            for name, detector in detectors.items():
                started = time.perf_counter()
                rows = detector.predict(paths)
                rates[name].append(len(rows) / (time.perf_counter() - started))
            rates["tiles"].append(tiles_round())
    base = statistics.median(rates[args.old])
    for name, values in rates.items():
        label = f"{args.new} + 4 native tiles" if name == "tiles" else name
        median = statistics.median(values)
        print(
            f"{label:32s} {median:6.2f} images/s  x{median / base:.3f} of {args.old}  (rounds: "
            + ", ".join(f"{value:.2f}" for value in values)
            + ")"
        )
    print(f"load average after {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
