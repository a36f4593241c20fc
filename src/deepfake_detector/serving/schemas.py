"""Response schemas of the REST API, for the OpenAPI document and response validation.

The records mirror the library's result types field for field (``Prediction.to_dict()``,
``Explanation.to_dict()``, ``ModelInfo.to_dict()``); ``tests/test_serving.py`` checks that they stay in
step. Records allow extra fields so that a field the library adds later (face boxes, say) reaches
clients before this file learns its name.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from deepfake_detector.serving.errors import ERROR_CODES

Verdict = Literal["real", "uncertain", "fake"]


class ErrorBody(BaseModel):
    code: str = Field(description="Stable error code: " + ", ".join(ERROR_CODES), examples=["queue_full"])
    message: str = Field(description="What was wrong and what is accepted, for people.")


class ErrorResponse(BaseModel):
    error: ErrorBody


_DOMAIN = Field(
    default=None,
    description="What the model saw: 'face' (a face the face head can judge) or 'general' (anything "
    "else), as the checkpoint's domain probe decided (a face found in face mode is a face whatever the "
    "checkpoint); null when the checkpoint can't tell domains.",
)
_DETECTOR = Field(
    default=None,
    description="Which head gave fake_score: 'face-head', 'general-head', or 'model' for a checkpoint "
    "with one head for everything; null for errors.",
)
_LABEL = Field(
    default=None,
    description="Deprecated, read `verdict`: the checkpoint's class name for the verdict ('Deepfake' for "
    "fake, 'Realism' for real, 'uncertain'); it used to be the top class at 0.5 and will be removed in "
    "the next release.",
)
_THRESHOLD = Field(
    default=None,
    ge=0.0,
    le=1.0,
    description="The fake threshold that decided this record: fake_score at or above it is 'fake'. Full "
    "precision; null for errors.",
)
_UNCERTAIN_FROM = Field(
    default=None,
    ge=0.0,
    le=1.0,
    description="With an uncertain band, its lower edge: scores from it up to `threshold` are "
    "'uncertain', below it 'real'; null without a band.",
)
_THRESHOLD_FROM = Field(
    default=None,
    description="Whose threshold: 'image' (the model's, of the record's domain), 'video' (the model's "
    "video threshold) or 'caller' (the server's --threshold/--uncertain-band); null for errors.",
)
ThresholdFrom = Literal["image", "video", "caller"]


class FaceRecord(BaseModel):
    """`FaceScore.to_dict()`: one face found and scored."""

    model_config = ConfigDict(extra="allow")

    box: list[int] = Field(
        description="[left, top, right, bottom] in image pixels; right and bottom exclusive."
    )
    crop_box: list[int] = Field(description="The square region that was scored.")
    detection_score: float | None = Field(description="The face detector's confidence, on its own scale.")
    label: str = Field(description="Deprecated, read `verdict`: the class name of the face's verdict.")
    fake_score: float = Field(ge=0.0, le=1.0)
    verdict: Verdict
    domain: str | None = _DOMAIN
    threshold: float | None = Field(
        default=None, ge=0.0, le=1.0, description="The fake threshold of this face's own verdict."
    )
    track_id: int | None = Field(
        default=None,
        ge=0,
        description="In a video, the person this face belongs to: the same id in every frame where "
        "the tracker follows them, the key of their record in `tracks`. Absent for images.",
    )


class FindingRecord(BaseModel):
    """`Finding.to_dict()`: one piece of provenance evidence."""

    check: Literal["c2pa", "metadata", "watermark", "provenance"]
    name: str = Field(
        description="What it is, e.g. c2pa_ai_generated, png_parameters, sd_watermark, c2pa_error."
    )
    detail: str = Field(description="The matched field quoted (cut to 300 characters), or what went wrong.")


class C2paRecord(BaseModel):
    """`C2paSummary.to_dict()`: the active C2PA manifest as c2pa-python validated it."""

    state: Literal["trusted", "valid", "invalid", "error"]
    claim_generator: str | None
    ai_generated: bool = Field(description="An assertion declares AI generation or compositing.")
    digital_source_type: str | None
    problems: list[str] = Field(description="Validation failure codes, or the read error.")


class ProvenanceRecordSchema(BaseModel):
    """`ProvenanceRecord.to_dict()`: what the file declares about its origin."""

    model_config = ConfigDict(extra="allow")

    ai_declared: bool | None = Field(
        description="True: a finding declares AI generation; false: provenance found, none declares it; "
        "null: nothing found, or nothing readable."
    )
    evidence: list[FindingRecord]
    c2pa: C2paRecord | None
    checks: list[str] = Field(description="The checks that ran on this input.")


_DECIDED_BY = Field(
    default=None,
    description="'provenance' when a valid C2PA AI declaration or the Stable Diffusion watermark set the "
    "verdict (then it is 'fake'), else 'model'; null for errors.",
)
_PROVENANCE = Field(default=None, description="Null when the server runs with the provenance stage off.")


class PredictionRecord(BaseModel):
    """One image's verdict: `Prediction.to_dict()` plus the error's stable code."""

    model_config = ConfigDict(extra="allow")

    source: str | int = Field(description="The uploaded file's name, else its position in the request.")
    label: str | None = _LABEL
    fake_score: float | None = Field(ge=0.0, le=1.0, description="Probability of the fake role.")
    verdict: Verdict | None = Field(
        description="fake_score against `threshold` (and `uncertain_from`), unless decided_by is "
        "'provenance'."
    )
    threshold: float | None = _THRESHOLD
    uncertain_from: float | None = _UNCERTAIN_FROM
    threshold_from: ThresholdFrom | None = _THRESHOLD_FROM
    model: str
    revision: str | None
    error: str | None = Field(description="Why this image could not be scored; then the scores are null.")
    error_code: Literal["invalid_image", "too_many_pixels"] | None = Field(
        default=None, description="Stable code of ``error``."
    )
    no_face: bool | None = Field(
        default=None, description="With faces=true: no face was found (scored whole)."
    )
    faces: list[FaceRecord] | None = Field(
        default=None, description="With faces=true: every face, largest first."
    )
    decided_by: Literal["model", "provenance"] | None = _DECIDED_BY
    domain: str | None = _DOMAIN
    detector: str | None = _DETECTOR
    provenance: ProvenanceRecordSchema | None = _PROVENANCE


class PredictResponse(BaseModel):
    predictions: list[PredictionRecord] = Field(description="One record per uploaded image, in order.")


class FrameRecord(BaseModel):
    """`FrameScore.to_dict()`: one sampled frame of a video."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="Position among the decoded frames (0-based).")
    timestamp_s: float
    fake_score: float = Field(ge=0.0, le=1.0)
    domain: str | None = Field(
        default=None, description="The frame's domain (of its deciding face, or of the whole frame)."
    )
    no_face: bool | None = None
    faces: list[FaceRecord] | None = None


