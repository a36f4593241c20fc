"""Heatmaps that point at the evidence, overlays, the explain command, and inputs that can't be explained.

The sanity checks train a tiny ViT (and a tiny ResNet) for a few steps on noise images whose only "fake"
evidence is a magenta square on one cell, placed at random; a heatmap that means something must find it.
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
    build_explainer_model,
    check_explainable,
    compute_face_heatmap,
    compute_image_heatmap,
    compute_token_map,
    find_last_conv_stage,
    resolve_method,
)
from deepfake_detector.explain.overlay import compute_overlay, render_overlay
from deepfake_detector.explain.rollout import compute_attention_rollout

from .conftest import SEED_LABELS, build_tiny_resnet, build_tiny_vit

ROWS, COLS = 5, 5  # the tiny ViT's patch grid: 30 px input, 6 px patches
CELL_H, CELL_W = 12, 18  # one patch cell in the 60 x 90 test images (the processor squashes them to 30 x 30)
CHANCE = 1 / (ROWS * COLS)
EVIDENCE_RGB = (255, 0, 255)


def make_image(
    rng: np.random.Generator,
    fake_cell: tuple[int, int] | None = None,
    *,
    grid: tuple[int, int] = (ROWS, COLS),
    cell: tuple[int, int] = (CELL_H, CELL_W),
) -> Image.Image:
    """Grey noise in a grid of (rows, cols) cells of (height, width) pixels; a fake one carries a magenta
    square filling the cell (row, col)."""
    (rows, cols), (cell_h, cell_w) = grid, cell
    pixels = rng.normal(128, 40, size=(rows * cell_h, cols * cell_w, 3))
    if fake_cell is not None:
        row, col = fake_cell
        pixels[row * cell_h : (row + 1) * cell_h, col * cell_w : (col + 1) * cell_w] = EVIDENCE_RGB
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def random_cell(rng: np.random.Generator, grid: tuple[int, int] = (ROWS, COLS)) -> tuple[int, int]:
    return int(rng.integers(0, grid[0])), int(rng.integers(0, grid[1]))


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
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]  # (256, 3, 30, 30)
    fit_alternate_labels(model, pixel_values, steps=60)
    model.save_pretrained(folder)
    return folder


def fit_alternate_labels(model, pixel_values: torch.Tensor, *, steps: int, lr: float = 3e-3) -> None:
    """AdamW on batches of 32 drawn at random, image i labelled i % 2 (1 is "Deepfake" in SEED_LABELS);
    leaves the model in eval mode."""
    labels = torch.tensor([i % 2 for i in range(len(pixel_values))])  # (N,)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(pixel_values), (32,))  # (32,)
        loss = torch.nn.functional.cross_entropy(
            model(pixel_values=pixel_values[batch]).logits, labels[batch]
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


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


# The ResNet's sanity images: a 3 x 3 grid of 32 x 48 px cells (96 x 144 px), squashed to the 96 px input,
# where the last stage is 12 x 12: the evidence covers 4 x 4 of its cells. On a finer grid (4 x 4 cells,
# 64 px input: the evidence covers 2 x 2 of the 8 x 8 last-stage cells), with the same training, the
# peak hit the patch on only 14 to 32 of 40 images for training seeds 0-7, and every miss was in a
# neighbouring cell: last-stage units beside the square see all of it (their receptive field is 51 px),
# and Grad-CAM is no sharper than the map it weights.
RESNET_GRID, RESNET_CELL = (3, 3), (32, 48)


def train_tiny_resnet(folder: Path, seed: int) -> Path:
    """A tiny ResNet trained for 200 AdamW steps (a few seconds) to call the magenta square fake."""
    from transformers import ResNetForImageClassification, ViTImageProcessor

    build_tiny_resnet(folder, SEED_LABELS, seed=seed, image_size=96)
    model = ResNetForImageClassification.from_pretrained(folder)
    processor = ViTImageProcessor.from_pretrained(folder)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [
        make_image(rng, random_cell(rng, RESNET_GRID) if i % 2 else None, grid=RESNET_GRID, cell=RESNET_CELL)
        for i in range(256)
    ]
    pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]  # (256, 3, 96, 96)
    fit_alternate_labels(model, pixel_values, steps=200)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def trained_resnet(tmp_path_factory) -> Detector:
    folder = train_tiny_resnet(tmp_path_factory.mktemp("trained-resnet-seed0"), seed=0)
    return Detector.from_pretrained(folder, device="cpu")


@pytest.fixture(scope="module")
def resnet_fakes() -> list[tuple[Image.Image, tuple[int, int]]]:
    rng = np.random.default_rng(1)  # not the training images
    cells = [random_cell(rng, RESNET_GRID) for _ in range(40)]
    return [(make_image(rng, cell, grid=RESNET_GRID, cell=RESNET_CELL), cell) for cell in cells]


def test_the_trained_resnet_has_learnt_the_evidence(trained_resnet, resnet_fakes):
    rng = np.random.default_rng(2)
    reals = [make_image(rng, grid=RESNET_GRID, cell=RESNET_CELL) for _ in range(20)]
    real_scores = [p.fake_score for p in trained_resnet.predict(reals)]
    fake_scores = [p.fake_score for p in trained_resnet.predict([image for image, _ in resnet_fakes])]
    assert max(real_scores) < 0.5 < min(fake_scores)


def test_resnet_gradcam_peak_lands_on_the_evidence(trained_resnet, resnet_fakes):
    cell_h, cell_w = RESNET_CELL
    hits = 0
    for image, cell in resnet_fakes:
        explanation = trained_resnet.explain(image)  # auto: Grad-CAM on the last stage
        assert explanation.method == "gradcam" and explanation.token_map.shape == (12, 12)
        x, y = explanation.peak_xy  # in image pixels: checks the upsampling too, on a non-square image
        hits += (y // cell_h, x // cell_w) == cell
    # Chance is 1 in 9. Measured when written, with training seeds 0-7: 40, 40, 40, 40, 33, 40, 36 and 37
    # of 40 (seeds 3, 4 and 6 also score some images on the wrong side of 0.5, hence seed 0 here).
    assert hits >= 0.75 * len(resnet_fakes), f"peak on the patch {hits} of {len(resnet_fakes)} times"


def test_explanation_holds_maps_at_image_and_patch_size_and_the_predict_score(detector, fakes):
    image = fakes[0][0]
    explanation = detector.explain(image, method="gradcam")
    assert explanation.heatmap.shape == (image.height, image.width) == (60, 90)
    assert explanation.token_map.shape == (ROWS, COLS)
    for values in (explanation.heatmap, explanation.token_map):
        assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() == pytest.approx(1.0)
    prediction = detector.predict(image)
    decision = ("fake_score", "label", "verdict", "threshold", "uncertain_from", "threshold_from")
    assert [getattr(explanation, name) for name in decision] == [
        getattr(prediction, name) for name in decision
    ]
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
    with pytest.raises(
        ExplainError, match="unknown explain method 'lime'; choose one of: auto, rollout, gradcam"
    ):
        detector.explain(fakes[0][0], method="lime")


@pytest.fixture(scope="module")
def resnet_checkpoint(tmp_path_factory) -> Path:
    """A random 64 px ResNet: its last stage maps the input at 8 x 8."""
    return build_tiny_resnet(tmp_path_factory.mktemp("resnet"), SEED_LABELS)


@pytest.fixture(scope="module")
def resnet_detector(resnet_checkpoint) -> Detector:
    return Detector.from_pretrained(resnet_checkpoint, device="cpu")


def test_auto_means_rollout_for_a_vit_and_gradcam_for_a_resnet(detector, resnet_detector, fakes):
    image = fakes[0][0]
    assert resolve_method(detector.model, "auto") == "rollout"
    assert resolve_method(resnet_detector.model, "auto") == resolve_method(resnet_detector.model, "gradcam")
    assert resolve_method(resnet_detector.model, "auto") == "gradcam"
    vit, resnet = detector.explain(image), resnet_detector.explain(image)  # the default method: auto
    assert vit.method == "rollout" and vit.to_dict()["method"] == "rollout"
    np.testing.assert_array_equal(vit.token_map, detector.explain(image, method="rollout").token_map)
    assert resnet.method == "gradcam" and resnet.to_dict()["method"] == "gradcam"
    assert resnet.token_map.shape == (8, 8) and resnet.heatmap.shape == (60, 90)  # last stage, then image
    for values in (resnet.heatmap, resnet.token_map):
        assert values.dtype == np.float32 and values.min() >= 0.0 and values.max() <= 1.0
    assert resnet.fake_score == resnet_detector.predict(image).fake_score
    # Inputs that can't be read carry the concrete method too.
    (unreadable,) = resnet_detector.explain([np.zeros((4, 4, 7), dtype=np.uint8)])
    assert not unreadable.ok and unreadable.method == "gradcam"


def test_rollout_on_a_resnet_is_refused_saying_to_use_gradcam(resnet_detector, fakes):
    assert resnet_detector.predict(fakes[0][0]).ok  # it scores fine; it just has no attention to roll out
    with pytest.raises(ExplainError, match=r"rollout needs attention.*ResNetForImageClassification.*gradcam"):
        resnet_detector.explain(fakes[0][0], method="rollout")


@pytest.fixture(scope="module")
def swin_checkpoint(tmp_path_factory) -> Path:
    """An attention model that is not a ViT: neither rollout nor Grad-CAM is written for it."""
    from transformers import SwinConfig, SwinForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("swin")
    config = SwinConfig(
        image_size=32,
        patch_size=4,
        embed_dim=8,
        depths=[1],
        num_heads=[1],
        window_size=2,
        id2label=SEED_LABELS,
    )
    SwinForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("method", METHODS)
def test_an_architecture_neither_vit_nor_conv_is_refused_naming_the_supported_ones(
    swin_checkpoint, fakes, method
):
    detector = Detector.from_pretrained(swin_checkpoint, device="cpu")
    assert detector.predict(fakes[0][0]).ok
    with pytest.raises(ExplainError, match=r"supports ViT checkpoints.*ResNet, ConvNeXt.*SwinFor"):
        detector.explain(fakes[0][0], method=method)


def _tiny_conv_classifier(kind: str):
    import transformers

    torch.manual_seed(0)
    sizes = {"hidden_sizes": [8, 16], "depths": [1, 1], "num_labels": 2, "id2label": SEED_LABELS}
    configs = {
        "ResNet": transformers.ResNetConfig(embedding_size=8, layer_type="basic", **sizes),
        "ConvNext": transformers.ConvNextConfig(num_stages=2, **sizes),
        "ConvNextV2": transformers.ConvNextV2Config(num_stages=2, **sizes),
        "RegNet": transformers.RegNetConfig(embedding_size=8, groups_width=8, **sizes),
    }
    return getattr(transformers, f"{kind}ForImageClassification")(configs[kind]).eval()


def _reference_gradcam(model, pixel_values: torch.Tensor) -> np.ndarray:
    """Grad-CAM written out by hand (Selvaraju et al., eq. 1-2) on the last stage's output."""
    captured = {}

    def keep(module, inputs, output):
        output.retain_grad()
        captured["activation"] = output  # (1, C, h, w)

    handle = find_last_conv_stage(model).register_forward_hook(keep)
    try:
        logits = model(pixel_values=pixel_values).logits  # (1, 2)
    finally:
        handle.remove()
    (logits[0, 1] - logits[0, 0]).backward()  # log P(Deepfake) - log P(Realism)
    activation = captured["activation"]
    weights = activation.grad.mean(dim=(2, 3), keepdim=True)  # (1, C, 1, 1)
    cam = torch.relu((weights * activation).sum(dim=1))[0].detach().numpy()  # (h, w)
    return (cam - cam.min()) / (cam.max() - cam.min())


