"""`evaluate` and `calibrate` end to end on a tiny random ViT and synthetic labelled images."""

from __future__ import annotations

import csv
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.data import LabelledImage, load_labelled_images
from deepfake_detector.errors import DetectorError
from deepfake_detector.evaluation.calibration import (
    compute_role_nll,
    compute_temperature,
    compute_threshold_at_fnr,
    compute_threshold_at_fpr,
)
from deepfake_detector.evaluation.evaluate import (
    PREDICTION_COLUMNS,
    Perturbation,
    evaluate,
    parse_perturbations,
)
from deepfake_detector.evaluation.metrics import compute_roc_auc
from deepfake_detector.io.images import load_image
from deepfake_detector.stored_settings import SETTINGS_KEY

from .conftest import SEED_LABELS, build_tiny_vit, jpeg_bytes
from .doc_pages import code_blocks

PLOTS = ("confusion_matrix.png", "roc.png", "precision_recall.png", "reliability.png", "robustness.png")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return build_tiny_vit(tmp_path_factory.mktemp("model"), SEED_LABELS, seed=3)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A CSV manifest with val and test splits, two sources, and two test rows that can't be read."""
    folder = tmp_path_factory.mktemp("faces")
    rows = []
    for split_index, split in enumerate(("val", "test")):
        for i in range(16):
            name = f"{split}-{i:02d}.jpg"
            (folder / name).write_bytes(jpeg_bytes(36 + i, 40, seed=100 * split_index + i))
            source = "studio" if i % 4 < 2 else "phone"
            rows.append([name, "Deepfake" if i % 2 else "Realism", source, split])
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rows += [["broken.jpg", "fake", "studio", "test"], ["missing.jpg", "real", "phone", "test"]]
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "source", "split"], *rows])
    return path


def _cli(command: str, *args) -> int:
    """Runs a command like the shell would, on the CPU, with few bootstrap resamples (speed)."""
    extra = ["--target-fpr", "0.25"] if command == "calibrate" else ["--bootstrap", "20"]
    return main([command, *map(str, args), "--device", "cpu", *extra])


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def evaluated(checkpoint, manifest, tmp_path_factory):
    """One evaluation of the test split with a robustness sweep, shared by the tests that read it."""
    detector = Detector.from_pretrained(checkpoint, device="cpu")
    items = load_labelled_images(manifest, split="test")
    out = tmp_path_factory.mktemp("report")
    perturbations = parse_perturbations(["jpeg:50", "blur:1.5", "downscale:0.5"])
    report = evaluate(
        detector, items, out, perturbations=perturbations, n_resamples=30, data=str(manifest), split="test"
    )
    return detector, items, out, report


def test_evaluate_writes_the_report_and_one_row_per_image(evaluated):
    detector, items, out, report = evaluated
    for name in ("predictions.csv", "metrics.json", "report.md", "robustness.csv", *PLOTS):
        assert (out / name).stat().st_size > 0, name
    for name in PLOTS:
        assert Image.open(out / name).format == "PNG"

    rows = _read_csv(out / "predictions.csv")
    assert list(rows[0]) == list(PREDICTION_COLUMNS)
    assert [row["path"] for row in rows] == [item.path for item in items]  # every image, in order
    failed = {Path(row["path"]).name: row for row in rows if row["error"]}
    assert set(failed) == {"broken.jpg", "missing.jpg"}
    assert "no such file" in failed["missing.jpg"]["error"] and failed["missing.jpg"]["fake_score"] == ""
    assert report.images == 18 and report.scored == 16 and report.failed == 2

    # predictions.csv holds the detector's own scores, and recomputing from it gives metrics.json.
    scored = [row for row in rows if not row["error"]]
    direct = detector.predict([row["path"] for row in scored])
    assert [float(row["fake_score"]) for row in scored] == pytest.approx(
        [p.fake_score for p in direct], abs=1e-6
    )
    assert [(row["domain"] or None, row["detector"]) for row in scored] == [
        (p.domain, p.detector) for p in direct
    ]
    labels = [row["label"] for row in scored]
    scores = [float(row["fake_score"]) for row in scored]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["overall"]["roc_auc"] == pytest.approx(compute_roc_auc(labels, scores, positive="fake"))
    assert metrics["overall"]["count"] == 16 and metrics["threshold"] == 0.5
    assert sorted(metrics["by_source"]) == ["phone", "studio"]
    assert sum(m["count"] for m in metrics["by_source"].values()) == 16
    assert len(metrics["errors"]) == 2

    text = (out / "report.md").read_text()
    assert report.classification_report.strip() in text
    assert "Realism" in report.classification_report and "Deepfake" in report.classification_report
    for heading in ("## Metrics", "## Per source", "## Robustness", "## Failed images (2)"):
        assert heading in text


