"""Training on face crops: the crop is the one inference cuts, the setting travels in config.json, and
predict / evaluate / explain / calibrate on the trained model use face mode by default (flags win)."""

from __future__ import annotations

import csv
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_detector import Detector, FaceOptions
from deepfake_detector.cli.main import main
from deepfake_detector.data import LabelledImage
from deepfake_detector.faces.crops import cut_faces
from deepfake_detector.stored_settings import StoredSettings, load_settings
from deepfake_detector.training import ConfigError, FaceCropConfig, load_train_config
from deepfake_detector.training.dataset import ImageClassificationDataset, find_face_crops

from .conftest import SEED_LABELS, build_tiny_vit
from .media import background, picture_with_faces

pytest.importorskip("dlib", reason="face crops need the 'faces' extra")

QUICK = [
    "training.max_steps=2",
    "training.per_device_train_batch_size=4",
    "training.per_device_eval_batch_size=8",
    "data.val_fraction=0.25",
    "data.test_fraction=0.0",
    "tensorboard=false",
    "keep_checkpoints=false",
]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny ViT whose config.json carries a calibration, as a calibrated seed model's would."""
    folder = build_tiny_vit(tmp_path_factory.mktemp("calibrated-base"), SEED_LABELS)
    config = json.loads((folder / "config.json").read_text())
    config["deepfake_detector"] = {"temperature": 3.0, "thresholds": {"real": 0.9, "fake": 0.9}}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def face_data(tmp_path_factory) -> Path:
    """Drawn faces at varied places (fakes with a bright cheek patch), and one photo with no face."""
    root = tmp_path_factory.mktemp("face-data")
    for role in ("real", "fake"):
        (root / role).mkdir()
        for index in range(6):
            image, _ = picture_with_faces(220, 180, [(8 + 9 * index, 6 + 3 * index, 150)], seed=index)
            if role == "fake":
                pixels = np.asarray(image).copy()
                pixels[110:125, 50 + 9 * index : 65 + 9 * index] = 255
                image = Image.fromarray(pixels)
            image.save(root / role / f"{index}.png")
    background(220, 180, seed=9).save(root / "real" / "scenery.png")
    return root


@pytest.fixture(scope="module")
def face_model(base, face_data, tmp_path_factory) -> tuple[Path, logging.LogRecord]:
    output = tmp_path_factory.mktemp("face-run") / "model"
    sets = [item for setting in [*QUICK, "data.split_seed=1"] for item in ("--set", setting)]
    argv = ["train", "--data", str(face_data), "--output-dir", str(output), "--set", f"model.base={base}"]
    handler, logger = _Collect(), logging.getLogger("deepfake_detector.training.trainer")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        assert main([*argv, "--faces", *sets]) == 0
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return output, handler.messages


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_training_writes_the_face_setting_and_counts_images_without_a_face(face_model):
    output, messages = face_model
    config = json.loads((output / "config.json").read_text())
    # Written afresh: the base's calibration does not hold for the new weights (the identity here).
    stored = StoredSettings(faces=FaceOptions(detector="dlib-hog", margin_ratio=1.3))
    assert StoredSettings.from_config(config) == stored
    assert config["deepfake_detector"]["faces"] == {"detector": "dlib-hog", "margin_ratio": 1.3}
    run = json.loads((output / "training_run.json").read_text())
    counts = run["data"]
    assert counts["train"]["no_face"] + counts["eval"]["no_face"] == run["result"]["no_face_images"] == 1
    paths = counts["train"]["no_face_paths"] + counts["eval"]["no_face_paths"]
    assert [Path(path).name for path in paths] == ["scenery.png"]
    face_logs = [message for message in messages if message.startswith("face crops (dlib-hog, margin 1.3)")]
    assert len(face_logs) == 2  # training and validation
    assert sum(int(message.split("; ")[1].split()[0]) for message in face_logs) == 1
    assert "without a face are used whole" in face_logs[0]
    assert "face crops (dlib-hog, margin 1.3" in (output / "README.md").read_text()
    resolved = (output / "training_config.yaml").read_text()
    assert "faces:\n  enabled: true\n  detector: dlib-hog\n  margin_ratio: 1.3" in resolved


def test_a_run_without_faces_stores_no_face_setting_and_drops_the_base_calibration(base, face_data, tmp_path):
    argv = ["train", "--data", str(face_data), "--output-dir", str(tmp_path), "--set", f"model.base={base}"]
    assert main([*argv, *[item for setting in QUICK for item in ("--set", setting)]]) == 0
    assert load_settings(tmp_path) == StoredSettings()  # nothing of the base's: the identity, no faces
    detector = Detector.from_pretrained(tmp_path, device="cpu")
    assert detector.face_options is None and detector.calibration.temperature == 1.0
    assert detector.predict(face_data / "real" / "0.png").faces is None  # whole images, as trained


def test_the_training_crop_is_the_crop_predict_scores(face_model, face_data):
    output, _ = face_model
    detector = Detector.from_pretrained(output, device="cpu")
    records = [LabelledImage(str(face_data / "fake" / "3.png"), "fake")]
    options = detector.face_options
    scan = find_face_crops(records, options.build_detector(), options)
    prediction = detector.predict(records[0].path)  # face mode: the checkpoint's default
    assert scan.crop_boxes == [prediction.faces[0].crop_box] and scan.no_face == []

    dataset = ImageClassificationDataset(
        records, detector.processor, {"real": 0, "fake": 1}, crop_boxes=scan.crop_boxes
    )
    with Image.open(records[0].path) as image:
        inference_crop = cut_faces(options.build_detector(), image, options).images[0]
    expected = detector.processor(images=inference_crop, return_tensors="pt")["pixel_values"][0]
    assert torch.equal(dataset[0]["pixel_values"], expected)
    # And the model's score of that training input is the face's score in predict.
    logits = detector.compute_logits([inference_crop])
    probabilities = torch.softmax(torch.from_numpy(logits), dim=-1)[0]
    assert prediction.faces[0].fake_score == pytest.approx(float(probabilities[1]), abs=1e-6)


