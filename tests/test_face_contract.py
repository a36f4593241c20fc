"""One face contract: the same video (and image) scored through the CLI, `Detector`, HTTP and the Ray
driver's preflight uses the same face mode, for a checkpoint without face settings and for one trained
on face crops; flags override only what they name."""

from __future__ import annotations

import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.faces.crops import FaceOptions, FaceOverrides, resolve_face_options
from deepfake_detector.stored_settings import load_checkpoint_settings
from deepfake_detector.video.decode import FrameSampling

from .media import picture_with_faces, write_video

pytest.importorskip("av", reason="the video extra is not installed")
pytest.importorskip("dlib", reason="the faces extra is not installed")

STORED = {"detector": "dlib-hog", "margin_ratio": 1.6}


@pytest.fixture(scope="module")
def checkpoints(seed_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """The tiny seed ViT as it is (no face settings), and a copy whose config says it was trained on
    face crops with a margin other than the library's default."""
    root = tmp_path_factory.mktemp("checkpoints")
    plain = Path(shutil.copytree(seed_checkpoint, root / "plain"))
    face = Path(shutil.copytree(seed_checkpoint, root / "face"))
    config = json.loads((face / "config.json").read_text())
    config["deepfake_detector"] = {"faces": STORED}
    (face / "config.json").write_text(json.dumps(config))
    return {"plain": plain, "face": face}


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    frames = [picture_with_faces(320, 240, [(30 + 4 * index, 20, 180)], seed=index)[0] for index in range(6)]
    return write_video(tmp_path_factory.mktemp("video") / "clip.mp4", frames, fps=10)


def _cli_row(checkpoint: Path, clip: Path, *flags: str) -> dict:
    buffer = io.StringIO()
    with redirect_stdout(buffer):
        code = main(
            [
                "predict",
                str(clip),
                "--model",
                str(checkpoint),
                "--frames",
                "3",
                "--format",
                "json",
                "-q",
                *flags,
            ]
        )
    assert code == 0
    (row,) = json.loads(buffer.getvalue())
    return row


def _http_record(detector: Detector, clip: Path, **form: str) -> dict:
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    httpx = pytest.importorskip("httpx", reason="the dev extra is not installed")
    from deepfake_detector.serving.app import build_app

    from .serving_helpers import running_server

    with running_server(build_app(detector)) as url:
        response = httpx.post(
            f"{url}/v1/predict/video",
            files={"video": ("clip.mp4", clip.read_bytes(), "video/mp4")},
            data={"num_frames": "3", **form},
            timeout=120,
        )
    assert response.status_code == 200, response.text
    return response.json()


def _face_mode(row: dict) -> bool:
    """Whether a video row was scored on face crops (its frames carry ``faces``)."""
    return all(frame.get("faces") is not None for frame in row["frames"])


@pytest.mark.parametrize(("kind", "faces_expected"), [("plain", False), ("face", True)])
def test_cli_detector_and_http_score_a_video_in_the_same_face_mode(checkpoints, clip, kind, faces_expected):
    checkpoint = checkpoints[kind]
    detector = Detector.from_pretrained(checkpoint, device="cpu")
    library = detector.predict_video(clip, sampling=FrameSampling(num_frames=3)).to_dict()
    cli = _cli_row(checkpoint, clip)
    http = _http_record(detector, clip)
    assert _face_mode(library) is _face_mode(cli) is _face_mode(http) is faces_expected
    assert cli["fake_score"] == pytest.approx(library["fake_score"], abs=1e-6)
    assert http["fake_score"] == pytest.approx(library["fake_score"], abs=1e-6)
    if faces_expected:  # the checkpoint's own margin, not the library's default, everywhere
        crop = library["frames"][0]["faces"][0]["crop_box"]
        assert cli["frames"][0]["faces"][0]["crop_box"] == crop == http["frames"][0]["faces"][0]["crop_box"]
        default = detector.predict_video(
            clip, faces=FaceOptions(), sampling=FrameSampling(num_frames=3)
        ).to_dict()
        assert default["frames"][0]["faces"][0]["crop_box"] != crop
    # Asking explicitly gives the other mode everywhere, too.
    flag, form, choice = ("--no-faces", "false", False) if faces_expected else ("--faces", "true", True)
    other = detector.predict_video(clip, faces=choice, sampling=FrameSampling(num_frames=3)).to_dict()
    assert _face_mode(other) is _face_mode(_cli_row(checkpoint, clip, flag)) is not faces_expected
    assert _face_mode(_http_record(detector, clip, faces=form)) is not faces_expected


@pytest.mark.parametrize("kind", ["plain", "face"])
def test_iter_predict_and_predict_follow_the_checkpoint_like_videos(checkpoints, clip, kind):
    detector = Detector.from_pretrained(checkpoints[kind], device="cpu")
    image, _ = picture_with_faces(320, 240, [(40, 20, 180)])
    (lazy,) = detector.iter_predict([image])
    eager = detector.predict(image)
    assert (lazy.faces is not None) is (eager.faces is not None) is (kind == "face")
    assert lazy.fake_score == pytest.approx(eager.fake_score, abs=1e-6)


def test_the_ray_driver_reads_face_settings_from_the_config_alone(checkpoints, monkeypatch):
    # No weights are loaded: a model class that can't be built proves it.
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("the driver loaded the model just to read its face settings")

    monkeypatch.setattr(transformers.AutoModelForImageClassification, "from_pretrained", refuse)
    assert load_checkpoint_settings(checkpoints["plain"]).faces is None
    assert load_checkpoint_settings(checkpoints["face"]).faces == FaceOptions(**STORED)


def test_overrides_replace_only_what_they_name():
    stored = FaceOptions(detector="dlib-hog", margin_ratio=1.6, detector_options={"upsample": 0})
    assert resolve_face_options(None, None) is None
    assert resolve_face_options(None, stored) == stored
    assert resolve_face_options(False, stored) is None
    assert resolve_face_options(True, None) == FaceOptions()
    assert resolve_face_options(FaceOverrides(margin_ratio=2.0), None) is None  # no face mode to tune
    tuned = resolve_face_options(FaceOverrides(margin_ratio=2.0, strategy="mean"), stored)
    assert (tuned.detector, tuned.margin_ratio, tuned.aggregation.strategy) == ("dlib-hog", 2.0, "mean")
    assert tuned.detector_options == {"upsample": 0}
    switched = resolve_face_options(FaceOverrides(detector="opencv-haar"), stored)
    assert switched.detector == "opencv-haar" and switched.detector_options == {}
    assert switched.margin_ratio == 1.6
    explicit = FaceOptions(margin_ratio=1.1)
    assert resolve_face_options(explicit, stored) is explicit


def test_faces_switched_off_at_load_keep_the_checkpoints_settings_for_a_call_that_asks(checkpoints):
    """Face mode off at load (``faces=False``, ``serve --no-faces``) is a default, not a loss: a call
    that asks for faces crops with the checkpoint's detector and margin (1.6), not the library's (1.3)."""
    image, _ = picture_with_faces(320, 240, [(40, 20, 180)])
    trained = Detector.from_pretrained(checkpoints["face"], device="cpu").predict(image)
    off = Detector.from_pretrained(checkpoints["face"], device="cpu", faces=False)
    assert off.predict(image).faces is None
    asked = off.predict(image, faces=True)
    assert asked.faces[0].crop_box == trained.faces[0].crop_box
    library_default = off.predict(image, faces=FaceOptions())
    assert library_default.faces[0].crop_box != trained.faces[0].crop_box  # the margin makes a difference


def test_serve_no_faces_then_a_request_for_faces_uses_the_checkpoints_face_settings(checkpoints, tmp_path):
    """The same through a real ``serve --no-faces`` process: uploads are scored whole unless a request
    says ``faces=true``, and then with the checkpoint's margin."""
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    httpx = pytest.importorskip("httpx", reason="the dev extra is not installed")
    from .serving_helpers import served_process

    image, _ = picture_with_faces(320, 240, [(40, 20, 180)])
    image.save(tmp_path / "face.png")
    upload = ("images", ("face.png", (tmp_path / "face.png").read_bytes(), "image/png"))
    trained = Detector.from_pretrained(checkpoints["face"], device="cpu").predict(tmp_path / "face.png")
    with served_process(checkpoints["face"], "--no-faces") as (url, _):
        whole = httpx.post(f"{url}/v1/predict", files=[upload], timeout=120)
        asked = httpx.post(f"{url}/v1/predict", files=[upload], data={"faces": "true"}, timeout=120)
    assert whole.status_code == asked.status_code == 200, (whole.text, asked.text)
    (whole,), (asked,) = whole.json()["predictions"], asked.json()["predictions"]
    assert whole.get("faces") is None
    assert asked["faces"][0]["crop_box"] == list(trained.faces[0].crop_box)
