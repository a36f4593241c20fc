"""Result records. Every output format (table, JSON, CSV, HTTP) is made from these, in one place."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from deepfake_detector.provenance import ProvenanceRecord

# Numbers people read (the table, ``info``, the web page, the scan report) show this many significant
# digits; files and HTTP responses keep full precision, so anyone can recompute from them.
DISPLAY_DIGITS = 3


def format_number(value: float | None) -> str:
    """A score or threshold as people read it: `DISPLAY_DIGITS` significant digits ("0.84" for
    0.8395009040832521), "-" for None. The one rule of every Python surface; the web page and the scan
    report each have a one-line JavaScript twin."""
    return "-" if value is None else f"{value:.{DISPLAY_DIGITS}g}"


# The CSV columns of the provenance record (`ProvenanceRecord.flat`): nested evidence stays in JSON.
PROVENANCE_COLUMNS = ("ai_declared", "provenance_evidence")


def _provenance_columns(record: ProvenanceRecord | None) -> dict:
    return record.flat() if record is not None else dict.fromkeys(PROVENANCE_COLUMNS)


class _Outcome:
    """What every per-input record answers the same way from its ``error`` and ``faces`` fields."""

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def no_face(self) -> bool | None:
        """True when faces were searched for and none was found; None when they were not searched for."""
        return None if self.faces is None else not self.faces


@dataclass(frozen=True)
class Prediction(_Outcome):
    """The verdict on one input image.

    Attributes:
        source: The input's path as given, or its index in the call when it was not a file.
        label: Deprecated, read ``verdict``: the checkpoint's class name for the verdict ("Deepfake"
            for fake, "Realism" for real, "uncertain"; `LabelRoles.label_for`), kept one release for
            readers of old files. It used to be the checkpoint's top class (the verdict at 0.5), which
            disagreed with ``verdict`` between 0.5 and the threshold; it will be removed.
        fake_score: Probability of the fake role (the sum over every fake class), in [0, 1].
        verdict: "real", "fake" or "uncertain": ``fake_score`` against ``threshold`` (and
            ``uncertain_from``), unless ``decided_by`` is "provenance".
        model: The checkpoint id or folder that produced the score.
        revision: The checkpoint revision (hub commit) when known.
        error: Why this input could not be scored; when set, label, fake_score, verdict and the
            threshold fields are None.
        faces: With ``faces=True``: every face found, scored, largest first; the image's score is
            that of its faces combined (`deepfake_detector.aggregation.FaceAggregation`, default
            the most-fake face). An empty tuple when no face was found: the image was scored whole
            (``no_face``). None when faces were not searched for.
        decided_by: "model", or "provenance" when the provenance stage's evidence set the verdict
            (`deepfake_detector.provenance.decide_verdict`); None for error rows.
        provenance: What the provenance stage found (C2PA, metadata, watermark); None when the stage
            was switched off. ``fake_score`` is always the model's own.
        domain: What the model saw: "face" (a face the face head can judge) or "general" (anything
            else), as the checkpoint's domain probe decided; None when the checkpoint has no domains.
        detector: Which head gave ``fake_score``: "face-head", "general-head", or "model" for a
            checkpoint with one head for everything; None for error rows.
        threshold: The fake threshold that decided this row: ``fake_score`` at or above it is fake
            (`scoring.DecisionRule`). When provenance decided, the threshold the score was held
            against all the same.
        uncertain_from: With an uncertain band, its lower edge: scores from it up to ``threshold``
            are uncertain, below it real. None without a band (below ``threshold`` is real).
        threshold_from: Whose ``threshold`` it is: "image" (the model's, of the row's domain),
            "video" (the model's video threshold) or "caller" (``--threshold``/``--uncertain-band``).
    """

    source: str | int
    label: str | None
    fake_score: float | None
    verdict: str | None
    model: str
    revision: str | None = None
    error: str | None = None
    faces: tuple[FaceScore, ...] | None = None
    decided_by: str | None = None
    provenance: ProvenanceRecord | None = None
    domain: str | None = None
    detector: str | None = None
    threshold: float | None = None
    uncertain_from: float | None = None
    threshold_from: str | None = None

    @classmethod
    def failed(
        cls,
        source: str | int,
        error: Exception | str,
        *,
        model: str,
        revision: str | None = None,
        provenance: ProvenanceRecord | None = None,
    ):
        """The error row of an input that could not be scored."""
        return cls(source, None, None, None, model, revision, error=str(error), provenance=provenance)

    def to_dict(self) -> dict:
        row = {name: getattr(self, name) for name in self.field_names()}
        row["provenance"] = None if self.provenance is None else self.provenance.to_dict()
        if self.faces is not None:  # face mode adds its keys; a row scored whole keeps the plain format
            row["no_face"] = self.no_face
            row["faces"] = [face.to_dict() for face in self.faces]
        return row

    def provenance_columns(self) -> dict:
        """The CSV columns of ``provenance`` (`PROVENANCE_COLUMNS`)."""
        return _provenance_columns(self.provenance)

    def summary(self) -> dict:
        """The face counts that CSV and table rows carry (`SUMMARY_FIELDS`); None where they don't apply."""
        return {
            "num_faces": None if self.faces is None else len(self.faces),
            "no_face": self.no_face,
            "num_frames": None,
            "no_face_frames": None,
        }

    @classmethod
    def field_names(cls) -> list[str]:
        """The plain columns of every row; JSON adds ``provenance`` (and in face mode ``no_face`` and
        ``faces``), CSV flattens the provenance into `PROVENANCE_COLUMNS`."""
        return [f.name for f in fields(cls) if f.name not in ("faces", "provenance")]


@dataclass(frozen=True, eq=False)  # eq=False: NumPy arrays have no single truth value to compare by
class Explanation(_Outcome):
    """Where the model looked when it scored one image, as a heatmap for the fake class.

    Attributes:
        source: The input's path as given, or its index in the call when it was not a file.
        method: "rollout" or "gradcam": the method used ("auto" is resolved for the checkpoint).
        heatmap: Float32 array (H, W) at the image's own size (after EXIF orientation), in [0, 1]; 1 is
            the hottest point. In face mode, each face crop's map placed at its crop box (each
            normalised on its own; zero outside the boxes). None when ``error`` is set.
        token_map: The same map at the model's patch resolution (rows, cols), before upsampling, in
            [0, 1]; in face mode with faces found, one per face crop: (faces, rows, cols), in
            ``faces`` order. None when ``error`` is set.
        label: Deprecated, as `Prediction.label`: the class name of ``verdict``.
        fake_score: Probability of the fake role, exactly as `Detector.predict` reports it.
        verdict: "real", "fake" or "uncertain", from the detector's thresholds.
        model: The checkpoint id or folder that produced the map.
        revision: The checkpoint revision (hub commit) when known.
        error: Why this input could not be explained; when set, the arrays and scores are None.
        faces: With ``faces=True``: every face found and scored, as in `Prediction.faces`; the score is
            the faces' combined. An empty tuple when no face was found: the whole image was explained
            (``no_face``). None when faces were not searched for.
        domain: What the model saw, as `Prediction.domain`.
        threshold: As `Prediction.threshold`.
        uncertain_from: As `Prediction.uncertain_from`.
        threshold_from: As `Prediction.threshold_from`.
        decided_by: As `Prediction.decided_by`: the same provenance stage runs first, so `explain` and
            `predict` give one file the same verdict.
    """

    source: str | int
    method: str
    heatmap: np.ndarray | None
    token_map: np.ndarray | None
    label: str | None
    fake_score: float | None
    verdict: str | None
    model: str
    revision: str | None = None
    error: str | None = None
    faces: tuple[FaceScore, ...] | None = None
    domain: str | None = None
    threshold: float | None = None
    uncertain_from: float | None = None
    threshold_from: str | None = None
    decided_by: str | None = None

    @classmethod
    def failed(
        cls,
        source: str | int,
        method: str,
        error: Exception | str,
        *,
        model: str,
        revision: str | None = None,
    ) -> Explanation:
        """The error record of an input that could not be explained."""
        return cls(source, method, None, None, None, None, None, model, revision, error=str(error))

    @property
    def peak_xy(self) -> tuple[int, int] | None:
        """Pixel (x, y) of the hottest point of ``heatmap``; None when there is no map."""
        if self.heatmap is None:
            return None
        row, col = divmod(int(self.heatmap.argmax()), self.heatmap.shape[1])
        return col, row

    def to_dict(self) -> dict:
        """Everything but the arrays, which go to .npy files (``--save-npy``), not to JSON. Face mode adds
        ``no_face`` and ``faces``, as in `Prediction.to_dict`."""
        peak = self.peak_xy
        row = {
            "source": self.source,
            "method": self.method,
            "label": self.label,
            "fake_score": self.fake_score,
            "verdict": self.verdict,
            # (width, height), Pillow's order, like peak_xy
            "image_size": None if self.heatmap is None else [self.heatmap.shape[1], self.heatmap.shape[0]],
            "peak_xy": None if peak is None else list(peak),
            "model": self.model,
            "revision": self.revision,
            "error": self.error,
            "domain": self.domain,
            "threshold": self.threshold,
            "uncertain_from": self.uncertain_from,
            "threshold_from": self.threshold_from,
            "decided_by": self.decided_by,
        }
        if self.faces is not None:
            row["no_face"] = self.no_face
            row["faces"] = [face.to_dict() for face in self.faces]
        return row


# Columns that CSV rows add in face mode (``predict --faces``), for images and videos alike.
SUMMARY_FIELDS = ("num_faces", "no_face", "num_frames", "no_face_frames")


@dataclass(frozen=True)
class FaceScore:
    """One face found in an image or video frame, and its score.

    Attributes:
        box: (left, top, right, bottom) of the face as the detector found it, in pixels of the image
            (after EXIF orientation, or the video's rotation); right and bottom are exclusive.
        crop_box: The square region that was scored: the box grown by the margin, kept in the image.
        detection_score: The face detector's confidence, on that detector's own scale.
        label: Deprecated, as `Prediction.label`: the class name of the crop's ``verdict``.
        fake_score: Probability of the fake role for the crop, in [0, 1].
        verdict: "real", "fake" or "uncertain": the crop's own, at its domain's image threshold.
        domain: The crop's domain, as `Prediction.domain`.
        threshold: The fake threshold of the crop's own verdict (its domain's image threshold, or the
            caller's); None in records made before rows carried it.
        track_id: In a video, the person this face belongs to: the same id in every sampled frame
            where the tracker follows them (`deepfake_detector.faces.tracking`), and the key of their
            record in `VideoPrediction.tracks`. None outside videos (and then left out of ``to_dict``).
    """

    box: tuple[int, int, int, int]
    crop_box: tuple[int, int, int, int]
    detection_score: float | None
    label: str
    fake_score: float
    verdict: str
    domain: str | None = None
    threshold: float | None = None
    track_id: int | None = None

    def to_dict(self) -> dict:
        row = {
            "box": list(self.box),
            "crop_box": list(self.crop_box),
            "detection_score": self.detection_score,
            "label": self.label,
            "fake_score": self.fake_score,
            "verdict": self.verdict,
            "domain": self.domain,
            "threshold": self.threshold,
        }
        if self.track_id is not None:  # video faces add it; an image's faces keep their format
            row["track_id"] = self.track_id
        return row


@dataclass(frozen=True)
class FrameScore:
    """One sampled video frame and its score.

    Attributes:
        index: The frame's position among the frames the stream decoded to (0-based).
        timestamp_s: Its presentation time, in seconds from the start of the video stream.
        fake_score: Its faces combined (the same rule as for images), or the whole frame's score when
            no face was found or faces were not searched for.
        faces: Faces found and scored, largest first; empty when none was found; None when faces were
            not searched for.
        domain: The frame's domain (of its deciding face, or of the whole frame), as
            `Prediction.domain`.
    """

    index: int
    timestamp_s: float
    fake_score: float
    faces: tuple[FaceScore, ...] | None = None
    domain: str | None = None

    @property
    def no_face(self) -> bool | None:
        return None if self.faces is None else not self.faces

    def to_dict(self) -> dict:
        row = {
            "index": self.index,
            "timestamp_s": self.timestamp_s,
            "fake_score": self.fake_score,
            "domain": self.domain,
        }
        if self.faces is not None:
            row["no_face"] = self.no_face
            row["faces"] = [face.to_dict() for face in self.faces]
        return row


@dataclass(frozen=True)
class FaceTrack:
    """One person in a video: the faces the tracker followed through the sampled frames as one.

    A clip's score pools every frame (each frame's faces combined, by default its most-fake face); a
    track is one person's own. Among real people, a face-swapped one stands out as the track whose
    ``fake_score`` is high, and ``scores_over_time`` shows when.

    Attributes:
        track_id: The person's id, as each of their faces' `FaceScore.track_id`; from 0, in order of
            first appearance.
        fake_score: Their faces' scores aggregated over time by the clip's own frame aggregation
            (`deepfake_detector.aggregation.FrameAggregation`): for a clip with one person, exactly the
            clip's ``fake_score``.
        verdict: "real", "fake" or "uncertain": ``fake_score`` decided by the clip's rule (its video
            threshold, `Scorer.decide`), so a one-person clip's only track agrees with the clip. The
            model's verdict: the file's provenance is about the file, not about one person, and decides
            only the clip's. The clip's verdict is the one that counts; the tracks show whose faces
            drove it.
        threshold: As `VideoPrediction.threshold`, for the track's domain.
        uncertain_from: As `VideoPrediction.uncertain_from`.
        threshold_from: As `VideoPrediction.threshold_from`.
        domain: That of most of the track's faces ("face" where the checkpoint has no domain probe).
        scores_over_time: (timestamp_s, fake_score) of each sampled frame the person was found in, in
            time order.
    """

    track_id: int
    fake_score: float
    verdict: str
    threshold: float | None
    uncertain_from: float | None
    threshold_from: str | None
    domain: str | None
    scores_over_time: tuple[tuple[float, float], ...]

    @property
    def num_frames(self) -> int:
        """Sampled frames the person was found in."""
        return len(self.scores_over_time)

    @property
    def first_s(self) -> float:
        """When the person was first found (the time of that sampled frame, in seconds)."""
        return self.scores_over_time[0][0]

    @property
    def last_s(self) -> float:
        """When the person was last found."""
        return self.scores_over_time[-1][0]

    @property
    def max_fake_score(self) -> float:
        """Their most-fake frame's score."""
        return max(score for _, score in self.scores_over_time)

    def to_dict(self) -> dict:
        return {
            "track_id": self.track_id,
            "num_frames": self.num_frames,
            "first_s": self.first_s,
            "last_s": self.last_s,
            "fake_score": self.fake_score,
            "max_fake_score": self.max_fake_score,
            "verdict": self.verdict,
            "threshold": self.threshold,
            "uncertain_from": self.uncertain_from,
            "threshold_from": self.threshold_from,
            "domain": self.domain,
            "scores_over_time": [list(point) for point in self.scores_over_time],
        }


@dataclass(frozen=True)
class VideoPrediction:
    """The verdict on one video, from a sample of its frames.

    Attributes:
        source: The video's path as given.
        fake_score: The frames' scores aggregated by ``aggregation``. When faces were searched for and
            some frames have one, frames without a face are left out (they are counted in
            ``no_face_frames``); when no frame has a face, every frame is scored whole.
        verdict: "real", "fake" or "uncertain": ``fake_score`` against ``threshold``, the model's
            video threshold where it stores one (``threshold_from`` "video").
        model: The checkpoint id or folder that produced the score.
        revision: The checkpoint revision (hub commit) when known.
        frames: Every scored frame, in time order.
        aggregation: The frame strategy and its parameters, and the face strategy.
        duration_s: The video stream's duration as its header declares it (None when it declares none).
        rotation_deg: Counter-clockwise rotation applied to the frames from the file's display matrix.
        stopped_at_s: When decoding ended early (a truncated or corrupt stream): the time of the last
            frame decoded; the score is from the frames before it. None when the stream decoded fully.
        decode_problem: What went wrong while decoding, when something did; the rest still counts.
        error: Why the video could not be scored at all; when set, the score and verdict are None.
        decided_by: As `Prediction.decided_by`.
        provenance: As `Prediction.provenance`; for videos, the C2PA check of the file.
        domain: The clip's domain: that of most of the frames that decided its score (faces win a
            tie); None when the checkpoint has no domains.
        detector: As `Prediction.detector`, for the clip's domain.
        label: Deprecated, as `Prediction.label`: the class name of ``verdict`` (it used to be None).
        threshold: As `Prediction.threshold`: the clip's rule, "video" when the model stores a video
            threshold for the clip's domain, else its image threshold.
        uncertain_from: As `Prediction.uncertain_from`.
        threshold_from: As `Prediction.threshold_from`: "video", "image" or "caller".
        tracks: With faces: one record per person the tracker followed through the frames, in order
            of first appearance (`FaceTrack`); empty when no frame had a face. They explain the clip's
            score and leave it unchanged. None when faces were not searched for, or ``error`` is set.
    """

    source: str | int
    fake_score: float | None
    verdict: str | None
    model: str
    revision: str | None = None
    frames: tuple[FrameScore, ...] = ()
    aggregation: dict | None = None
    duration_s: float | None = None
    rotation_deg: int = 0
    stopped_at_s: float | None = None
    decode_problem: str | None = None
    error: str | None = None
    decided_by: str | None = None
    provenance: ProvenanceRecord | None = None
    domain: str | None = None
    detector: str | None = None
    label: str | None = None
    threshold: float | None = None
    uncertain_from: float | None = None
    threshold_from: str | None = None
    tracks: tuple[FaceTrack, ...] | None = None

    @classmethod
    def failed(
        cls,
        source: str | int,
        error: Exception | str,
        *,
        model: str,
        revision: str | None = None,
        aggregation: dict | None = None,
    ) -> VideoPrediction:
        """The error row of a video that could not be scored."""
        return cls(source, None, None, model, revision, aggregation=aggregation, error=str(error))

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def no_face_frames(self) -> int | None:
        """Scored frames in which no face was found; None when faces were not searched for."""
        if not self.frames or self.frames[0].faces is None:
            return None
        return sum(1 for frame in self.frames if frame.no_face)

    @property
    def no_face(self) -> bool | None:
        """True when faces were searched for and no frame had one."""
        missing = self.no_face_frames
        return None if missing is None else missing == len(self.frames)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "label": self.label,
            "fake_score": self.fake_score,
            "verdict": self.verdict,
            "model": self.model,
            "revision": self.revision,
            "error": self.error,
            "decided_by": self.decided_by,
            "domain": self.domain,
            "detector": self.detector,
            "threshold": self.threshold,
            "uncertain_from": self.uncertain_from,
            "threshold_from": self.threshold_from,
            "provenance": None if self.provenance is None else self.provenance.to_dict(),
            "kind": "video",
            "aggregation": self.aggregation,
            "duration_s": self.duration_s,
            "rotation_deg": self.rotation_deg,
            "num_frames": len(self.frames),
            "no_face_frames": self.no_face_frames,
            "no_face": self.no_face,
            "stopped_at_s": self.stopped_at_s,
            "decode_problem": self.decode_problem,
            "tracks": None if self.tracks is None else [track.to_dict() for track in self.tracks],
            "frames": [frame.to_dict() for frame in self.frames],
        }

    def provenance_columns(self) -> dict:
        """The CSV columns of ``provenance`` (`PROVENANCE_COLUMNS`)."""
        return _provenance_columns(self.provenance)

    def summary(self) -> dict:
        """The counts that CSV and table rows carry (`SUMMARY_FIELDS`)."""
        faces = None if self.no_face_frames is None else sum(len(frame.faces) for frame in self.frames)
        return {
            "num_faces": faces,
            "no_face": self.no_face,
            "num_frames": len(self.frames),
            "no_face_frames": self.no_face_frames,
        }