def test_robustness_table_rescores_the_perturbed_images(evaluated):
    detector, items, out, report = evaluated
    # The unperturbed baseline first, then one row per level.
    assert [row.perturbation for row in report.robustness] == ["none", "jpeg:50", "blur:1.5", "downscale:0.5"]
    assert report.robustness[0].roc_auc == pytest.approx(report.overall.roc_auc)
    assert all(row.scored == 16 and row.failed == 2 for row in report.robustness)
    rows = _read_csv(out / "robustness.csv")
    assert len(rows) == 3 * len(items)
    jpeg = [row for row in rows if row["perturbation"] == "jpeg:50" and not row["error"]][:4]
    expected = [
        detector.predict(Perturbation("jpeg", 50).apply(load_image(row["path"]))).fake_score for row in jpeg
    ]
    assert [float(row["fake_score"]) for row in jpeg] == pytest.approx(expected, abs=1e-6)  # batch vs single
    clean = {row["path"]: row["fake_score"] for row in _read_csv(out / "predictions.csv")}
    assert [clean[row["path"]] for row in jpeg] != [row["fake_score"] for row in jpeg]  # it did change


@pytest.mark.parametrize(
    "spec", ["jpeg:101", "jpeg:70.5", "blur:0", "downscale:2", "sharpen:1", "jpeg", "blur:x"]
)
def test_bad_perturbation_specs_are_named(spec):
    with pytest.raises(ValueError, match="--perturb"):
        parse_perturbations([spec])


def test_threshold_at_fpr_hand_worked():
    labels = ["real"] * 10 + ["fake"] * 2
    scores = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.65, 0.95]
    # 20% of 10 real images: two may be flagged (0.9 and 0.8), so the threshold sits just above 0.7.
    threshold = compute_threshold_at_fpr(labels, scores, positive="fake", target_fpr=0.2)
    assert 0.7 < threshold < 0.7 + 1e-12
    assert compute_threshold_at_fpr(labels, scores, positive="fake", target_fpr=0.0) > 0.9
    assert compute_threshold_at_fpr(labels, scores, positive="fake", target_fpr=1.0) == 0.0
    # Calling at most half the fakes real: the threshold is the higher fake score's... lower one.
    assert compute_threshold_at_fnr(labels, scores, positive="fake", target_fnr=0.5) == 0.95
    assert compute_threshold_at_fnr(labels, scores, positive="fake", target_fnr=0.0) == 0.65
    with pytest.raises(ValueError, match="negative"):
        compute_threshold_at_fpr(["fake"], [0.5], positive="fake", target_fpr=0.1)


def test_temperature_recovers_a_known_scale():
    rng = np.random.default_rng(0)
    margins = rng.normal(0, 3, size=4000)  # fake-minus-real logit of a model 2x too confident
    is_fake = rng.random(4000) < 1 / (1 + np.exp(-margins / 2.0))
    logits = np.stack([np.zeros_like(margins), margins], axis=1)  # (N, 2): index 1 is fake
    temperature = compute_temperature(logits, is_fake, fake_ids=(1,))
    assert temperature == pytest.approx(2.0, rel=0.1)
    assert compute_role_nll(logits, is_fake, (1,), temperature) < compute_role_nll(logits, is_fake, (1,), 1.0)


def test_calibrate_then_evaluate_end_to_end(checkpoint, manifest, tmp_path, capsys):
    calibrated = tmp_path / "calibrated"
    before = (checkpoint / "config.json").read_text()
    code = _cli(
        "calibrate", "--model", checkpoint, "--data", manifest, "--output-model", calibrated, "--split", "val"
    )
    assert code == 0, capsys.readouterr().err
    assert (checkpoint / "config.json").read_text() == before  # the original is untouched
    stored = json.loads((calibrated / "config.json").read_text())[SETTINGS_KEY]
    assert set(stored) == {"format", "temperature", "thresholds", "fitted_on"}
    assert stored["fitted_on"]["split"] == "val" and stored["fitted_on"]["images"] == 16

    # Detector picks the calibration up, and on the validation images it keeps the target FPR.
    detector = Detector.from_pretrained(calibrated, device="cpu")
    assert detector.thresholds.fake == stored["thresholds"]["fake"]
    assert detector.calibration.temperature == stored["temperature"]
    val = load_labelled_images(manifest, split="val")
    real = [item.path for item in val if item.label == "real"]
    flagged = sum(p.verdict == "fake" for p in detector.predict(real))
    assert flagged / len(real) <= 0.25

    # Reporting on the split the thresholds were fitted on is refused...
    out = tmp_path / "report"
    code = _cli("evaluate", "--model", calibrated, "--data", manifest, "--split", "val", "--out", out)
    assert code == 2 and "calibrated on" in capsys.readouterr().err
    # ...the test split is reported with the calibrated threshold; exit 1 for the two unreadable files.
    code = _cli(
        "evaluate",
        "--model",
        calibrated,
        "--data",
        manifest,
        "--out",
        out,
        "--perturb",
        "jpeg:70",
        "downscale:0.5",
    )
    captured = capsys.readouterr()
    assert code == 1, captured.err
    assert "Realism" in captured.out and "jpeg:70" in captured.out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["threshold"] == stored["thresholds"]["fake"]
    assert metrics["calibrated_on"]["split"] == "val" and metrics["split"] == "test"
    rows = _read_csv(out / "predictions.csv")
    decided = [row for row in rows if not row["error"]]
    assert all(
        (float(r["fake_score"]) >= metrics["threshold"]) == (r["predicted"] == "fake") for r in decided
    )


