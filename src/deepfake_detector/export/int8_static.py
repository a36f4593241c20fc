"""Outlier-aware int8 for CLIP image towers: ``export --quantize int8-static``.

CLIP's residual stream has a few channels hundreds of times larger than the rest, so int8 activations
with one range per tensor (what ONNX Runtime's dynamic quantisation does, ``--quantize int8``) lose
everything else, and the heads, which read the class token after every block, see it. The remedy the
literature uses, built here:

1. Per-channel input ranges of every quantised linear layer, over calibration images ("static": the
   migration below is fixed on them once, at export).
2. SmoothQuant migration (Xiao et al. 2023): input channel j of a linear layer is divided by
   ``s_j = max|X_j|^alpha / max|W_j|^(1 - alpha)`` and the weight's column j multiplied by it, which
   leaves the float model's outputs unchanged. For q, k, v and fc1 the division folds into the
   LayerNorm before them, for out_proj into v_proj's rows, for fc2 into one multiply after the MLP's
   activation.
3. Optionally, GPTQ weight rounding (Frantar et al. 2023, ``weight_rounding="gptq"``): each weight is
   put on the int8 grid one input column at a time, each column's rounding error compensated in the
   columns not yet rounded, weighted by the second moments of the layer's (smoothed) input.
4. `quantize_per_token`: each chosen MatMul becomes ONNX Runtime's ``MatMulIntegerToFloat`` with
   7-bit weights per output channel and uint8 activations with a range per token, computed in the
   graph. Attention's own products, LayerNorms, the heads and the first blocks stay fp32.
5. An exact re-check: the export also holds the fp32 graph, and rows whose int8 fake score lies
   within `Int8Recipe.recheck_margin_logits` of a threshold (the only rows whose verdict the int8
   error can move) are scored again by it (`inference.engines.ExactRecheck`).

Which layers and margins: `benchmarks/int8_smoothquant.py` measured the choices on the val split,
simulated and as built here (``--runtime onnx``); docs/speed.md has the figures.
"""

from __future__ import annotations

import ast
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepfake_detector.errors import ExportError

LAYERS = "vision_model.encoder.layers"
# The linear layers a recipe may name, by their attribute path inside an encoder block.
PARTS = {
    "q": "self_attn.q_proj",
    "k": "self_attn.k_proj",
    "v": "self_attn.v_proj",
    "o": "self_attn.out_proj",
    "fc1": "mlp.fc1",
    "fc2": "mlp.fc2",
}
CALIBRATION_BATCH = 8
# What a checkpoint folder may ship so that its int8-static export needs no calibration images: the
# largest |input| per channel of every linear layer, over the images it was calibrated on
# (`save_input_ranges`, written by ``export --save-calibration``).
CALIBRATION_FILE = "int8_calibration.safetensors"
WEIGHT_ROUNDINGS = ("gptq", "nearest")
# The int8 weights' grid (ONNX Runtime's with reduce_range): symmetric, per output channel, integers in
# [-64, 64] (a step of max|w| / 64), so that a u8 x s8 pair sum fits int16 on CPUs without VNNI.
WEIGHT_LEVELS = 64
# GPTQ's damping of the second-moment matrix, as a share of its mean diagonal (the paper's 1%).
GPTQ_DAMPING = 0.01
DEFAULT_CALIBRATION_COUNT = 320
# The parity bar (verdict agreement >= 99.5%) can only be measured on 200 images or more: one image
# near a threshold that moves to the other side is 98.4% of 64.
HELD_OUT_CHECK_COUNT = 256


