"""What a checkpoint stores is one typed record (`StoredSettings`): today's files read back unchanged,
old checkpoints score as before, and every writer (calibrate, video thresholds, train-head) goes through
it with one threshold rule that it records."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from deepfake_detector import Detector
from deepfake_detector.data.labelled import load_labelled_images
from deepfake_detector.errors import CheckpointError
from deepfake_detector.evaluation.calibration import (
    MIN_THRESHOLD,
    THRESHOLD_RULE,
    calibrate,
    compute_threshold,
    compute_threshold_at_fpr,
    save_calibration,
    save_video_thresholds,
)
from deepfake_detector.faces.crops import FaceOptions
from deepfake_detector.io.images import load_image
from deepfake_detector.modeling.checkpoints import BUNDLED_MODELS, bundled_model_folder
from deepfake_detector.scoring import Thresholds, compute_probabilities
from deepfake_detector.stored_settings import (
    SETTINGS_KEY,
    SettingsError,
    StoredSettings,
    load_settings,
    save_settings,
)

from .conftest import jpeg_bytes

# A block as the previous release wrote it (no ``format`` key): what a user's calibrated checkpoint holds.
OLD_BLOCK = {
    "temperature": 1.7,
    "thresholds": {"real": 0.3, "fake": 0.6},
    "fitted_on": {"data": "faces/manifest.csv", "split": "val", "images": 40, "target_fpr": 0.05},
    "faces": {"detector": "dlib-hog", "margin_ratio": 1.6},
    "video": {"thresholds": {"real": 0.55, "fake": 0.55}, "fitted_on": {"clips": 20}},
    "future_key": {"kept": True},
}


def _with_block(checkpoint: Path, folder: Path, block: dict | None) -> Path:
    copy = Path(shutil.copytree(checkpoint, folder))
    config = json.loads((copy / "config.json").read_text())
    if block is None:
        config.pop(SETTINGS_KEY, None)
    else:
        config[SETTINGS_KEY] = block
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize("name", BUNDLED_MODELS)
def test_every_bundled_models_settings_read_and_write_back_unchanged(name):
    block = json.loads((bundled_model_folder(name) / "config.json").read_text())[SETTINGS_KEY]
    written = StoredSettings.from_config({SETTINGS_KEY: block}).to_dict()
    assert written.pop("format") == 1
    assert written == block


def test_an_old_checkpoint_scores_as_before_and_after_a_rewrite(seed_checkpoint, tmp_path):
    old = _with_block(seed_checkpoint, tmp_path / "old", OLD_BLOCK)
    images = [jpeg_bytes(48, 40, seed=seed) for seed in range(6)]
    detector = Detector.from_pretrained(old, device="cpu", precision="fp32", faces=False)
    # By hand, from the model's own logits: the stored temperature and thresholds, nothing else.
    probabilities = compute_probabilities(detector.compute_logits([load_image(data) for data in images]), 1.7)
    expected = [
        ("fake" if score >= 0.6 else "real" if score < 0.3 else "uncertain", score)
        for score in probabilities[:, 1]
    ]
    got = [(row.verdict, row.fake_score) for row in detector.predict(images)]
    assert [verdict for verdict, _ in got] == [verdict for verdict, _ in expected]
    assert np.allclose([score for _, score in got], [score for _, score in expected], atol=1e-6)
    settings = detector.settings
    assert settings.faces == FaceOptions(detector="dlib-hog", margin_ratio=1.6)
    assert settings.calibration.video_thresholds == Thresholds.single(0.55)
    assert settings.extra == {"future_key": {"kept": True}}

    save_settings(old, load_settings(old))  # rewritten by this version: the format is recorded
    rewritten = json.loads((old / "config.json").read_text())[SETTINGS_KEY]
    assert rewritten == {**OLD_BLOCK, "format": 1}
    again = Detector.from_pretrained(old, device="cpu", precision="fp32", faces=False).predict(images)
    assert [(row.verdict, row.fake_score) for row in again] == got


def test_a_newer_or_broken_block_is_refused_with_what_to_do(seed_checkpoint, tmp_path):
    newer = _with_block(seed_checkpoint, tmp_path / "newer", {**OLD_BLOCK, "format": 2})
    with pytest.raises(CheckpointError, match=r"format = 2.*upgrade deepfake-detector"):
        Detector.from_pretrained(newer, device="cpu")
    broken = _with_block(seed_checkpoint, tmp_path / "broken", {"thresholds": {"real": 0.9, "fake": 0.1}})
    with pytest.raises(SettingsError, match=r"deepfake_detector is not valid.*must not exceed"):
        load_settings(broken)
    assert load_settings(_with_block(seed_checkpoint, tmp_path / "none", None)) == StoredSettings()


def test_the_threshold_rule_is_per_real_source_and_never_below_even_odds():
    # 20 studio photos score low, 4 phone photos high: pooled, 1 false positive of 24 is within 5%, but
    # it is a quarter of the phone photos. The rule holds every source to the target.
    labels = ["real"] * 24 + ["fake"] * 4
    scores = [0.1] * 20 + [0.2, 0.6, 0.7, 0.8] + [0.9] * 4
    sources = ["studio"] * 20 + ["phone"] * 4 + [None] * 4
    pooled = compute_threshold_at_fpr(labels, scores, positive="fake", target_fpr=0.05)
    assert pooled == float(np.nextafter(0.7, 1.0))
    strict = compute_threshold(labels, scores, target_fpr=0.05, sources=sources)
    assert strict == float(np.nextafter(0.8, 1.0))
    assert compute_threshold(labels, scores, target_fpr=0.05) == pooled  # one source: the pooled rule
    # A split the model separates cleanly: just above the highest real score would be 0.2; even odds stay.
    assert compute_threshold(["real", "real", "fake"], [0.1, 0.2, 0.9], target_fpr=0.0) == MIN_THRESHOLD


def test_calibrate_fits_by_the_recorded_rule_and_keeps_what_else_is_stored(seed_checkpoint, tmp_path):
    """calibrate, then predict: the rule train-head records is the one calibrate fits and records, the
    face settings and backbone stay, and video rules fitted on the old scores go."""
    stored = {
        **OLD_BLOCK,
        "fitted_on": {**OLD_BLOCK["fitted_on"], "rule": THRESHOLD_RULE},
        "backbone": {"upstream": "openai/clip-vit-base-patch16"},
    }
    model = _with_block(seed_checkpoint, tmp_path / "model", stored)
    rows = []
    for index in range(24):
        name = f"{index:02d}.jpg"
        (tmp_path / name).write_bytes(jpeg_bytes(40 + index, 40, seed=index))
        rows.append(
            [name, "fake" if index % 3 == 0 else "real", "phone" if index % 4 == 1 else "studio", "val"]
        )
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "source", "split"], *rows])
    items = load_labelled_images(manifest, split="val")
    detector = Detector.from_pretrained(model, device="cpu", faces=False)
    result = calibrate(detector, items, target_fpr=0.2, data=str(manifest), split="val", faces=False)
    scores = dict(result.scores)
    expected = compute_threshold(
        [item.label for item in items],
        [scores[item.path] for item in items],
        target_fpr=0.2,
        sources=[item.source for item in items],
    )
    assert result.calibration.thresholds.fake == expected
    save_calibration(result, model)

    settings = Detector.from_pretrained(model, device="cpu", faces=False).settings
    assert settings.fitted_on["rule"] == THRESHOLD_RULE
    assert settings.calibration.thresholds == result.calibration.thresholds
    assert settings.faces == FaceOptions(detector="dlib-hog", margin_ratio=1.6)
    assert settings.backbone == {"upstream": "openai/clip-vit-base-patch16"}
    assert settings.calibration.video_thresholds is None and settings.video_fitted_on is None
    assert settings.extra == {"future_key": {"kept": True}}

    save_video_thresholds(model, Thresholds.single(0.42), {}, {"clips": 3})
    after = load_settings(model)
    assert after.calibration.video_thresholds == Thresholds.single(0.42)
    assert after.calibration.thresholds == result.calibration.thresholds  # the image rule untouched
    assert after.video_fitted_on == {"clips": 3}


def test_train_head_calibrates_a_domain_by_the_same_rule():
    from deepfake_detector.training.head import calibrate_domain

    logits = np.array([-2.0, -1.5, -1.0, 0.5, 1.0, -0.5, 2.0, 2.5])
    labels = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    groups = ["a/real"] * 3 + ["b/real"] + ["a/fake", "b/real", "a/fake", "a/fake"]
    temperature, threshold = calibrate_domain(logits, labels, groups, 0.25)
    scores = 1 / (1 + np.exp(-logits / temperature))
    assert threshold == compute_threshold(labels, scores, target_fpr=0.25, sources=groups, positive=1)
    # Pooled, one of the five real images may score above the threshold; per source, none of b's two.
    assert threshold > compute_threshold(labels, scores, target_fpr=0.25, positive=1)
