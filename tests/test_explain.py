"""Heatmaps that point at the evidence, overlays, the explain command, and inputs that can't be explained.

The sanity checks train a tiny ViT for a few steps on noise images whose only "fake" evidence is a
magenta square on one patch cell, placed at random; a heatmap that means something must find it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from deepfake_detector import Detector
from deepfake_detector.cli.main import main
from deepfake_detector.errors import ExplainError, MissingExtraError
from deepfake_detector.explain.heatmaps import (
    METHODS,
    check_explainable,
    compute_face_heatmap,
    compute_image_heatmap,
)
from deepfake_detector.explain.overlay import compute_overlay, render_overlay
from deepfake_detector.explain.rollout import compute_attention_rollout

from .conftest import SEED_LABELS, build_tiny_vit

ROWS, COLS = 5, 5  # the tiny ViT's patch grid: 30 px input, 6 px patches
CELL_H, CELL_W = 12, 18  # one patch cell in the 60 x 90 test images (the processor squashes them to 30 x 30)
CHANCE = 1 / (ROWS * COLS)
EVIDENCE_RGB = (255, 0, 255)


def make_image(rng: np.random.Generator, fake_cell: tuple[int, int] | None = None) -> Image.Image:
    """Grey noise; a fake one carries a magenta square filling the patch cell (row, col)."""
    pixels = rng.normal(128, 40, size=(ROWS * CELL_H, COLS * CELL_W, 3))
    if fake_cell is not None:
        row, col = fake_cell
        pixels[row * CELL_H : (row + 1) * CELL_H, col * CELL_W : (col + 1) * CELL_W] = EVIDENCE_RGB
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def random_cell(rng: np.random.Generator) -> tuple[int, int]:
    return int(rng.integers(0, ROWS)), int(rng.integers(0, COLS))


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run several times faster on one thread, far more on a busy machine (thread hand-offs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def train_tiny_vit(folder: Path, seed: int) -> Path:
    """A tiny ViT trained for 60 AdamW steps (about a second) to call the magenta square fake."""
    from transformers import ViTForImageClassification, ViTImageProcessor

    build_tiny_vit(folder, SEED_LABELS, seed=seed)
    model = ViTForImageClassification.from_pretrained(folder)
    processor = ViTImageProcessor.from_pretrained(folder)
    torch.manual_seed(seed)
    model.classifier.reset_parameters()  # undo the fixture's widened head: it saturates training
    rng = np.random.default_rng(seed)
    images = [make_image(rng, random_cell(rng) if i % 2 else None) for i in range(256)]
    labels = torch.tensor([i % 2 for i in range(256)])  # index 1 is "Deepfake" in SEED_LABELS
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]  # (256, 3, 30, 30)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        batch = torch.randint(0, len(images), (32,))  # (32,)
        loss = torch.nn.functional.cross_entropy(
            model(pixel_values=pixel_values[batch]).logits, labels[batch]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory) -> Path:
    return train_tiny_vit(tmp_path_factory.mktemp("trained-vit-seed0"), seed=0)


@pytest.fixture(scope="module")
def detector(trained_checkpoint) -> Detector:
    return Detector.from_pretrained(trained_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def seed3_detector(tmp_path_factory) -> Detector:
    """The same training with another seed: the model Grad-CAM fails on (see GRADCAM_MISSES)."""
    return Detector.from_pretrained(
        train_tiny_vit(tmp_path_factory.mktemp("trained-vit-seed3"), seed=3), device="cpu"
    )


# Grad-CAM weights each feature channel by its gradient averaged over all tokens, which assumes
# non-negative features (post-ReLU convolutions). ViT token features are signed after LayerNorm, so
# whether the evidence token scores high depends on the trained model: measured when written, with
# training seeds 0-5, Grad-CAM's peak hit the patch on 40, 40, 40, 3, 0 and 0 of 40 images; rollout on
# 40 of 40 for every seed. Strict: if a change fixes seed 3, this marker must go.
GRADCAM_MISSES = pytest.mark.xfail(
    strict=True, reason="Grad-CAM on ViT tokens is fragile: it misses the evidence with training seed 3"
)
SANITY_CASES = [
    pytest.param("detector", "rollout", id="seed0-rollout"),
    pytest.param("detector", "gradcam", id="seed0-gradcam"),
    pytest.param("seed3_detector", "rollout", id="seed3-rollout"),
    pytest.param("seed3_detector", "gradcam", id="seed3-gradcam"),
]
PEAK_CASES = [
    *SANITY_CASES[:3],
    pytest.param("seed3_detector", "gradcam", id="seed3-gradcam", marks=GRADCAM_MISSES),
]


@pytest.fixture(scope="module")
def fakes() -> list[tuple[Image.Image, tuple[int, int]]]:
    rng = np.random.default_rng(1)  # not the training images
    return [(make_image(rng, cell), cell) for cell in (random_cell(rng) for _ in range(40))]


def test_the_trained_model_has_learnt_the_evidence(detector, fakes):
    rng = np.random.default_rng(2)
    real_scores = [p.fake_score for p in detector.predict([make_image(rng) for _ in range(20)])]
    fake_scores = [p.fake_score for p in detector.predict([image for image, _ in fakes])]
    assert max(real_scores) < 0.5 < min(fake_scores)


@pytest.mark.parametrize(("detector_name", "method"), PEAK_CASES)
def test_heatmap_peak_lands_on_the_evidence_far_more_often_than_chance(request, fakes, detector_name, method):
    detector = request.getfixturevalue(detector_name)
    hits = 0
    for image, cell in fakes:
        explanation = detector.explain(image, method=method)
        x, y = explanation.peak_xy  # in image pixels: checks the upsampling too, on a non-square image
        hits += (y // CELL_H, x // CELL_W) == cell
    assert hits / len(fakes) >= 20 * CHANCE, f"{method}: peak on the patch {hits} of {len(fakes)} times"


def _blank(image: Image.Image, cells) -> Image.Image:
    pixels = np.asarray(image).copy()
    for row, col in cells:
        pixels[row * CELL_H : (row + 1) * CELL_H, col * CELL_W : (col + 1) * CELL_W] = 128
    return Image.fromarray(pixels)


@pytest.mark.parametrize(("detector_name", "method"), SANITY_CASES)
def test_blanking_the_hottest_patches_lowers_the_fake_score_more_than_blanking_random_ones(
    request, fakes, detector_name, method
):
    detector = request.getfixturevalue(detector_name)
    k, rng = 2, np.random.default_rng(3)
    hottest_drops, random_drops = [], []
    for image, _ in fakes[:20]:
        explanation = detector.explain(image, method=method)
        order = np.argsort(explanation.token_map, axis=None)[::-1]  # hottest first
        hottest = [divmod(int(index), COLS) for index in order[:k]]
        randoms = [divmod(int(index), COLS) for index in rng.choice(ROWS * COLS, size=k, replace=False)]
        blanked = detector.predict([_blank(image, hottest), _blank(image, randoms)])
        hottest_drops.append(explanation.fake_score - blanked[0].fake_score)
        random_drops.append(explanation.fake_score - blanked[1].fake_score)
    # Measured when written (mean drop, hottest vs random): 0.985 vs 0.099 for both methods with seed 0,
    # 0.982 vs 0.098 for rollout and 0.393 vs 0.098 for Grad-CAM with seed 3: its two hottest cells hold
    # the patch in 8 of these 20 images, enough to pass here while its peak misses.
    assert np.mean(hottest_drops) > 3 * np.mean(random_drops), (np.mean(hottest_drops), np.mean(random_drops))


def test_explanation_holds_maps_at_image_and_patch_size_and_the_predict_score(detector, fakes):
    image = fakes[0][0]
    explanation = detector.explain(image, method="gradcam")
    assert explanation.heatmap.shape == (image.height, image.width) == (60, 90)
    assert explanation.token_map.shape == (ROWS, COLS)
    for values in (explanation.heatmap, explanation.token_map):
        assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() == pytest.approx(1.0)
    prediction = detector.predict(image)
    assert (explanation.fake_score, explanation.label, explanation.verdict) == (
        prediction.fake_score,
        prediction.label,
        prediction.verdict,
    )
    row = explanation.to_dict()
    assert json.loads(json.dumps(row)) == row  # no arrays: they go to .npy files
    assert row["image_size"] == [90, 60] and row["method"] == "gradcam" and row["error"] is None


def test_explaining_leaves_the_scoring_model_and_its_scores_alone(trained_checkpoint, fakes):
    detector = Detector.from_pretrained(trained_checkpoint, device="cpu")
    images = [image for image, _ in fakes[:4]]
    before = [p.fake_score for p in detector.predict(images)]
    detector.explain(images, method="rollout")
    assert detector.model.config._attn_implementation == "sdpa"  # the eager copy is separate
    assert [p.fake_score for p in detector.predict(images)] == before


def test_rollout_mixes_each_block_with_the_residual_identity():
    identity = torch.eye(3).expand(1, 2, 3, 3)  # (B, heads, T, T): every token attends to itself
    assert torch.allclose(compute_attention_rollout([identity, identity]), torch.eye(3))
    uniform = torch.full((1, 2, 3, 3), 1 / 3)
    once = 0.5 * torch.full((3, 3), 1 / 3) + 0.5 * torch.eye(3)
    assert torch.allclose(compute_attention_rollout([uniform, uniform])[0], once @ once)


def test_token_map_is_upsampled_with_its_peak_in_the_hottest_cell():
    token_map = np.zeros((ROWS, COLS), dtype=np.float32)
    token_map[1, 3] = 1.0
    heatmap = compute_image_heatmap(token_map, (COLS * CELL_W, ROWS * CELL_H))
    row, col = divmod(int(heatmap.argmax()), heatmap.shape[1])
    assert heatmap.shape == (60, 90) and (row // CELL_H, col // CELL_W) == (1, 3)


def test_bad_inputs_become_error_explanations_and_the_rest_are_explained(detector, fakes, tmp_path):
    missing = tmp_path / "missing.png"
    not_image = tmp_path / "notes.png"
    not_image.write_text("not an image")
    explanations = detector.explain(
        [str(missing), fakes[0][0], str(not_image), np.zeros((4, 4, 7), dtype=np.uint8)], method="rollout"
    )
    assert [e.ok for e in explanations] == [False, True, False, False]
    assert "missing.png" in explanations[0].error and "no such file" in explanations[0].error
    assert "notes.png" in explanations[2].error and "not an image" in explanations[2].error
    assert "(4, 4, 7)" in explanations[3].error
    assert explanations[0].heatmap is None and explanations[0].to_dict()["peak_xy"] is None


def test_unknown_method_is_refused_with_the_methods_that_exist(detector, fakes):
    with pytest.raises(ExplainError, match="unknown explain method 'lime'; choose one of: rollout, gradcam"):
        detector.explain(fakes[0][0], method="lime")


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory) -> Path:
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("resnet")
    config = ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic", id2label=SEED_LABELS
    )
    ResNetForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", METHODS)
def test_a_checkpoint_that_is_not_a_vit_is_refused_naming_the_methods(resnet_checkpoint, fakes, method):
    detector = Detector.from_pretrained(resnet_checkpoint, device="cpu")
    assert detector.predict(fakes[0][0]).ok  # it scores fine; it just can't be explained
    with pytest.raises(ExplainError, match=r"\(rollout, gradcam\) apply to ViT checkpoints only.*ResNet"):
        detector.explain(fakes[0][0], method=method)


def test_onnx_detectors_and_cropping_processors_are_refused_saying_why(detector):
    with pytest.raises(ExplainError, match="ONNX export; load the save_pretrained folder"):
        check_explainable(None, detector.processor, "rollout")
    with pytest.raises(ExplainError, match="centre-crops its input"):
        check_explainable(detector.model, SimpleNamespace(do_center_crop=True), "gradcam")


def test_gradcam_without_captum_names_the_extra_to_install(trained_checkpoint, fakes, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # makes `import captum.attr` fail
    detector = Detector.from_pretrained(trained_checkpoint, device="cpu")
    with pytest.raises(MissingExtraError, match=r"deepfake-detector\[explain\]"):
        detector.explain(fakes[0][0], method="gradcam")


def test_overlay_has_the_image_size_and_colours_only_where_it_is_hot(tmp_path):
    image = Image.new("RGB", (40, 20), (128, 128, 128))
    heatmap = np.zeros((20, 40), dtype=np.float32)
    heatmap[:, :20] = 1.0  # hot left half
    path = render_overlay(tmp_path / "overlay.png", image, heatmap)
    overlay = np.asarray(Image.open(path)).astype(int)
    assert overlay.shape == (20, 40, 3)
    red_minus_blue = overlay[..., 0] - overlay[..., 2]
    assert red_minus_blue[:, :20].min() > red_minus_blue[:, 20:].max()  # turbo: hot is red, cold is blue
    with pytest.raises(ValueError, match="does not match the image"):
        compute_overlay(image, heatmap.T)


def _save(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def test_cli_writes_an_overlay_per_image_and_an_error_row_per_bad_input(
    trained_checkpoint, fakes, tmp_path, capsys
):
    first = _save(fakes[0][0], tmp_path / "a" / "face.png")
    second = _save(fakes[1][0], tmp_path / "b" / "face.png")  # same name: must not overwrite the first
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "heatmaps"
    argv = ["explain", str(first), str(tmp_path / "missing.jpg"), str(second), str(broken)]
    code = main(
        [*argv, "--model", str(trained_checkpoint), "--out", str(out), "--save-npy", "--format", "jsonl"]
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1
    assert [row["source"] for row in rows] == [
        str(first),
        str(tmp_path / "missing.jpg"),
        str(second),
        str(broken),
    ]
    assert [row["error"] is None for row in rows] == [True, False, True, False]
    assert sorted(path.name for path in out.iterdir()) == [
        "face-2.rollout.npy",
        "face-2.rollout.png",
        "face.rollout.npy",
        "face.rollout.png",
    ]
    assert Image.open(rows[0]["overlay"]).size == (90, 60)
    assert np.load(rows[2]["heatmap_npy"]).shape == (60, 90)


def test_cli_table_rows_and_exit_zero_when_every_image_is_explained(
    trained_checkpoint, fakes, tmp_path, capsys
):
    path = _save(fakes[0][0], tmp_path / "fake.png")
    argv = ["explain", str(path), "--model", str(trained_checkpoint), "--out", str(tmp_path / "out")]
    assert main([*argv, "--method", "gradcam"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["verdict", "fake_score", "peak_xy"]
    assert lines[1].startswith("fake") and lines[1].endswith(str(tmp_path / "out" / "fake.gradcam.png"))


def _inside(boxes, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) mask of the pixels inside any of ``boxes`` (left, top, right, bottom; exclusive)."""
    mask = np.zeros(shape, dtype=bool)
    for left, top, right, bottom in boxes:
        mask[top:bottom, left:right] = True
    return mask


