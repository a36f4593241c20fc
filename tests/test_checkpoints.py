"""Loading checkpoints: local folders, aliases, safetensors only, clear offline errors."""

from __future__ import annotations

import json
import shutil

import pytest

from deepfake_detector import Detector
from deepfake_detector.errors import CheckpointError, LabelMappingError
from deepfake_detector.modeling.checkpoints import MODEL_ALIASES, SEED_MODEL_ID, resolve_checkpoint

from .conftest import build_tiny_vit


@pytest.fixture
def pickle_only_checkpoint(tmp_path, seed_checkpoint):
    """The same tiny model with its weights re-saved as pytorch_model.bin only."""
    import torch
    from safetensors.torch import load_file

    folder = tmp_path / "pickle-only"
    shutil.copytree(seed_checkpoint, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """No network and an empty cache, as on a machine that can't reach the hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))


def test_local_folder_loads_with_its_labels_and_no_revision(seed_checkpoint):
    detector = Detector.from_pretrained(seed_checkpoint, device="cpu")
    assert detector.model_id == str(seed_checkpoint)
    assert detector.revision is None
    assert detector.roles.fake_ids == (1,)
    info = detector.info().to_dict()
    assert info["roles"] == {"real": ["Realism"], "fake": ["Deepfake"]}
    assert info["preprocessing"]["size"] == {"height": 30, "width": 30}
    assert info["num_parameters"] == sum(p.numel() for p in detector.model.parameters()) > 0


def test_pickle_only_checkpoint_is_refused_unless_opted_in(
    pickle_only_checkpoint, seed_checkpoint, varied_images
):
    with pytest.raises(CheckpointError, match=r"only pickle weights.*arbitrary code.*allow_pickle"):
        Detector.from_pretrained(pickle_only_checkpoint)
    trusted = Detector.from_pretrained(pickle_only_checkpoint, allow_pickle=True, device="cpu")
    reference = Detector.from_pretrained(seed_checkpoint, device="cpu")
    path = str(varied_images[0])
    assert trusted.predict(path).fake_score == pytest.approx(reference.predict(path).fake_score, abs=1e-7)


def test_checkpoint_without_image_processor_is_refused(tmp_path, seed_checkpoint):
    folder = tmp_path / "no-processor"
    shutil.copytree(seed_checkpoint, folder)
    (folder / "preprocessor_config.json").unlink()
    with pytest.raises(CheckpointError, match=r"preprocessor_config\.json"):
        Detector.from_pretrained(folder)


def test_unmappable_checkpoint_labels_are_refused(tmp_path):
    folder = build_tiny_vit(tmp_path / "generic", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(LabelMappingError, match="LABEL_0"):
        Detector.from_pretrained(folder)


def test_missing_local_folder_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(str(tmp_path / "nowhere" / "model"))


def test_offline_hub_gives_one_line_error_naming_the_local_folder_fix(offline_hub):
    assert MODEL_ALIASES["seed-v2"] == SEED_MODEL_ID
    with pytest.raises(CheckpointError) as caught:
        Detector.from_pretrained("seed-v2")
    message = str(caught.value)
    assert "\n" not in message
    assert SEED_MODEL_ID in message and "unreachable" in message and "--model FOLDER" in message


def test_thresholds_and_temperature_stored_in_the_config_are_used(tmp_path, seed_checkpoint, varied_images):
    folder = tmp_path / "calibrated"
    shutil.copytree(seed_checkpoint, folder)
    config = json.loads((folder / "config.json").read_text())
    config["deepfake_detector"] = {"temperature": 2.0, "thresholds": {"real": 0.2, "fake": 0.9}}
    (folder / "config.json").write_text(json.dumps(config))
    calibrated = Detector.from_pretrained(folder, device="cpu")
    plain = Detector.from_pretrained(seed_checkpoint, device="cpu")
    assert calibrated.thresholds.to_dict() == {"real": 0.2, "fake": 0.9}
    paths = [str(path) for path in varied_images]
    for ours, base in zip(calibrated.predict(paths), plain.predict(paths), strict=True):
        # Temperature 2 pulls every score towards 0.5 without changing which class wins.
        assert abs(ours.fake_score - 0.5) < abs(base.fake_score - 0.5)
        assert (ours.fake_score >= 0.5) == (base.fake_score >= 0.5)
        expected = "fake" if ours.fake_score >= 0.9 else "real" if ours.fake_score < 0.2 else "uncertain"
        assert ours.verdict == expected
        assert ours.label == {"fake": "Deepfake", "real": "Realism", "uncertain": "uncertain"}[expected]
        assert (ours.threshold, ours.uncertain_from, ours.threshold_from) == (0.9, 0.2, "image")
