"""How long a scan report of 10,000 rows takes to build, how large it is, and how it behaves in a browser.

    .venv/bin/python benchmarks/report_10k.py
    .venv/bin/python benchmarks/report_10k.py --source ../shared/data/faces --rows 10000

What it does, all in one run:

1. The inputs: the first ``--rows`` JPEG files under ``--source`` (cycled when there are fewer), or
   ``--distinct`` made-up 640x480 photos linked under as many names as there are rows; plus
   ``--camera-rows`` rows naming made-up 4000x3000 camera photos and ``--video-rows`` rows naming
   made-up 3 s videos (PyAV), so that the slow thumbnails are in the mix. Every row names its own
   file, so every thumbnail is decoded and encoded: nothing is shared between rows.
2. The rows: synthetic ``predict`` rows (seeded): fake scores from a two-humped distribution, verdicts
   at 0.5, 2% error rows, one face box on 60% of the images, a 32-frame timeline on each video, and
   the provenance records of the provenance stage (5% PNG-parameters metadata with a long field, 1%
   C2PA manifests that decide the verdict, 1% EXIF software).
3. Build: `render_report` of 100 of the rows (the baseline) and of all rows, timed in this process
   with thumbnails read in the default threads (wall and CPU seconds: on a shared machine the CPU
   figure is the steadier one); the file size of each.
4. Browser: each page opened from disk in headless Chromium (Debian's, as the tests use): time from
   navigation to the page's own "ready" mark (HTML and data parsed, summary and first cards drawn), to
   the visible thumbnails decoded, then the time of a filter (untick "real"), a file-name search, a
   sort by name and a scroll to the middle, each until the next frame; and the page's JS heap.

"x 100" is each figure over the 100-row baseline's from this same run: the build should grow with the
rows (every thumbnail is made), the page's figures should not (only the cards in view are drawn).
The CPU may be shared: the load average is printed before and after; compare figures only within a run.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
LONG_PARAMETERS = (
    "masterpiece, best quality, portrait photo of a woman, natural light, 85mm, bokeh " * 12
    + "\nNegative prompt: lowres, bad anatomy\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1"
)


def cpu_model() -> str:
    try:
        listing = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    for line in listing.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def load_average() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def photo(width: int, height: int, seed: int) -> Image.Image:
    """A smooth colour field with noise: decodes like a photo, not like a flat colour."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    channels = [
        127 + 110 * np.sin(x / width * rng.uniform(2, 8) + y / height * rng.uniform(1, 5) + p)
        for p in rng.uniform(0, 6, 3)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 10, (height, width, 3)).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def linked(originals: list[Path], count: int, folder: Path, suffix: str) -> list[Path]:
    """``count`` file names in ``folder``, hard links to the originals in turn (a copy where links fail)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        path = folder / f"{index:05d}{suffix}"
        try:
            os.link(originals[index % len(originals)], path)
        except OSError:
            shutil.copy(originals[index % len(originals)], path)
        paths.append(path)
    return paths


def make_inputs(args, work: Path) -> tuple[list[Path], list[Path]]:
    """(image paths, video paths), one per row."""
    image_rows = args.rows - args.camera_rows - args.video_rows
    if args.source:
        found = sorted(Path(args.source).rglob("*.jpg"))[:image_rows]
        if not found:
            raise SystemExit(f"no .jpg files under {args.source}")
        images = linked(found, image_rows, work / "images", ".jpg")
    else:
        originals = []
        for seed in range(args.distinct):
            path = work / "originals" / f"photo-{seed}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            photo(640, 480, seed).save(path, quality=88)
            originals.append(path)
        images = linked(originals, image_rows, work / "images", ".jpg")
    cameras = []
    for seed in range(4 if args.camera_rows else 0):
        path = work / "originals" / f"camera-{seed}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        photo(4000, 3000, 100 + seed).save(path, quality=92)
        cameras.append(path)
    images += linked(cameras, args.camera_rows, work / "camera", ".jpg") if cameras else []
    videos = []
    if args.video_rows:
        sys.path.insert(0, str(ROOT))
        from tests.media import write_video

        clips = [
            write_video(
                work / "originals" / f"clip-{seed}.mp4", [photo(640, 360, seed * 100 + i) for i in range(30)]
            )
            for seed in range(3)
        ]
        videos = linked(clips, args.video_rows, work / "videos", ".mp4")
    return images, videos


def synthetic_rows(images: list[Path], videos: list[Path], seed: int = 0) -> list[dict]:
    """Rows as ``predict`` writes them, with the provenance stage's records."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, path in enumerate([*images, *videos]):
        video = index >= len(images)
        score = float(rng.beta(8, 2) if rng.random() < 0.3 else rng.beta(2, 12))
        row = {
            "source": str(path),
            "label": None if video else ("Deepfake" if score >= 0.5 else "Realism"),
            "fake_score": score,
            "verdict": "fake" if score >= 0.5 else "real",
            "model": "clip-b16-v1",
            "revision": None,
            "error": None,
            "decided_by": "model",
            "provenance": {"ai_declared": None, "evidence": [], "c2pa": None},
        }
        draw = rng.random()
        if draw < 0.02:
            row.update(label=None, fake_score=None, verdict=None, decided_by=None, provenance=None)
            row["error"] = (
                f"{path}: truncated or corrupt image data (image file is truncated (3 bytes not processed))"
            )
        elif draw < 0.07:
            row["provenance"] = {
                "ai_declared": True,
                "evidence": [{"check": "metadata", "name": "png_parameters", "detail": LONG_PARAMETERS}],
                "c2pa": None,
            }
        elif draw < 0.08:
            row.update(verdict="fake", decided_by="provenance")
            row["provenance"] = {
                "ai_declared": True,
                "evidence": [
                    {"check": "c2pa", "name": "c2pa_ai_generated", "detail": "trainedAlgorithmicMedia"}
                ],
                "c2pa": {
                    "state": "valid",
                    "claim_generator": "Adobe Firefly",
                    "ai_generated": True,
                    "digital_source_type": "trainedAlgorithmicMedia",
                    "problems": [],
                },
            }
        elif draw < 0.09:
            row["provenance"]["evidence"] = [
                {"check": "metadata", "name": "exif_software", "detail": "Adobe Photoshop 25.0"}
            ]
        if video and row["error"] is None:
            frames = [
                {
                    "index": 3 * k,
                    "timestamp_s": 0.1 * k,
                    "fake_score": float(np.clip(score + rng.normal(0, 0.1), 0, 1)),
                }
                for k in range(32)
            ]
            row.update(
                kind="video",
                aggregation={"strategy": "mean", "num_frames": 32},
                duration_s=3.0,
                rotation_deg=0,
                num_frames=32,
                no_face_frames=None,
                no_face=None,
                stopped_at_s=None,
                decode_problem=None,
                frames=frames,
            )
        elif not video and row["error"] is None and rng.random() < 0.6:
            with Image.open(path) as image:  # the header only
                width, height = image.size
            box = [round(width * 0.25), round(height * 0.2), round(width * 0.75), round(height * 0.85)]
            row["no_face"] = False
            row["faces"] = [
                {
                    "box": box,
                    "crop_box": box,
                    "detection_score": 1.0,
                    "label": row["label"],
                    "fake_score": score,
                    "verdict": row["verdict"],
                }
            ]
        rows.append(row)
    return rows


