"""Small JPEG thumbnails of the inputs a report shows, read from disk when the report is built.

Images are read like the detector reads them (`deepfake_detector.io.images.load_image`: the same
refusals of non-files and decompression bombs, EXIF orientation applied, since the rows' face boxes
are in upright pixels), with JPEGs decoded at reduced scale. A video gives the first frame its row
scored, decoded with the same sampling (`deepfake_detector.video.decode.VideoReader`), so that frame's
face boxes fit it. What can't be read (a missing file, a damaged one, a video without PyAV) becomes a
note that the page shows in place of the picture: a report never fails on one input.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

DEFAULT_THUMBNAIL_PX = 160
JPEG_QUALITY = 70  # about 4 kB for a 160 px photo: 10,000 of them keep a report near 50 MB
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 or 270 degrees: width and height swap


@dataclass(frozen=True)
class Thumbnail:
    """A small picture of one input, or why there is none.

    Attributes:
        jpeg: The thumbnail as JPEG bytes; None when the input could not be pictured.
        source_size: (width, height) of the upright input (video frame) the rows' boxes refer to.
        frame_index: For a video: the index of the frame pictured, among the frames the stream decoded to.
        note: Why there is no picture; None when there is one.
    """

    jpeg: bytes | None = None
    source_size: tuple[int, int] | None = None
    frame_index: int | None = None
    note: str | None = None

    def data_url(self) -> str | None:
        if self.jpeg is None:
            return None
        return "data:image/jpeg;base64," + base64.b64encode(self.jpeg).decode("ascii")


def load_image_thumbnail(path: str | os.PathLike, max_px: int = DEFAULT_THUMBNAIL_PX) -> Thumbnail:
    """A thumbnail of an image file, at most ``max_px`` on its longer side; a note when unreadable."""
    from deepfake_detector.errors import ImageLoadError
    from deepfake_detector.io.images import check_media_file, load_image

    try:
        check_media_file(path)
        data = Path(path).read_bytes()
        upright = _upright_size(data)
        image = load_image(data, name=os.fspath(path), draft_size=(max_px, max_px))
    except ImageLoadError as error:
        return Thumbnail(note=_without_path(str(error), path))
    except Exception as error:  # a hostile file can trip any decoder bug; it costs its picture only
        return Thumbnail(note=f"cannot read ({type(error).__name__}: {error})")
    return Thumbnail(jpeg=_encode(image, max_px), source_size=upright or image.size)


def load_video_thumbnail(
    path: str | os.PathLike, max_px: int = DEFAULT_THUMBNAIL_PX, sampling: dict | None = None
) -> Thumbnail:
    """A thumbnail of the first frame a video's row scored (``sampling``: the row's ``aggregation``,
    which records ``num_frames`` or ``every_s``); a note when it can't be decoded or PyAV is missing."""
    from deepfake_detector.errors import MissingExtraError, VideoLoadError
    from deepfake_detector.video.decode import FrameSampling, VideoReader

    sampling = sampling or {}
    try:
        frames = FrameSampling(
            num_frames=int(sampling.get("num_frames") or FrameSampling.num_frames),
            every_s=sampling.get("every_s"),
        )
        with VideoReader(path, frames) as reader:
            frame = next(iter(reader))
    except MissingExtraError:
        return Thumbnail(
            note="no video thumbnail: PyAV is not installed (pip install 'deepfake-detector[video]')"
        )
    except VideoLoadError as error:
        return Thumbnail(note=_without_path(str(error), path))
    except Exception as error:
        return Thumbnail(note=f"cannot decode ({type(error).__name__}: {error})")
    return Thumbnail(jpeg=_encode(frame.image, max_px), source_size=frame.image.size, frame_index=frame.index)


def load_thumbnails(
    jobs: Iterable[Callable[[], Thumbnail]], *, workers: int | None = None
) -> list[Thumbnail]:
    """Runs thumbnail jobs in threads (decoding and resizing release the GIL), results in job order.

    Args:
        jobs: Calls that each return one `Thumbnail`.
        workers: Threads; default: one per CPU, at most 8.
    """
    from deepfake_detector.inference.engines import default_workers

    workers = workers if workers is not None else default_workers(8)
    jobs = list(jobs)
    if workers <= 1 or len(jobs) < 2:
        return [job() for job in jobs]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="thumbnail") as pool:
        return list(pool.map(lambda job: job(), jobs))


def _upright_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) of an encoded image once its EXIF orientation is applied, from its header."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:
        return None  # load_image says what is wrong with the file
    return (height, width) if orientation in _TRANSPOSED_ORIENTATIONS else (width, height)


def _encode(image: Image.Image, max_px: int) -> bytes:
    image = image.convert("RGB")
    image.thumbnail((max_px, max_px), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buffer.getvalue()


def _without_path(message: str, path) -> str:
    """The loader's message without its leading "<path>: ", which the card already shows."""
    prefix = f"{os.fspath(path)}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
