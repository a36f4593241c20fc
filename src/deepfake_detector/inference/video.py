"""Video mode: sample frames, score each (its faces, or the whole frame), aggregate to a video verdict.

Frames stream through one at a time (`deepfake_detector.video.decode.VideoReader`) and only their
scores are kept, so memory does not grow with the video's length. With faces, each face is also given
the id of the person it belongs to (`deepfake_detector.faces.tracking`), and each person's scores
become a `FaceTrack` beside the clip's.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from deepfake_detector.aggregation import FaceAggregation, FrameAggregation
from deepfake_detector.errors import DetectorError, MissingExtraError, VideoLoadError
from deepfake_detector.faces.crops import FaceCrops, FaceOptions, cut_faces
from deepfake_detector.faces.tracking import FaceTracker
from deepfake_detector.inference.faces import iter_crop_outputs
from deepfake_detector.results import FaceScore, FaceTrack, FrameScore, VideoPrediction
from deepfake_detector.scoring import FACE_DOMAIN
from deepfake_detector.video.decode import FrameSampling, VideoReader

if TYPE_CHECKING:
    from deepfake_detector.inference.scorer import Scorer
    from deepfake_detector.provenance import ProvenanceRecord


def predict_video(
    scorer: Scorer,
    video: str | os.PathLike,
    *,
    faces: FaceOptions | None,
    sampling: FrameSampling,
    aggregation: FrameAggregation,
    batch_size: int,
    provenance: ProvenanceRecord | None = None,
) -> VideoPrediction:
    """Scores one video file; a file that can't be scored gives a `VideoPrediction` with ``error`` set.

    Frames are decoded and their faces cut one at a time; ``batch_size`` crops (of one or several frames)
    go through the scoring function together.

    Args:
        scorer: The scoring function and rule (`Detector.scorer`).
        faces: Resolved face options (`resolve_face_options`); None scores whole frames.
        provenance: What the provenance stage found in the file: the clip's verdict is decided with it
            by the same rule as an image's (`Scorer.decide`).
    """
    source = os.fspath(video)
    aggregation_info = {**aggregation.to_dict(), **sampling.to_dict()}
    if faces is not None:
        aggregation_info["face_strategy"] = faces.aggregation.strategy
    face_detector = faces.build_detector() if faces is not None else None
    face_aggregation = faces.aggregation if faces is not None else FaceAggregation()
    tracker = FaceTracker() if faces is not None else None
    frames: list[FrameScore] = []

    def failed(message: str) -> VideoPrediction:
        return VideoPrediction.failed(
            source, message, model=scorer.model, revision=scorer.revision, aggregation=aggregation_info
        )

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
            scored_frames = iter_crop_outputs(scorer.compute_outputs, prepared(), batch_size=batch_size)
            for (index, timestamp_s), crops, outputs in scored_frames:
                if isinstance(crops, Exception):
                    raise crops
                scored = scorer.combine(outputs, crops.boxes, crops.crop_boxes, face_aggregation)
                found = None
                if tracker is not None:  # every sampled frame, faceless ones too: they count as missed
                    track_ids = tracker.update([face.box for face in scored.faces])
                    found = tuple(
                        replace(face, track_id=track_id)
                        for face, track_id in zip(scored.faces, track_ids, strict=True)
                    )
                frames.append(FrameScore(index, timestamp_s, scored.fake_score, found, scored.domain))
    except VideoLoadError as error:
        return failed(str(error))
    except MissingExtraError:
        raise  # not this file's fault: the whole run needs the extra
    except (RuntimeError, ValueError, DetectorError) as error:
        return failed(f"{source}: scoring failed: {error}")
    # Frames without a face show scenery, cuts or titles: when some frames have a face, those decide.
    deciding = [frame for frame in frames if not frame.no_face] or frames
    fake_score = aggregation.compute([frame.fake_score for frame in deciding])
    domain = compute_clip_domain([frame.domain for frame in deciding])
    # The clip's rule (its video threshold), unless the file's provenance decides.
    decision = scorer.decide(fake_score, domain, provenance, video=True)
    return VideoPrediction(
        source=source,
        fake_score=fake_score,
        model=scorer.model,
        revision=scorer.revision,
        frames=tuple(frames),
        aggregation=aggregation_info,
        duration_s=reader.duration_s,
        rotation_deg=reader.rotation_deg,
        stopped_at_s=reader.stopped_at_s,
        decode_problem=reader.problem,
        domain=domain,
        detector=scorer.detector_name(domain),
        provenance=provenance,
        tracks=build_face_tracks(frames, scorer, aggregation) if faces is not None else None,
        **decision,
    )


def build_face_tracks(
    frames: Sequence[FrameScore], scorer: Scorer, aggregation: FrameAggregation
) -> tuple[FaceTrack, ...]:
    """One `FaceTrack` per track id among the frames' faces, in id order (first appearance).

    Each person's scores over time are aggregated as the clip's frames are (``aggregation``) and
    decided by the clip's rule through the one decision function (`Scorer.decide` with ``video``),
    without the file's provenance, which says nothing about one person. A one-person clip's track thus
    has the clip's score and the model's verdict on it.
    """
    seen: dict[int, list[tuple[float, FaceScore]]] = {}
    for frame in frames:
        for face in frame.faces or ():
            seen.setdefault(face.track_id, []).append((frame.timestamp_s, face))
    tracks = []
    for track_id in sorted(seen):
        faces = seen[track_id]
        fake_score = aggregation.compute([face.fake_score for _, face in faces])
        # A face the face detector found is in the face domain, as its frame is (`combine_faces`).
        domain = compute_clip_domain([face.domain or FACE_DOMAIN for _, face in faces])
        decision = scorer.decide(fake_score, domain, video=True)
        tracks.append(
            FaceTrack(
                track_id=track_id,
                fake_score=fake_score,
                verdict=decision["verdict"],
                threshold=decision["threshold"],
                uncertain_from=decision["uncertain_from"],
                threshold_from=decision["threshold_from"],
                domain=domain,
                scores_over_time=tuple((timestamp_s, face.fake_score) for timestamp_s, face in faces),
            )
        )
    return tuple(tracks)


def compute_clip_domain(domains: list[str | None]) -> str | None:
    """A clip's domain: that of most of its deciding frames (the face domain on a tie, because a
    clip with faces in half its frames is about those faces); None when no frame has one (a model
    without domains, scoring whole frames)."""
    named = [domain for domain in domains if domain is not None]
    if not named:
        return None
    counts = Counter(named)
    return max(counts, key=lambda name: (counts[name], name == FACE_DOMAIN))