@dataclass(frozen=True)
class Int8Recipe:
    """Which linear layers become int8, how the outliers are migrated, and which rows are scored again
    in fp32.

    Attributes:
        parts: Linear layers quantised in each quantised block (keys of `PARTS`).
        float_blocks: Encoder blocks (0-based) kept entirely in fp32.
        float_layers: Single layers kept in fp32 in blocks that are otherwise quantised, as
            ``"block.part"`` (``"2.fc2"``: block 2's fc2).
        alpha: SmoothQuant migration strength (0: none, 1: all of the input's range into the weight).
        weight_rounding: "nearest" or "gptq" (error-compensating, `round_weights`).
        recheck_margin_logits: Rows whose int8 fake score lies within this many logits of a threshold
            (or whose domain is as close to a tie) are scored again by the export's fp32 graph
            (`scoring.find_near_decisions`); None: never, and the export holds no fp32 graph.
    """

    parts: tuple[str, ...] = ("q", "k", "v", "o", "fc1", "fc2")
    # On the val split (1,075 images, ONNX Runtime, before the re-check), every block in int8 changed
    # 21 verdicts and cost modern/ 0.009 of ROC-AUC. Block 0 and block 2's fc2 are the layers that
    # move the logits most one at a time; with them in fp32, 8 verdicts changed and 0 after the
    # re-check (modern/ -0.002), at 1.15x the int8 graph's speed with blocks 0-2 in fp32 (6 and 0).
    float_blocks: tuple[int, ...] = (0,)
    float_layers: tuple[str, ...] = ("2.fc2",)
    # 0.5 moved the median fake score by 0.0027 (p99 0.134), 0.7 by 0.0020 (p99 0.099) on 409 val
    # images (weights and activations per tensor); 0.8 cost the general domain 0.026 of ROC-AUC.
    alpha: float = 0.7
    # GPTQ halved the changed val verdicts of the per-tensor recipe (4 of 1,075 against 8), but the
    # export of clip-b16-v2 with it failed its check (2 of 256 held-out verdicts changed; nearest: 0).
    weight_rounding: str = "nearest"
    # On the val split, with the default layers: 0.5 logits scored 3.8% of the rows again and left 0
    # of 1,075 verdicts changed (8 before); 0.75, 5.5% and 0, the margin kept for unseen data.
    recheck_margin_logits: float | None = 0.75

    def __post_init__(self) -> None:
        if self.weight_rounding not in WEIGHT_ROUNDINGS:
            raise ValueError(
                f"weight_rounding must be one of {WEIGHT_ROUNDINGS}, not {self.weight_rounding!r}"
            )
        unknown = sorted(set(self.parts) - set(PARTS))
        if unknown:
            raise ValueError(f"parts must be among {', '.join(PARTS)}, not {', '.join(unknown)}")
        for layer in self.float_layers:
            block, _, part = layer.partition(".")
            if not block.isdigit() or part not in PARTS:
                raise ValueError(
                    f"float_layers are 'block.part' (e.g. '2.fc2', parts: {', '.join(PARTS)}), not {layer!r}"
                )
        if self.recheck_margin_logits is not None and not self.recheck_margin_logits > 0:
            raise ValueError(
                f"recheck_margin_logits must be above 0 or None, not {self.recheck_margin_logits}"
            )

    def to_dict(self) -> dict:
        return {
            "parts": list(self.parts),
            "float_blocks": list(self.float_blocks),
            "float_layers": list(self.float_layers),
            "alpha": self.alpha,
            "weight_rounding": self.weight_rounding,
            "activations": "per-token",
            "recheck_margin_logits": self.recheck_margin_logits,
        }

    def quantised_layers(self, model) -> list[str]:
        """Module names of the linear layers this recipe quantises in ``model``."""
        blocks = len(_encoder_layers(model))
        return [
            f"{LAYERS}.{index}.{PARTS[part]}"
            for index in range(blocks)
            if index not in self.float_blocks
            for part in self.parts
            if f"{index}.{part}" not in self.float_layers
        ]


def select_calibration_images(
    data: list[str | os.PathLike],
    *,
    split: str = "train",
    count: int = DEFAULT_CALIBRATION_COUNT,
    check_count: int = HELD_OUT_CHECK_COUNT,
    seed: int = 0,
) -> tuple[list[str], list[str]]:
    """Image paths to calibrate on and others to check parity on, drawn at random, in equal shares from
    each of ``data`` (labelled data as `load_labelled_images` reads it: a manifest, a class folder, a
    dataset), from its ``split``.

    Raises:
        DataError: As `load_labelled_images`; or a split holds fewer images than its share.
    """
    import random

    from deepfake_detector.data.labelled import DataError, load_labelled_images

    rng = random.Random(seed)
    calibration, check = [], []
    for index, source in enumerate(data):
        wanted = count // len(data) + (index < count % len(data))
        checked = check_count // len(data) + (index < check_count % len(data))
        paths = [image.path for image in load_labelled_images(source, split=split)]
        if len(paths) < wanted + checked:
            raise DataError(
                f"{os.fspath(source)}: the {split!r} split has {len(paths)} images; calibration needs "
                f"{wanted} and the parity check {checked} more (lower --calibration-count)"
            )
        chosen = rng.sample(paths, wanted + checked)
        calibration += chosen[:wanted]
        check += chosen[wanted:]
    return calibration, check


