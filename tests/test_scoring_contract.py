"""evaluate and calibrate score through the Detector's public API: they work on ONNX exports, calibration
is fitted on exactly the scores predict thresholds, and a split-less manifest is evaluated whole."""

from __future__ import annotations

import csv
import io
import json
import shutil
from contextlib import redirect_stderr
from pathlib import Path

import pytest
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.data import load_labelled_images
from deepfake_detector.evaluation.calibration import calibrate, save_calibration
from deepfake_detector.evaluation.evaluate import evaluate

from .conftest import _texture
from .media import picture_with_faces


def _write_manifest(folder: Path, *, splits: bool, count: int = 24) -> Path:
    """Camera-sized JPEGs (large enough for draft decoding to change the pixels) labelled alternately."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [["path", "label", *(["split"] if splits else [])]]
    for index in range(count):
        name = f"{index:02d}.jpg"
        Image.fromarray(_texture(300, 400, seed=index)).save(folder / name, quality=85)
        rows.append([name, "fake" if index % 2 else "real", *(["val"] if splits else [])])
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    return path


@pytest.fixture(scope="module")
def unsplit_manifest(tmp_path_factory) -> Path:
    return _write_manifest(tmp_path_factory.mktemp("unsplit"), splits=False)


@pytest.fixture(scope="module")
def export(seed_checkpoint, tmp_path_factory) -> Path:
    pytest.importorskip("onnxruntime", reason="needs the onnx extra")
    pytest.importorskip("onnxscript", reason="needs the onnx extra")
    folder = tmp_path_factory.mktemp("export") / "onnx"
    assert main(["export", "--format", "onnx", "--model", str(seed_checkpoint), "--out", str(folder)]) == 0
    return folder


def test_calibration_is_fitted_on_the_scores_predict_gives(seed_checkpoint, tmp_path):
    manifest = _write_manifest(tmp_path / "data", splits=True)
    detector = Detector.from_pretrained(seed_checkpoint, device="cpu", jpeg_draft=True)
    assert detector.preprocessor.draft_size is not None  # the images are large enough to be drafted
    items = load_labelled_images(manifest, split="val")
    result = calibrate(detector, items, target_fpr=0.25, data=str(manifest), split="val")
    folder = save_calibration(result, seed_checkpoint, output_folder=tmp_path / "calibrated")
    calibrated = Detector.from_pretrained(folder, device="cpu", jpeg_draft=True)
    predicted = {str(p.source): p.fake_score for p in calibrated.predict([item.path for item in items])}
    assert len(result.scores) == len(items)
    for path, score in result.scores:
        assert score == pytest.approx(predicted[path], abs=1e-9)
    # The fake threshold's real-image error rate is the one predict's verdicts have on these images.
    called_fake = [
        predicted[item.path] >= calibrated.thresholds.fake for item in items if item.label == "real"
    ]
    assert result.false_positive_rate == pytest.approx(sum(called_fake) / len(called_fake))
    assert result.fitted_on["scored_with"] == {
        "engine": "torch",
        "precision": detector.engine.precision,
        "jpeg_draft": True,
        "faces": None,
    }


def test_calibration_in_face_mode_fits_the_combined_score(seed_checkpoint, tmp_path):
    pytest.importorskip("dlib", reason="the faces extra is not installed")
    folder = tmp_path / "faces"
    folder.mkdir()
    rows = [["path", "label"]]
    for index in range(8):  # two faces each, so that the largest and the most-fake face can differ
        image, _ = picture_with_faces(420, 240, [(10, 20, 180), (230, 40, 150)], seed=index)
        image.save(folder / f"{index}.png")
        rows.append([f"{index}.png", "fake" if index % 2 else "real"])
    with open(folder / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    detector = Detector.from_pretrained(seed_checkpoint, device="cpu")
    items = load_labelled_images(folder / "manifest.csv", split=None)
    result = calibrate(detector, items, target_fpr=0.25, faces=True)
    calibrated = Detector.from_pretrained(
        save_calibration(result, seed_checkpoint, output_folder=tmp_path / "calibrated"), device="cpu"
    )
    predicted = calibrated.predict([item.path for item in items], faces=True)
    assert all(len(prediction.faces) == 2 for prediction in predicted)
    for (path, score), prediction in zip(result.scores, predicted, strict=True):
        assert path == prediction.source and score == pytest.approx(prediction.fake_score, abs=1e-9)
    assert result.fitted_on["scored_with"]["faces"]["strategy"] == "max"


def test_evaluate_and_calibrate_run_on_an_onnx_export(export, tmp_path):
    manifest = _write_manifest(tmp_path / "data", splits=False, count=16)
    calibrated = tmp_path / "calibrated"
    args = ["--model", str(export), "--data", str(manifest), "--device", "cpu"]
    assert (
        main(["calibrate", *args, "--split", "val", "--target-fpr", "0.5", "--output-model", str(calibrated)])
        == 0
    )
    stored = json.loads((calibrated / "config.json").read_text())["deepfake_detector"]
    assert stored["fitted_on"]["scored_with"]["engine"] == "onnx"
    detector = Detector.from_pretrained(calibrated, device="cpu")
    assert detector.model is None and detector.engine.name == "onnx"
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(calibrated), "--data", str(manifest), "--split", "test",
                 "--device", "cpu", "--bootstrap", "0", "--out", str(out), "-q"]) == 0  # fmt: skip
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scoring"]["engine"] == "onnx" and metrics["scoring"]["precision"] == "fp32"
    assert metrics["calibrated_on"]["split"] == "val"
    assert "Scored with the onnx engine in fp32" in (out / "report.md").read_text()


def test_a_manifest_without_splits_is_evaluated_whole_and_says_so(
    seed_checkpoint, unsplit_manifest, tmp_path
):
    out = tmp_path / "all"
    stderr = io.StringIO()
    args = ["--model", str(seed_checkpoint), "--data", str(unsplit_manifest), "--device", "cpu", "-q"]
    with redirect_stderr(stderr):
        assert main(["evaluate", *args, "--bootstrap", "0", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 24 and metrics["split"] == "all"
    assert "all 24 images are evaluated" in metrics["split_note"]
    assert "all 24 images are evaluated" in stderr.getvalue()
    assert "no split of its own" in (out / "report.md").read_text()
    # Naming a split keeps the split computed here, loudly.
    out = tmp_path / "test"
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        assert main(["evaluate", *args, "--bootstrap", "0", "--split", "test", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and 0 < metrics["images"] < 24
    assert f"{metrics['images']} of 24 images are evaluated" in stderr.getvalue()
    assert "was computed here" in metrics["split_note"]


def test_data_with_its_own_splits_still_defaults_to_test(seed_checkpoint, tmp_path):
    manifest = _write_manifest(tmp_path / "data", splits=True, count=8)
    rows = list(csv.reader(manifest.read_text().splitlines()))
    for row in rows[5:]:
        row[2] = "test"
    manifest.write_text("\n".join(",".join(row) for row in rows) + "\n")
    out = tmp_path / "report"
    args = ["evaluate", "--model", str(seed_checkpoint), "--data", str(manifest), "--device", "cpu"]
    assert main([*args, "--bootstrap", "0", "--out", str(out), "-q"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["images"] == 4 and metrics["split_note"] is None


def test_evaluate_reads_the_calibration_of_an_export_without_a_model(export, unsplit_manifest, tmp_path):
    # The library call, not only the CLI: evaluate() must not reach for detector.model.
    folder = Path(shutil.copytree(export, tmp_path / "export"))
    config = json.loads((folder / "config.json").read_text())
    config["deepfake_detector"] = {"fitted_on": {"data": str(unsplit_manifest), "split": "val"}}
    (folder / "config.json").write_text(json.dumps(config))
    detector = Detector.from_pretrained(folder, device="cpu")
    items = [item for item in load_labelled_images(unsplit_manifest) if item.split == "val"]
    with pytest.raises(Exception, match="calibrated on"):
        evaluate(detector, items, tmp_path / "report", data=str(unsplit_manifest), n_resamples=0)
