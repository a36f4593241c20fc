"""What Ray costs on one node: the same images scored by local ``predict`` and by ``predict --ray``.

    .venv/bin/python benchmarks/ray_overhead.py --images 200
    .venv/bin/python benchmarks/ray_overhead.py --source ../shared/data/faces --images 200
    .venv/bin/python benchmarks/ray_overhead.py --model ./my-checkpoint --images 1000 --actors 2

What it does, all in one run:

1. The model: a ViT-Ti/16-shaped checkpoint (224 px, patch 16, 12 layers of width 192, 3 heads; random
   weights, seed 0; labels Realism/Deepfake) with its ``ViTImageProcessor``, or the folder ``--model``
   names.
2. The images: the first ``--images`` JPEG files under ``--source`` (read in place, through a manifest
   file listing them), or that many made-up 640x480 photos written into the work folder.
3. End to end, each in a fresh process timed from start to exit (imports, model loading, and for Ray
   starting a local instance and its actors): (a) ``deepfake-detector predict --manifest LIST``, one
   process, PyTorch on every CPU (the default); (a1) the same with one PyTorch thread
   (``OMP_NUM_THREADS=1``), which is what each Ray actor of one CPU gets; (b) the same command with
   ``--ray``: a local Ray instance on this machine, ``--actors`` actors (default: one per CPU) of one
   CPU each.
4. Steady state, in one fresh process: images/s once scoring runs, from the first batch's rows to the
   last, for (a) and (a1) `Detector.iter_predict` and (b) `score_with_ray` on an already started Ray
   instance (its start-up and the actors' are reported apart). This is the rate that matters for a job
   of millions of files, where start-up is paid once.

"x (a)" is each rate over (a)'s from this same run. "Ray efficiency" is (b)'s rate over ``--actors``
times (a1)'s: 100% means the actors score as fast as that many independent one-thread processes, so
what falls short of it is Ray's overhead (tasks, transfers, the driver writing shards). The scores of
(a) and (b) are compared too. The CPU may be shared: the load average is printed before and after each
step; compare figures only within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUILD_SCRIPT = """
import sys, torch
from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
folder = sys.argv[1]
labels = {0: "Realism", 1: "Deepfake"}
torch.manual_seed(0)
config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                   num_labels=2, id2label=labels, label2id={name: i for i, name in labels.items()})
ViTForImageClassification(config).save_pretrained(folder)
ViTImageProcessor(size={"height": config.image_size, "width": config.image_size}).save_pretrained(folder)
"""

# Run in a fresh process: scoring rates once running, for the library's local and Ray paths.
STEADY_SCRIPT = """
import json, os, sys, time
model, listing, shards, batch_size, actors = sys.argv[1:]
batch_size, actors = int(batch_size), int(actors)
paths = open(listing).read().split("\\n")
import torch
from deepfake_detector import Detector
from deepfake_detector.inference.ray_scoring import DetectorConfig, RayScoringConfig, score_with_ray

def rate(stamps):
    # From the first batch's arrival to the last: the rows after the first batch over that time.
    (t0, n0), (t1, _) = stamps[0], stamps[-1]
    return (sum(n for _, n in stamps) - n0) / (t1 - t0)

def local_rate():
    detector = Detector.from_pretrained(model)
    stamps = []
    for index, _ in enumerate(detector.iter_predict(paths, batch_size=batch_size)):
        if (index + 1) % batch_size == 0 or index + 1 == len(paths):
            stamps.append((time.perf_counter(), index % batch_size + 1))
    return rate(stamps)

local = local_rate()
load_local = " ".join(f"{value:.2f}" for value in os.getloadavg())
torch.set_num_threads(1)
local_one = local_rate()
load_one = " ".join(f"{value:.2f}" for value in os.getloadavg())

import ray
start = time.perf_counter()
ray.init(num_cpus=actors, include_dashboard=False, logging_level="WARNING")
init_s = time.perf_counter() - start
stamps = []
start = time.perf_counter()
config = RayScoringConfig(num_actors=actors, batch_size=batch_size, format="jsonl", verbose=False)
result = score_with_ray(paths, shards, DetectorConfig(model), config,
                        on_rows=lambda n: stamps.append((time.perf_counter(), n)))
first_rows_s = stamps[0][0] - start
print(json.dumps({"local": local, "local_one": local_one, "ray": rate(stamps), "ray_init_s": init_s,
                  "first_rows_s": first_rows_s, "scored": result.scored, "load_local": load_local,
                  "load_one": load_one}))
"""


def build_vit_tiny(folder: Path) -> Path:
    """Saves a randomly initialised ViT-Ti/16 and its image processor, in a child process."""
    if not (folder / "model.safetensors").is_file():
        subprocess.run([sys.executable, "-c", BUILD_SCRIPT, str(folder)], check=True, capture_output=True)
    return folder


def list_images(args, work: Path) -> list[Path]:
    """The benchmark's files: the first ``--images`` JPEGs under ``--source``, else made-up photos."""
    if args.source is not None:
        found = sorted(args.source.rglob("*.jpg"))[: args.images]
        if len(found) < args.images:
            raise SystemExit(
                f"{args.source}: only {len(found)} JPEG files, fewer than --images {args.images}"
            )
        return found
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from throughput import write_jpegs  # the same made-up photos as the throughput benchmark

    return write_jpegs(work / "images", args.images, [(640, 480)])


