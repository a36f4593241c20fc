"""How tightly the training photos frame their faces: image side over the dlib-hog face box side.

    .venv/bin/python benchmarks/face_framing.py --data ../shared/data

A model sees at inference what the crop margin gives it (``--face-margin``, default 1.3); this shows what
the photos of ``faces/manifest.csv`` gave it in training, per source (``--photos`` per source, seed 0).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
from pathlib import Path

from PIL import Image

from deepfake_detector.faces.backends import load_face_detector


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--photos", type=int, default=40, help="photos per source (%(default)s)")
    args = parser.parse_args(argv)
    with open(args.data / "faces" / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    detector = load_face_detector("dlib-hog")
    print("| source | photos with a face | median image side / box side | min | max |")
    print("| --- | --- | --- | --- | --- |")
    for source in sorted({row["source"] for row in rows}):
        sample = random.Random(0).sample([row for row in rows if row["source"] == source], args.photos)
        ratios = []
        for row in sample:
            image = Image.open(args.data / "faces" / row["path"]).convert("RGB")
            boxes = detector.detect(image)
            if boxes:
                ratios.append(min(image.size) / max(boxes[0].width, boxes[0].height))
        print(
            f"| {source} | {len(ratios)}/{len(sample)} | {statistics.median(ratios):.2f} "
            f"| {min(ratios):.2f} | {max(ratios):.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
