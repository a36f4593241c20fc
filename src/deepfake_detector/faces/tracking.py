"""Follow faces through the sampled frames of a video, so that each person keeps one track id.

Each sampled frame's faces are matched to the tracks alive before it, by how their boxes overlap or,
failing that, how near their centres are (`compute_match_cost`), cheapest first (`match_greedily`); a
face that matches none starts a new track, and a track unseen for more than `MAX_MISSED_FRAMES` sampled
frames in a row ends. Ids count from 0 in order of first appearance (within a frame, in the detector's
order: largest face first), so the same boxes always give the same ids.

Why by hand, in a few lines of NumPy: the maintained trackers (SORT, ByteTrack, norfair) predict motion
with a Kalman filter tuned for consecutive frames at 25-30 fps, and bring dependencies the video extra
doesn't have (``lap``, ``filterpy``, scipy). Here frames are sampled up to seconds apart, where a
constant-velocity prediction extrapolates a turn of the head into a wrong place, and a frame holds a
handful of faces, so matching each frame to the last boxes seen is all the evidence there is. For the
same reason the matching is greedy rather than Hungarian (scipy's ``linear_sum_assignment``, an extra
this stage doesn't need): with a few faces far apart, the cheapest pair first is the optimal assignment,
and where it is not, the faces are so close that no box-based rule can tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepfake_detector.faces.boxes import compute_iou

Box = tuple[int, int, int, int]  # (left, top, right, bottom), right and bottom exclusive

# IoU 0.3 is the usual floor for "the same object" between frames (SORT's default, Bewley et al.,
# 2016): for two boxes of one size it allows a shift of about half a box (IoU (1 - s) / (1 + s) for a
# shift of s box widths), less than two faces side by side are apart, so neighbours are not confused.
MIN_IOU = 0.3
# Sampled frames can be a second or more apart, time for a face to move further than overlap allows; a
# face whose centre lies within one face size (the mean of the two boxes' longer sides) of where a track
# was last seen still continues it. One size, because the faces of two people side by side are about
# that far apart centre to centre (their boxes touch at most); and a match by distance ranks after every
# match by overlap, so a neighbour who is still in view keeps their own track.
MAX_CENTRE_DISTANCE = 1.0
# A track survives this many sampled frames without its face (a blink, a turn to profile, motion blur:
# one missed detection must not split a person in two); after more, seconds have passed and the place
# may hold someone else, so a face found there starts a new track.
MAX_MISSED_FRAMES = 2


def compute_match_cost(
    track_boxes: Sequence[Box],
    face_boxes: Sequence[Box],
    *,
    min_iou: float = MIN_IOU,
    max_centre_distance: float = MAX_CENTRE_DISTANCE,
) -> np.ndarray:
    """What matching each track's last box to each new face costs; inf where they may not match.

    Boxes that overlap by at least ``min_iou`` cost ``1 - IoU`` (in [0, 1 - min_iou]); failing that,
    boxes whose centres are at most ``max_centre_distance`` face sizes apart cost ``1 + distance`` (in
    (1, 1 + max_centre_distance]), so any overlapping match goes before any match by distance.

    Returns:
        (tracks, faces) float64 costs.
    """
    cost = np.full((len(track_boxes), len(face_boxes)), np.inf)  # (tracks, faces)
    if cost.size == 0:
        return cost
    tracks = np.asarray(track_boxes, dtype=np.float64)  # (tracks, 4)
    faces = np.asarray(face_boxes, dtype=np.float64)  # (faces, 4)
    iou = np.array([[compute_iou(track, face) for face in face_boxes] for track in track_boxes])
    distance = np.linalg.norm(_centres(tracks)[:, None] - _centres(faces)[None], axis=-1)  # (tracks, faces)
    relative = distance / ((_sizes(tracks)[:, None] + _sizes(faces)[None]) / 2)  # in face sizes
    near = relative <= max_centre_distance
    cost[near] = 1.0 + relative[near]
    overlapping = iou >= min_iou
    cost[overlapping] = 1.0 - iou[overlapping]
    return cost


def _centres(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, :2] + boxes[:, 2:]) / 2  # (n, 2)


def _sizes(boxes: np.ndarray) -> np.ndarray:
    return np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])  # (n,) longer sides


def match_greedily(cost: np.ndarray) -> list[tuple[int, int]]:
    """(row, column) pairs of finite ``cost``, cheapest first, each row and column used once.

    Ties go to the lower row (the older track), then the lower column (the larger face), so the
    answer never depends on sort stability.
    """
    rows, columns = np.nonzero(np.isfinite(cost))
    order = np.lexsort((columns, rows, cost[rows, columns]))  # last key sorts first: cost
    pairs, used_rows, used_columns = [], set(), set()
    for row, column in zip(rows[order].tolist(), columns[order].tolist(), strict=True):
        if row not in used_rows and column not in used_columns:
            pairs.append((row, column))
            used_rows.add(row)
            used_columns.add(column)
    return pairs


@dataclass
class _Track:
    track_id: int
    box: Box  # where its face was last seen
    missed: int = 0  # sampled frames since


class FaceTracker:
    """Gives the faces of a video's sampled frames, one frame at a time, their track ids.

    Only the tracks still alive are kept, so memory does not grow with the video's length.

    Args:
        min_iou: Boxes overlapping at least this much continue a track (`MIN_IOU`).
        max_centre_distance: Failing that, centres this many face sizes apart do
            (`MAX_CENTRE_DISTANCE`).
        max_missed: Sampled frames a track survives without its face (`MAX_MISSED_FRAMES`).
    """

    def __init__(
        self,
        *,
        min_iou: float = MIN_IOU,
        max_centre_distance: float = MAX_CENTRE_DISTANCE,
        max_missed: int = MAX_MISSED_FRAMES,
    ) -> None:
        if not 0.0 < min_iou <= 1.0:
            raise ValueError(f"min_iou must be in (0, 1], got {min_iou}")
        if not max_centre_distance >= 0.0:
            raise ValueError(f"max_centre_distance must be at least 0, got {max_centre_distance}")
        if max_missed < 0:
            raise ValueError(f"max_missed must be at least 0, got {max_missed}")
        self.min_iou = min_iou
        self.max_centre_distance = max_centre_distance
        self.max_missed = max_missed
        self._tracks: list[_Track] = []  # the live ones, oldest first
        self._next_id = 0

    def update(self, boxes: Sequence[Box]) -> list[int]:
        """The track id of each face of the next sampled frame, in ``boxes`` order.

        Call it for every sampled frame, with no boxes for a frame without a face: that frame counts
        as missed for every track.
        """
        boxes = [tuple(box) for box in boxes]
        cost = compute_match_cost(
            [track.box for track in self._tracks],
            boxes,
            min_iou=self.min_iou,
            max_centre_distance=self.max_centre_distance,
        )
        matched = {face: self._tracks[track] for track, face in match_greedily(cost)}
        for track in self._tracks:
            track.missed += 1
        ids = []
        for face, box in enumerate(boxes):
            track = matched.get(face)
            if track is None:  # no live track was here: a new person
                track = _Track(self._next_id, box)
                self._tracks.append(track)
                self._next_id += 1
            track.box, track.missed = box, 0
            ids.append(track.track_id)
        self._tracks = [track for track in self._tracks if track.missed <= self.max_missed]
        return ids


def compute_track_ids(frames: Sequence[Sequence[Box]], **options) -> list[list[int]]:
    """The track id of every face of every sampled frame (`FaceTracker` over ``frames`` in order).

    Args:
        frames: Each sampled frame's face boxes, in time order.
        **options: `FaceTracker`'s thresholds.

    Returns:
        One list of ids per frame, in its boxes' order.
    """
    tracker = FaceTracker(**options)
    return [tracker.update(boxes) for boxes in frames]