def run_timed(command: list[str], log: Path, env: dict[str, str] | None = None) -> float:
    """Runs ``command`` and returns its wall time in seconds; raises if it fails (exit 1 is failed rows)."""
    start = time.perf_counter()
    with open(log, "w") as handle:
        environment = {**os.environ, **(env or {})}
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, env=environment).returncode
    if code != 0:
        raise SystemExit(
            f"{' '.join(command[:4])} ... exited with {code}; see {log}:\n{log.read_text()[-3000:]}"
        )
    return time.perf_counter() - start


def _scores(paths: list[Path]) -> dict[str, float]:
    rows = [json.loads(line) for path in paths for line in path.read_text().splitlines()]
    failed = [row for row in rows if row["error"]]
    if failed:
        raise SystemExit(f"{len(failed)} inputs failed, e.g. {failed[0]['error']}")
    return {row["source"]: row["fake_score"] for row in rows}


def _load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200, help="number of JPEG files (%(default)s)")
    parser.add_argument("--source", type=Path, help="folder to take the JPEGs from (read in place)")
    parser.add_argument("--model", type=Path, help="checkpoint folder; default: a random ViT-Ti/16")
    parser.add_argument("--batch-size", type=int, default=8, help="--batch-size of both runs (%(default)s)")
    parser.add_argument(
        "--actors", type=int, default=os.cpu_count(), help="Ray actors, one CPU each (default: one per CPU)"
    )
    parser.add_argument("--work", type=Path, help="folder for the model, images and outputs (kept; reused)")
    args = parser.parse_args(argv)

    work = args.work or Path(tempfile.mkdtemp(prefix="ray-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    model = args.model or build_vit_tiny(work / "vit-tiny")
    paths = list_images(args, work)
    listing = work / "images.txt"
    listing.write_text("\n".join(str(path.resolve()) for path in paths))
    cli = [
        sys.executable,
        "-m",
        "deepfake_detector",
        "predict",
        "--manifest",
        str(listing),
        "--model",
        str(model),
    ]
    cli += ["--batch-size", str(args.batch_size), "--quiet"]
    print(
        f"# {len(paths)} JPEGs from {args.source or 'made-up 640x480 photos'}; "
        f"model {args.model or 'ViT-Ti/16'}; {os.cpu_count()} CPUs; Ray: {args.actors} actors x 1 CPU; "
        f"load average {_load_average()}"
    )

    local_out, local_one_out, shards = work / "local.jsonl", work / "local-one.jsonl", work / "shards"
    steady_shards = work / "steady-shards"
    for stale in [local_out, local_one_out, *shards.glob("part-*"), *steady_shards.glob("part-*")]:
        stale.unlink(missing_ok=True)
    walls = {}
    walls["a"] = run_timed([*cli, "--output", str(local_out)], work / "local.log")
    print(f"(a) done; load average {_load_average()}")
    walls["a1"] = run_timed(
        [*cli, "--output", str(local_one_out)], work / "local-one.log", env={"OMP_NUM_THREADS": "1"}
    )
    print(f"(a1) done; load average {_load_average()}")
    walls["b"] = run_timed(
        [*cli, "--output", str(shards), "--format", "jsonl", "--ray-actors", str(args.actors), "--ray"],
        work / "ray.log",
    )
    print(f"(b) done; load average {_load_average()}")
    local, distributed = _scores([local_out]), _scores(sorted(shards.glob("part-*.jsonl")))
    if sorted(local) != sorted(distributed):
        raise SystemExit("the two runs scored different inputs")
    max_diff = max(abs(local[source] - distributed[source]) for source in local)

    command = [sys.executable, "-c", STEADY_SCRIPT, str(model), str(listing), str(steady_shards)]
    command += [str(args.batch_size), str(args.actors)]
    finished = subprocess.run(command, check=True, capture_output=True, text=True)
    steady = json.loads(finished.stdout.splitlines()[-1])
    print(
        f"steady state done; load average after (a) {steady['load_local']}, after (a1) "
        f"{steady['load_one']}, after (b) {_load_average()}"
    )

    count = len(paths)
    rates = {key: count / wall for key, wall in walls.items()}
    steady_rates = {"a": steady["local"], "a1": steady["local_one"], "b": steady["ray"]}
    names = {
        "a": "(a) local, PyTorch on every CPU",
        "a1": "(a1) local, one PyTorch thread",
        "b": f"(b) Ray, {args.actors} actors x 1 CPU",
    }
    print("| run | end to end: wall s | images/s | x (a) | steady state: images/s | x (a) |")
    print("| --- | --- | --- | --- | --- | --- |")
    for key, name in names.items():
        print(
            f"| {name} | {walls[key]:.1f} | {rates[key]:.2f} | {rates[key] / rates['a']:.2f} | "
            f"{steady_rates[key]:.2f} | {steady_rates[key] / steady_rates['a']:.2f} |"
        )
    efficiency = rates["b"] / (args.actors * rates["a1"])
    steady_efficiency = steady_rates["b"] / (args.actors * steady_rates["a1"])
    print(
        f"Ray efficiency, (b) over {args.actors} x (a1): end to end {efficiency:.0%}, "
        f"steady state {steady_efficiency:.0%}"
    )
    print(
        f"Ray start-up: ray.init {steady['ray_init_s']:.1f} s, then {steady['first_rows_s']:.1f} s to "
        "the first rows (listing, loading the actors' detectors, first batch); max |fake-score "
        f"difference| (a) vs (b): {max_diff:.2g}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