def time_build(rows: list[dict], path: Path) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process, every thread) and the file's size."""
    from deepfake_detector.scan_report import RunSettings, render_report
    from deepfake_detector.scoring import Thresholds

    settings = RunSettings(Thresholds(), "this benchmark's rows", "torch", "fp32")
    start, cpu = time.perf_counter(), time.process_time()
    report = render_report(rows, path, settings=settings)
    return time.perf_counter() - start, time.process_time() - cpu, report.size_bytes


# Changes one control as a user would (its value, then its event) and times it until the next frame is
# drawn and the thumbnails in view are decoded. [id, property, value, event]; no id: scroll halfway.
MEASURE = """async ([id, property, value, event]) => {
  const frame = () => new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  const pictures = () => [...document.querySelectorAll("#grid img")].map((i) => i.decode().catch(() => 0));
  const start = performance.now();
  if (id) {
    const control = document.getElementById(id);
    control[property] = value;
    control.dispatchEvent(new Event(event));
  } else {
    window.scrollTo(0, document.body.scrollHeight / 2);
  }
  await frame();
  await Promise.all(pictures());
  return performance.now() - start;
}"""
ACTIONS = {
    "filter": ["filter-real", "checked", False, "change"],
    "search": ["search", "value", "001", "input"],
    "sort": ["sort", "value", "name", "change"],
    "scroll": [None, None, None, None],
}