class TrackRecord(BaseModel):
    """`FaceTrack.to_dict()`: one person followed through a video's sampled frames."""

    model_config = ConfigDict(extra="allow")

    track_id: int = Field(ge=0, description="The person's id, from 0 in order of first appearance.")
    num_frames: int = Field(ge=1, description="Sampled frames the person was found in.")
    first_s: float = Field(description="Time of the first of them, in seconds.")
    last_s: float = Field(description="Time of the last of them, in seconds.")
    fake_score: float = Field(
        ge=0.0,
        le=1.0,
        description="The person's frame scores aggregated like the clip's frames; for a clip with one "
        "person, the clip's fake_score.",
    )
    max_fake_score: float = Field(ge=0.0, le=1.0, description="Their most-fake frame's score.")
    verdict: Verdict = Field(
        description="The model's verdict on fake_score by the clip's rule (provenance decides only the "
        "clip's); the clip's verdict is the one that counts."
    )
    threshold: float | None = _THRESHOLD
    uncertain_from: float | None = _UNCERTAIN_FROM
    threshold_from: ThresholdFrom | None = _THRESHOLD_FROM
    domain: str | None = _DOMAIN
    scores_over_time: list[list[float]] = Field(
        description="[timestamp_s, fake_score] of each sampled frame the person was found in, in time order."
    )


class VideoPredictionRecord(BaseModel):
    """`VideoPrediction.to_dict()`: the video's verdict and its per-frame timeline."""

    model_config = ConfigDict(extra="allow")

    source: str | int = Field(description="The uploaded file's name.")
    label: str | None = _LABEL
    fake_score: float | None = Field(ge=0.0, le=1.0)
    verdict: Verdict | None = Field(
        description="fake_score against `threshold`: the model's video threshold where it stores one "
        "(threshold_from 'video'), else the image threshold of the clip's domain."
    )
    threshold: float | None = _THRESHOLD
    uncertain_from: float | None = _UNCERTAIN_FROM
    threshold_from: ThresholdFrom | None = _THRESHOLD_FROM
    model: str
    revision: str | None
    error: str | None
    kind: Literal["video"]
    aggregation: dict | None = Field(description="How frame scores became the video's, and the sampling.")
    duration_s: float | None
    rotation_deg: int
    num_frames: int
    no_face_frames: int | None
    no_face: bool | None
    stopped_at_s: float | None = Field(description="Set when the stream ended early (truncated or damaged).")
    decode_problem: str | None
    tracks: list[TrackRecord] | None = Field(
        default=None,
        description="With faces: one record per person followed through the frames, in order of first "
        "appearance; a face-swapped person among real ones stands out as one track. They leave the "
        "clip's score and verdict unchanged. Null without faces.",
    )
    frames: list[FrameRecord]
    decided_by: Literal["model", "provenance"] | None = _DECIDED_BY
    domain: str | None = Field(
        default=None,
        description="The clip's domain: that of most of the frames that decided its score (faces win "
        "a tie); null when the checkpoint can't tell domains.",
    )
    detector: str | None = _DETECTOR
    provenance: ProvenanceRecordSchema | None = _PROVENANCE


