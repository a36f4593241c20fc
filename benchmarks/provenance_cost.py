"""What the provenance stage costs predict: the same JPEGs scored with it and without it, in one run.

    .venv/bin/python benchmarks/provenance_cost.py --images 300
    .venv/bin/python benchmarks/provenance_cost.py --images 300 --format png --precision fp32

One process loads the detector once (``--model``, default: the bundled default model) and scores the
same ``--images`` files (made up, no metadata: `throughput.write_jpegs`, re-saved as PNG with
``--format png``; default sizes the 512x512 and 1024x1024 of Stable Diffusion outputs) with
`Detector.predict` exactly as the CLI does (prefetch workers included), alternating stage on / stage off
for ``--rounds`` rounds; images/s is the median over rounds, and the cost is on over off. It also times
the stage alone (`ProvenanceOptions.inspect_image` after decoding), per image, in the main thread.
JPEG files are not read for the watermark (re-encoding erases it; docs/provenance.md), PNG files are.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.io.images import decode_image
from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL
from deepfake_detector.provenance import ProvenanceOptions
from throughput import write_jpegs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="number of JPEG files (%(default)s)")
    parser.add_argument("--sizes", nargs="+", default=["512x512", "1024x1024"], metavar="WxH")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint (%(default)s)")
    parser.add_argument("--format", choices=("jpeg", "png"), default="jpeg", help="file format (%(default)s)")
    parser.add_argument("--precision", default="auto", help="predict --precision (%(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="on/off rounds (%(default)s)")
    parser.add_argument("--work", type=Path, help="folder for the images (kept; reused)")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="provenance-cost-"))
    sizes = [tuple(int(value) for value in size.split("x")) for size in args.sizes]
    paths = write_jpegs(work / f"images-{args.images}-{'-'.join(args.sizes)}", args.images, sizes)
    if args.format == "png":
        pngs = []
        for path in paths:
            png = path.with_suffix(".png")
            if not png.is_file():
                Image.open(path).save(png)
            pngs.append(png)
        paths = pngs
    detector = Detector.from_pretrained(args.model, precision=args.precision)
    stage = detector.provenance or ProvenanceOptions()
    detector.predict(paths[:8])  # warm-up: first calls pay for lazy imports and allocator growth

    rates: dict[str, list[float]] = {"with provenance": [], "without": []}
    order = (("with provenance", stage), ("without", None))
    for round_index in range(args.rounds):
        for name, options in order if round_index % 2 == 0 else order[::-1]:  # alternate who goes first
            detector.provenance = options
            start = time.perf_counter()
            results = detector.predict(paths)
            rates[name].append(len(paths) / (time.perf_counter() - start))
            assert all(result.ok for result in results)
            assert all((result.provenance is not None) == (options is not None) for result in results)
            assert not any(result.provenance and result.provenance.evidence for result in results)

    draft = detector.preprocessor.draft_size
    alone = []
    for path in paths[: min(60, len(paths))]:
        decoded = decode_image(path, draft_size=draft)
        start = time.perf_counter()
        stage.inspect_image(decoded)
        alone.append(time.perf_counter() - start)

    with_rate, without_rate = (statistics.median(rates[name]) for name in rates)
    print(
        f"model: {detector.model_id} ({detector.engine.name} {detector.engine.precision}, "
        f"JPEG draft {'on' if detector.preprocessor.jpeg_draft else 'off'}); {os.cpu_count()} CPUs"
    )
    print(
        f"{len(paths)} {args.format.upper()} files, sizes {', '.join(args.sizes)}, no metadata; "
        f"{args.rounds} rounds"
    )
    for name, values in rates.items():
        print(
            f"  {name:<16} {statistics.median(values):6.2f} images/s (rounds: "
            f"{', '.join(f'{value:.2f}' for value in values)})"
        )
    print(
        f"  cost of the stage: {(without_rate / with_rate - 1) * 100:+.1f}% time per image "
        f"(with / without throughput: {with_rate / without_rate:.3f})"
    )
    print(
        f"  the stage alone: median {statistics.median(alone) * 1000:.1f} ms per image "
        f"(max {max(alone) * 1000:.1f} ms), after decoding as predict decodes"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