def test_calibrate_in_place_and_refusals(checkpoint, manifest, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(checkpoint, model)
    code = _cli("calibrate", "--model", model, "--data", manifest, "--target-fnr", "0.3")
    assert code == 0, capsys.readouterr().err
    detector = Detector.from_pretrained(model, device="cpu")
    assert detector.thresholds.real <= detector.thresholds.fake
    assert "fitted on 16 of 16 images" in capsys.readouterr().out

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "something").write_text("x")
    code = _cli("calibrate", "--model", model, "--data", manifest, "--output-model", taken)
    assert code == 2 and "--output-model" in capsys.readouterr().err
    code = _cli("calibrate", "--model", "some-org/some-model", "--data", manifest)
    assert code == 2 and "not a local folder" in capsys.readouterr().err


def test_evaluate_on_an_image_folder_and_bad_labels(checkpoint, tmp_path, capsys):
    for role in ("real", "fake"):
        (tmp_path / "data" / role).mkdir(parents=True)
        for i in range(3):
            (tmp_path / "data" / role / f"{i}.jpg").write_bytes(
                jpeg_bytes(32, 32, seed=i + 10 * (role == "fake"))
            )
    out = tmp_path / "out"
    code = _cli(
        "evaluate",
        "--model",
        checkpoint,
        "--data",
        tmp_path / "data",
        "--out",
        out,
        "--split",
        "all",
        "--quiet",
    )
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["scored"] == 6 and metrics["by_source"] == {}
    assert not (out / "robustness.png").exists()

    detector = Detector.from_pretrained(checkpoint, device="cpu")
    missing = [
        LabelledImage(str(tmp_path / "gone.jpg"), "real"),
        LabelledImage(str(tmp_path / "gone.png"), "fake"),
    ]
    report = evaluate(detector, missing, tmp_path / "nothing", n_resamples=10)  # nothing scored: no crash
    assert report.failed == 2 and set(report.overall.undefined.values()) == {"no scored images"}
    assert len(_read_csv(tmp_path / "nothing" / "predictions.csv")) == 2

    with pytest.raises(DetectorError, match="not 'real' or 'fake'"):
        evaluate(detector, [LabelledImage(missing[0].path, "Realism")], tmp_path / "bad")


def test_readme_evaluation_commands_run(checkpoint, tmp_path, monkeypatch):
    commands = code_blocks("docs/evaluation.md", "# Evaluation and calibration", "console")[0].splitlines()
    shutil.copytree(checkpoint, tmp_path / "my-checkpoint")
    (tmp_path / "faces").mkdir()
    rows = [["path", "label", "source", "split"]]
    for index in range(24):
        (tmp_path / "faces" / f"{index}.jpg").write_bytes(jpeg_bytes(40, 40, seed=300 + index))
        rows.append(
            [f"{index}.jpg", "fake" if index % 2 else "real", f"s{index % 3}", ("val", "test")[index // 12]]
        )
    with open(tmp_path / "faces" / "manifest.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(rows)
    monkeypatch.chdir(tmp_path)
    for command in commands:
        program, *argv = shlex.split(command)
        assert program == "deepfake-detector"
        fewer_resamples = ["--bootstrap", "50"] if argv[0] == "evaluate" else []  # speed only
        assert main([*argv, "--device", "cpu", *fewer_resamples]) == 0, command
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["calibrated_on"]["split"] == "val" and len(report["robustness"]) == 9


def test_a_domain_model_is_evaluated_at_each_images_domain_threshold(
    calibrated_domain_checkpoint, varied_images, tmp_path
):
    rows = [[str(path), "fake" if index % 2 else "real", "test"] for index, path in enumerate(varied_images)]
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    out = tmp_path / "report"
    code = _cli(
        "evaluate",
        "--model",
        calibrated_domain_checkpoint,
        "--data",
        manifest,
        "--out",
        out,
        "--precision",
        "fp32",
        "--bootstrap",
        "20",
    )
    assert code == 0
    expected = {"face": 0.12345678901234, "general": 0.95432109876543}
    with open(out / "predictions.csv") as handle:
        predictions = list(csv.DictReader(handle))
    assert {row["domain"] for row in predictions} == set(expected)
    for row in predictions:
        assert float(row["threshold"]) == expected[row["domain"]]
        assert row["predicted"] == ("fake" if float(row["fake_score"]) >= expected[row["domain"]] else "real")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["by_domain"]) == set(expected)
    called = sum(row["predicted"] == "fake" for row in predictions)
    confusion = metrics["overall"]["confusion_matrix"]
    assert confusion[0][1] + confusion[1][1] == called
    assert "each image's domain threshold" in (out / "report.md").read_text()
