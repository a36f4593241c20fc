"""The CLIP detector's recipe end to end on a tiny tower: cached features, head, calibration, bundle."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tests.test_clip_backbone import tiny_backbone  # noqa: F401 (a fixture)


def write_manifest(folder: Path, per_class: int = 8, *, tint: tuple[int, int, int] | None = None) -> Path:
    """Real images are sharp textures, fakes blurred ones, so even a tiny random tower separates them;
    ``tint`` colours a dataset so that a domain probe can tell it from another."""
    rng = np.random.default_rng(0)
    rows = []
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(2 * per_class):
        label = "fake" if index % 2 else "real"
        pixels = rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)
        if tint is not None:
            pixels = (pixels // 4 + np.array(tint, dtype=np.uint8) // 4 * 3).astype(np.uint8)
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
    from deepfake_detector.data import load_labelled_images

    manifest = write_manifest(tmp_path)
    config = tmp_path / "head.yaml"
    config.write_text(
        f"manifests: [{manifest}]\nfeature_cache: {tmp_path / 'features'}\nbackbone: {tiny_backbone[1]}\n"
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
    val = [row for row in load_labelled_images(manifest) if row.split == "val"]
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


def test_extraction_records_a_bad_image_and_stops_when_a_whole_shard_fails(tiny_backbone, tmp_path):  # noqa: F811
    from deepfake_detector.data import load_labelled_images
    from deepfake_detector.inference.preprocessing import ImagePreprocessor
    from deepfake_detector.modeling.clip_detector import build_clip_detector, build_image_processor
    from deepfake_detector.training.frozen_features import (
        extract_features,
        load_features,
        parse_view,
    )

    manifest = write_manifest(tmp_path)
    (tmp_path / "real-0.jpg").write_bytes(b"not a jpeg")  # one bad file among good ones
    rows = load_labelled_images(manifest)
    model = build_clip_detector(tiny_backbone[1], id2label={0: "Realism", 1: "Deepfake"})
    preprocessor = ImagePreprocessor(build_image_processor(32))
    extract_features(model, preprocessor, rows, [parse_view("clean")], tmp_path / "cache", precision="fp32")
    features, indices = load_features(tmp_path / "cache", "clean")
    assert features.shape[0] == len(indices)
    assert sorted(indices) == list(range(1, len(rows)))  # all but the bad one, which the shard lists
    shard = np.load(next((tmp_path / "cache" / "clean").glob("shard-*.npz")))
    assert len(shard["errors"]) == 1 and "real-0.jpg" in shard["errors"][0]

    def broken(image):
        raise OSError("preprocessing is broken")

    with pytest.raises(RuntimeError, match="every image of shard 1 failed"):
        extract_features(model, broken, rows, [parse_view("jpeg50:train")], tmp_path / "cache")
    assert not list((tmp_path / "cache" / "jpeg50").glob("shard-*")), "a failed shard is not marked done"


def test_a_recipe_with_domains_writes_a_probe_two_heads_and_thresholds_per_domain(tiny_backbone, tmp_path):  # noqa: F811
    from deepfake_detector import Detector
    from deepfake_detector.cli.main import main
    from deepfake_detector.data import load_labelled_images

    faces = write_manifest(tmp_path / "faces", tint=(250, 200, 180))
    scenes = write_manifest(tmp_path / "scenes", tint=(20, 120, 30))
    config = tmp_path / "head.yaml"
    config.write_text(
        f"manifests: [{faces}, {scenes}]\nfeature_cache: {tmp_path / 'features'}\n"
        f"backbone: {tiny_backbone[1]}\nviews: [clean, scenes/aug1]\nextraction_precision: fp32\n"
        "target_fpr: 0.2\ndomains: [face, general]\ngeneral_datasets: [scenes]\n"
    )
    assert main(["train-head", "--config", str(config), "--output-dir", str(tmp_path / "run")]) == 0
    run = tmp_path / "run"
    stored = json.loads((run / "bundle" / "config.json").read_text())
    assert stored["domains"] == ["face", "general"]
    entries = stored["deepfake_detector"]["domains"]
    assert set(entries) == {"face", "general"}
    assert all(entry["fitted_on"]["temperature_folded_into_head"] for entry in entries.values())
    # dlib finds no face in a texture: the scenes are "general", the faces dataset "face" by definition.
    labels = json.loads(next((tmp_path / "features").glob("scenes-*/domains.json")).read_text())
    assert set(labels.values()) == {"general"}
    record = json.loads((run / "training_run.json").read_text())
    assert set(record["caches"]) == {"faces", "scenes"}

    detector = Detector.from_pretrained(run / "model", precision="fp32", engine="torch")
    for manifest, expected in ((faces, "face"), (scenes, "general")):
        val = [row for row in load_labelled_images(manifest) if row.split == "val"]
        predictions = detector.predict([row.path for row in val])
        assert [prediction.domain for prediction in predictions] == [expected] * len(val)
        threshold = entries[expected]["thresholds"]["fake"]
        for prediction in predictions:
            assert prediction.detector == f"{expected}-head"
            assert prediction.verdict == ("fake" if prediction.fake_score >= threshold else "real")
