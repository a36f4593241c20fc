"""Video-level and frame-level ROC-AUC of ``predict`` output on labelled videos.

    deepfake-detector predict ../shared/data/videos -r --faces --model CHECKPOINT --output videos.jsonl
    .venv/bin/python benchmarks/video_auc.py videos.jsonl --manifest ../shared/data/videos/manifest.csv

Rows are matched to the manifest by path relative to the manifest's folder. The video-level AUC is over
each video's aggregated score; the frame-level one over every scored frame, labelled with its video's
label. Re-aggregating the stored frame scores with every strategy shows what the choice changes.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections import Counter

import numpy as np
from sklearn.metrics import roc_auc_score

from deepfake_detector.aggregation import FRAME_STRATEGIES, FrameAggregation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", help="JSONL written by `deepfake-detector predict --output x.jsonl`")
    parser.add_argument("--manifest", required=True, help="CSV with path,label (label real or fake)")
    args = parser.parse_args(argv)

    root = os.path.dirname(os.path.abspath(args.manifest))
    with open(args.manifest, newline="") as handle:
        labels = {os.path.normpath(row["path"]): row["label"] for row in csv.DictReader(handle)}
    with open(args.predictions) as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    videos = []
    for row in rows:
        key = os.path.normpath(os.path.relpath(os.path.abspath(row["source"]), root))
        if key not in labels:
            print(f"skipped {row['source']}: not in the manifest", file=sys.stderr)
        elif row["error"] is not None:
            print(f"skipped {row['source']}: {row['error']}", file=sys.stderr)
        else:
            videos.append((labels[key] == "fake", row))
    y = np.array([is_fake for is_fake, _ in videos])
    print(f"videos: {len(videos)} scored ({int(y.sum())} fake, {int((~y).sum())} real) of {len(rows)} rows")

    scores = np.array([row["fake_score"] for _, row in videos])
    verdicts = np.array([row["verdict"] == "fake" for _, row in videos])
    strategy = videos[0][1]["aggregation"]["strategy"]
    print(f"video-level ROC-AUC ({strategy}, as predicted): {roc_auc_score(y, scores):.3f}")
    print(f"video-level accuracy at the checkpoint's threshold: {(verdicts == y).mean():.3f}")
    counts = Counter(row["verdict"] for _, row in videos)
    print("verdicts: " + ", ".join(f"{verdict} {count}" for verdict, count in sorted(counts.items())))
    faces = Counter(len(f.get("faces") or []) for _, row in videos for f in row["frames"])
    print("frames by number of faces: " + ", ".join(f"{n}: {count}" for n, count in sorted(faces.items())))
    frame_y = np.concatenate([[is_fake] * len(row["frames"]) for is_fake, row in videos])
    frame_scores = np.concatenate([[f["fake_score"] for f in row["frames"]] for _, row in videos])
    no_face = sum(row["no_face_frames"] or 0 for _, row in videos)
    print(
        f"frame-level ROC-AUC: {roc_auc_score(frame_y, frame_scores):.3f} over {len(frame_y)} frames "
        f"({no_face} without a face)"
    )
    for name in FRAME_STRATEGIES:
        aggregation = FrameAggregation(name)
        rescored = [
            aggregation.compute(
                [f["fake_score"] for f in row["frames"] if not f.get("no_face")]
                or [f["fake_score"] for f in row["frames"]]
            )
            for _, row in videos
        ]
        auc = roc_auc_score(y, rescored)
        print(f"  re-aggregated with {aggregation.to_dict()}: video-level ROC-AUC {auc:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
