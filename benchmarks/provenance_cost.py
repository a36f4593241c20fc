"""What the provenance stage costs predict: the same JPEGs scored with it and without it, in one run.

    .venv/bin/python benchmarks/provenance_cost.py --images 300
    .venv/bin/python benchmarks/provenance_cost.py --images 300 --sizes 512x512 1024x1024

One process loads the detector once (``--model``, default: the bundled default model) and scores the
same ``--images`` JPEG files (made up, no metadata: `throughput.write_jpegs`; default the 512x512 and
1024x1024 of Stable Diffusion outputs, where every check runs at full resolution) with
`Detector.predict` exactly as the CLI does (prefetch workers included), alternating stage on / stage off
for ``--rounds`` rounds; images/s is the median over rounds, and the cost is on over off. It also times
the stage alone (`ProvenanceOptions.inspect_image` after decoding), per image, in the main thread.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

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
    parser.add_argument("--rounds", type=int, default=3, help="on/off rounds (%(default)s)")
    parser.add_argument("--work", type=Path, help="folder for the images (kept; reused)")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="provenance-cost-"))
    sizes = [tuple(int(value) for value in size.split("x")) for size in args.sizes]
    paths = write_jpegs(work / f"images-{args.images}-{'-'.join(args.sizes)}", args.images, sizes)
    detector = Detector.from_pretrained(args.model)
    stage = detector.provenance or ProvenanceOptions()
    detector.predict(paths[:8])  # warm-up: first calls pay for lazy imports and allocator growth

    rates: dict[str, list[float]] = {"with provenance": [], "without": []}
    for _ in range(args.rounds):
        for name, options in (("with provenance", stage), ("without", None)):
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
    print(f"{len(paths)} JPEG files, sizes {', '.join(args.sizes)}, no metadata; {args.rounds} rounds")
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
