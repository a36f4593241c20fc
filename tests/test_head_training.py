"""The CLIP detector's recipe end to end on a tiny tower: cached features, head, calibration, bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.test_clip_backbone import tiny_backbone  # noqa: F401 (a fixture)


def write_manifest(folder: Path, per_class: int = 8) -> Path:
    """Real images are sharp textures, fakes blurred ones, so even a tiny random tower separates them."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(2 * per_class):
        label = "fake" if index % 2 else "real"
        pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        if label == "fake":
            image = image.filter(ImageFilter.GaussianBlur(3))
        path = folder / f"{label}-{index}.jpg"
        image.save(path, quality=95)
        split = "val" if index >= per_class + per_class // 2 else "train"
        rows.append({"path": path.name, "label": label, "source": "toy", "split": split})
    manifest = folder / "manifest.csv"
    with open(manifest, "w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["path", "label", "source", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def test_recipe_writes_a_bundle_whose_model_scores_as_the_cached_features_say(tiny_backbone, tmp_path):  # noqa: F811
    from deepfake_detector import Detector
    from deepfake_detector.cli.main import main
    from deepfake_detector.training.frozen_features import load_manifest_rows

    manifest = write_manifest(tmp_path)
    config = tmp_path / "head.yaml"
    config.write_text(
        f"manifest: {manifest}\nfeature_cache: {tmp_path / 'features'}\nbackbone: {tiny_backbone[1]}\n"
        "views: [clean, aug1]\nextraction_precision: fp32\ntarget_fpr: 0.2\n"
    )
    assert main(["train-head", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    assert sorted(path.name for path in (run / "bundle").iterdir()) == [
        "config.json",
        "head.safetensors",
        "preprocessor_config.json",
    ]
    stored = json.loads((run / "bundle" / "config.json").read_text())["deepfake_detector"]
    assert stored["fitted_on"]["split"] == "val" and str(tmp_path) not in json.dumps(stored)
    validation = json.loads((run / "validation.json").read_text())
    record = json.loads((run / "training_run.json").read_text())
    assert record["train_rows"] == {"toy/fake": 12, "toy/real": 12}  # 6 + 6 images in two views

    # The model that inference loads reproduces the scores the head was calibrated on.
    assert record["full_checkpoint"] == str(run / "model")
    detector = Detector.from_pretrained(run / "model", precision="fp32", engine="torch")
    val = [row for row in load_manifest_rows(manifest) if row.split == "val"]
    predictions = detector.predict([row.path for row in val])
    scores = np.array([prediction.fake_score for prediction in predictions])
    labels = np.array([row.label == "fake" for row in val])
    assert detector.thresholds.fake == pytest.approx(validation["threshold"])
    assert np.mean(scores[~labels] >= validation["threshold"]) == pytest.approx(
        validation["val"]["toy"]["false_positive_rate"]
    )
    assert np.mean(scores[labels] >= validation["threshold"]) == pytest.approx(
        validation["val"]["toy"]["detection_rate"]
    )

    # A rerun resumes: the feature shards are kept, not extracted again.
    shards = {path: path.stat().st_mtime_ns for path in (tmp_path / "features").rglob("shard-*.npz")}
    assert len(shards) == 2
    assert main(["train-head", "--config", str(config), "--output-dir", str(tmp_path / "run2")]) == 0
    assert {path: path.stat().st_mtime_ns for path in shards} == shards