@pytest.mark.parametrize("kind", ["ResNet", "ConvNext", "ConvNextV2", "RegNet"])
def test_gradcam_on_a_conv_model_is_the_last_stage_grad_cam(kind):
    from transformers import ViTImageProcessor

    from deepfake_detector.modeling.labels import resolve_label_roles

    model = _tiny_conv_classifier(kind)
    processor = ViTImageProcessor(size={"height": 64, "width": 64})
    image = make_image(np.random.default_rng(4), (1, 2))
    assert resolve_method(model, "auto") == "gradcam"
    token_map = compute_token_map(
        build_explainer_model(model), processor, image, method="auto", roles=resolve_label_roles(SEED_LABELS)
    )
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]  # (1, 3, 64, 64)
    expected = _reference_gradcam(model, pixel_values)
    assert token_map.shape == expected.shape == (8, 8)  # 64 px at 1/8: the last stage, not the input
    assert token_map.max() == pytest.approx(1.0)  # not a flat map: the comparison below means something
    np.testing.assert_allclose(token_map, expected, atol=1e-5)


def test_the_explainer_of_a_conv_model_leaves_attention_alone(resnet_detector, monkeypatch):
    def refuse(self, *args, **kwargs):
        raise AssertionError("set_attn_implementation called on a model without attention")

    monkeypatch.setattr(type(resnet_detector.model), "set_attn_implementation", refuse)
    explainer = build_explainer_model(resnet_detector.model)
    assert explainer is not resnet_detector.model and not explainer.training
    assert next(explainer.parameters()).dtype == torch.float32


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


