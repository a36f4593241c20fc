"""Video mode: sample frames, score each (its faces, or the whole frame), aggregate to a video verdict.

Frames stream through one at a time (`deepfake_detector.video.decode.VideoReader`) and only their
scores are kept, so memory does not grow with the video's length.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from itertools import groupby
from typing import TYPE_CHECKING

from deepfake_detector.aggregation import FrameAggregation
from deepfake_detector.errors import DetectorError, MissingExtraError, VideoLoadError
from deepfake_detector.inference.faces import (
    FaceCrops,
    FaceOptions,
    cut_faces,
    iter_predict_faces,
    iter_scored_faces,
)
from deepfake_detector.io.inputs import is_video_path
from deepfake_detector.results import FrameScore, Prediction, VideoPrediction
from deepfake_detector.scoring import compute_verdict
from deepfake_detector.video.decode import FrameSampling, VideoReader

if TYPE_CHECKING:
    from deepfake_detector.inference.detector import Detector


def predict_video(
    detector: Detector,
    video: str | os.PathLike,
    *,
    faces: FaceOptions | None,
    sampling: FrameSampling,
    aggregation: FrameAggregation,
    batch_size: int,
) -> VideoPrediction:
    """Scores one video file; a file that can't be scored gives a `VideoPrediction` with ``error`` set.

    Frames are decoded and their faces cut one at a time; ``batch_size`` crops (of one or several frames)
    go through the model together.
    """
    source = os.fspath(video)
    aggregation_info = {**aggregation.to_dict(), **sampling.to_dict()}
    if faces is not None:
        aggregation_info["face_strategy"] = faces.aggregation.strategy
    face_detector = faces.build_detector() if faces is not None else None
    frames: list[FrameScore] = []
    try:
        with VideoReader(source, sampling) as reader:

            def prepared() -> Iterator[tuple[tuple[int, float], FaceCrops]]:
                for sampled in reader:
                    if face_detector is None:
                        crops = FaceCrops((), (), (sampled.image,))  # the whole frame
                    else:
                        crops = cut_faces(face_detector, sampled.image, faces)
                    yield (sampled.index, sampled.timestamp_s), crops

            # Crops of several frames share a model call; only the crops wait, never the whole video.
            scored_frames = iter_scored_faces(
                detector, prepared(), faces or FaceOptions(), batch_size=batch_size
            )
            for (index, timestamp_s), scored in scored_frames:
                if isinstance(scored, Exception):
                    raise scored
                found = scored.faces if face_detector is not None else None
                frames.append(FrameScore(index, timestamp_s, scored.fake_score, found))
    except VideoLoadError as error:
        return _error(detector, source, str(error), aggregation_info)
    except MissingExtraError:
        raise  # not this file's fault: the whole run needs the extra
    except (RuntimeError, ValueError, DetectorError) as error:
        return _error(detector, source, f"{source}: scoring failed: {error}", aggregation_info)
    # Frames without a face show scenery, cuts or titles: when some frames have a face, those decide.
    with_face = [frame.fake_score for frame in frames if not frame.no_face]
    fake_score = aggregation.compute(with_face or [frame.fake_score for frame in frames])
    return VideoPrediction(
        source=source,
        fake_score=fake_score,
        verdict=compute_verdict(fake_score, detector.thresholds),
        model=detector.model_id,
        revision=detector.revision,
        frames=tuple(frames),
        aggregation=aggregation_info,
        duration_s=reader.duration_s,
        rotation_deg=reader.rotation_deg,
        stopped_at_s=reader.stopped_at_s,
        decode_problem=reader.problem,
    )


def _error(detector: Detector, source: str, message: str, aggregation_info: dict) -> VideoPrediction:
    return VideoPrediction(
        source, None, None, detector.model_id, detector.revision, aggregation=aggregation_info, error=message
    )


def iter_predict_media(
    detector: Detector,
    inputs: Iterable,
    *,
    faces: FaceOptions | None,
    sampling: FrameSampling,
    aggregation: FrameAggregation,
    batch_size: int,
) -> Iterator[Prediction | VideoPrediction]:
    """Images and videos in input order: video files (by suffix) one by one, runs of images batched.

    Args:
        inputs: Paths (and `InputProblem` items, which become error rows), as `expand_inputs` yields.
    """

    def kind(item) -> bool:
        return isinstance(item, (str, os.PathLike)) and is_video_path(os.fspath(item))

    for is_video, run in groupby(inputs, key=kind):
        if is_video:
            for video in run:
                yield predict_video(
                    detector,
                    video,
                    faces=faces,
                    sampling=sampling,
                    aggregation=aggregation,
                    batch_size=batch_size,
                )
        elif faces is not None:
            yield from iter_predict_faces(detector, run, faces, batch_size=batch_size)
        else:
            yield from detector.iter_predict(run, batch_size=batch_size)
