"""Soak test of the REST API: ``deepfake-detector serve`` on loopback under minutes of mixed traffic,
watching for server errors and for resident memory that keeps growing.

    .venv/bin/python benchmarks/serve_soak.py --minutes 10
    .venv/bin/python benchmarks/serve_soak.py --model ./my-checkpoint --minutes 10 --clients 8

Traffic, from threads of this process until ``--minutes`` have passed (after ``--warmup-seconds``):

- ``--clients`` image clients, each posting one or three synthetic images (sizes 64 to 640 px, JPEG
  and PNG) at a time to ``/v1/predict``;
- a bad-upload client cycling through a corrupt image, a truncated one, plain text, a wrong content
  type, a body over ``--max-upload-bytes`` and too many images (each must be a 4xx);
- a slow client that uploads an image in small pieces with pauses between them;
- a video client posting a short clip to ``/v1/predict/video`` (when PyAV is installed).

The server's resident memory (RSS, with its children) is sampled every second; the baseline is the
largest sample of the warm-up (first allocations, caches, thread pools), and the figure reported is the
growth of the largest later sample over it. Exit status 0 when there was no 5xx, no dropped connection
and growth within ``--max-growth``. Without ``--model`` a randomly initialised ViT-Base/16 is written to a
temporary folder, as in ``serve_load.py``.
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image


def synthetic_images(count: int, seed: int = 0) -> list[tuple[str, bytes, str]]:
    """(name, bytes, content type) of textured images from 64 to 640 px, JPEG and PNG alternately."""
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        height, width = (int(rng.integers(64, 640)) for _ in range(2))
        pixels = rng.integers(0, 256, (height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
        picture = Image.fromarray(pixels).resize((width, height), Image.BILINEAR)
        buffer = io.BytesIO()
        kind = "JPEG" if index % 2 == 0 else "PNG"
        picture.save(buffer, kind)
        suffix = "jpg" if kind == "JPEG" else "png"
        images.append((f"{index}.{suffix}", buffer.getvalue(), f"image/{suffix.replace('jpg', 'jpeg')}"))
    return images


def synthetic_video(folder: Path) -> bytes | None:
    """A 1-second 160x120 MPEG-4 clip, or None without PyAV."""
    try:
        import av
    except ImportError:
        return None
    path = folder / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(10):
            frame = Image.new("RGB", (160, 120), (20 * index, 90, 160))
            for packet in stream.encode(av.VideoFrame.from_image(frame)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def bad_uploads(good: bytes, max_upload_bytes: int) -> list[tuple[str, dict]]:
    """(what, httpx keyword arguments) of uploads the server must refuse with a 4xx."""
    return [
        ("corrupt", {"files": {"images": ("corrupt.jpg", good[:2] + b"\x00" * 2000, "image/jpeg")}}),
        ("truncated", {"files": {"images": ("cut.jpg", good[: len(good) // 3], "image/jpeg")}}),
        ("text", {"files": {"images": ("notes.jpg", b"not an image at all", "image/jpeg")}}),
        ("wrong-type", {"files": {"images": ("notes.txt", b"hello", "text/plain")}}),
        ("not-multipart", {"json": {"images": ["a.jpg"]}}),
        ("oversized", {"files": {"images": ("big.jpg", b"\xff" * (max_upload_bytes + 1), "image/jpeg")}}),
        ("too-many", {"files": [("images", (f"{i}.jpg", good, "image/jpeg")) for i in range(40)]}),
    ]


class Soak:
    """Counters shared by the client threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.statuses: dict[str, Counter] = defaultdict(Counter)
        self.latencies_s: list[float] = []
        self.unexpected: list[str] = []

    def record(self, kind: str, status, latency_s: float | None = None, problem: str | None = None) -> None:
        with self.lock:
            self.statuses[kind][str(status)] += 1
            if latency_s is not None:
                self.latencies_s.append(latency_s)
            if problem:
                self.unexpected.append(problem)


