"""Compare the face detector backends on real photos, real video frames and made-up hard cases.

    .venv/bin/python benchmarks/face_detectors.py --data ../shared/data

Sets (all built at run time from ``--data``; nothing is written to disk):

- photos: real and fake face photos of one split (``--split``, default val) of ``faces/manifest.csv``,
  ``--photos`` per source. Each has one
  subject in the middle; a box counts as that face when its centre lies in the middle half of the
  image and its side is at least a fifth of the image's. Other boxes are counted as "extra" (LFW news
  photos can hold real faces in the background, so extra boxes are not all false).
- frames: the middle frame of each FaceForensics++ clip in ``videos/`` (one presenter each, mostly
  720p); found = at least one box.
- small / rotated / several: real photos of ``faces/`` pasted onto a textured canvas at a known place
  (faces of 20 to 60 px; rotated by 15 to 90 degrees; three faces on one canvas). A box counts as a
  face when its centre lies inside the pasted face's box and its side is within 0.5x to 2x of it.
- no-face: textures and face photos cut into four quadrants and shuffled (skin, hair and colours of a
  face, no face); every box is false.

Precision is over the made-up sets and no-face images, where every face's place is known. Times are
medians per image of the same process; "x hog" is each detector's time over dlib-hog's (default).
"Crop agreement" is, over the photos where both found the subject, the median IoU of a detector's
crop (margin 1.3) with dlib-hog's, and the share above 0.8 IoU.

``--framing`` instead measures how CenterFace's own boxes sit against dlib-hog's on the same photos
(side ratio and centre shift; the constants of `deepfake_detector.faces.centerface`).
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_detector.faces.backends import load_face_detector
from deepfake_detector.faces.boxes import FaceBox, compute_crop_box, compute_iou

DETECTORS = (
    ("dlib-hog", {}),  # the default: upsample=1
    ("dlib-hog up0", {"upsample": 0}),
    ("dlib-cnn", {}),
    ("opencv-haar", {}),
    ("centerface", {}),  # score_threshold=0.7
    ("centerface t0.5", {"score_threshold": 0.5}),
)
SMALL_FACES_PX = (20, 30, 40, 60)  # face (brows to chin) side; the pasted photo is 1/0.65 of it
ANGLES_DEG = (15, 30, 45, 90)
# The aligned 256 px photos have the face (brows to chin) over roughly the middle 65% of their side.
FACE_SHARE = 0.65


@dataclass
class Case:
    """One image and where its faces are: boxes, or "centre" (one subject in the middle), or "any"."""

    set_name: str
    condition: str
    image: Image.Image
    faces: list[tuple[int, int, int, int]] | str = field(default_factory=list)


def _texture(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    channels = [
        127 + 100 * np.sin(x / width * rng.uniform(2, 12) + y / height * rng.uniform(1, 8) + phase)
        for phase in rng.uniform(0, 6, size=3)
    ]
    pixels = np.stack(channels, axis=-1) + rng.normal(0, 10, size=(height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _paste(canvas: Image.Image, face: Image.Image, side: int, centre: tuple[int, int], angle: float):
    """Pastes ``face`` (a face photo, subject centred) scaled to ``side`` px; returns its face box."""
    patch = face.resize((side, side), Image.Resampling.LANCZOS)
    mask = Image.new("L", patch.size, 255)
    if angle:
        patch = patch.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(angle, resample=Image.Resampling.BICUBIC, expand=True)
    left, top = centre[0] - patch.width // 2, centre[1] - patch.height // 2
    canvas.paste(patch, (left, top), mask)
    half = round(side * FACE_SHARE / 2)
    return (centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half)


def load_rows(data: Path, split: str) -> list[dict]:
    with open(data / "faces" / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["split"] == split]
    if not rows:
        raise SystemExit(f"no photos of split {split!r} in {data / 'faces' / 'manifest.csv'}")
    return rows


def build_cases(data: Path, photos_per_source: int, seed: int, split: str = "val") -> list[Case]:
    rng = np.random.default_rng(seed)
    pick = random.Random(seed)
    rows = load_rows(data, split)
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    cases = []
    for source, source_rows in sorted(by_source.items()):
        for row in pick.sample(source_rows, photos_per_source):
            image = Image.open(data / "faces" / row["path"]).convert("RGB")
            cases.append(Case("photos", source, image, "centre"))

    import av

    for path in sorted((data / "videos").rglob("*.mp4")):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            middle_s = float(stream.duration * stream.time_base) / 2
            for frame in container.decode(stream):
                if frame.time >= middle_s:
                    cases.append(Case("frames", f"{frame.width}x{frame.height}", frame.to_image(), "any"))
                    break

    # Aligned, tightly framed real photos make clean face patches to paste.
    patches = [
        Image.open(data / "faces" / row["path"]).convert("RGB")
        for row in pick.sample(
            [r for r in rows if r["label"] == "real" and r["source"] in ("celebahq_stylegan", "ffhq_tpdne")],
            60,
        )
    ]
    for index, face_px in enumerate(SMALL_FACES_PX * 6):
        canvas = Image.fromarray(_texture(300, 400, rng))
        side = round(face_px / FACE_SHARE)
        centre = (int(rng.integers(side, 400 - side)), int(rng.integers(side, 300 - side)))
        box = _paste(canvas, patches[index], side, centre, 0)
        cases.append(Case("small", f"face {face_px} px", canvas, [box]))
    for index, angle in enumerate(ANGLES_DEG * 6):
        canvas = Image.fromarray(_texture(300, 400, rng))
        signed = angle * (1 if index % 2 else -1)
        box = _paste(canvas, patches[24 + index], 140, (200, 150), signed)
        cases.append(Case("rotated", f"{angle} deg", canvas, [box]))
    for index in range(8):
        canvas = Image.fromarray(_texture(360, 640, rng))
        boxes = [
            _paste(
                canvas,
                patches[48 + (3 * index + k) % 12],
                int(rng.integers(90, 130)),
                (110 + 210 * k, 180),
                0,
            )
            for k in range(3)
        ]
        cases.append(Case("several", "3 faces", canvas, boxes))
    for index in range(15):
        cases.append(Case("no-face", "texture", Image.fromarray(_texture(300, 400, rng)), []))
        face = np.asarray(patches[index].resize((256, 256)))
        quarters = [face[:128, :128], face[:128, 128:], face[128:, :128], face[128:, 128:]]
        order = [3, 2, 1, 0] if index % 2 else [1, 3, 0, 2]
        top = np.concatenate([quarters[order[0]], quarters[order[1]]], axis=1)
        bottom = np.concatenate([quarters[order[2]], quarters[order[3]]], axis=1)
        shuffled = np.concatenate([top, bottom], axis=0)
        cases.append(Case("no-face", "shuffled face", Image.fromarray(shuffled), []))
    return cases


def _centre_in(box: tuple[int, int, int, int], region: tuple[int, int, int, int]) -> bool:
    centre_x, centre_y = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return region[0] <= centre_x < region[2] and region[1] <= centre_y < region[3]


def _side(box: tuple[int, int, int, int]) -> int:
    return max(box[2] - box[0], box[3] - box[1])


def find_subject(case: Case, boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int, int] | None:
    """The box of a photo's one subject (centre in the middle half, side at least a fifth), if found."""
    width, height = case.image.size
    middle = (width // 4, height // 4, width - width // 4, height - height // 4)
    return next((b for b in boxes if _centre_in(b, middle) and _side(b) >= min(width, height) / 5), None)


def score_case(case: Case, boxes: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
    """(faces found, faces present, boxes that are no known face) for one image."""
    if case.faces == "any":
        return (1 if boxes else 0), 1, max(len(boxes) - 1, 0)
    if case.faces == "centre":
        hit = find_subject(case, boxes) is not None
        return int(hit), 1, len(boxes) - int(hit)
    unmatched = list(boxes)
    for truth in case.faces:
        match = next(
            (b for b in unmatched if _centre_in(b, truth) and 0.5 <= _side(b) / (truth[2] - truth[0]) <= 2.0),
            None,
        )
        if match is not None:
            unmatched.remove(match)
    return len(boxes) - len(unmatched), len(case.faces), len(unmatched)


def run(cases: list[Case], labels: list[str]) -> dict[str, list[tuple]]:
    """Per detector, one row per case: (case, found, present, false boxes, ms, boxes).

    The detectors take turns on each image, so a change in the machine's load (shared cores) falls on
    all of them alike and the time ratios stay fair.
    """
    detectors = {}
    for label, options in DETECTORS:
        if label in labels:
            detectors[label] = load_face_detector(label.split()[0], **options)
            detectors[label].detect(cases[0].image)  # warm-up: first call pays for allocation
    results: dict[str, list[tuple]] = {label: [] for label in detectors}
    for case in cases:
        for label, detector in detectors.items():
            start = time.perf_counter()
            boxes = [box.as_tuple() for box in detector.detect(case.image)]
            elapsed_ms = (time.perf_counter() - start) * 1000
            results[label].append((case, *score_case(case, boxes), elapsed_ms, boxes))
    return results


def _recall(rows, set_name: str, condition: str | None = None) -> str:
    chosen = [r for r in rows if r[0].set_name == set_name and condition in (None, r[0].condition)]
    found, present = sum(r[1] for r in chosen), sum(r[2] for r in chosen)
    return f"{found}/{present} ({100 * found / present:.0f}%)"


def _median_ms(rows, set_name: str) -> float:
    return statistics.median(r[4] for r in rows if r[0].set_name == set_name)


def _crop_agreement(rows, baseline_rows) -> str:
    """Median IoU of the subject's crop (margin 1.3) with dlib-hog's, and the share above 0.8."""
    ious = []
    for row, base in zip(rows, baseline_rows, strict=True):
        if row[0].set_name != "photos":
            continue
        mine, theirs = find_subject(row[0], row[5]), find_subject(base[0], base[5])
        if mine is None or theirs is None:
            continue
        size = row[0].image.size
        crop = compute_crop_box(FaceBox(*mine), size)
        ious.append(compute_iou(crop, compute_crop_box(FaceBox(*theirs), size)))
    if not ious:
        return "n/a"
    above = sum(iou >= 0.8 for iou in ious)
    return f"{statistics.median(ious):.2f} ({above}/{len(ious)} >= 0.8)"


def print_tables(results) -> None:
    baseline = {name: _median_ms(results["dlib-hog"], name) for name in ("photos", "frames")}
    print(
        "| detector | photos found | extra boxes on photos | FF++ frames found | small | rotated | several "
        "| precision (made-up + no-face) | false boxes on no-face | crop agreement with hog | ms/photo "
        "| ms/frame | x hog (frame) |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for label, rows in results.items():
        known = [r for r in rows if r[0].set_name in ("small", "rotated", "several", "no-face")]
        true_boxes, false_boxes = sum(r[1] for r in known), sum(r[3] for r in known)
        precision = true_boxes / (true_boxes + false_boxes) if true_boxes + false_boxes else float("nan")
        extra = sum(r[3] for r in rows if r[0].set_name == "photos")
        photos = sum(1 for r in rows if r[0].set_name == "photos")
        no_face = sum(r[3] for r in rows if r[0].set_name == "no-face")
        frame_ms = _median_ms(rows, "frames")
        print(
            f"| {label} | {_recall(rows, 'photos')} | {extra} on {photos} | {_recall(rows, 'frames')} "
            f"| {_recall(rows, 'small')} | {_recall(rows, 'rotated')} | {_recall(rows, 'several')} "
            f"| {precision:.2f} | {no_face} | {_crop_agreement(rows, results['dlib-hog'])} "
            f"| {_median_ms(rows, 'photos'):.0f} | {frame_ms:.0f} "
            f"| {frame_ms / baseline['frames']:.1f} |"
        )
    print()
    conditions = [
        ("photos", source)
        for source in sorted({r[0].condition for r in results["dlib-hog"] if r[0].set_name == "photos"})
    ]
    conditions += [("small", f"face {face_px} px") for face_px in SMALL_FACES_PX]
    conditions += [("rotated", f"{angle} deg") for angle in ANGLES_DEG]
    print("| detector | " + " | ".join(f"{s}: {c}" for s, c in conditions) + " |")
    print("| --- |" + " --- |" * len(conditions))
    for label, rows in results.items():
        print(f"| {label} | " + " | ".join(_recall(rows, s, c) for s, c in conditions) + " |")


def measure_framing(data: Path, photos_per_source: int, seed: int, split: str) -> None:
    """How CenterFace's own boxes sit against dlib-hog's: side ratio and centre shift, medians."""
    from deepfake_detector.faces.centerface import CenterFaceRunner

    pick = random.Random(seed)
    rows = load_rows(data, split)
    hog = load_face_detector("dlib-hog")
    runner = CenterFaceRunner()
    side_ratios, shifts_down, shifts_right, pairs = [], [], [], 0
    for source in sorted({row["source"] for row in rows}):
        source_rows = [row for row in rows if row["source"] == source]
        for row in pick.sample(source_rows, min(photos_per_source, len(source_rows))):
            image = Image.open(data / "faces" / row["path"]).convert("RGB")
            theirs = [box.as_tuple() for box in hog.detect(image)]
            mine = runner(np.asarray(image), dlib_framing=False)
            if not theirs or not mine:
                continue
            # The CenterFace box whose centre lies inside dlib's largest box is the same face.
            dlib_box = theirs[0]
            same = [b for b in mine if _centre_in(b[:4], dlib_box)]
            if not same:
                continue
            left, top, right, bottom, _ = max(same, key=lambda b: b[4])
            dlib_side = _side(dlib_box)
            side_ratios.append(dlib_side / ((right - left) * (bottom - top)) ** 0.5)
            shifts_down.append(((dlib_box[1] + dlib_box[3]) - (top + bottom)) / 2 / dlib_side)
            shifts_right.append(((dlib_box[0] + dlib_box[2]) - (left + right)) / 2 / dlib_side)
            pairs += 1
    quartiles = statistics.quantiles(side_ratios, n=4)
    print(f"{split} photos where both found the face: {pairs}")
    print(
        f"dlib side / CenterFace sqrt(width * height): median {statistics.median(side_ratios):.3f} "
        f"(quartiles {quartiles[0]:.3f}, {quartiles[2]:.3f})"
    )
    print(f"centre shift down, over dlib side: median {statistics.median(shifts_down):+.3f}")
    print(f"centre shift right, over dlib side: median {statistics.median(shifts_right):+.3f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=Path("../shared/data"), help="folder with faces/ and videos/"
    )
    parser.add_argument("--photos", type=int, default=20, help="photos per source (%(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--split", default="val", help="split of faces/manifest.csv (%(default)s)")
    parser.add_argument(
        "--framing", action="store_true", help="measure CenterFace's box framing against dlib-hog's"
    )
    parser.add_argument(
        "--detectors",
        nargs="+",
        default=[label for label, _ in DETECTORS],
        choices=[label for label, _ in DETECTORS],
        metavar="NAME",
        help="which to run; dlib-hog is the baseline of the time ratios and always runs",
    )
    args = parser.parse_args(argv)
    if args.framing:
        measure_framing(args.data, args.photos, args.seed, args.split)
        return 0
    cases = build_cases(args.data, args.photos, args.seed, args.split)
    counts = {}
    for case in cases:
        counts[case.set_name] = counts.get(case.set_name, 0) + 1
    print(f"images per set: {counts}", file=sys.stderr)
    print_tables(run(cases, ["dlib-hog", *args.detectors]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