def time_page(path: Path, chromium: str) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright, tempfile.TemporaryDirectory() as profile:
        context = playwright.chromium.launch_persistent_context(
            profile,
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            start = time.perf_counter()
            page.goto(path.resolve().as_uri(), timeout=300_000)
            page.wait_for_selector("html[data-ready=true]", state="attached", timeout=300_000)
            page.evaluate(MEASURE, [None, None, None, None])  # the first thumbnails, decoded
            figures = {"open_s": time.perf_counter() - start}
            figures["ready_ms"] = float(page.evaluate("Number(document.documentElement.dataset.readyMs)"))
            page.evaluate("window.scrollTo(0, 0)")
            for action, change in ACTIONS.items():
                figures[f"{action}_ms"] = float(page.evaluate(MEASURE, change))
                if action == "search":  # the sort and the scroll run over every row but the real ones
                    page.evaluate(MEASURE, ["search", "value", "", "input"])
            figures["cards_in_page"] = float(page.locator("#grid .card").count())
            figures["heap_mib"] = float(
                page.evaluate("performance.memory ? performance.memory.usedJSHeapSize / 1048576 : NaN")
            )
        finally:
            context.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--source", help="a folder of JPEGs to picture (default: made-up photos)")
    parser.add_argument("--distinct", type=int, default=64, help="made-up photos without --source")
    parser.add_argument("--camera-rows", type=int, default=200, help="rows naming 4000x3000 camera photos")
    parser.add_argument("--video-rows", type=int, default=100, help="rows naming 3 s videos (needs PyAV)")
    parser.add_argument("--keep", metavar="DIR", help="write the reports here and keep them")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")

    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        out = Path(args.keep) if args.keep else work
        out.mkdir(parents=True, exist_ok=True)
        images, videos = make_inputs(args, work)
        rows = synthetic_rows(images, videos)
        print(
            f"{cpu_model()}, {os.cpu_count()} CPUs; {len(rows)} rows ({len(videos)} videos, "
            f"{args.camera_rows} camera photos); load average {load_average()}"
        )
        results = {}
        for name, subset in (("100", rows[:: max(1, len(rows) // 100)][:100]), (str(len(rows)), rows)):
            path = out / f"report-{name}.html"
            seconds, cpu_seconds, size = time_build(subset, path)
            figures = {"build_s": seconds, "build_cpu_s": cpu_seconds, "size_mib": size / 2**20}
            if chromium:
                figures.update(time_page(path, chromium))
            results[name] = figures
            print(f"{name} rows: " + ", ".join(f"{key} {value:.3g}" for key, value in figures.items()))
        print(f"load average {load_average()}")
        base, full = results["100"], results[str(len(rows))]
        print("\n| figure | 100 rows | " + f"{len(rows):,} rows | x 100 |\n| --- | --- | --- | --- |")
        for key in full:
            ratio = full[key] / base[key] if base.get(key) else float("nan")
            print(f"| {key} | {base[key]:.3g} | {full[key]:.3g} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