def test_detector_and_predict_default_to_the_trained_face_mode_and_flags_win(face_model, face_data, capsys):
    output, _ = face_model
    detector = Detector.from_pretrained(output, device="cpu")
    assert detector.face_options == FaceOptions(detector="dlib-hog", margin_ratio=1.3)
    assert detector.info().to_dict()["faces"] == {"detector": "dlib-hog", "margin_ratio": 1.3}
    path = face_data / "real" / "2.png"
    assert len(detector.predict(path).faces) == 1
    assert detector.predict(path, faces=False).faces is None
    assert detector.predict(face_data / "real" / "scenery.png").no_face is True

    def rows(*flags: str) -> list[dict]:
        assert main(["predict", str(path), "--model", str(output), "--format", "json", "-q", *flags]) == 0
        return json.loads(capsys.readouterr().out)

    (default,) = rows()
    assert default["faces"][0]["crop_box"] == list(detector.predict(path).faces[0].crop_box)
    assert "faces" not in rows("--no-faces")[0]
    (wider,) = rows("--face-margin", "1.6")
    wide_box, default_box = wider["faces"][0]["crop_box"], default["faces"][0]["crop_box"]
    assert wide_box[2] - wide_box[0] > default_box[2] - default_box[0]
    assert main(["info", "--model", str(output)]) == 0 and "dlib-hog" in capsys.readouterr().out


def test_evaluate_defaults_to_the_trained_face_mode(face_model, face_data, tmp_path, capsys):
    output, _ = face_model
    detector = Detector.from_pretrained(output, device="cpu")
    argv = ["evaluate", "--model", str(output), "--data", str(face_data), "--split", "all"]
    argv += ["--bootstrap", "0"]

    def scores(out: Path, *flags: str) -> dict[str, float]:
        assert main([*argv, "--out", str(out), *flags]) == 0
        with open(out / "predictions.csv", encoding="utf-8") as handle:
            return {row["path"]: float(row["fake_score"]) for row in csv.DictReader(handle)}

    faces = scores(tmp_path / "faces")
    assert "face crops: dlib-hog, margin 1.3" in capsys.readouterr().out
    whole = scores(tmp_path / "whole", "--no-faces")
    path = face_data / "fake" / "1.png"
    assert faces[str(path)] != whole[str(path)]
    assert faces[str(path)] == pytest.approx(detector.predict(path).fake_score, abs=1e-6)
    assert whole[str(path)] == pytest.approx(detector.predict(path, faces=False).fake_score, abs=1e-6)


def test_calibrate_keeps_the_face_setting_and_fits_on_face_crops(face_model, face_data, tmp_path, capsys):
    output, _ = face_model
    calibrated = tmp_path / "calibrated"
    argv = ["calibrate", "--model", str(output), "--data", str(face_data), "--split", "all"]
    assert main([*argv, "--output-model", str(calibrated)]) == 0
    stored = json.loads((calibrated / "config.json").read_text())["deepfake_detector"]
    assert stored["faces"] == {"detector": "dlib-hog", "margin_ratio": 1.3} and "temperature" in stored
    assert Detector.from_pretrained(calibrated, device="cpu").face_options is not None


def test_explain_defaults_to_the_trained_face_mode(face_model, face_data):
    output, _ = face_model
    detector = Detector.from_pretrained(output, device="cpu")
    explanation = detector.explain(face_data / "real" / "4.png")
    assert explanation.ok and len(explanation.faces) == 1
    assert detector.explain(face_data / "real" / "4.png", faces=False).faces is None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["faces.detector=mtcnn"], "faces.detector must be one of dlib-hog, dlib-cnn, opencv-haar"),
        (["faces.margin_ratio=0.9"], r"faces.margin_ratio must be at least 1\.0"),
        (["faces.enabled=maybe"], "faces.enabled must be true or false"),
        (["faces.marginratio=2"], "unknown config key faces.'marginratio'"),
    ],
)
def test_face_config_errors_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config(None, ["model.base=b", *overrides])


def test_face_config_defaults_off_and_shorthand():
    assert load_train_config(None, ["model.base=b"]).faces == FaceCropConfig()
    assert FaceCropConfig().options() is None
    config = load_train_config(None, ["model.base=b", "faces=true"])
    assert config.faces.enabled and config.faces.options() == FaceOptions()
    config = load_train_config(None, ["model.base=b", "faces.enabled=true", "faces.margin_ratio=1.5"])
    assert config.faces.options() == FaceOptions(margin_ratio=1.5)


def test_a_checkpoint_with_bad_face_settings_is_refused(tmp_path):
    from deepfake_detector.errors import CheckpointError

    folder = build_tiny_vit(tmp_path / "bad", SEED_LABELS)
    config = json.loads((folder / "config.json").read_text())
    config["deepfake_detector"] = {"faces": {"detector": "mtcnn"}}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"deepfake_detector\.faces .* unknown face detector 'mtcnn'"):
        Detector.from_pretrained(folder, device="cpu")
    shutil.rmtree(folder)
