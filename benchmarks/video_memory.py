"""Peak memory and time of scoring a long video: memory must stay flat as the video gets longer.

    .venv/bin/python benchmarks/video_memory.py --model CHECKPOINT --minutes 1
    .venv/bin/python benchmarks/video_memory.py --model CHECKPOINT --minutes 10

Writes a synthetic 640x360, 30 fps MPEG-4 video of that length into a temporary folder (a drawn face
drifting over a moving gradient), scores it with ``predict_video`` (faces, one frame every
``--every`` seconds), and prints the process's peak resident memory before and after. Run each length
in its own process: the peak is per process.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image


def _write(path: Path, minutes: float, fps: int = 30) -> int:
    import av

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.media import draw_face

    face = draw_face(120)
    count = int(minutes * 60 * fps)
    y, x = np.mgrid[0:360, 0:640]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for index in range(count):
            shade = (x + y + index) % 256
            image = Image.fromarray(np.stack([shade, 255 - shade, shade // 2], axis=-1).astype(np.uint8))
            image.paste(face, (100 + (index // 10) % 400, 120))
            for packet in stream.encode(av.VideoFrame.from_image(image)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return count


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="checkpoint folder")
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between sampled frames")
    args = parser.parse_args(argv)

    from deepfake_detector import Detector, FrameSampling

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "long.mp4"
        frames = _write(path, args.minutes)
        size_mib = path.stat().st_size / 2**20
        detector = Detector.from_pretrained(args.model, device="cpu")
        before = _peak_mib()
        start = time.perf_counter()
        prediction = detector.predict_video(path, sampling=FrameSampling(every_s=args.every))
        elapsed = time.perf_counter() - start
        after = _peak_mib()
    print(
        f"{args.minutes:g} min ({frames} frames, {size_mib:.0f} MiB "
        f"file): {len(prediction.frames)} frames scored, {prediction.no_face_frames} without a face, "
        f"{elapsed:.1f} s; peak RSS {before:.0f} MiB after loading, {after:.0f} MiB after scoring"
    )
    return 0 if prediction.ok else 1


if __name__ == "__main__":
    sys.exit(main())