def run_traffic(url: str, args, images, video: bytes | None, soak: Soak, stop: threading.Event) -> None:
    import httpx

    max_upload = args.max_upload_bytes

    def images_client(number: int) -> None:
        index = number
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                count = 3 if index % 4 == 0 else 1
                files = [("images", images[(index + i) % len(images)]) for i in range(count)]
                index += args.clients
                began = time.perf_counter()
                try:
                    response = client.post("/v1/predict", files=files)
                except httpx.HTTPError as error:
                    soak.record("image", type(error).__name__, problem=f"image: {error!r}")
                    continue
                ok = response.status_code == 200
                problem = None if ok or response.status_code == 503 else f"image {response.status_code}"
                soak.record(
                    "image", response.status_code, time.perf_counter() - began if ok else None, problem
                )

    def bad_client() -> None:
        cases = bad_uploads(images[0][1], max_upload)
        index = 0
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                what, request = cases[index % len(cases)]
                index += 1
                try:
                    response = client.post("/v1/predict", **request)
                except httpx.HTTPError as error:
                    soak.record("bad", type(error).__name__, problem=f"bad {what}: {error!r}")
                    continue
                problem = None if 400 <= response.status_code < 500 else f"bad {what}: {response.status_code}"
                soak.record("bad", response.status_code, problem=problem)
                time.sleep(0.2)

    def slow_client() -> None:
        name, data, content_type = images[1]
        boundary = "soak-slow-client"
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\n'
        body = head.encode() + f"Content-Type: {content_type}\r\n\r\n".encode() + data
        body += f"\r\n--{boundary}--\r\n".encode()

        def pieces():
            for start in range(0, len(body), max(1, len(body) // 10)):
                yield body[start : start + max(1, len(body) // 10)]
                time.sleep(0.1)

        headers = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/predict", content=pieces(), headers=headers)
                except httpx.HTTPError as error:
                    soak.record("slow", type(error).__name__, problem=f"slow: {error!r}")
                    continue
                ok = response.status_code in (200, 503)
                soak.record(
                    "slow", response.status_code, problem=None if ok else f"slow {response.status_code}"
                )

    def video_client() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while not stop.is_set():
                try:
                    response = client.post(
                        "/v1/predict/video",
                        files={"video": ("clip.mp4", video, "video/mp4")},
                        data={"num_frames": "4", "faces": "false"},
                    )
                except httpx.HTTPError as error:
                    soak.record("video", type(error).__name__, problem=f"video: {error!r}")
                    continue
                ok = response.status_code in (200, 503)
                soak.record(
                    "video", response.status_code, problem=None if ok else f"video {response.status_code}"
                )
                time.sleep(1.0)

    workers = [threading.Thread(target=images_client, args=(number,)) for number in range(args.clients)]
    workers += [threading.Thread(target=bad_client), threading.Thread(target=slow_client)]
    if video is not None:
        workers.append(threading.Thread(target=video_client))
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


def server_rss_bytes(pid: int) -> int:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(Path(__file__).parent))
    from domain_heads_cost import cpu_name
    from serve_load import build_random_vit_base, free_port, wait_ready

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: a random ViT-Base/16 in a temp folder)")
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes of traffic after warm-up")
    parser.add_argument("--warmup-seconds", type=float, default=30.0, help="traffic before the baseline")
    parser.add_argument("--clients", type=int, default=4, help="concurrent image clients (%(default)s)")
    parser.add_argument("--queue-size", type=int, default=32, help="the server's --queue-size")
    parser.add_argument("--max-upload-bytes", type=int, default=4_000_000, help="the server's limit")
    parser.add_argument("--max-growth", type=float, default=0.10, help="largest RSS growth accepted")
    parser.add_argument("--json", help="also write the summary to this file")
    args = parser.parse_args(argv)

    print(f"cpu {cpu_name()}")
    with tempfile.TemporaryDirectory(prefix="serve-soak-") as scratch:
        model = args.model or str(build_random_vit_base(Path(scratch) / "random-vit-base"))
        images = synthetic_images(16)
        video = synthetic_video(Path(scratch))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "deepfake_detector", "serve", "--model", model, "--device", "cpu"]
        command += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
        command += ["--queue-size", str(args.queue_size), "--max-upload-bytes", str(args.max_upload_bytes)]
        command += ["--max-images-per-request", "16", "--request-timeout-s", "120"]
        log = open(Path(scratch) / "server.log", "w+", encoding="utf-8")  # noqa: SIM115 (closed below)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, text=True)
        soak, stop = Soak(), threading.Event()
        samples: list[tuple[float, int]] = []
        try:
            wait_ready(url, process)
            traffic = threading.Thread(target=run_traffic, args=(url, args, images, video, soak, stop))
            started = time.monotonic()
            traffic.start()
            end = started + args.warmup_seconds + args.minutes * 60
            while time.monotonic() < end and process.poll() is None:
                samples.append((time.monotonic() - started, server_rss_bytes(process.pid)))
                time.sleep(1.0)
            stop.set()
            traffic.join(timeout=180)
            alive = process.poll() is None
        finally:
            stop.set()
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            log.seek(0)
            server_output = log.read()
            log.close()

    warmup = [rss for at, rss in samples if at <= args.warmup_seconds] or [samples[0][1]]
    after = [rss for at, rss in samples if at > args.warmup_seconds] or [samples[-1][1]]
    baseline, peak, final = max(warmup), max(after), after[-1]
    growth = peak / baseline - 1
    statuses = {kind: dict(counter) for kind, counter in sorted(soak.statuses.items())}
    server_errors = sum(
        count for counter in soak.statuses.values() for status, count in counter.items() if status[0] == "5"
    )
    server_errors -= sum(counter.get("503", 0) for counter in soak.statuses.values())  # refusals, by design
    latencies = sorted(soak.latencies_s)
    summary = {
        "cpu": cpu_name(),
        "minutes": args.minutes,
        "warmup_seconds": args.warmup_seconds,
        "clients": args.clients,
        "video": video is not None,
        "requests": statuses,
        "server_errors": server_errors,
        "unexpected": soak.unexpected[:20],
        "server_alive": alive,
        "latency_p50_ms": 1000 * float(np.percentile(latencies, 50)) if latencies else None,
        "latency_p95_ms": 1000 * float(np.percentile(latencies, 95)) if latencies else None,
        "rss_baseline_mib": baseline / 2**20,
        "rss_peak_after_warmup_mib": peak / 2**20,
        "rss_final_mib": final / 2**20,
        "rss_growth_ratio": growth,
        "server_tracebacks": server_output.count("Traceback"),
    }
    print(
        f"traffic {args.minutes:g} min after {args.warmup_seconds:g} s of warm-up, "
        f"{args.clients} image clients"
    )
    for kind, counts in statuses.items():
        print(f"  {kind:<6} {counts}")
    print(f"5xx other than 503          {server_errors}")
    print(f"unexpected answers          {len(soak.unexpected)} {soak.unexpected[:5]}")
    if latencies:
        p50, p95 = summary["latency_p50_ms"], summary["latency_p95_ms"]
        print(f"image latency p50 / p95     {p50:.0f} / {p95:.0f} ms")
    print(
        f"server RSS baseline / peak after warm-up / final  {baseline / 2**20:.0f} / {peak / 2**20:.0f} / "
        f"{final / 2**20:.0f} MiB (growth {100 * growth:+.1f}%)"
    )
    print(f"server alive at the end     {alive}; tracebacks in its log: {summary['server_tracebacks']}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    passed = alive and server_errors == 0 and not soak.unexpected and growth <= args.max_growth
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