class ExplanationRecord(BaseModel):
    """`Explanation.to_dict()`: the verdict and where the heatmap peaks."""

    model_config = ConfigDict(extra="allow")

    source: str | int
    method: Literal["rollout", "gradcam"] = Field(description='The method used ("auto" resolved).')
    label: str | None = _LABEL
    fake_score: float | None = Field(ge=0.0, le=1.0)
    verdict: Verdict | None
    threshold: float | None = _THRESHOLD
    uncertain_from: float | None = _UNCERTAIN_FROM
    threshold_from: ThresholdFrom | None = _THRESHOLD_FROM
    decided_by: Literal["model", "provenance"] | None = _DECIDED_BY
    image_size: list[int] | None = Field(description="[width, height] of the heatmap and the image.")
    peak_xy: list[int] | None = Field(description="[x, y] pixel of the hottest point.")
    model: str
    revision: str | None
    error: str | None
    domain: str | None = _DOMAIN
    no_face: bool | None = Field(
        default=None, description="With faces: no face was found (the whole image was explained)."
    )
    faces: list[FaceRecord] | None = Field(
        default=None, description="With faces: every face, largest first; each crop has its own map."
    )


class ExplainResponse(BaseModel):
    explanation: ExplanationRecord
    overlay_png_base64: str = Field(description="The heatmap drawn over the image, a base64 PNG.")


class Thresholds(BaseModel):
    real: float = Field(ge=0.0, le=1.0, description="Scores below this are 'real'.")
    fake: float = Field(ge=0.0, le=1.0, description="Scores at or above this are 'fake'.")


class ModelResponse(BaseModel):
    """`ModelInfo.to_dict()` plus what identifies the exact weights and the server's limits."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(description="Checkpoint id or folder.")
    revision: str | None = Field(description="Hub commit, when loaded from the hub.")
    version: str = Field(description="Version of the deepfake-detector package serving it.")
    weights_sha256: str | None = Field(
        description="SHA-256 of the loaded PyTorch weights (names, dtypes, shapes, bytes); null for ONNX."
    )
    architecture: str
    id2label: dict[str, str]
    roles: dict[str, list[str]] = Field(description="Which labels count as real and which as fake.")
    thresholds: Thresholds
    temperature: float
    preprocessing: dict
    num_parameters: int
    device: str
    faces: dict | None = Field(
        default=None,
        description="The face crops the checkpoint was trained on (detector, margin_ratio): face mode is "
        "then the default of predict and explain; null: whole images.",
    )
    domains: list[str] | None = Field(
        default=None,
        description="The domains the model tells apart (face first), each with its own head; null: one "
        "head for every image.",
    )
    domain_thresholds: dict[str, Thresholds] | None = Field(
        default=None,
        description="Each domain's thresholds, which decide the verdicts of its images instead of "
        "`thresholds`; null when the model has no domains or a caller's threshold replaced them.",
    )
    video_thresholds: Thresholds | None = Field(
        default=None,
        description="The model's video thresholds: they decide a video clip's verdict (of a domain "
        "without its own in `video_domain_thresholds`) instead of the image ones; null when the model "
        "stores none or a caller's threshold replaced them.",
    )
    video_domain_thresholds: dict[str, Thresholds] | None = Field(
        default=None,
        description="Each domain's own video thresholds, for clips of that domain; null when there are none.",
    )
    features: dict[str, bool] = Field(description="Which of explain, faces and video this server can do.")
    limits: dict = Field(description="The server's limits (bytes, pixels, images, seconds).")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    queue_depth: int = Field(description="Images waiting for the model.")
    in_flight_requests: int


class StatsResponse(BaseModel):
    """Counters since start-up, to watch batching and load."""

    batches: int = Field(description="Model calls made for /v1/predict.")
    images: int = Field(description="Images scored in those calls.")
    batch_size_histogram: dict[str, int] = Field(description="Images per model call -> number of calls.")
    queue_depth: int
    in_flight_requests: int
    rejected_queue_full: int
    timeouts: int
    max_batch_size: int
    max_batch_wait_ms: float


def error_responses(*codes: str) -> dict[int, dict]:
    """The ``responses=`` entry documenting these error codes, grouped by status."""
    by_status: dict[int, list[str]] = {}
    for code in codes:
        by_status.setdefault(ERROR_CODES[code][0], []).append(code)
    return {
        status: {
            "model": ErrorResponse,
            "description": "; ".join(f"`{code}`: {ERROR_CODES[code][1]}" for code in names),
        }
        for status, names in sorted(by_status.items())
    }
