"""``deepfake-detector info``: what a checkpoint is (labels, roles, preprocessing, size)."""

from __future__ import annotations

import argparse
import json

from deepfake_detector.cli.common import add_detector_arguments, load_detector
from deepfake_detector.results import format_number


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "info", help="show a checkpoint's labels, role mapping, input size, normalisation and size"
    )
    add_detector_arguments(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    info = load_detector(args).info().to_dict()
    if args.format == "json":  # full precision: for machines
        print(json.dumps(info, indent=2))
        return 0
    temperature = format_number(info["temperature"])
    video = _video_lines(info)
    pre = info["preprocessing"]
    lines = [
        f"model:        {info['model']}" + (f" @ {info['revision']}" if info["revision"] else ""),
        f"architecture: {info['architecture']} ({info['num_parameters']:,} parameters)",
        "labels:       " + ", ".join(f"{i}={name}" for i, name in info["id2label"].items()),
        f"roles:        real = {', '.join(info['roles']['real'])}; fake = {', '.join(info['roles']['fake'])}",
        (
            f"thresholds:   per domain (temperature {temperature})"
            if info.get("domain_thresholds")
            else f"thresholds:   {_format_rule(info['thresholds'])} (temperature {temperature})"
        ),
        *(
            f"  {name + ':':<11} {_format_rule(each)}"
            for name, each in (info.get("domain_thresholds") or {}).items()
        ),
        *video,
        "domains:      "
        + (
            f"{', '.join(info['domains'])}, a head each, chosen per image by a domain probe"
            if info.get("domains")
            else "none (one head scores every image)"
        ),
        f"input size:   {_format_size(pre.get('size'))}"
        + (f", centre crop {_format_size(pre['crop_size'])}" if pre.get("do_center_crop") else ""),
        f"normalise:    rescale {pre.get('rescale_factor')}, mean {_format_floats(pre.get('image_mean'))}, "
        f"std {_format_floats(pre.get('image_std'))}",
        f"processor:    {pre.get('image_processor_type')}",
        f"device:       {info['device']}",
        f"engine:       {info['engine']} ({info['precision']})"
        + (
            f"; images within {info['recheck_margin_logits']:g} logits of a threshold scored again in fp32"
            if info.get("recheck_margin_logits")
            else ""
        ),
        *([f"why:          {info['engine_reason']}"] if info.get("engine_reason") else []),
        "faces:        "
        + (
            f"face crops by default ({info['faces']['detector']}, margin {info['faces']['margin_ratio']:g})"
            if info.get("faces")
            else "whole images by default"
        ),
    ]
    print("\n".join(lines))
    return 0


def _format_rule(rule: dict) -> str:
    """A decision rule as people read it, rounded (`format_number`; ``--format json`` keeps it whole)."""
    real, fake = format_number(rule["real"]), format_number(rule["fake"])
    return f"fake >= {fake}" if rule["real"] == rule["fake"] else f"real < {real}, fake >= {fake}"


def _video_lines(info: dict) -> list[str]:
    """The video rules: which threshold decides a clip's verdict."""
    pooled, own = info.get("video_thresholds"), info.get("video_domain_thresholds") or {}
    if pooled is None and not own:
        return ["video:        clips decided by the image thresholds (the model stores no video threshold)"]
    lines = [f"video:        {_format_rule(pooled)}" if pooled else "video:        per domain"]
    lines += [f"  {name + ':':<11} {_format_rule(rule)}" for name, rule in own.items()]
    if pooled is None:
        lines.append("  others:     the image thresholds of their domain")
    return lines


def _format_size(size) -> str:
    if isinstance(size, dict) and {"height", "width"} <= size.keys():
        return f"{size['height']}x{size['width']} (height x width)"
    if isinstance(size, dict) and "shortest_edge" in size:
        return f"shortest edge {size['shortest_edge']}"
    return str(size)


def _format_floats(values) -> str:
    return "[" + ", ".join(f"{value:g}" for value in values) + "]" if values is not None else "none"