def test_face_heatmap_places_each_map_at_its_box_and_zero_elsewhere():
    first = np.zeros((ROWS, COLS), dtype=np.float32)
    first[0, 0] = 1.0  # hottest in the top-left cell of its crop
    second = np.zeros((ROWS, COLS), dtype=np.float32)
    second[4, 4] = 1.0
    boxes = [(10, 5, 40, 35), (30, 20, 90, 80)]  # overlapping
    heatmap = compute_face_heatmap([first, second], boxes, (100, 90))
    assert heatmap.shape == (90, 100) and heatmap.dtype == np.float32
    assert not heatmap[~_inside(boxes, heatmap.shape)].any()
    assert heatmap[5, 10] == pytest.approx(1.0) and heatmap[79, 89] == pytest.approx(1.0)
    alone = compute_image_heatmap(second, (60, 60))
    np.testing.assert_array_equal(heatmap[36:80, 30:90], alone[16:, :])  # past the first box: only its own
    overlap = heatmap[20:35, 30:40]
    np.testing.assert_array_equal(overlap, np.maximum(overlap, alone[:15, :10]))


@pytest.fixture(scope="module")
def two_faces() -> Image.Image:
    pytest.importorskip("dlib", reason="face tests need the 'faces' extra")
    from .media import picture_with_faces

    return picture_with_faces(360, 220, [(10, 20, 150), (190, 50, 160)], seed=2)[0]