def prepare_model(
    model,
    batches: Callable[[], Iterator[np.ndarray]] | None,
    recipe: Int8Recipe,
    ranges: dict[str, np.ndarray] | None = None,
):
    """A copy of ``model`` ready for `quantize_per_token`: outliers migrated (`smooth_model`) and, with
    GPTQ rounding, the quantised layers' weights already on the int8 grid (`round_weights`).

    Args:
        batches: ``batches()`` yields calibration pixel batches; it is read once for the input ranges
            unless ``ranges`` are given, and once more with GPTQ. None: ``ranges`` only.
        ranges: Input ranges already measured (`collect_input_ranges`, `load_input_ranges`).

    Raises:
        ExportError: ``ranges`` lack a layer the recipe quantises, or GPTQ rounding has no images.
    """
    layers = recipe.quantised_layers(model)
    if ranges is None:
        ranges = collect_input_ranges(model, batches(), layers)
    missing = [name for name in layers if name not in ranges]
    if missing:
        raise ExportError(
            f"int8-static: the calibration statistics lack {len(missing)} of the recipe's layers "
            f"(first: {missing[0]}); they were measured on another model"
        )
    prepared = smooth_model(model, ranges, recipe)
    if recipe.weight_rounding == "gptq":
        if batches is None:
            raise ExportError(
                "int8-static: GPTQ weight rounding needs calibration images (--calibration-data)"
            )
        round_weights(prepared, collect_input_moments(prepared, batches(), layers))
    return prepared


def every_linear_layer(model) -> list[str]:
    """Module names of every linear layer any recipe may quantise in ``model``."""
    return Int8Recipe(float_blocks=(), float_layers=()).quantised_layers(model)


def save_input_ranges(path: str | os.PathLike, ranges: dict[str, np.ndarray], image_count: int) -> None:
    """Writes what the migration reads of ``ranges`` (each channel's largest |input|, (1, in) float32)
    and how many images they were measured on, as safetensors."""
    from safetensors.numpy import save_file

    largest = {
        name: np.abs(value).max(axis=0, keepdims=True).astype(np.float32) for name, value in ranges.items()
    }
    save_file(largest, os.fspath(path), metadata={"calibration_images": str(image_count)})


def load_input_ranges(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], int]:
    """The ranges `save_input_ranges` wrote, and the number of images behind them.

    Raises:
        ExportError: The file can't be read as such statistics.
    """
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="numpy") as handle:
            names = list(handle.keys())
            ranges = {name: handle.get_tensor(name) for name in names}
            count = int((handle.metadata() or {}).get("calibration_images", 0))
    except Exception as error:  # safetensors raises its own types for a damaged or foreign file
        raise ExportError(f"{os.fspath(path)}: not int8 calibration statistics ({error})") from error
    if not ranges or any(value.ndim != 2 or value.shape[0] not in (1, 2) for value in ranges.values()):
        raise ExportError(f"{os.fspath(path)}: not int8 calibration statistics (unexpected tensors)")
    return ranges, count


