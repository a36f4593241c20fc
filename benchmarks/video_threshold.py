"""Fit a model's video threshold on the val part of the FaceForensics++ dev clips; report on the rest.

    deepfake-detector predict ../shared/data/videos -r --faces --resume \
        --output runs/video_threshold/ffpp-faces.jsonl
    .venv/bin/python benchmarks/video_threshold.py runs/video_threshold/ffpp-faces.jsonl \
        --manifest ../shared/data/videos/manifest.csv [--write src/deepfake_detector/models/clip-b16-v2]

``predict --resume`` caches every scored clip in the JSON Lines file, so a run stopped halfway goes on
where it stopped; this script only reads it. Scores do not depend on any threshold, so the rows can be
scored before or after a video threshold is stored.

The manifest has no split, so one is made here, blind to the scores: clips are grouped by the people
in them (``<method>_<target>[_<source>]``: a fake joins the real clip of each id it names, so a person
never straddles two splits), the groups are ordered by the SHA-256 of their smallest id, and the first
half is val, the rest test. The threshold is the lowest one that calls at most ``--target-fpr`` of the
val real clips fake (`compute_video_thresholds`, by the image calibration's rule, `compute_threshold`);
the test clips are never looked at before it is chosen. ``--write`` stores it in the checkpoint's
``config.json`` (`save_video_thresholds`), where ``predict`` reads it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import numpy as np

from deepfake_detector.evaluation.calibration import (
    THRESHOLD_RULE,
    compute_video_thresholds,
    save_video_thresholds,
)
from deepfake_detector.scoring import Calibration

NAME = re.compile(r"^(?:youtube|[A-Za-z0-9]+)_(\d+)(?:_(\d+))?$")


def load_clips(predictions: Path, manifest: Path) -> list[dict]:
    """Every clip of the manifest, with its label, method, ids and split (made from the whole
    manifest, so it does not depend on which clips are scored yet), and its row when it was scored."""
    root = manifest.resolve().parent
    with open(manifest, newline="", encoding="utf-8") as handle:
        clips = {
            os.path.normpath(row["path"]): {"key": os.path.normpath(row["path"]), "label": row["label"]}
            for row in csv.DictReader(handle)
        }
    for key, clip in clips.items():
        stem = Path(key).stem
        match = NAME.match(stem)
        if match is None:
            raise SystemExit(f"{key}: not named <method>_<target>[_<source>]")
        clip.update(method=stem.split("_")[0], ids={value for value in match.groups() if value}, row=None)
    assign_splits(list(clips.values()))
    for line in predictions.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        key = os.path.normpath(os.path.relpath(os.path.abspath(row["source"]), root))
        if key not in clips:
            print(f"skipped {row['source']}: not in the manifest", file=sys.stderr)
        elif row["error"] is not None:
            print(f"skipped {row['source']}: {row['error']}", file=sys.stderr)
        else:
            clips[key]["row"] = row
    return list(clips.values())


def assign_splits(clips: list[dict]) -> None:
    """Sets each clip's ``split`` ("val" or "test"): connected groups of ids, halved by hash order."""
    parent: dict[str, str] = {}

    def find(name: str) -> str:
        while parent.setdefault(name, name) != name:
            name = parent[name]
        return name

    for clip in clips:
        first, *rest = sorted(clip["ids"])
        for other in rest:
            parent[find(other)] = find(first)
    groups: dict[str, set[str]] = {}
    for clip in clips:
        for name in clip["ids"]:
            groups.setdefault(find(name), set()).add(name)
    order = sorted(groups, key=lambda root: hashlib.sha256(min(groups[root]).encode()).hexdigest())
    val = set(order[: (len(order) + 1) // 2])
    for clip in clips:
        clip["split"] = "val" if find(next(iter(clip["ids"]))) in val else "test"
        clip["group"] = "+".join(sorted(groups[find(next(iter(clip["ids"])))]))


def count(clips: list[dict], calibration: Calibration, *, video: bool) -> dict[str, tuple[int, int]]:
    """Clips called fake, of all, per method (the real ones under "real"), at the rule a clip gets."""
    called: dict[str, list[int]] = {}
    for clip in clips:
        row = clip["row"]
        verdict = calibration.rule_for(row["domain"], video=video).decide(row["fake_score"])
        name = "real" if clip["label"] == "real" else clip["method"]
        called.setdefault(name, [0, 0])
        called[name][0] += verdict == "fake"
        called[name][1] += 1
    return {name: (hits, total) for name, (hits, total) in called.items()}


def describe(counts: dict[str, tuple[int, int]]) -> str:
    real = counts.get("real", (0, 0))
    fakes = [(name, value) for name, value in sorted(counts.items()) if name != "real"]
    caught = sum(hits for _, (hits, _) in fakes), sum(total for _, (_, total) in fakes)
    methods = ", ".join(f"{name} {hits}/{total}" for name, (hits, total) in fakes)
    share = caught[0] / caught[1] if caught[1] else float("nan")
    return (
        f"real clips called fake {real[0]} of {real[1]}; fake clips caught {caught[0]} of {caught[1]} "
        f"({share:.1%}: {methods})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path, help="JSONL of `predict --faces` over the clips")
    parser.add_argument("--manifest", type=Path, required=True, help="the clips' manifest.csv (path,label)")
    parser.add_argument(
        "--target-fpr",
        type=float,
        default=1 / 12,
        help="largest share of val real clips the threshold may call fake (%(default).4f: 1 in 12)",
    )
    parser.add_argument("--write", type=Path, metavar="FOLDER", help="store the threshold in this checkpoint")
    args = parser.parse_args(argv)

    from deepfake_detector.scan_report.settings import load_stored_calibration

    listed = load_clips(args.predictions, args.manifest)
    clips = [clip for clip in listed if clip["row"] is not None]
    if not clips:
        raise SystemExit(f"{args.predictions}: no scored clip of the manifest")
    if len(clips) < len(listed):
        print(f"{len(listed) - len(clips)} of the manifest's {len(listed)} clips are not scored (yet)")
    models = {(clip["row"]["model"], clip["row"]["revision"]) for clip in clips}
    if len(models) != 1:
        raise SystemExit(f"the rows come from {len(models)} models; score the clips with one")
    ((model, revision),) = models
    stored = load_stored_calibration(model, revision)
    if stored is None:
        raise SystemExit(f"{model}'s config.json is not on this machine")
    folder = args.write or _model_folder(model)
    names = json.loads((folder / "config.json").read_text(encoding="utf-8")).get("domains") or ()
    aggregation = {json.dumps(clip["row"]["aggregation"], sort_keys=True) for clip in clips}
    val = [clip for clip in clips if clip["split"] == "val"]
    test = [clip for clip in clips if clip["split"] == "test"]
    faces = (
        "face crops" if all(clip["row"]["no_face_frames"] is not None for clip in clips) else "whole frames"
    )
    print(f"model {model}; clips scored with {', '.join(sorted(aggregation))}, {faces}")
    for name in ("val", "test"):
        part = [clip for clip in listed if clip["split"] == name]
        groups = sorted({clip["group"] for clip in part})
        real = sum(clip["label"] == "real" for clip in part)
        print(f"{name}: {len(part)} clips ({real} real, {len(part) - real} fake), people {' '.join(groups)}")

    pooled, per_domain = compute_video_thresholds(
        [clip["label"] for clip in val],
        [clip["row"]["fake_score"] for clip in val],
        [clip["row"]["domain"] for clip in val],
        names=names,
        target_fpr=args.target_fpr,
    )
    fitted = Calibration(
        temperature=stored.temperature,
        thresholds=stored.thresholds,
        domain_thresholds=stored.domain_thresholds,
        video_thresholds=pooled,
        video_domain_thresholds=per_domain,
    )
    rules = {"all clips": pooled} if pooled else per_domain
    print(
        f"video threshold fitted on val (target: at most {args.target_fpr:.4f} of the real clips called "
        "fake): " + "; ".join(f"{name} fake >= {rule.fake!r}" for name, rule in rules.items())
    )
    has_video_rules = stored.video_thresholds is not None or bool(stored.video_domain_thresholds)
    for name, part in (("val", val), ("test", test)):
        print(f"{name}, image threshold: {describe(count(part, stored, video=False))}")
        print(f"{name}, video threshold: {describe(count(part, fitted, video=True))}")
        if has_video_rules:  # what predict gives these clips with the model as it is now
            print(f"{name}, the model's stored video rules: {describe(count(part, stored, video=True))}")
    scores = np.array([clip["row"]["fake_score"] for clip in test])
    is_fake = np.array([clip["label"] == "fake" for clip in test])
    if is_fake.any() and (~is_fake).any():
        from sklearn.metrics import roc_auc_score

        print(f"test clips ROC-AUC (threshold-free): {roc_auc_score(is_fake, scores):.3f}")

    if args.write:
        fitted_on = {
            "data": "videos/manifest.csv (FaceForensics++ c23 dev clips)",
            "split": "val: the first half of the people groups in SHA-256 order "
            "(benchmarks/video_threshold.py)",
            "clips": len(val),
            "real": sum(clip["label"] == "real" for clip in val),
            "target_fpr": args.target_fpr,
            "rule": f"{THRESHOLD_RULE} (the val real clips of a domain are one source), per domain with "
            "real clips (a clip of another domain keeps its domain's image threshold)",
            "scored_with": {
                "aggregation": [json.loads(text) for text in sorted(aggregation)],
                # Face mode (``predict --faces``) when every row searched its frames for faces.
                "faces": all(clip["row"]["no_face_frames"] is not None for clip in clips),
            },
        }
        path = save_video_thresholds(args.write, pooled, per_domain, fitted_on)
        print(f"stored in {path}")
    return 0


def _model_folder(model: str) -> Path:
    from deepfake_detector.modeling.checkpoints import BUNDLED_MODELS, bundled_model_folder

    return bundled_model_folder(model) if model in BUNDLED_MODELS else Path(model)


if __name__ == "__main__":
    sys.exit(main())
