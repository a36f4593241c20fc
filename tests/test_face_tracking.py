"""Faces followed through a video's sampled frames: the tracker on synthetic boxes, each person's
record, and two drawn faces moving through a real video keeping one id each."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from deepfake_detector import Detector
from deepfake_detector.aggregation import FrameAggregation
from deepfake_detector.faces.tracking import (
    FaceTracker,
    compute_match_cost,
    compute_track_ids,
    match_greedily,
)
from deepfake_detector.inference.scorer import Scorer
from deepfake_detector.inference.video import build_face_tracks
from deepfake_detector.io.writers import ResultWriter, csv_columns
from deepfake_detector.modeling.labels import resolve_label_roles
from deepfake_detector.results import FaceScore, FrameScore
from deepfake_detector.scoring import Calibration, Thresholds
from deepfake_detector.video.decode import FrameSampling
from tests.media import picture_with_faces, write_video


def box(left: int, top: int, side: int = 100) -> tuple[int, int, int, int]:
    return (left, top, left + side, top + side)


# --- the tracker, on synthetic boxes ----------------------------------------------------------------


def test_two_faces_side_by_side_keep_their_ids_whatever_order_the_detector_lists_them():
    left, right = (
        [box(100 + jitter, 50) for jitter in (0, 3, -2, 1)],
        [box(230 - j, 55) for j in (0, 2, 4, 1)],
    )
    frames = [[left[0], right[0]], [right[1], left[1]], [left[2], right[2]], [right[3], left[3]]]
    assert compute_track_ids(frames) == [[0, 1], [1, 0], [0, 1], [1, 0]]


def test_crossing_paths_keep_their_ids():
    # Two faces at different heights walk past each other, 40 px (0.4 of a face) per sampled frame: while
    # they pass, each box could continue the other person's track, but its own is nearer.
    frames = [[box(40 * step, 0), box(400 - 40 * step, 60)] for step in range(11)]
    ids = compute_track_ids(frames)
    assert ids == [[0, 1]] * 11
    passing = compute_match_cost([frames[5][0], frames[5][1]], frames[6])
    assert np.isfinite(passing[0, 1]) and passing[0, 0] < passing[0, 1]  # a real choice, made right


def test_a_face_leaves_and_another_enters_with_a_new_id():
    first, second = box(50, 50), box(400, 50)
    frames = [[first], [first], [], [], [second], [second], [], [], [], [first]]
    # The first person's id is never handed to the second; after more than MAX_MISSED_FRAMES unseen
    # frames a face at the first one's place is a new person too.
    assert compute_track_ids(frames) == [[0], [0], [], [], [1], [1], [], [], [], [2]]


def test_a_missed_detection_keeps_the_track_and_a_longer_absence_ends_it():
    moving = [box(20 * step, 40) for step in range(8)]
    once = [[moving[0]], [moving[1]], [], [moving[3]], [moving[4]]]  # moved 0.4 faces while unseen
    assert compute_track_ids(once) == [[0]] * 2 + [[]] + [[0]] * 2
    gone = [[moving[0]], [], [], [], [moving[4]]]  # three frames unseen: over
    assert compute_track_ids(gone) == [[0], [], [], [], [1]]
    assert compute_track_ids(gone, max_missed=3) == [[0], [], [], [], [0]]


def test_sampled_frames_far_apart_match_by_centre_distance_when_boxes_no_longer_overlap():
    # A second between samples: the face moved 0.9 of its size (no overlap at all), then 1.2.
    frames = [[box(0, 0)], [box(90, 0)], [box(210, 0)]]
    assert compute_track_ids(frames) == [[0], [0], [1]]
    assert compute_track_ids(frames, max_centre_distance=0.0) == [[0], [1], [2]]
    # The face grew as it came closer: the centre moved little for its size.
    assert compute_track_ids([[box(100, 100, 80)], [box(80, 80, 130)]]) == [[0], [0]]


def test_overlap_matches_before_distance_and_far_boxes_never_match():
    cost = compute_match_cost([box(0, 0)], [box(30, 0), box(95, 0), box(500, 0)])  # (1 track, 3 faces)
    assert cost.shape == (1, 3)
    assert cost[0, 0] == pytest.approx(1 - 70 / 130)  # 1 - IoU
    assert cost[0, 1] == pytest.approx(1 + 0.95)  # 1 + centre distance in face sizes
    assert cost[0, 2] == np.inf
    assert compute_match_cost([], [box(0, 0)]).shape == (0, 1)


def test_greedy_matching_is_cheapest_first_and_breaks_ties_by_order():
    cost = np.array([[0.1, 0.5, np.inf], [0.2, 0.3, np.inf], [np.inf, np.inf, np.inf]])
    assert match_greedily(cost) == [(0, 0), (1, 1)]
    assert match_greedily(np.full((2, 2), 0.4)) == [(0, 0), (1, 1)]
    assert match_greedily(np.empty((0, 3))) == []


def test_ids_count_from_zero_in_order_of_first_appearance_and_repeat_exactly():
    rng = np.random.default_rng(0)
    frames = [
        [box(int(x), int(y)) for x, y in rng.integers(0, 600, size=(rng.integers(0, 4), 2))]
        for _ in range(30)
    ]
    ids = compute_track_ids(frames)
    assert ids == compute_track_ids(frames)
    order = [track for frame in ids for track in frame]
    assert sorted(set(order)) == list(range(len(set(order))))
    assert [track for index, track in enumerate(order) if track not in order[:index]] == sorted(set(order))
    assert all(len(frame) == len(set(frame)) for frame in ids)  # one face per person per frame


def test_bad_tracker_options_say_what_is_accepted():
    with pytest.raises(ValueError, match="min_iou"):
        FaceTracker(min_iou=0.0)
    with pytest.raises(ValueError, match="max_missed"):
        FaceTracker(max_missed=-1)
    with pytest.raises(ValueError, match="max_centre_distance"):
        FaceTracker(max_centre_distance=-1.0)


# --- each person's record ---------------------------------------------------------------------------


def _face(track_id: int, fake_score: float) -> FaceScore:
    return FaceScore(box(0, 0), box(0, 0), None, "x", fake_score, "real", None, 0.5, track_id)


def test_each_person_gets_their_scores_aggregated_and_decided_by_the_clips_rule():
    roles = resolve_label_roles({0: "Realism", 1: "Deepfake"})
    calibration = Calibration(
        thresholds=Thresholds.single(0.8), video_domain_thresholds={"face": Thresholds.single(0.5)}
    )
    scorer = Scorer(lambda images: None, roles, calibration, "m")
    frames = [
        FrameScore(0, 0.5, 0.9, (_face(0, 0.9), _face(1, 0.1))),
        FrameScore(1, 1.5, 0.2, ()),
        FrameScore(2, 2.5, 0.7, (_face(1, 0.2), _face(0, 0.7))),
        FrameScore(3, 3.5, 0.6, (_face(0, 0.6),)),
    ]
    swapped, real = build_face_tracks(frames, scorer, FrameAggregation("mean"))
    assert swapped.track_id == 0 and swapped.scores_over_time == ((0.5, 0.9), (2.5, 0.7), (3.5, 0.6))
    assert swapped.fake_score == pytest.approx(np.mean([0.9, 0.7, 0.6])) and swapped.max_fake_score == 0.9
    assert (swapped.num_frames, swapped.first_s, swapped.last_s) == (3, 0.5, 3.5)
    # The clip's rule: the video threshold of the face domain (a face found is a face).
    assert (swapped.verdict, swapped.threshold, swapped.threshold_from, swapped.domain) == (
        "fake",
        0.5,
        "video",
        "face",
    )
    assert real.verdict == "real" and real.fake_score == pytest.approx(0.15)
    top = build_face_tracks(frames, scorer, FrameAggregation("top_k_mean", k=1))
    assert [track.fake_score for track in top] == [0.9, 0.2]
    assert set(swapped.to_dict()) == {
        "track_id",
        "num_frames",
        "first_s",
        "last_s",
        "fake_score",
        "max_fake_score",
        "verdict",
        "threshold",
        "uncertain_from",
        "threshold_from",
        "domain",
        "scores_over_time",
    }
    assert swapped.to_dict()["scores_over_time"] == [[0.5, 0.9], [2.5, 0.7], [3.5, 0.6]]
    assert build_face_tracks([FrameScore(0, 0.0, 0.3, ())], scorer, FrameAggregation()) == ()


# --- two drawn faces moving through a real video ----------------------------------------------------


@pytest.fixture(scope="module")
def detector(seed_checkpoint) -> Detector:
    pytest.importorskip("av", reason="video tests need the 'video' extra")
    pytest.importorskip("dlib", reason="face tests need the 'faces' extra")
    return Detector.from_pretrained(seed_checkpoint, device="cpu")


def test_two_faces_moving_through_a_video_keep_one_id_each(tmp_path, detector):
    # The small face walks right and the large one left, 8 px a frame, never meeting.
    frames = [
        picture_with_faces(480, 260, [(20 + 8 * step, 40, 140), (300 - 8 * step, 60, 160)], seed=step)[0]
        for step in range(8)
    ]
    path = write_video(tmp_path / "two.mp4", frames, fps=10)
    prediction = detector.predict_video(path, faces=True, sampling=FrameSampling(num_frames=8))
    assert prediction.ok and len(prediction.frames) == 8
    assert [track.track_id for track in prediction.tracks] == [0, 1]
    sides = {}
    for frame in prediction.frames:
        for face in frame.faces:
            centre_x = (face.box[0] + face.box[2]) / 2
            sides.setdefault(face.track_id, set()).add(centre_x < 240)
    assert sides == {0: {False}, 1: {True}}  # the larger face is listed, hence numbered, first
    for track in prediction.tracks:
        found = [
            (frame.timestamp_s, face.fake_score)
            for frame in prediction.frames
            for face in frame.faces
            if face.track_id == track.track_id
        ]
        assert track.scores_over_time == tuple(found) and track.num_frames >= 6
        assert track.fake_score == pytest.approx(np.mean([score for _, score in found]))
    # The clip's own score and verdict don't change: frames still pool their faces (the most-fake).
    pooled = [frame.fake_score for frame in prediction.frames if not frame.no_face]
    assert prediction.fake_score == pytest.approx(np.mean(pooled))

    buffer = io.StringIO()
    writer = ResultWriter(buffer, "json")
    writer.write(prediction)
    writer.close()
    (row,) = json.loads(buffer.getvalue())
    assert [track["track_id"] for track in row["tracks"]] == [0, 1]
    assert {face["track_id"] for frame in row["frames"] for face in frame["faces"]} == {0, 1}
    assert row["tracks"][0]["scores_over_time"][0] == list(prediction.tracks[0].scores_over_time[0])
    from deepfake_detector.video.timeline import render_timeline

    render_timeline(prediction, tmp_path / "people.png")  # a line per person
    assert (tmp_path / "people.png").stat().st_size > 0
    csv_buffer = io.StringIO()
    ResultWriter(csv_buffer, "csv", summary=True).write(prediction)
    assert csv_buffer.getvalue().splitlines()[0].split(",") == csv_columns(True)  # tracks stay nested

    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from deepfake_detector.serving.schemas import VideoPredictionRecord

    record = VideoPredictionRecord.model_validate(prediction.to_dict())
    assert record.model_dump()["tracks"] == row["tracks"]


def test_one_person_clip_track_agrees_with_the_clip_and_whole_frames_have_no_tracks(tmp_path, detector):
    frames = [picture_with_faces(320, 240, [(30 + 4 * step, 20, 180)], seed=step)[0] for step in range(6)]
    path = write_video(tmp_path / "one.mp4", frames, fps=10)
    sampling = FrameSampling(num_frames=6)
    prediction = detector.predict_video(path, faces=True, sampling=sampling)
    (track,) = prediction.tracks
    assert track.fake_score == pytest.approx(prediction.fake_score)
    assert (track.verdict, track.threshold, track.threshold_from) == (
        prediction.verdict,
        prediction.threshold,
        prediction.threshold_from,
    )
    whole = detector.predict_video(path, faces=False, sampling=sampling)
    assert whole.tracks is None and whole.to_dict()["tracks"] is None
