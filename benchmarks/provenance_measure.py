"""What the provenance stage says about real photos, and how far the Stable Diffusion watermark
survives re-compression and resizing.

    .venv/bin/python benchmarks/provenance_measure.py --data ../shared/data

1. False positives: the stage (`ProvenanceOptions.inspect_image`, exactly as predict runs it, at full
   resolution) on every real photo of ``faces/manifest.csv``, all splits. Prints how many were read for
   a watermark (the library cannot embed below 256x256 pixels, so smaller images are skipped), watermark
   matches, ``ai_declared: true`` rows, files with any metadata finding, and per payload the closest any
   photo came (most bits agreeing), the margin to what counts as a match.
2. Survival, on two sets: ``--survival`` real photos resized to 512x512 (a Stable Diffusion output size;
   upscaled, so smooth), and the middle 512x512 of a frame of each real video (native pixels). Each
   image is marked with every payload by `invisible-watermark` exactly as the reference pipelines do
   (BGR, ``dwtDct``), then saved as PNG, as JPEG at several qualities, and resized; prints the share
   found, and how many lossless copies the library's own decoder reads back exactly.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from deepfake_detector.io.images import decode_image
from deepfake_detector.provenance import ProvenanceOptions
from deepfake_detector.provenance.watermark import (
    MIN_PIXELS,
    STABLE_DIFFUSION_PAYLOADS,
    find_watermark,
    read_payloads,
)

JPEG_QUALITIES = (95, 90, 85, 80, 70, 50)
SCALES = (0.5, 0.75, 0.9, 1.25, 2.0)


def closest_bits(rgb: np.ndarray) -> dict[str, int]:
    """Per payload, the most bits it shares with what an image reads as, over both channel orders."""
    best = dict.fromkeys((payload.name for payload in STABLE_DIFFUSION_PAYLOADS), 0)
    for reading in read_payloads(rgb):
        best[reading.payload.name] = max(best[reading.payload.name], reading.bits_agreeing)
    return best


def false_positives(rows: list[dict], data: Path) -> None:
    options = ProvenanceOptions()
    read = matches = declared = with_metadata = 0
    margin = []
    for index, row in enumerate(rows, 1):
        decoded = decode_image(data / "faces" / row["path"])
        record = options.inspect_image(decoded)
        rgb = np.asarray(decoded.rgb)
        if rgb.shape[0] * rgb.shape[1] >= MIN_PIXELS:
            read += 1
            margin.append(closest_bits(rgb))
        matches += any(finding.name == "sd_watermark" for finding in record.evidence)
        declared += record.ai_declared is True
        with_metadata += any(finding.check == "metadata" for finding in record.evidence)
        if index % 500 == 0:
            print(f"  {index}/{len(rows)}", file=sys.stderr, flush=True)
    print(f"real photos: {len(rows)} (all splits of faces/manifest.csv)")
    print(f"  read for a watermark (>= 256x256 px): {read}")
    print(f"  watermark matches: {matches}")
    print(f"  ai_declared true: {declared}")
    print(f"  with any metadata finding: {with_metadata}")
    for payload in STABLE_DIFFUSION_PAYLOADS:
        closest = [bits[payload.name] for bits in margin]
        print(
            f"  {payload.name}: at most {max(closest)}/{len(payload.bits)} bits agreeing (median "
            f"{int(np.median(closest))}; a match needs {payload.required_bits})"
        )


def _photos(rows: list[dict], data: Path, count: int) -> Iterator[np.ndarray]:
    """Real photos (256 px) resized to 512x512: smooth, the hard case for this watermark."""
    rng = np.random.default_rng(0)
    for index in rng.choice(len(rows), size=min(count, len(rows)), replace=False):
        photo = Image.open(data / "faces" / rows[index]["path"]).convert("RGB")
        yield np.asarray(photo.resize((512, 512), Image.BICUBIC))


def _video_frames(data: Path) -> Iterator[np.ndarray]:
    """The middle 512x512 (or smaller square) of frame 30 of each real video: native pixels."""
    import av

    with open(data / "videos" / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] == "real"]
    for row in rows:
        with av.open(str(data / "videos" / row["path"])) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index == 30:
                    pixels = frame.to_ndarray(format="rgb24")
                    break
        height, width = pixels.shape[:2]
        side = min(512, height, width)
        top, left = (height - side) // 2, (width - side) // 2
        yield np.ascontiguousarray(pixels[top : top + side, left : left + side])


def survival(name: str, images: Iterator[np.ndarray]) -> None:
    """Marks each image with every payload as the reference pipelines do, then reads copies back."""
    from imwatermark import WatermarkDecoder, WatermarkEncoder

    conditions = ["png"] + [f"jpeg q{q}" for q in JPEG_QUALITIES] + [f"resize x{s}" for s in SCALES]
    found = dict.fromkeys(conditions, 0)
    total = library_exact = 0
    for rgb in images:
        for payload in STABLE_DIFFUSION_PAYLOADS:
            encoder = WatermarkEncoder()
            encoder.set_watermark("bits", list(payload.bits))
            marked_bgr = encoder.encode(np.ascontiguousarray(rgb[:, :, ::-1]), "dwtDct")
            marked = Image.fromarray(np.ascontiguousarray(marked_bgr[:, :, ::-1]))
            read = WatermarkDecoder("bits", len(payload.bits)).decode(marked_bgr, "dwtDct")
            library_exact += np.array_equal(np.array(read, dtype=bool), np.array(payload.bits, dtype=bool))
            total += 1
            for condition in conditions:
                if condition == "png":
                    copy = marked
                elif condition.startswith("jpeg"):
                    buffer = io.BytesIO()
                    marked.save(buffer, "JPEG", quality=int(condition.split("q")[1]))
                    copy = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
                else:
                    factor = float(condition.split("x")[1])
                    copy = marked.resize((round(marked.width * factor), round(marked.height * factor)))
                match = find_watermark(np.asarray(copy))
                found[condition] += match is not None and match.payload == payload
    print(f"survival, {name}: {total} marked images ({len(STABLE_DIFFUSION_PAYLOADS)} payloads each)")
    print(f"  the library's own decoder on the lossless copies: {library_exact}/{total} exact")
    for condition in conditions:
        print(f"  {condition:<12} found {found[condition]}/{total} ({found[condition] / total:.0%})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--survival", type=int, default=100, help="photos to watermark (0: skip)")
    parser.add_argument("--skip-false-positives", action="store_true")
    args = parser.parse_args(argv)
    with open(args.data / "faces" / "manifest.csv", newline="") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] == "real"]
    if not args.skip_false_positives:
        false_positives(rows, args.data)
    if args.survival:
        photos = [row for row in rows if not row["source"].startswith("lfw")]
        survival("real photos resized to 512x512", _photos(photos, args.data, args.survival))
        survival("frames of the real videos (native pixels)", _video_frames(args.data))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
