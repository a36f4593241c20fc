"""Sample frames from a video file with PyAV, streaming: memory stays flat however long the video is.

Frames are chosen by presentation time, not by index, so variable-frame-rate files are sampled evenly in
time. The stream is decoded once, front to back, and only the chosen frames are converted to images;
with ``num_frames`` decoding stops as soon as the last one is found. The display matrix (phone videos
shot upright) is applied, so faces stand up as the viewer saw them.

What goes wrong in real files is reported, not raised, wherever something still decodes: an
undecodable packet is skipped and counted, and a stream that ends before its declared duration
(truncated download, damaged file) is noted with the time of its last frame. Only a file with nothing
to score (missing, not a video, audio only, no decodable frame) raises `VideoLoadError`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from PIL import Image

from deepfake_detector.errors import VideoLoadError
from deepfake_detector.io.images import check_media_file
from deepfake_detector.optional import require

DEFAULT_NUM_FRAMES = 32


@dataclass(frozen=True)
class FrameSampling:
    """Which frames of a video are scored: ``num_frames`` evenly spaced in time, or one every ``every_s``.

    Attributes:
        num_frames: Frames taken at the middles of that many equal time slices of the video (so neither
            the first nor the last frame, often a fade, is favoured). A video with fewer frames gives
            each frame once.
        every_s: One frame every this many seconds from the start instead (then ``num_frames`` is
            ignored); for long videos, where a fixed count would leave minutes unseen.
    """

    num_frames: int = DEFAULT_NUM_FRAMES
    every_s: float | None = None

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be at least 1, got {self.num_frames}")
        if self.every_s is not None and not (self.every_s > 0 and math.isfinite(self.every_s)):
            raise ValueError(f"every_s must be a positive number of seconds, got {self.every_s}")

    def to_dict(self) -> dict:
        if self.every_s is not None:
            return {"every_s": self.every_s}
        return {"num_frames": self.num_frames}


@dataclass(frozen=True)
class SampledFrame:
    """One decoded frame, as an upright RGB image.

    Attributes:
        index: Position among the frames the stream decoded to (0-based).
        timestamp_s: Presentation time in seconds from the start of the video stream.
        image: RGB image with the display rotation applied.
    """

    index: int
    timestamp_s: float
    image: Image.Image


def _upright(image: Image.Image, rotation_deg: int) -> Image.Image:
    """Applies a counter-clockwise display rotation (FFmpeg's convention, as PyAV reports it)."""
    turn = rotation_deg % 360
    if turn == 0:
        return image
    exact = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    if turn in exact:
        return image.transpose(exact[turn])
    return image.rotate(turn, resample=Image.Resampling.BILINEAR, expand=True)


class VideoReader:
    """Reads sampled frames from one video file. Use as a context manager and iterate once.

    After iteration, ``stopped_at_s`` and ``problem`` say whether the stream ended early or had
    damaged packets or frames; ``duration_s`` and ``rotation_deg`` describe the file.

    Args:
        path: The video file.
        sampling: Which frames to yield.

    Raises:
        VideoLoadError: On opening: the file is missing, not a video, or has no video stream. On
            iteration: no frame at all could be decoded.
        MissingExtraError: PyAV is not installed.
    """

    def __init__(self, path: str | os.PathLike, sampling: FrameSampling | None = None) -> None:
        self.path = os.fspath(path)
        self.sampling = sampling or FrameSampling()
        self.duration_s: float | None = None
        self.rotation_deg = 0
        self.stopped_at_s: float | None = None
        self._ended_early: str | None = None  # why decoding ended before the declared end
        self._skipped_packets = 0
        self._damaged_frames = 0
        self._first_damage: str | None = None
        self._last_s: float | None = None
        self._container = None
        self._stream = None
        self._start_s = 0.0

    @property
    def problem(self) -> str | None:
        """What went wrong while decoding, in words; None when nothing did."""
        parts = [self._ended_early] if self._ended_early else []
        damage = [f"{self._skipped_packets} undecodable packet(s) skipped"] if self._skipped_packets else []
        if self._damaged_frames:
            damage.append(f"{self._damaged_frames} frame(s) decoded from damaged data")
        if damage:
            parts.append(" and ".join(damage) + f" (first: {self._first_damage})")
        return "; ".join(parts) or None

    def __enter__(self) -> VideoReader:
        av = require("av", "video")
        check_media_file(self.path, "video", VideoLoadError)
        try:
            self._container = av.open(self.path)
        except av.error.EOFError:
            raise VideoLoadError(f"{self.path}: the file ends before any video data (zero frames)") from None
        except av.FFmpegError as error:
            hint = ""
            if os.path.splitext(self.path)[1].lower() in (".mp4", ".m4v", ".mov"):
                hint = "; an MP4/MOV cut short loses the index at its end and cannot be read at all"
            raise VideoLoadError(f"{self.path}: not a readable video ({_describe(error)}{hint})") from None
        try:
            self._open_stream()
        except BaseException:
            self._container.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _open_stream(self) -> None:
        streams = self._container.streams
        if not streams.video:
            kinds = ", ".join(sorted({stream.type for stream in streams})) or "no streams at all"
            raise VideoLoadError(f"{self.path}: no video stream to score (the file has: {kinds})")
        stream = streams.video[0]
        if stream.codec_context is None:
            raise VideoLoadError(f"{self.path}: no decoder for its video codec")
        stream.thread_type = "AUTO"  # frame threads: faster decoding, a few frames of memory
        self._stream = stream
        base = stream.time_base
        self._start_s = float(stream.start_time * base) if stream.start_time is not None and base else 0.0
        if stream.duration and base:
            self.duration_s = float(stream.duration * base)
        elif self._container.duration:
            self.duration_s = self._container.duration / 1_000_000  # AV_TIME_BASE
        rate = stream.average_rate or stream.guessed_rate
        self._frame_interval_s = float(1 / rate) if rate else 1 / 30

    def _targets(self) -> Iterator[float]:
        """Sampling times in seconds from the stream start, increasing."""
        if self.sampling.every_s is not None:
            k = 0
            while True:
                yield k * self.sampling.every_s
                k += 1
        duration = self.duration_s if self.duration_s is not None else self._scan_duration()
        count = self.sampling.num_frames
        for i in range(count):
            yield (i + 0.5) * duration / count

    def _scan_duration(self) -> float:
        """The duration of a stream that declares none, from its packets' timestamps (no decoding)."""
        av = require("av", "video")
        end = 0.0
        try:
            with av.open(self.path) as container:
                stream = container.streams.video[0]
                for packet in container.demux(stream):
                    if packet.pts is not None and packet.time_base:
                        end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        except av.FFmpegError:
            pass  # what was read so far still bounds the sampling; decoding reports the damage
        self.duration_s = max(end - self._start_s, 0.0)
        return self.duration_s

    def _decoded(self) -> Iterator[tuple[int, float, object]]:
        """(index, timestamp_s, frame) for every frame, recording damage instead of raising on it."""
        av = require("av", "video")
        index = 0
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                break
            except av.FFmpegError as error:
                self.stopped_at_s = self._last_s
                self._ended_early = f"the container is damaged after {_at(self._last_s)}: {_describe(error)}"
                break
            try:
                frames = packet.decode()
            except av.FFmpegError as error:
                self._skipped_packets += 1
                self._first_damage = self._first_damage or f"after {_at(self._last_s)}: {_describe(error)}"
                continue
            for frame in frames:
                if frame.time is not None:
                    timestamp_s = float(frame.time) - self._start_s
                else:  # no timestamp: assume the nominal frame rate from the previous frame
                    timestamp_s = 0.0 if self._last_s is None else self._last_s + self._frame_interval_s
                self._last_s = timestamp_s
                if frame.is_corrupt:  # the decoder concealed damage; data around it may be missing
                    self._damaged_frames += 1
                    self._first_damage = self._first_damage or f"frame at {timestamp_s:.2f} s"
                self.rotation_deg = _normalise_degrees(frame.rotation or 0)
                yield index, timestamp_s, frame
                index += 1

    def __iter__(self) -> Iterator[SampledFrame]:
        if self._container is None:
            raise RuntimeError("use VideoReader as a context manager: with VideoReader(path) as reader")
        targets = self._targets()
        target = next(targets)
        previous = None  # (index, timestamp_s, frame) of the frame before the current one
        last_yielded = -1
        for current in self._decoded():
            while target is not None and current[1] >= target:
                nearest = _nearest(target, previous, current, last_yielded)
                if nearest[0] != last_yielded:
                    last_yielded = nearest[0]
                    yield self._to_sampled(nearest)
                target = next(targets, None)
            previous = current
            if target is None:
                return  # every sampling time is served: the rest need not be decoded
        if previous is None:
            raise VideoLoadError(
                f"{self.path}: the video stream has no decodable frame"
                + (f" ({self.problem})" if self.problem else "")
            )
        # A sampling time after the last frame's start still falls within it (every_s), or lies past a
        # stream that ended early (num_frames): either way the last frame is the nearest there is.
        pending = target is not None and (
            self.sampling.every_s is None or target - previous[1] < self._frame_interval_s
        )
        if pending and previous[0] != last_yielded:
            yield self._to_sampled(previous)
        self._note_early_end()

    def _note_early_end(self) -> None:
        """Records where a stream stopped when it ended well before its declared duration."""
        if self.duration_s is None or self._last_s is None or self._ended_early is not None:
            return
        # The last frame starts one frame interval before the end; allow a little more for rounding.
        slack_s = max(3 * self._frame_interval_s, 0.25)
        if self._last_s + slack_s < self.duration_s:
            self.stopped_at_s = self._last_s
            self._ended_early = (
                f"decoding stopped at {self._last_s:.2f} s of the {self.duration_s:.2f} s the header "
                "declares (truncated or damaged file); frames after it are missing"
            )

    def _to_sampled(self, decoded: tuple[int, float, object]) -> SampledFrame:
        index, timestamp_s, frame = decoded
        return SampledFrame(index, timestamp_s, _upright(frame.to_image(), int(frame.rotation or 0)))


def _nearest(target: float, previous: tuple | None, current: tuple, last_yielded: int) -> tuple:
    """The decoded frame nearest ``target`` of the two around it. A tie goes to the earlier frame
    unless it was already taken, so N samples of an N-frame video give every frame once."""
    if previous is None:
        return current
    before, after = target - previous[1], current[1] - target
    if abs(before - after) < 1e-6:
        return previous if previous[0] != last_yielded else current
    return previous if before < after else current


def _at(timestamp_s: float | None) -> str:
    return "the start" if timestamp_s is None else f"{timestamp_s:.2f} s"


def _normalise_degrees(degrees: float) -> int:
    """An angle as a whole number of degrees in (-180, 180]: 180 and -180 are both 180."""
    return int(-((-round(degrees) + 180) % 360 - 180))


def _describe(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)
