"""Load test of the REST API: the real server (``deepfake-detector serve``) on loopback, N concurrent
clients for a bounded time, against the library's own batch throughput measured in the same run.

    .venv/bin/python benchmarks/serve_load.py --clients 8 --duration 20
    .venv/bin/python benchmarks/serve_load.py --model ./my-checkpoint --images photos/ --max-batch-size 16 1

Steps, all in one run:

1. The library baseline: `Detector.predict` on the same encoded images (decoding included, as in the
   server), ``--max-batch-size`` images per call, in this process, while no server runs.
2. For each ``--max-batch-size``: start the server as a subprocess on a free loopback port, wait for
   ``/readyz``, record its memory (RSS), run ``--clients`` clients that each POST one image at a time to
   ``/v1/predict`` until ``--duration`` seconds have passed (or ``--max-requests`` were sent), record
   its memory again and its batch-size histogram (``/v1/stats``), stop it.

It prints requests/s, p50/p95/p99 latency, errors by status, server RSS before/after, and served
images/s over the library's images/s. The clients share the machine with the server (loopback), so the
ratio includes what HTTP, multipart parsing and the clients themselves cost. Without ``--model`` a
randomly initialised ViT-Base/16 (the seed model's architecture and processor settings) is written to
a temporary folder: the timings are the architecture's, the scores meaningless.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def build_random_vit_base(folder: Path) -> Path:
    """The seed model's architecture (ViT-Base/16, 224 px) with random weights, saved like a checkpoint."""
    import torch
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(0)
    labels = {0: "Realism", 1: "Deepfake"}
    config = ViTConfig(
        num_labels=2, id2label=labels, label2id={name: index for index, name in labels.items()}
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def load_images(folder: str | None, count: int) -> list[bytes]:
    """Up to ``count`` encoded images from ``folder``, else synthetic 256 px JPEGs (texture and noise)."""
    if folder:
        paths = sorted(path for path in Path(folder).rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES)
        if not paths:
            raise SystemExit(f"serve_load: no {'/'.join(IMAGE_SUFFIXES)} files under {folder}")
        return [path.read_bytes() for path in paths[:count]]
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:256, 0:256]
    images = []
    for _ in range(count):
        phases = rng.uniform(0, 6, 3)
        pixels = np.stack(
            [127 + 110 * np.sin(x / rng.uniform(8, 40) + y / rng.uniform(8, 40) + p) for p in phases], -1
        )
        pixels = np.clip(pixels + rng.normal(0, 10, pixels.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
        images.append(buffer.getvalue())
    return images


def measure_library(model: str, images: list[bytes], batch_size: int, seconds: float) -> tuple[float, str]:
    """Images per second of `Detector.predict` on encoded images, ``batch_size`` per call."""
    from deepfake_detector import Detector

    detector = Detector.from_pretrained(model, device="cpu")
    batch = [images[index % len(images)] for index in range(batch_size)]
    detector.predict(batch, batch_size=batch_size)  # warm-up: first-call allocations
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predictions = detector.predict(batch, batch_size=batch_size)
        assert all(prediction.ok for prediction in predictions), predictions
        done += len(batch)
    rate = done / (time.perf_counter() - start)
    choice = getattr(detector, "engine_choice", None)
    return rate, str(choice) if choice is not None else "torch"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


def start_server(model: str, port: int, args: argparse.Namespace, max_batch_size: int) -> subprocess.Popen:
    command = [sys.executable, "-m", "deepfake_detector", "serve", "--model", model, "--device", "cpu"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    command += ["--max-batch-size", str(max_batch_size), "--max-batch-wait-ms", str(args.max_batch_wait_ms)]
    command += ["--queue-size", str(args.queue_size), "--request-timeout-s", "120"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_ready(url: str, process: subprocess.Popen, timeout_s: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = process.stderr.read() if process.stderr else ""  # None when it goes to a log file
            raise SystemExit(f"the server exited with {process.returncode}:\n{output}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"the server at {url} did not become ready in {timeout_s:g} s")


async def run_clients(
    url: str, images: list[bytes], args: argparse.Namespace
) -> tuple[list[float], Counter, float]:
    """Latencies (s) of successful requests, counts by status, and the wall time of the load."""
    import httpx

    latencies: list[float] = []
    statuses: Counter = Counter()
    sent = 0
    limits = httpx.Limits(max_connections=args.clients, max_keepalive_connections=args.clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as client:
        start = time.perf_counter()
        deadline = start + args.duration

        async def one_client(number: int) -> None:
            nonlocal sent
            index = number
            while time.perf_counter() < deadline and sent < args.max_requests:
                sent += 1
                image = images[index % len(images)]
                index += args.clients
                began = time.perf_counter()
                try:
                    response = await client.post(
                        "/v1/predict", files={"images": (f"{index}.jpg", image, "image/jpeg")}
                    )
                    status = response.status_code
                except httpx.HTTPError as error:
                    status = type(error).__name__
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - began)

        await asyncio.gather(*(one_client(number) for number in range(args.clients)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


def percentile_ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def run_phase(
    model: str, images: list[bytes], args: argparse.Namespace, max_batch_size: int, library_rate: float
):
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_server(model, port, args, max_batch_size)
    try:
        wait_ready(url, process)
        httpx.post(f"{url}/v1/predict", files={"images": ("warm.jpg", images[0], "image/jpeg")}, timeout=120)
        rss_before = server_rss_mb(process.pid)
        load_before = os.getloadavg()
        latencies, statuses, elapsed = asyncio.run(run_clients(url, images, args))
        load_after = os.getloadavg()
        rss_after = server_rss_mb(process.pid)
        stats = httpx.get(f"{url}/v1/stats", timeout=10).json()
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
    ok = statuses.get(200, 0)
    total = sum(statuses.values())
    served_rate = ok / elapsed
    errors = {str(status): count for status, count in statuses.items() if status != 200}
    histogram = ", ".join(f"{size}x{count}" for size, count in stats["batch_size_histogram"].items())
    print(f"\n== server with --max-batch-size {max_batch_size}, {args.clients} clients, {elapsed:.1f} s ==")
    print(f"load average before/after     {load_before[0]:.2f} / {load_after[0]:.2f} (1 min)")
    print(f"requests                      {total} ({ok} ok, errors: {errors or 0})")
    print(f"requests/s                    {total / elapsed:.2f}")
    p50, p95, p99 = (percentile_ms(latencies, q) for q in (50, 95, 99))
    print(f"latency p50 / p95 / p99       {p50:.0f} / {p95:.0f} / {p99:.0f} ms")
    print(f"server RSS before/after       {rss_before:.0f} / {rss_after:.0f} MiB")
    mean_batch = stats["images"] / max(stats["batches"], 1)
    print(f"model calls (size x count)    {histogram} (mean batch {mean_batch:.2f})")
    print(f"served images/s               {served_rate:.2f}")
    print(f"library images/s (baseline)   {library_rate:.2f}")
    print(f"served / library              {served_rate / library_rate:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: a random ViT-Base/16 in a temp folder)")
    parser.add_argument(
        "--images", help="folder of .jpg/.png/.webp to send (default: synthetic 256 px JPEGs)"
    )
    parser.add_argument("--num-images", type=int, default=64, help="distinct images to cycle through")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (%(default)s)")
    parser.add_argument(
        "--duration", type=float, default=20.0, help="seconds of load per server (%(default)s)"
    )
    parser.add_argument("--max-requests", type=int, default=5000, help="stop after this many requests")
    parser.add_argument(
        "--max-batch-size", type=int, nargs="+", default=[16], help="one server run per value (%(default)s)"
    )
    parser.add_argument("--max-batch-wait-ms", type=float, default=10.0)
    parser.add_argument("--queue-size", type=int, default=64)
    parser.add_argument("--baseline-seconds", type=float, default=10.0, help="library measurement time")
    args = parser.parse_args(argv)

    images = load_images(args.images, args.num_images)
    print(f"cpus {os.cpu_count()}, load average {os.getloadavg()[0]:.2f} (1 min) at start")
    with tempfile.TemporaryDirectory(prefix="serve-load-") as scratch:
        model = args.model or str(build_random_vit_base(Path(scratch) / "random-vit-base"))
        described = model if args.model else "random ViT-Base/16 (seed architecture)"
        print(f"model {described}, {len(images)} images")
        baseline_batch = max(args.max_batch_size)
        library_rate, engine = measure_library(model, images, baseline_batch, args.baseline_seconds)
        print(f"library: Detector.predict, {baseline_batch} encoded images per call, engine {engine}")
        for max_batch_size in args.max_batch_size:
            run_phase(model, images, args, max_batch_size, library_rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
