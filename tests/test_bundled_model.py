"""The model shipped inside the package: found without network, the default of the library and every
command, calibrated, small, and loaded by the transformers pipeline like any checkpoint."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.errors import CheckpointError
from deepfake_detector.modeling import checkpoints
from deepfake_detector.modeling.checkpoints import (
    BUNDLED_MODELS,
    DEFAULT_MODEL,
    bundled_model_folder,
    resolve_checkpoint,
)
from deepfake_detector.stored_settings import SETTINGS_KEY

from .conftest import SEED_LABELS, jpeg_bytes

MAX_WEIGHTS_BYTES = 25 * 1024 * 1024


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Any attempt to fetch from the hub fails the test: the bundled model must come from the package."""

    def no_download(*args, **kwargs):
        raise AssertionError(f"tried to download {args[0]!r}; the bundled model needs no network")

    monkeypatch.setattr(checkpoints, "_download", no_download)


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_every_bundled_model_is_complete_and_small(name):
    folder = bundled_model_folder(name)
    weights = "head.safetensors" if name.startswith("clip-") else "model.safetensors"
    for member in ("config.json", "preprocessor_config.json", weights, "README.md"):
        assert (folder / member).is_file(), member
    assert not list(folder.glob("*.bin")), "a bundled model must not carry pickle weights"
    assert (folder / weights).stat().st_size <= MAX_WEIGHTS_BYTES
    checkpoint = resolve_checkpoint(name)
    assert checkpoint.revision is None
    assert (checkpoint.folder / "model.safetensors").is_file()


def test_the_default_ships_only_its_head_and_is_assembled_in_the_cache():
    from deepfake_detector.modeling.clip_backbone import backbone_folder, cache_root

    shipped = bundled_model_folder(DEFAULT_MODEL)
    assert not (shipped / "model.safetensors").exists()
    assert (shipped / "head.safetensors").stat().st_size < 1024 * 1024  # the head, not the backbone
    assembled = resolve_checkpoint(DEFAULT_MODEL).folder
    assert assembled.parent == cache_root() / "models"
    assert backbone_folder().is_dir()


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_no_shipped_file_holds_a_machine_path(name):
    for member in bundled_model_folder(name).iterdir():
        if member.suffix in (".json", ".yaml", ".md"):
            text = member.read_text()
            for root in ("/work/", "/home/", "/root/", "/tmp/", "/Users/"):
                assert root not in text, f"{member.name} holds a path under {root}"


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_every_bundled_model_is_calibrated_on_a_validation_split(name):
    config = json.loads((bundled_model_folder(name) / "config.json").read_text())
    assert config["id2label"] == {"0": "Realism", "1": "Deepfake"}
    stored = config[SETTINGS_KEY]
    assert stored["fitted_on"]["split"] == "val"
    assert 0.0 < stored["thresholds"]["fake"] < 1.0


def test_from_pretrained_without_arguments_loads_it_offline():
    detector = Detector.from_pretrained()
    assert detector.model_id == DEFAULT_MODEL
    prediction = detector.predict(jpeg_bytes(96, 128, seed=1))
    assert prediction.ok and 0.0 <= prediction.fake_score <= 1.0
    assert prediction.model == DEFAULT_MODEL


def test_predict_uses_it_when_no_model_is_named(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(jpeg_bytes(120, 160, seed=5))
    assert main(["predict", str(photo), "--format", "json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["model"] == DEFAULT_MODEL and row["error"] is None
    assert row["verdict"] in ("real", "fake")


def test_a_bundled_model_has_no_hub_revisions():
    with pytest.raises(CheckpointError, match="bundled with the package"):
        resolve_checkpoint(DEFAULT_MODEL, revision="main")


def test_an_unknown_bundled_name_is_refused_with_the_known_ones():
    with pytest.raises(CheckpointError, match=f"bundled: {DEFAULT_MODEL}"):
        bundled_model_folder("compact-v0")


def test_the_transformers_pipeline_runs_it():
    from transformers import pipeline

    from deepfake_detector.modeling.clip_detector import register_auto_classes

    register_auto_classes()
    classifier = pipeline("image-classification", model=str(resolve_checkpoint(DEFAULT_MODEL).folder))
    scores = classifier(Image.open(io.BytesIO(jpeg_bytes(64, 64, seed=2))), top_k=None)
    assert {entry["label"] for entry in scores} == set(SEED_LABELS.values())


def test_the_default_says_what_it_saw_a_face_or_a_general_image(tmp_path):
    """The default knows its domain: scikit-image's astronaut portrait is a face, its rocket launch
    photo (no face) is a general image, judged by the general head, never by the face head."""
    from skimage import data

    detector = Detector.from_pretrained(DEFAULT_MODEL)
    portrait, rocket = detector.predict([data.astronaut(), data.rocket()])
    assert (portrait.domain, portrait.detector) == ("face", "face-head")
    assert (rocket.domain, rocket.detector) == ("general", "general-head")
    general = detector.calibration.thresholds_for("general")
    assert rocket.verdict == ("fake" if rocket.fake_score >= general.fake else "real")


def test_the_default_decides_face_clips_by_its_video_threshold():
    """Its video threshold, fitted on the val half of the FF++ dev clips (benchmarks/video_threshold.py),
    is read with the rest of the calibration and decides face clips; general clips keep their image
    rule, as the threshold was fitted on face clips only."""
    from deepfake_detector.scan_report.settings import load_stored_calibration

    calibration = load_stored_calibration(DEFAULT_MODEL)
    face = calibration.rule_for("face", video=True)
    assert face.origin == "video" and 0.0 < face.thresholds.fake < calibration.thresholds_for("face").fake
    assert calibration.rule_for("face").origin == "image"  # images keep theirs
    assert calibration.rule_for("general", video=True).origin == "image"
    fitted_on = json.loads((bundled_model_folder(DEFAULT_MODEL) / "config.json").read_text())[SETTINGS_KEY]
    fitted_on = fitted_on["video"]["fitted_on"]
    assert fitted_on["split"].startswith("val") and fitted_on["scored_with"]["faces"] is True
