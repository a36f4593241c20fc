"""Renders the README's two pictures with the project's own code: ``docs/scan-report.png``, the scan
report of the demo's images, and ``docs/web-page.png``, the web page after the demo's face swap was
dropped on it.

Both are drawn by a real headless Chromium (Debian's ``chromium``, driven by Playwright, as the browser
tests do): the report is the file ``predict --report`` writes, and the web page is served by
``deepfake-detector serve`` in a child process, with the default model. The screenshots are reduced to
256 colours, which keeps each at a few hundred kB.

Usage: ``.venv/bin/python docs/make_pictures.py`` (``make pictures``); needs the dev and serve extras.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WIDTH_PX = 1200
HEIGHT_PX = 820
# The browser tests' flags (tests/browser.py): no sandbox (root in containers), no network chatter.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def find_chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise SystemExit("make_pictures: Debian's chromium is not installed (apt-get install chromium)")
    return path


def make_scan_report(work: Path) -> Path:
    """The demo's images scored by the default model, and their scan report; returns the report."""
    sys.path.insert(0, str(ROOT / "examples"))
    from make_examples import make_examples

    from deepfake_detector.cli.main import main

    examples = work / "examples"
    make_examples(examples)
    report = work / "scan-report.html"
    # Run from the work folder, so the report shows the short paths a user of `make demo` sees.
    cwd = Path.cwd()
    os.chdir(work)
    try:
        flags = ["--recursive", "--output", "rows.jsonl", "--report", report.name, "--quiet"]
        code = main(["predict", "examples", *flags])
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"make_pictures: predict exited with {code}")
    return report


def save_small(screenshot: bytes, path: Path) -> None:
    """A 256-colour PNG of the screenshot: a few hundred kB, sharp text."""
    from io import BytesIO

    image = Image.open(BytesIO(screenshot)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        path, optimize=True
    )
    print(f"{path.relative_to(ROOT)}: {image.width}x{image.height}, {path.stat().st_size // 1024} kB")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def render_pictures(out_dir: Path, work: Path) -> None:
    from playwright.sync_api import sync_playwright

    report = make_scan_report(work)
    swap = work / "examples" / "fake" / "astronaut-face-swapped.jpg"
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "deepfake-detector"), "serve", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=find_chromium(), args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": WIDTH_PX, "height": HEIGHT_PX})

            page.goto(report.resolve().as_uri())
            page.wait_for_selector("html[data-ready=true]", state="attached", timeout=60_000)
            page.wait_for_timeout(500)  # thumbnails decode after the page says it is ready
            save_small(page.screenshot(), out_dir / "scan-report.png")

            wait_until_ready(url, server)
            page.goto(url)
            page.wait_for_selector("#model-line:has-text('weights')", timeout=60_000)
            page.set_input_files("#file-input", str(swap))
            page.wait_for_selector("#verdict[data-state=done]", timeout=120_000)
            page.wait_for_selector("#heatmap", state="visible", timeout=300_000)
            page.wait_for_timeout(500)
            save_small(page.screenshot(full_page=True), out_dir / "web-page.png")
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def wait_until_ready(url: str, server: subprocess.Popen, timeout_s: float = 300.0) -> None:
    """Waits for ``GET /readyz`` (the model is loaded), or fails when the server died."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"make_pictures: deepfake-detector serve exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit("make_pictures: the server was not ready in time")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder for the two PNGs (docs/)")
    parser.add_argument(
        "--work", type=Path, default=ROOT / "build" / "pictures", help="folder for the examples and report"
    )
    args = parser.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    render_pictures(args.out.resolve(), args.work.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