def test_face_mode_explains_each_crop_and_places_it_on_the_image(detector, two_faces):
    explanation = detector.explain(two_faces, method="rollout", faces=True)
    prediction = detector.predict(two_faces, faces=True)
    assert explanation.ok and explanation.no_face is False and len(explanation.faces) == 2
    assert explanation.faces == prediction.faces  # the same boxes, crops and scores as predict
    assert (explanation.fake_score, explanation.verdict) == (prediction.fake_score, prediction.verdict)
    heatmap = explanation.heatmap
    assert heatmap.shape == (220, 360) and explanation.token_map.shape == (2, ROWS, COLS)
    crop_boxes = [face.crop_box for face in explanation.faces]
    assert not heatmap[~_inside(crop_boxes, heatmap.shape)].any(), "heat outside the face crops"
    for face, token_map in zip(explanation.faces, explanation.token_map, strict=True):
        left, top, right, bottom = face.crop_box
        assert heatmap[top:bottom, left:right].max() == pytest.approx(1.0)  # each face normalised alone
        crop = two_faces.crop(face.crop_box)
        np.testing.assert_allclose(token_map, detector.explain(crop, faces=False).token_map, atol=1e-6)
    row = explanation.to_dict()
    assert row["no_face"] is False and [face["crop_box"] for face in row["faces"]] == [
        list(box) for box in crop_boxes
    ]


