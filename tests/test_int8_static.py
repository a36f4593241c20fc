"""Outlier-aware static int8 (`export --quantize int8-static`): the migration leaves the float model's
answers alone, only the recipe's matrix multiplies become int8, and the export scores like PyTorch by
the measure every export is checked with: verdicts at each domain's threshold."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from deepfake_detector import Detector
from deepfake_detector.cli.main import main

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'deepfake-detector[onnx]'")
pytest.importorskip("onnxscript", reason="needs the onnx extra: pip install 'deepfake-detector[onnx]'")

BLOCKS = 5  # the default recipe keeps block 0 and block 2's fc2 in fp32: blocks 1-4 are quantised


@pytest.fixture(scope="module")
def clip_detector(tmp_path_factory):
    """A tiny CLIP detector with domains and five blocks, saved whole."""
    from tests.test_clip_backbone import TWO_DOMAINS, build_tiny_detector, build_tiny_tower

    folder = tmp_path_factory.mktemp("int8-static")
    build_tiny_tower(num_hidden_layers=BLOCKS).save_pretrained(folder / "backbone")
    return build_tiny_detector(folder / "backbone", folder / "detector", domains=TWO_DOMAINS)


@pytest.fixture(scope="module")
def manifest(varied_images, tmp_path_factory):
    """A manifest of copies of the varied images under 288 names, all in train."""
    folder = tmp_path_factory.mktemp("calibration")
    rows = []
    for copy in range(12):  # 288 images: 16 to calibrate on and the 256 the parity check holds out
        for index, path in enumerate(varied_images):
            target = folder / f"{copy}-{path.name}"
            target.write_bytes(path.read_bytes())
            rows.append([str(target), "fake" if index % 2 else "real", "train"])
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "label", "split"], *rows])
    return path


def test_the_migration_leaves_the_float_model_s_outputs_unchanged(clip_detector):
    import torch

    from deepfake_detector.export.int8_static import Int8Recipe, collect_input_ranges, smooth_model
    from deepfake_detector.modeling.checkpoints import load_model_and_processor, resolve_checkpoint

    model, _ = load_model_and_processor(resolve_checkpoint(clip_detector))
    recipe = Int8Recipe(float_blocks=(1,))
    pixels = (torch.rand(6, 3, 32, 32) * 4 - 2).numpy()
    ranges = collect_input_ranges(model, iter([pixels]), recipe.quantised_layers(model))
    assert sorted(ranges) == sorted(recipe.quantised_layers(model))
    smoothed = smooth_model(model, ranges, recipe)
    with torch.no_grad():
        before = model(pixel_values=torch.from_numpy(pixels))
        after = smoothed(pixel_values=torch.from_numpy(pixels))
        moved = [
            not torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), smoothed.state_dict().values(), strict=True)
        ]
    assert sum(moved) > 0  # the weights did change...
    np.testing.assert_allclose(after.logits.numpy(), before.logits.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(
        after.domain_logits.numpy(), before.domain_logits.numpy(), rtol=1e-4, atol=1e-3
    )


def test_gptq_rounds_onto_onnx_runtime_s_grid_and_moves_outputs_less_than_rounding_to_nearest():
    import torch
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    from deepfake_detector.export.int8_static import WEIGHT_LEVELS, round_weights

    generator = torch.Generator().manual_seed(0)
    # Correlated inputs with two outlier channels, as a smoothed CLIP layer still sees.
    inputs = torch.randn(4000, 24, generator=generator) @ torch.randn(24, 24, generator=generator)
    inputs[:, :2] *= 8.0
    model = torch.nn.Sequential(torch.nn.Linear(24, 40))
    original = model[0].weight.detach().clone().double()
    round_weights(model, {"0": (inputs.double().T @ inputs.double() / len(inputs)).numpy()})
    rounded = model[0].weight.detach().double()

    step = original.abs().amax(1, keepdim=True) / WEIGHT_LEVELS
    levels = rounded / step
    assert torch.allclose(levels, levels.round(), atol=1e-3) and levels.abs().max() <= WEIGHT_LEVELS
    for row, values in zip(rounded.numpy(), levels.round().numpy(), strict=True):  # what ONNX Runtime stores
        _, _, stored = quantize_data(
            row.astype(np.float32), TensorProto.INT8, symmetric=True, reduce_range=True
        )
        np.testing.assert_array_equal(stored, values)

    nearest = torch.round(original / step) * step
    moved_by_gptq = ((inputs.double() @ (rounded - original).T) ** 2).mean()
    moved_by_nearest = ((inputs.double() @ (nearest - original).T) ** 2).mean()
    assert moved_by_gptq < 0.7 * moved_by_nearest


def test_a_recipe_keeps_named_single_layers_in_float_and_refuses_what_it_does_not_know(clip_detector):
    from deepfake_detector.export.int8_static import Int8Recipe
    from deepfake_detector.modeling.checkpoints import load_model_and_processor, resolve_checkpoint

    model, _ = load_model_and_processor(resolve_checkpoint(clip_detector))
    layers = Int8Recipe(float_blocks=(0, 1, 2, 3), float_layers=("4.fc2", "4.q")).quantised_layers(model)
    block = "vision_model.encoder.layers.4"
    assert layers == [f"{block}.self_attn.{part}_proj" for part in ("k", "v", "out")] + [f"{block}.mlp.fc1"]
    for wrong, message in (
        ({"parts": ("q", "gate")}, "not gate"),
        ({"float_layers": ("fc2",)}, "not 'fc2'"),
        ({"float_layers": ("2.gate",)}, "not '2.gate'"),
        ({"recheck_margin_logits": 0}, "above 0"),
    ):
        with pytest.raises(ValueError, match=message):
            Int8Recipe(**wrong)


@pytest.fixture(scope="module")
def int8_export(clip_detector, manifest, tmp_path_factory):
    """The tiny detector exported by `export --quantize int8-static` with the default recipe; the
    statistics it calibrated on are saved beside it, as ``calibration.safetensors``."""
    out = tmp_path_factory.mktemp("export") / "int8"
    args = ["export", "--quantize", "int8-static", "--model", str(clip_detector), "--out", str(out)]
    calibration = ["--calibration-data", str(manifest), "--calibration-count", "16"]
    assert main([*args, *calibration, "--save-calibration", str(out.parent / "calibration.safetensors")]) == 0
    return out


def test_the_export_quantises_the_recipe_s_layers_per_token_and_scores_like_pytorch(
    clip_detector, int8_export, varied_images
):
    import onnx
    from onnx import numpy_helper

    from deepfake_detector.export.int8_static import WEIGHT_LEVELS, matmul_nodes

    graph = onnx.load(int8_export / "model.onnx")
    every_linear = [
        f"vision_model.encoder.layers.{block}.{part}"
        for block in range(BLOCKS)
        for part in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.out_proj",
            "mlp.fc1",
            "mlp.fc2",
        )
    ]
    kept = [name for name in every_linear if name.split(".")[3] == "0"] + [
        "vision_model.encoder.layers.2.mlp.fc2"
    ]
    quantised = [name for name in every_linear if name not in kept]
    left_in_float = matmul_nodes(graph, every_linear).values()
    assert sorted(left_in_float) == sorted(kept)  # block 0 and block 2's fc2 only...
    integer_products = [node for node in graph.graph.node if node.op_type == "MatMulIntegerToFloat"]
    assert len(integer_products) == len(quantised)  # ...and each other layer became one int8 product
    weights = {init.name: numpy_helper.to_array(init) for init in graph.graph.initializer}
    for node in integer_products:
        weight = weights[node.input[1]]
        assert weight.dtype == np.int8 and np.abs(weight).max() == WEIGHT_LEVELS  # the 7-bit grid, used whole
    # One quantised input per distinct tensor: q, k and v share theirs.
    assert len({node.input[0] for node in integer_products}) == 4 * 4 - 1
    exact = onnx.load(int8_export / "model.fp32.onnx")  # the re-check's graph: every linear layer in float
    assert sorted(matmul_nodes(exact, every_linear).values()) == sorted(every_linear)

    info = json.loads((int8_export / "export.json").read_text())
    assert info["precision"] == "int8"
    assert info["quantization"] == {
        "method": "static",
        "parts": ["q", "k", "v", "o", "fc1", "fc2"],
        "float_blocks": [0],
        "float_layers": ["2.fc2"],
        "alpha": 0.7,
        "weight_rounding": "nearest",
        "activations": "per-token",
        "recheck_margin_logits": 0.75,
        "calibration_images": 16,
        "calibration_source": "images",
    }
    assert info["parity"]["check_images"] == 256 and info["parity"]["passed"]
    assert Detector.from_pretrained(int8_export).info().recheck_margin_logits == 0.75  # what `info` shows

    exported = Detector.from_pretrained(int8_export, jpeg_draft=False).predict(varied_images)
    reference = Detector.from_pretrained(clip_detector, precision="fp32", engine="torch").predict(
        varied_images
    )
    for ours, theirs in zip(exported, reference, strict=True):
        assert ours.domain == theirs.domain
        assert ours.fake_score == pytest.approx(theirs.fake_score, abs=0.05)


def _quantised_layer(path, layer, tokens) -> None:
    """Writes ``layer`` (a module with one linear layer, ``proj``) to ``path`` as the export does:
    exported, then its MatMul rewritten by `quantize_per_token`."""
    from deepfake_detector.export.int8_static import quantize_per_token

    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(
        layer, (tokens,), dynamo=True, input_names=["x"], dynamic_shapes={"hidden_states": {0: batch}}
    ).save(str(path))
    quantize_per_token(path, ["proj"])


def _expected_int8_product(layer, tokens, weight_levels: int | None = None) -> np.ndarray:
    """The int8 arithmetic `quantize_per_token`'s docstring states, in float64: each token rounded on
    its own [min, max] to 256 levels, the weights on the grid of ``weight_levels`` (default: the
    export's, 7-bit) per output channel, the bias added."""
    from deepfake_detector.export.int8_static import WEIGHT_LEVELS

    x = tokens.numpy().astype(np.float64)
    weight = layer.proj.weight.detach().numpy().T.astype(np.float64)  # (in, out)
    step = np.abs(weight).max(axis=0) / (weight_levels or WEIGHT_LEVELS)
    low, high = x.min(axis=-1, keepdims=True), x.max(axis=-1, keepdims=True)
    scale = np.maximum(high - low, 1e-12) / 255
    levels = np.floor((x - low) / scale + 0.5)  # round half up, in [0, 255]
    return (low + scale * levels) @ (np.round(weight / step) * step) + layer.proj.bias.detach().numpy()


class _Layer(torch.nn.Module):
    def __init__(self, width_in: int, width_out: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(width_in, width_out)

    def forward(self, hidden_states):
        return self.proj(hidden_states)


def test_a_quantised_layer_computes_the_per_token_int8_product_exactly(tmp_path):
    """One linear layer, rewritten: ONNX Runtime's result is the int8 arithmetic the docstring states
    (each token rounded on its own [min, max], the 7-bit weight grid, the bias folded in), to float
    rounding, on tokens with an outlier channel and on a constant token."""
    import onnx
    import onnxruntime

    torch.manual_seed(0)
    layer = _Layer(16, 8).eval()
    tokens = torch.randn(2, 5, 16)
    tokens[0, :, 3] *= 40  # an outlier channel
    tokens[1, 2] = 0.7  # a constant token: its range is empty
    path = tmp_path / "layer.onnx"
    _quantised_layer(path, layer, tokens)

    ops = [node.op_type for node in onnx.load(path).graph.node]
    assert "MatMul" not in ops and "Round" not in ops and ops.count("MatMulIntegerToFloat") == 1
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (result,) = session.run(None, {"x": tokens.numpy()})

    assert result.shape == (2, 5, 8)
    np.testing.assert_allclose(result, _expected_int8_product(layer, tokens), rtol=1e-5, atol=1e-4)
    exact = (
        tokens.numpy().astype(np.float64) @ layer.proj.weight.detach().numpy().T
        + layer.proj.bias.detach().numpy()
    )
    assert np.abs(result - exact).max() > 1e-2  # and it is int8: far from the float product


# CI sets this (``.ci/run``): there a missing emulator is a failure, on a developer machine a skip.
REQUIRE_QEMU = os.environ.get("DEEPFAKE_DETECTOR_REQUIRE_QEMU") == "1"
# Run by the emulated Python: the CPU's features as NumPy reads them (from the instructions, as ONNX
# Runtime does), and the graph's output on the saved tokens.
_EMULATED_RUN = """
import sys, numpy, onnxruntime
try:
    from numpy._core._multiarray_umath import __cpu_features__ as features
except ImportError:
    from numpy.core._multiarray_umath import __cpu_features__ as features
graph, tokens, out = sys.argv[1:]
session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
numpy.save(out, session.run(None, {"x": numpy.load(tokens)})[0])
print(features["AVX2"], features["AVX512F"], features.get("AVX512_VNNI", False))
"""


def _qemu() -> str:
    """QEMU's user-mode emulator; skips the test without it (fails it on CI)."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        message = "needs QEMU's user-mode emulator (apt-get install qemu-user)"
        if REQUIRE_QEMU:
            pytest.fail(message)
        pytest.skip(message)
    return qemu


# Run by the emulated Python: a detector on the export, its verdicts and its logits, as JSON.
_EMULATED_DETECTOR = """
import json, sys
from deepfake_detector import Detector
from deepfake_detector.io.images import load_image
folder, *images = sys.argv[1:]
detector = Detector.from_pretrained(folder, jpeg_draft=False)
verdicts = [prediction.verdict for prediction in detector.predict(images)]
logits = detector.compute_logits([load_image(image) for image in images])
print(json.dumps({"verdicts": verdicts, "logits": logits.tolist()}))
"""


def test_a_detector_on_an_emulated_avx2_cpu_gives_the_native_verdicts(int8_export, varied_images):
    """The whole path of an int8-static export (the NumPy processor, ONNX Runtime's int8 and fp32
    kernels, the re-check) on the emulated AVX2-only CPU: the native run's verdicts, and logits no
    further from the native ones than int8's own error against the export's fp32 graph."""
    qemu = _qemu()
    images = [str(path) for path in varied_images]
    ran = subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, "-c", _EMULATED_DETECTOR, str(int8_export), *images],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    emulated = json.loads(ran.stdout.splitlines()[-1])

    from deepfake_detector.inference.engines import EXACT_ONNX_FILE, OnnxEngine
    from deepfake_detector.io.images import load_image

    native = Detector.from_pretrained(int8_export, jpeg_draft=False)
    assert emulated["verdicts"] == [prediction.verdict for prediction in native.predict(images)]
    loaded = [load_image(image) for image in images]
    logits = native.compute_logits(loaded)
    pixels = np.stack([native.preprocessor(image) for image in loaded])
    fp32 = OnnxEngine(int8_export / EXACT_ONNX_FILE, precision="fp32").compute_logits(pixels)
    int8_error = np.abs(logits - fp32).max()
    assert np.abs(np.array(emulated["logits"]) - logits).max() <= int8_error + 1e-4


def test_the_int8_products_do_not_saturate_on_an_avx2_cpu_without_vnni(tmp_path, monkeypatch):
    """ONNX Runtime's int8 products on AVX2 without VNNI sum u8 x s8 pairs in saturating int16; the
    7-bit weights keep the largest pair, 2 x 255 x 64, inside it. The layer runs under QEMU's user-mode
    emulator with a Haswell CPU model (AVX2, no AVX-512, no VNNI) on tokens and weights at the ends of
    their grids and must compute the int8 arithmetic; with 8-bit weights (2 x 255 x 127) it does not."""
    from deepfake_detector.export import int8_static

    qemu = _qemu()
    torch.manual_seed(0)
    layer = _Layer(64, 6).eval()
    with torch.no_grad():
        layer.proj.weight[0] = 1.0  # every weight at the top of its grid: every pair at its largest
        layer.proj.weight[1] = -1.0  # and at the bottom
        layer.proj.weight[2, ::2] = -1.0
    tokens = torch.full((3, 4, 64), 2.0)
    tokens[..., 0] = -1.0  # each token's low: every other channel is on level 255
    tokens[2] = torch.randn(4, 64)
    np.save(tmp_path / "tokens.npy", tokens.numpy())

    def emulated(levels: int) -> np.ndarray:
        monkeypatch.setattr(int8_static, "WEIGHT_LEVELS", levels)
        path, out = tmp_path / f"layer-{levels}.onnx", tmp_path / f"emulated-{levels}.npy"
        _quantised_layer(path, layer, tokens)
        command = [qemu, "-cpu", "Haswell", sys.executable, "-c", _EMULATED_RUN, str(path)]
        ran = subprocess.run(
            [*command, str(tmp_path / "tokens.npy"), str(out)], capture_output=True, text=True, timeout=600
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
        assert ran.stdout.split() == ["True", "False", "False"]  # AVX2; no AVX-512, no VNNI: emulated
        return np.load(out)

    levels = int8_static.WEIGHT_LEVELS  # the export's grid
    expected = _expected_int8_product(layer, tokens, weight_levels=levels)
    np.testing.assert_allclose(emulated(levels), expected, rtol=1e-5, atol=1e-4)
    saturated = emulated(127)[:2, :, :2] - _expected_int8_product(layer, tokens, weight_levels=127)[:2, :, :2]
    assert np.abs(saturated).min() > 1  # the check can fail: 8-bit weights overflow int16 there


def test_a_score_does_not_depend_on_the_other_images_in_its_batch(int8_export):
    from deepfake_detector.inference.engines import OnnxEngine

    engine = OnnxEngine(int8_export / "model.onnx", precision="int8")
    rng = np.random.default_rng(0)
    image, quiet, loud = (rng.normal(size=(1, 3, 32, 32)).astype(np.float32) for _ in range(3))
    alone = engine.compute_outputs(image).logits
    beside_quiet = engine.compute_outputs(np.concatenate([image, quiet * 0.1])).logits[:1]
    beside_loud = engine.compute_outputs(np.concatenate([image, loud * 10.0])).logits[:1]
    np.testing.assert_allclose(beside_quiet, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(beside_loud, alone, rtol=1e-5, atol=1e-6)


def test_rows_near_a_decision_are_scored_again_by_the_fp32_graph(int8_export):
    from deepfake_detector.inference.engines import ExactRecheck, OnnxEngine

    pixels = np.random.default_rng(1).normal(size=(6, 3, 32, 32)).astype(np.float32)
    fast = OnnxEngine(int8_export / "model.onnx", precision="int8").compute_outputs(pixels)
    exact = OnnxEngine(int8_export / "model.fp32.onnx", precision="fp32").compute_outputs(pixels)
    assert not np.allclose(fast.logits, exact.logits, atol=1e-6)  # int8 does move the logits

    chosen = np.array([True, False, False, True, False, True])
    engine = OnnxEngine(
        int8_export / "model.onnx",
        precision="int8",
        recheck=ExactRecheck(int8_export / "model.fp32.onnx", lambda outputs: chosen[: len(outputs.logits)]),
    )
    mixed = engine.compute_outputs(pixels)
    np.testing.assert_allclose(mixed.logits[chosen], exact.logits[chosen], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(mixed.logits[~chosen], fast.logits[~chosen])
    np.testing.assert_allclose(mixed.domain_logits[chosen], exact.domain_logits[chosen], rtol=1e-5, atol=1e-5)
    assert (engine.rows_scored, engine.rows_rechecked) == (6, 3)


def test_the_detector_rechecks_at_its_own_thresholds(int8_export, varied_images):
    from deepfake_detector.scoring import Thresholds

    def rechecked(image, thresholds: Thresholds | None) -> int:
        detector = Detector.from_pretrained(int8_export, jpeg_draft=False, thresholds=thresholds)
        detector.predict([image])
        assert detector.engine.rows_scored == 1
        return detector.engine.rows_rechecked

    far = Thresholds(0.999999, 0.999999)  # a score no image here reaches
    # An image whose domains do not nearly tie: with the decision far away, it is not scored again...
    image = next(image for image in varied_images if rechecked(image, far) == 0)
    # ...and with the decision at its own score, it is.
    score = Detector.from_pretrained(int8_export, jpeg_draft=False).predict(image).fake_score
    assert rechecked(image, Thresholds(score, score)) == 1


def test_int8_static_says_what_it_needs(clip_detector, seed_checkpoint, manifest, tmp_path, capsys):
    out = tmp_path / "x"

    def export(model, *extra: str) -> str:
        args = ["export", "--quantize", "int8-static", "--model", str(model), "--out", str(out), *extra]
        assert main(args) == 2
        return capsys.readouterr().err

    calibration = ["--calibration-data", str(manifest), "--calibration-count"]
    assert "--quantize int8-static needs calibration images (--calibration-data)" in export(clip_detector)
    assert "int8-static needs a CLIP image tower" in export(seed_checkpoint, *calibration, "8")
    assert "the 'train' split has 288 images" in export(clip_detector, *calibration, "100")
    assert "give --calibration-data" in export(clip_detector, "--save-calibration", str(tmp_path / "s"))
    assert not out.exists()


def test_a_checkpoint_that_ships_its_calibration_exports_the_same_graph_without_images(
    clip_detector, int8_export, tmp_path
):
    import shutil

    import onnx
    from onnx import numpy_helper

    from deepfake_detector.errors import ExportError
    from deepfake_detector.export.int8_static import CALIBRATION_FILE, Int8Recipe
    from deepfake_detector.export.onnx import export_onnx

    shipped = tmp_path / "shipped"
    shutil.copytree(clip_detector, shipped)
    shutil.copyfile(int8_export.parent / "calibration.safetensors", shipped / CALIBRATION_FILE)
    out = tmp_path / "int8"
    assert main(["export", "--quantize", "int8-static", "--model", str(shipped), "--out", str(out)]) == 0

    info = json.loads((out / "export.json").read_text())["quantization"]
    assert info["calibration_source"] == CALIBRATION_FILE and info["calibration_images"] == 16

    def int8_weights(folder):
        graph = onnx.load(folder / "model.onnx").graph
        return {init.name: numpy_helper.to_array(init) for init in graph.initializer if init.data_type == 3}

    ours, with_images = int8_weights(out), int8_weights(int8_export)
    assert len(ours) == 4 * 6 - 1 and sorted(ours) == sorted(with_images)  # one per quantised layer
    for name, weight in ours.items():
        np.testing.assert_array_equal(weight, with_images[name])  # the same migration, the same grid

    with pytest.raises(ExportError, match="GPTQ weight rounding needs calibration images"):
        export_onnx(
            shipped, tmp_path / "gptq", quantize="int8-static", recipe=Int8Recipe(weight_rounding="gptq")
        )
    (shipped / CALIBRATION_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ExportError, match=f"{CALIBRATION_FILE}: not int8 calibration statistics"):
        export_onnx(shipped, tmp_path / "damaged", quantize="int8-static")
    assert not (tmp_path / "gptq").exists() and not (tmp_path / "damaged").exists()


def test_calibration_and_check_images_are_disjoint_equal_shares(manifest, tmp_path):
    from deepfake_detector.export.int8_static import select_calibration_images

    other = tmp_path / "other.csv"
    other.write_text(manifest.read_text())
    calibration, check = select_calibration_images([manifest, other], count=9, check_count=4)
    assert len(calibration) == 9 and len(check) == 4
    assert not set(calibration) & set(check)
    again = select_calibration_images([manifest, other], count=9, check_count=4)
    assert again == (calibration, check)  # reproducible


def test_the_export_check_compares_verdicts_at_each_domain_s_threshold():
    from deepfake_detector.inference.parity import compute_verdict_parity
    from deepfake_detector.scoring import Calibration, ModelOutputs, Thresholds

    def outputs(fake_scores, domains):  # logits (real, fake) with these fake scores; domain index per row
        scores = np.asarray(fake_scores)
        logits = np.stack([np.zeros_like(scores), np.log(scores / (1 - scores))], axis=1)
        return ModelOutputs(logits.astype(np.float32), np.eye(2, dtype=np.float32)[domains])

    calibration = Calibration(
        domain_thresholds={"face": Thresholds(0.8, 0.8), "general": Thresholds(0.3, 0.3)}
    )
    check = dict(fake_ids=(1,), calibration=calibration, domains=("face", "general"))
    # Across 0.5 but not across the face threshold (0.8): the same verdict, though the top class moved.
    same = compute_verdict_parity(outputs([0.45, 0.2], [0, 1]), outputs([0.55, 0.25], [0, 1]), **check)
    assert same.compared == "verdict" and same.agreement == 1.0
    # Across the general threshold (0.3), nowhere near 0.5: a changed verdict.
    moved = compute_verdict_parity(outputs([0.45, 0.28], [0, 1]), outputs([0.45, 0.32], [0, 1]), **check)
    assert moved.agreement == 0.5 and not moved.passed
    assert "verdict agreement 50.0% over 2 inputs" in moved.describe()


def test_rows_near_a_threshold_or_a_domain_tie_are_found_in_logits():
    from deepfake_detector.scoring import Calibration, ModelOutputs, Thresholds, find_near_decisions

    def logit(p):
        return np.log(p / (1 - p))

    calibration = Calibration(
        domain_thresholds={"face": Thresholds(0.8, 0.8), "general": Thresholds(0.2, 0.5)}
    )
    fake_scores = np.array([0.8, 0.95, 0.3, 0.5, 0.12, 0.9])
    domain_of_row = [0, 0, 0, 1, 1, 1]
    logits = np.stack([np.zeros(6), logit(fake_scores)], axis=1).astype(np.float32)
    domain_logits = np.eye(2, dtype=np.float32)[domain_of_row] * 3.0
    domain_logits[5] = [0.2, 0.5]  # a near tie between the domains
    near = find_near_decisions(
        ModelOutputs(logits, domain_logits),
        fake_ids=(1,),
        calibration=calibration,
        domains=("face", "general"),
        margin_logits=0.75,
    )
    # 0.8 at face's 0.8; 0.95 is 1.56 logits above it; 0.3 is 2.2 below; 0.5 at general's uncertain
    # band's upper end; 0.12 is 0.6 logits below its lower end (0.2); the last row's domains tie.
    assert near.tolist() == [True, False, False, True, True, True]


def test_an_export_whose_fp32_graph_is_missing_says_so(int8_export, tmp_path):
    import shutil

    from deepfake_detector.errors import EngineError

    broken = tmp_path / "broken"
    shutil.copytree(int8_export, broken)
    (broken / "model.fp32.onnx").unlink()
    with pytest.raises(EngineError, match=r"model\.fp32\.onnx, which is missing; export the folder again"):
        Detector.from_pretrained(broken)


@pytest.fixture
def cached_model(clip_detector, int8_export, tmp_path, monkeypatch):
    """The tiny detector as a bundled model assembled in the cache is (shipping its calibration
    statistics), and this CPU as one without AMX."""
    import shutil

    from deepfake_detector.export.int8_static import CALIBRATION_FILE
    from deepfake_detector.inference import loading
    from deepfake_detector.inference.engines import CpuFeatures

    monkeypatch.setenv("DEEPFAKE_DETECTOR_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "models" / "tiny-0123456789abcdef"
    shutil.copytree(clip_detector, folder)
    shutil.copyfile(int8_export.parent / "calibration.safetensors", folder / CALIBRATION_FILE)
    without_amx = CpuFeatures(avx512_bf16=True, avx512=True, avx2=True)
    monkeypatch.setattr(loading, "detect_cpu_features", lambda: without_amx)
    return folder


def test_auto_runs_the_cached_int8_export_without_amx_and_explains_with_pytorch(
    cached_model, varied_images, monkeypatch, capsys
):
    from deepfake_detector.export.onnx import export_int8_to_cache
    from deepfake_detector.inference import loading
    from deepfake_detector.inference.engines import CpuFeatures
    from deepfake_detector.modeling.checkpoints import int8_export_folder

    assert Detector.from_pretrained(cached_model).engine.name == "torch"  # nothing built yet
    folder, result = export_int8_to_cache(cached_model)
    assert folder == int8_export_folder(cached_model) and folder.parent.name == "exports"
    assert result is not None and result.parity.passed
    assert export_int8_to_cache(cached_model) == (folder, None)  # built once

    detector = Detector.from_pretrained(cached_model, jpeg_draft=False)
    assert (detector.engine.name, detector.engine.precision) == ("onnx", "int8")
    assert "no AMX" in detector.info().engine_reason and detector.model is None
    assert main(["info", "--model", str(cached_model)]) == 0
    shown = capsys.readouterr().out
    assert "engine:       onnx (int8)" in shown and "why:          auto: this CPU has no AMX" in shown
    assert detector.info().model == str(cached_model)  # the rows name the model, not the export
    ours = detector.predict(varied_images[:6])
    direct = Detector.from_pretrained(folder, jpeg_draft=False).predict(varied_images[:6])
    assert [p.fake_score for p in ours] == [p.fake_score for p in direct]

    explanation = detector.explain(varied_images[0])  # heatmaps need the PyTorch model: loaded now
    assert detector.model is None and detector._explainer.model is not None
    exact = Detector.from_pretrained(cached_model, precision="fp32", engine="torch")
    assert (exact.engine.name, exact.engine.precision) == ("torch", "fp32")  # one flag away
    np.testing.assert_allclose(explanation.token_map, exact.explain(varied_images[0]).token_map, atol=1e-6)
    with_amx = CpuFeatures(amx=True, avx512_bf16=True, avx512=True, avx2=True)
    monkeypatch.setattr(loading, "detect_cpu_features", lambda: with_amx)
    assert Detector.from_pretrained(cached_model).engine.precision == "bf16"  # AMX: bf16 stays
    assert Detector.from_pretrained(cached_model, precision="int8").engine.name == "onnx"  # unless asked


def test_only_a_model_assembled_in_the_cache_has_a_cached_int8_export(clip_detector, cached_model):
    from deepfake_detector.errors import ExportError
    from deepfake_detector.export.onnx import export_int8_to_cache
    from deepfake_detector.modeling.checkpoints import int8_export_folder

    assert int8_export_folder(clip_detector) is None
    with pytest.raises(ExportError, match="is not a bundled model assembled in the cache"):
        export_int8_to_cache(clip_detector)
