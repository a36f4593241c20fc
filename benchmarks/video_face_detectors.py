"""Which face detector gives the better video scores: ROC-AUC of the default model's clip scores on the
FaceForensics++ dev clips, one run per face detector, on the val and test halves of
`video_threshold.assign_splits` (people never straddle them). The default face detector is chosen on
val alone; test is reported once, as measured.

    for detector in dlib-hog centerface; do
        deepfake-detector predict ../shared/data/videos -r --faces --face-detector $detector --resume \
            --output runs/video_faces/$detector.jsonl
    done
    .venv/bin/python benchmarks/video_face_detectors.py runs/video_faces/dlib-hog.jsonl \
        runs/video_faces/centerface.jsonl --manifest ../shared/data/videos/manifest.csv

Each file is a ``predict --resume`` JSON Lines output, so a run stopped halfway goes on where it
stopped. Besides ROC-AUC the table gives the share of sampled frames in which no face was found (such a
frame is scored whole, and only counts when no frame of the clip has a face).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from deepfake_detector.evaluation.metrics import compute_roc_auc


def summarise(clips: list[dict], split: str) -> str:
    """``ROC-AUC (n clips)`` of one split's scored clips; n/a with one class."""
    part = [clip for clip in clips if clip["split"] == split and clip["row"] is not None]
    labels = np.array([clip["label"] for clip in part], dtype=object)
    if len(set(labels)) < 2:
        return f"n/a ({len(part)} clips)"
    scores = np.array([clip["row"]["fake_score"] for clip in part])
    return f"{compute_roc_auc(labels, scores, positive='fake'):.3f} ({len(part)} clips)"


def no_face_share(clips: list[dict]) -> str:
    rows = [clip["row"] for clip in clips if clip["row"] is not None]
    frames = sum(row["num_frames"] or 0 for row in rows)
    missed = sum(row["no_face_frames"] or 0 for row in rows)
    return f"{missed / frames:.1%} of {frames}" if frames else "n/a"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, nargs="+", help="JSONL of `predict --faces --face-detector X`")
    parser.add_argument("--manifest", type=Path, required=True, help="the clips' manifest.csv (path,label)")
    args = parser.parse_args(argv)
    from video_threshold import load_clips  # this folder's, run as a script

    print("| run | val ROC-AUC | test ROC-AUC | frames without a face |")
    print("| --- | --- | --- | --- |")
    for run in args.runs:
        clips = load_clips(run, args.manifest)
        splits = " | ".join(summarise(clips, split) for split in ("val", "test"))
        print(f"| {run.stem} | {splits} | {no_face_share(clips)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