def collect_input_ranges(model, batches: Iterator[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """(min, max) of each input channel, (2, in), of the linear layers ``names``, over ``batches``."""
    import torch

    def update(seen, flat):
        low, high = flat.amin(0), flat.amax(0)
        return (low, high) if seen is None else (torch.minimum(seen[0], low), torch.maximum(seen[1], high))

    found = _observe_inputs(model, batches, names, update)
    return {name: torch.stack(value).numpy() for name, value in found.items()}


def collect_input_moments(model, batches: Iterator[np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """E[x x^T], (in, in) float64, of the input x of each linear layer ``names``, over every token of
    ``batches``."""

    def update(seen, flat):
        flat = flat.double()
        count, total = seen or (0, 0.0)
        return count + len(flat), total + flat.T @ flat

    found = _observe_inputs(model, batches, names, update)
    return {name: (total / count).numpy() for name, (count, total) in found.items()}


def round_weights(model, moments: dict[str, np.ndarray]) -> None:
    """Puts the weight of each linear layer named in ``moments`` on ONNX Runtime's int8 grid (a step of
    max|row| / `WEIGHT_LEVELS` per output row), in place, by GPTQ (Frantar et al. 2023): input columns
    are rounded in order, and each column's rounding error is spread over the columns not yet rounded
    so that the layer's output on inputs with these second moments moves least.

    Each row keeps its largest magnitude exactly (that weight is exempt from compensation and lies on
    the grid), so that ONNX Runtime derives the same step from the rounded weight and stores exactly
    these integers."""
    import torch

    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, second_moments in moments.items():
            linear = modules[name]
            linear.weight.copy_(_gptq(linear.weight.double(), torch.from_numpy(second_moments)).float())


def _gptq(weight, second_moments):
    """``weight`` (out, in) rounded onto its per-row grid with GPTQ's error compensation, in float64."""
    import torch

    weight = weight.clone()
    step = weight.abs().amax(1).clamp(min=1e-12) / WEIGHT_LEVELS  # (out,)
    keep = weight.abs() == weight.abs().amax(1, keepdim=True)  # each row's largest: exempt, on the grid
    hessian = second_moments.clone()
    dead = torch.diagonal(hessian) == 0  # an input channel that never fired: nothing to compensate
    hessian[dead, dead] = 1.0
    hessian += GPTQ_DAMPING * torch.diagonal(hessian).mean() * torch.eye(len(hessian), dtype=hessian.dtype)
    # The upper Cholesky factor of the inverse: row i holds how column i's error spreads to the next.
    factor = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(hessian)), upper=True)
    rounded = torch.empty_like(weight)
    for i in range(weight.shape[1]):
        column = weight[:, i]
        rounded[:, i] = torch.clamp(torch.round(column / step), -WEIGHT_LEVELS, WEIGHT_LEVELS) * step
        error = (column - rounded[:, i]) / factor[i, i]
        weight[:, i + 1 :] -= (error[:, None] * factor[i, i + 1 :][None, :]).masked_fill(
            keep[:, i + 1 :], 0.0
        )
    return rounded


def _observe_inputs(model, batches: Iterator[np.ndarray], names: list[str], update: Callable) -> dict:
    """{name: state} after running ``batches`` through ``model``, where each batch's input of linear layer
    ``name``, flattened to (tokens, in), updates its state: ``state = update(state or None, flat)``.
    Layers that read the same tensor (q, k and v) are observed once."""
    import torch

    found: dict = {}
    # id of an input tensor seen in this batch -> (the tensor, kept so that its id is not reused, and
    # the first layer that read it)
    shared: dict[int, tuple] = {}

    def hook(name: str) -> Callable:
        def record(module, inputs, output) -> None:
            tensor = inputs[0]
            _, first = shared.setdefault(id(tensor), (tensor, name))
            if first != name:
                found[name] = found[first]
                return
            flat = tensor.detach().reshape(-1, tensor.shape[-1]).float()
            found[name] = update(found.get(name), flat)

        return record

    modules = dict(model.named_modules())
    handles = [modules[name].register_forward_hook(hook(name)) for name in names]
    try:
        with torch.inference_mode():
            for batch in batches:
                shared.clear()
                model(pixel_values=torch.from_numpy(batch))
    finally:
        for handle in handles:
            handle.remove()
    return found


def smooth_model(model, ranges: dict[str, np.ndarray], recipe: Int8Recipe):
    """A copy of ``model`` with the recipe's outlier migration folded into its weights (same outputs in
    exact arithmetic)."""
    import torch

    smoothed = copy.deepcopy(model).eval()
    quantised = set(recipe.quantised_layers(smoothed))

    def factors(name: str, weights: list[torch.Tensor]) -> torch.Tensor:
        input_max = torch.from_numpy(np.abs(ranges[name]).max(axis=0)).clamp(min=1e-5)  # (in,)
        weight_max = torch.stack([w.abs().amax(0) for w in weights]).amax(0).clamp(min=1e-5)  # (in,)
        return (input_max**recipe.alpha / weight_max ** (1 - recipe.alpha)).clamp(min=1e-5)

    with torch.no_grad():
        for index, layer in enumerate(_encoder_layers(smoothed)):
            prefix = f"{LAYERS}.{index}"
            attention, mlp = layer.self_attn, layer.mlp
            projections = [attention.q_proj, attention.k_proj, attention.v_proj]
            names = [f"{prefix}.{PARTS[part]}" for part in ("q", "k", "v")]
            if quantised & set(names):  # q, k and v read the same LayerNorm output: one migration
                measured = next(name for name in names if name in ranges)  # the same input's ranges
                scale = factors(measured, [p.weight for p in projections])
                _divide_layer_norm(layer.layer_norm1, scale)
                for projection in projections:
                    projection.weight.mul_(scale[None, :])
            if f"{prefix}.{PARTS['o']}" in quantised:  # out_proj reads v's rows, mixed over tokens only
                scale = factors(f"{prefix}.{PARTS['o']}", [attention.out_proj.weight])
                attention.v_proj.weight.div_(scale[:, None])
                attention.v_proj.bias.div_(scale)
                attention.out_proj.weight.mul_(scale[None, :])
            if f"{prefix}.{PARTS['fc1']}" in quantised:
                scale = factors(f"{prefix}.{PARTS['fc1']}", [mlp.fc1.weight])
                _divide_layer_norm(layer.layer_norm2, scale)
                mlp.fc1.weight.mul_(scale[None, :])
            if f"{prefix}.{PARTS['fc2']}" in quantised:  # fc2 reads the activation: divided there
                scale = factors(f"{prefix}.{PARTS['fc2']}", [mlp.fc2.weight])
                mlp.activation_fn = _scaled_activation(mlp.activation_fn, 1.0 / scale)
                mlp.fc2.weight.mul_(scale[None, :])
    return smoothed


def quantize_per_token(path: Path, quantised: list[str]) -> None:
    """Replaces the fp32 graph at ``path`` with one whose MatMuls of the linear layers ``quantised`` run
    in int8 (ONNX Runtime's ``MatMulIntegerToFloat``), the rest unchanged.

    - Weights: int8 per output channel on the 7-bit grid (integers in [-`WEIGHT_LEVELS`,
      `WEIGHT_LEVELS`], a step of max|column| / `WEIGHT_LEVELS`), so that CPUs without VNNI, which
      sum u8 x s8 products in saturating int16 pairs, do not overflow. GPTQ-rounded weights are
      already on this grid and are stored as they are.
    - Activations: uint8 on each token's own [min, max], computed in the graph: ``x ~ low + scale * q``.
      A token's range depends on nothing else in the batch, so a score does not move with the other
      images; the outlier channels that SmoothQuant leaves only cost their own token resolution, not
      the whole tensor's. [min, max] rather than [-max, max]: fc2 reads the MLP's activation, which is
      barely negative; with every block in int8, the symmetric form changed 29 of 1,075 val verdicts
      (before the fp32 re-check), the asymmetric one 21.
    - The product: ``x @ W ~ scale * (q @ W) + low * column_sums(W)``, plus the layer's bias.
      ``MatMulIntegerToFloat`` gives ``q @ W`` already in float (its weight steps applied inside the
      int8 kernel), one multiply applies each token's scale, and one ``Gemm`` adds the rank-2 rest
      (``[low, 1] @ [column_sums; bias]``). Each stage is one pass over the output; ONNX Runtime's
      integer products take one zero point and one activation scale per tensor, which is why the
      per-token terms are applied around it.

    Written by hand because ONNX Runtime's quantisers scale activations per tensor only (static or
    per batch).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if not quantised:
        raise ExportError("int8-static: the recipe quantises no layer of this model (too few blocks?)")
    graph_model = onnx.load(os.fspath(path))
    nodes = matmul_nodes(graph_model, quantised)
    missing = sorted(set(quantised) - set(nodes.values()))
    if missing:
        raise ExportError(
            f"int8-static: the exported graph has no matrix multiply for {len(missing)} linear layers "
            f"(first: {missing[0]}); this exporter's graph is not what the recipe expects"
        )
    graph = graph_model.graph
    weights = {initializer.name: initializer for initializer in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    constants = [
        numpy_helper.from_array(np.array([-1], np.int64), "per_token/last_axis"),
        numpy_helper.from_array(np.array([0], np.int64), "per_token/first"),
        numpy_helper.from_array(np.array(1.0, np.float32), "per_token/one"),
        numpy_helper.from_array(np.array(0, np.uint8), "per_token/no_zero_point"),
        numpy_helper.from_array(np.array(0.5, np.float32), "per_token/half"),
        numpy_helper.from_array(np.array(255.0, np.float32), "per_token/levels"),
        numpy_helper.from_array(np.array(1e-12, np.float32), "per_token/tiny"),
    ]
    rewritten, dropped = [], set()  # dropped: the bias Adds folded into the Gemms
    quantised_inputs: dict[str, dict[str, str]] = {}  # q, k and v share one quantised input

    def make(op_type: str, inputs: list[str], output: str, **attributes):
        return helper.make_node(op_type, inputs, [output], name=output, **attributes)

    def quantise_input(x: str, width: int) -> dict[str, str]:
        """The uint8 rows of tensor ``x`` (..., ``width``) flattened to (M, ``width``), each row's scale
        (M, 1), the row's [low, 1] (M, 2), and the leading shape of ``x`` (to restore the output's)."""
        if x not in quantised_inputs:
            t = f"{x}/per_token"  # the prefix of this input's intermediate tensors
            constants.append(numpy_helper.from_array(np.array([-1, width], np.int64), f"{t}/rows_shape"))
            rewritten.extend(
                [
                    make("Shape", [x], f"{t}/shape"),
                    make("Slice", [f"{t}/shape", "per_token/first", "per_token/last_axis"], f"{t}/leading"),
                    make("Reshape", [x, f"{t}/rows_shape"], f"{t}/rows"),  # (M, width)
                    make("ReduceMax", [f"{t}/rows", "per_token/last_axis"], f"{t}/high", keepdims=1),
                    make("ReduceMin", [f"{t}/rows", "per_token/last_axis"], f"{t}/low", keepdims=1),
                    make("Sub", [f"{t}/high", f"{t}/low"], f"{t}/width"),
                    make("Max", [f"{t}/width", "per_token/tiny"], f"{t}/span"),
                    make("Div", [f"{t}/span", "per_token/levels"], f"{t}/scale"),
                    make("Div", ["per_token/levels", f"{t}/span"], f"{t}/inverse"),
                    # q = floor((x - low) / scale + 0.5), as x * inverse + (0.5 - low * inverse): the
                    # value is in [0, 255.5] by construction, and Cast to uint8 truncates it.
                    make("Mul", [f"{t}/low", f"{t}/inverse"], f"{t}/low_steps"),
                    make("Sub", ["per_token/half", f"{t}/low_steps"], f"{t}/offset"),
                    make("Mul", [f"{t}/rows", f"{t}/inverse"], f"{t}/steps"),
                    make("Add", [f"{t}/steps", f"{t}/offset"], f"{t}/shifted"),
                    make("Cast", [f"{t}/shifted"], f"{t}/uint8", to=TensorProto.UINT8),
                    make("Shape", [f"{t}/low"], f"{t}/low_shape"),
                    make("Expand", ["per_token/one", f"{t}/low_shape"], f"{t}/ones"),
                    make("Concat", [f"{t}/low", f"{t}/ones"], f"{t}/low_one", axis=1),  # (M, 2)
                ]
            )
            quantised_inputs[x] = {
                "uint8": f"{t}/uint8",
                "scale": f"{t}/scale",
                "low_one": f"{t}/low_one",
                "leading": f"{t}/leading",
            }
        return quantised_inputs[x]

    def folded_bias(node) -> tuple[object | None, str]:
        """The bias Add right after ``node`` (its only consumer, adding an initializer), and the tensor
        the layer's output is: that Add's, or ``node``'s own when there is none to fold."""
        after = consumers.get(node.output[0], [])
        if len(after) == 1 and after[0].op_type == "Add":
            (other,) = [name for name in after[0].input if name != node.output[0]] or [None]
            bias = weights.get(other)
            if bias is not None and len(consumers.get(other, [])) == 1 and len(bias.dims) == 1:
                return after[0], after[0].output[0]
        return None, node.output[0]

    for node in graph.node:
        if node.name in dropped:
            continue
        if node.name not in nodes:
            rewritten.append(node)
            continue
        activations, weight_name = node.input
        weight = numpy_helper.to_array(weights[weight_name]).astype(np.float32)  # (in, out)
        step = np.maximum(np.abs(weight).max(axis=0), 1e-12) / WEIGHT_LEVELS  # (out,)
        integers = np.clip(np.round(weight / step), -WEIGHT_LEVELS, WEIGHT_LEVELS).astype(np.int8)
        graph.initializer.remove(weights[weight_name])
        bias_add, output = folded_bias(node)
        if bias_add is None:
            bias = np.zeros(weight.shape[1], np.float32)
        else:
            bias_name = next(name for name in bias_add.input if name != node.output[0])
            bias = numpy_helper.to_array(weights[bias_name]).astype(np.float32)
            graph.initializer.remove(weights[bias_name])
            dropped.add(bias_add.name)
        w = node.name  # the prefix of this MatMul's new tensors
        column_sums = integers.sum(axis=0, dtype=np.int64).astype(np.float32) * step  # of W as stored
        constants += [
            numpy_helper.from_array(integers, f"{w}/weight_int8"),
            numpy_helper.from_array(step.astype(np.float32), f"{w}/weight_step"),
            numpy_helper.from_array(np.stack([column_sums, bias]), f"{w}/sums_bias"),  # (2, out)
            numpy_helper.from_array(np.array([weight.shape[1]], np.int64), f"{w}/width_out"),
        ]
        x = quantise_input(activations, weight.shape[0])
        rewritten.extend(
            [
                helper.make_node(
                    "MatMulIntegerToFloat",
                    [
                        x["uint8"],
                        f"{w}/weight_int8",
                        "per_token/one",
                        f"{w}/weight_step",
                        "per_token/no_zero_point",
                    ],
                    [f"{w}/products"],  # (M, out): q @ W, in float
                    name=f"{w}/products",
                    domain="com.microsoft",
                ),
                make("Mul", [f"{w}/products", x["scale"]], f"{w}/scaled"),
                make("Gemm", [x["low_one"], f"{w}/sums_bias", f"{w}/scaled"], f"{w}/rows"),
                make("Concat", [x["leading"], f"{w}/width_out"], f"{w}/shape", axis=0),
                make("Reshape", [f"{w}/rows", f"{w}/shape"], output),
            ]
        )
    del graph.node[:]
    graph.node.extend(rewritten)
    graph.initializer.extend(constants)
    if not any(opset.domain == "com.microsoft" for opset in graph_model.opset_import):
        graph_model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    try:
        onnx.checker.check_model(graph_model)
    except onnx.checker.ValidationError as error:
        raise ExportError(f"int8-static: the rewritten graph is not valid ONNX: {error}") from error
    onnx.save(graph_model, os.fspath(path))


def matmul_nodes(graph, modules: list[str]) -> dict[str, str]:
    """{MatMul node name: module name} for the MatMuls of ``modules`` in a graph from
    ``torch.onnx.export(dynamo=True)``, which records each node's module path in its metadata."""
    wanted = set(modules)
    found = {}
    for node in graph.graph.node:
        if node.op_type != "MatMul":
            continue
        metadata = {prop.key: prop.value for prop in node.metadata_props}
        scopes = metadata.get("pkg.torch.onnx.name_scopes")
        if not scopes:
            continue
        for scope in reversed(ast.literal_eval(scopes)):
            name = scope.split(".", 1)[1] if scope.startswith("wrapped.") else scope
            if name in wanted:
                found[node.name] = name
                break
    return found


def _encoder_layers(model) -> list:
    try:
        return list(model.vision_model.encoder.layers)
    except AttributeError:
        raise ExportError(
            f"int8-static needs a CLIP image tower (vision_model.encoder.layers); {type(model).__name__} "
            "has none: use --quantize int8"
        ) from None


def _scaled_activation(activation, factor):
    """A module computing ``activation(x) * factor`` (the graph gains one multiply): fc2's migration,
    which cannot fold into the non-linear activation before it."""
    import torch

    class ScaledActivation(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.activation = activation
            self.register_buffer("factor", factor.clone(), persistent=False)  # (in,)

        def forward(self, hidden_states):
            return self.activation(hidden_states) * self.factor

    return ScaledActivation()


def _divide_layer_norm(norm, scale) -> None:
    """Makes ``norm``'s output channel j ``scale[j]`` times smaller."""
    norm.weight.div_(scale)
    norm.bias.div_(scale)
