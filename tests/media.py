"""Test media made on the spot: drawn faces the detectors find, pictures with faces at known places,
and videos written with PyAV (rotated, truncated, faceless, audio-only, variable frame rate)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# Where the drawn face (forehead to chin, cheek to cheek) lies in a drawing of side 1.
FACE_REGION = (0.25, 0.2, 0.75, 0.85)


def draw_face(size: int = 200, skin=(225, 185, 160)) -> Image.Image:
    """A frontal cartoon face (hair, skin, brows, eyes, nose, mouth), blurred a little.

    dlib's HOG and CNN detectors and OpenCV's Haar cascade all find it from about 120 px up.
    """
    image = Image.new("RGB", (size, size), (60, 70, 80))
    draw = ImageDraw.Draw(image)
    s = size / 200

    def ellipse(box, fill) -> None:
        draw.ellipse([v * s for v in box], fill=fill)

    ellipse((40, 10, 160, 120), (50, 35, 25))  # hair
    ellipse((50, 30, 150, 175), skin)
    draw.rectangle([70 * s, 72 * s, 92 * s, 77 * s], fill=(70, 50, 40))  # brows
    draw.rectangle([108 * s, 72 * s, 130 * s, 77 * s], fill=(70, 50, 40))
    ellipse((72, 84, 92, 96), (250, 250, 250))  # eyes
    ellipse((108, 84, 128, 96), (250, 250, 250))
    ellipse((78, 85, 88, 95), (40, 30, 30))
    ellipse((114, 85, 124, 95), (40, 30, 30))
    draw.polygon([(100 * s, 95 * s), (92 * s, 128 * s), (108 * s, 128 * s)], fill=(200, 155, 135))  # nose
    ellipse((82, 140, 118, 152), (170, 70, 70))  # mouth
    draw.rectangle([85 * s, 170 * s, 115 * s, 200 * s], fill=(215, 175, 150))  # neck
    return image.filter(ImageFilter.GaussianBlur(2 * s))


def background(width: int, height: int, seed: int = 0) -> Image.Image:
    """A smooth colour gradient: nothing in it looks like a face."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    start, slope_x, slope_y = rng.uniform(40, 200, 3), rng.uniform(-60, 60, 3), rng.uniform(-60, 60, 3)
    pixels = start + slope_x * (x[..., None] / width) + slope_y * (y[..., None] / height)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def picture_with_faces(
    width: int, height: int, faces: list[tuple[int, int, int]], seed: int = 0
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A gradient with a drawn face of side ``size`` at each (left, top, size); returns the face boxes."""
    image = background(width, height, seed)
    boxes = []
    for left, top, size in faces:
        image.paste(draw_face(size), (left, top))
        x0, y0, x1, y1 = FACE_REGION
        boxes.append(
            (left + round(x0 * size), top + round(y0 * size), left + round(x1 * size), top + round(y1 * size))
        )
    return image, boxes


def iou(a, b) -> float:
    inter_w = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    inter_h = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = inter_w * inter_h
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def write_video(
    path: Path,
    frames: list[Image.Image],
    *,
    fps: int = 10,
    codec: str = "mpeg4",
    rotation_deg: int | None = None,
    pts_ms: list[int] | None = None,
    options: dict | None = None,
) -> Path:
    """Encodes ``frames`` (all one size) with PyAV; ``pts_ms`` gives each frame's time (variable rate)."""
    import av

    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation_deg is not None:
            stream.set_display_rotation(rotation_deg)
        for index, image in enumerate(frames):
            frame = av.VideoFrame.from_image(image)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[index], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path) -> Path:
    """An MP4 with one AAC audio stream and no video."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for index in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, index * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_zero_frame_video(path: Path) -> Path:
    """A Matroska file with a video stream header and not one frame."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return path