def test_cli_explains_a_resnet_with_gradcam_by_default(resnet_checkpoint, fakes, tmp_path, capsys):
    path = _save(fakes[0][0], tmp_path / "photo.png")
    out = tmp_path / "out"
    argv = ["explain", str(path), "--model", str(resnet_checkpoint), "--out", str(out)]
    assert main([*argv, "--save-npy", "--format", "jsonl"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["method"] == "gradcam" and row["error"] is None
    assert sorted(path.name for path in out.iterdir()) == ["photo.gradcam.npy", "photo.gradcam.png"]
    assert row["overlay"] == str(out / "photo.gradcam.png") and Image.open(row["overlay"]).size == (90, 60)


def test_cli_refuses_rollout_on_a_resnet_saying_to_use_gradcam(resnet_checkpoint, fakes, tmp_path, capsys):
    path = _save(fakes[0][0], tmp_path / "photo.png")
    argv = ["explain", str(path), "--model", str(resnet_checkpoint), "--out", str(tmp_path / "out")]
    assert main([*argv, "--method", "rollout"]) == 2
    assert "use method 'gradcam'" in capsys.readouterr().err


def test_face_mode_on_a_resnet_explains_each_crop_with_gradcam(resnet_detector, two_faces):
    explanation = resnet_detector.explain(two_faces, faces=True)
    assert explanation.ok and explanation.method == "gradcam" and len(explanation.faces) == 2
    assert explanation.token_map.shape == (2, 8, 8)  # one last-stage map per face crop