def test_face_mode_without_a_face_explains_the_whole_image_and_flags_it(detector, fakes):
    pytest.importorskip("dlib", reason="face tests need the 'faces' extra")
    image = fakes[0][0]
    explanation = detector.explain(image, faces=True)
    whole = detector.explain(image, faces=False)
    assert explanation.ok and explanation.no_face is True and explanation.faces == ()
    assert explanation.to_dict()["no_face"] is True and "no_face" not in whole.to_dict()
    np.testing.assert_array_equal(explanation.heatmap, whole.heatmap)
    assert explanation.fake_score == pytest.approx(whole.fake_score)


def test_overlay_outlines_the_face_crops(tmp_path):
    image = Image.new("RGB", (80, 60), (0, 0, 0))
    face = SimpleNamespace(crop_box=(10, 5, 50, 45), fake_score=0.25)
    overlay = np.asarray(compute_overlay(image, np.zeros((60, 80), dtype=np.float32), faces=[face]))
    assert tuple(overlay[5, 30]) == tuple(overlay[44, 30]) == tuple(overlay[25, 10]) == (255, 255, 255)
    assert tuple(overlay[30, 70]) != (255, 255, 255)  # the rest is the blended map


def test_cli_faces_writes_one_overlay_per_image_with_the_boxes(
    trained_checkpoint, two_faces, fakes, tmp_path, capsys
):
    group = _save(two_faces, tmp_path / "group.png")
    scenery = _save(fakes[0][0], tmp_path / "scenery.png")
    out = tmp_path / "out"
    argv = ["explain", str(group), str(scenery), "--model", str(trained_checkpoint), "--out", str(out)]
    assert main([*argv, "--faces", "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["no_face"] for row in rows] == [False, True]
    assert sorted(path.name for path in out.iterdir()) == ["group.rollout.png", "scenery.rollout.png"]
    overlay = np.asarray(Image.open(rows[0]["overlay"]))
    assert overlay.shape == (220, 360, 3)
    for face in rows[0]["faces"]:
        left, top, right, bottom = face["crop_box"]
        assert tuple(overlay[top, (left + right) // 2]) == (255, 255, 255)  # the crop box is drawn
        assert tuple(overlay[bottom - 1, (left + right) // 2]) == (255, 255, 255)
    assert main([*argv, "--faces"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[1].endswith("[2 faces]") and table[2].endswith("[no face: whole image]")


def test_cli_refuses_a_checkpoint_that_is_not_a_vit(resnet_checkpoint, fakes, tmp_path, capsys):
    path = _save(fakes[0][0], tmp_path / "fake.png")
    assert (
        main(["explain", str(path), "--model", str(resnet_checkpoint), "--out", str(tmp_path / "out")]) == 2
    )
    assert "apply to ViT checkpoints only" in capsys.readouterr().err
