"""One image in, one heatmap for the fake class out, at the image's own size.

Which methods apply depends on the architecture:

- ViT checkpoints (``model.vit.layers`` in transformers 5.x, a class token ahead of the patch tokens),
  such as the seed model, and the project's CLIP detector (``model.vision_model.encoder.layers``):
  attention rollout and Grad-CAM on the patch tokens. "auto" means rollout.
- Convolutional checkpoints whose backbone has ``encoder.stages`` (ResNet, ConvNeXt, ConvNeXtV2,
  RegNet): Grad-CAM on the last stage's (B, C, h, w) output. They have no attention, so no rollout.
  "auto" means Grad-CAM.

Other architectures are refused, naming the ones that are supported. `resolve_method` turns "auto" into
the concrete method once, before any input, so every `Explanation`, file name and HTTP answer carries
"rollout" or "gradcam". The map (patch grid or feature map) is upsampled to the image bilinearly: the
checkpoint's image processor resizes the whole image to the model's input without cropping, so each
cell covers the same fraction of the original image. In face mode each face crop gets its own map,
placed back onto the full image at the crop's box (`compute_face_heatmap`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from deepfake_detector.errors import ExplainError
from deepfake_detector.modeling.labels import LabelRoles

METHODS = ("auto", "rollout", "gradcam")
SUPPORTED = (
    "ViT checkpoints (ViTForImageClassification, like the seed model, and the CLIP detector: rollout or "
    "gradcam) and "
    "convolutional checkpoints with encoder stages (ResNet, ConvNeXt, ConvNeXtV2, RegNet: gradcam)"
)


@dataclass(frozen=True)
class VitBlocks:
    """The transformer blocks of a ViT-style classifier: a class token ahead of the patch tokens.

    Attributes:
        layers: The blocks, first to last.
        input_norm: Attribute name of each block's first layer norm (its output is the block's normalised
            input, where Grad-CAM reads the patch tokens).
        patch_size: Side of a patch in input pixels.
    """

    layers: Sequence
    input_norm: str
    patch_size: int

    @property
    def last_input_norm(self):
        return getattr(self.layers[-1], self.input_norm)


def find_vit_blocks(model) -> VitBlocks | None:
    """The blocks of a ViT classifier (``model.vit.layers``) or of the project's CLIP detector
    (``model.vision_model.encoder.layers``); None when ``model`` is neither."""
    layers = getattr(getattr(model, "vit", None), "layers", None)
    if layers and hasattr(layers[-1], "layernorm_before") and hasattr(model.config, "patch_size"):
        return VitBlocks(layers, "layernorm_before", model.config.patch_size)
    encoder = getattr(getattr(model, "vision_model", None), "encoder", None)
    layers = getattr(encoder, "layers", None)
    vision_config = getattr(model.config, "vision_config", None)
    if layers and hasattr(layers[-1], "layer_norm1") and hasattr(vision_config, "patch_size"):
        return VitBlocks(layers, "layer_norm1", vision_config.patch_size)
    return None


def find_last_conv_stage(model):
    """The last stage of a transformers convolutional backbone (``<base model>.encoder.stages[-1]``:
    ResNet, ConvNeXt, ConvNeXtV2, RegNet), whose output is the (B, C, h, w) map Grad-CAM was designed
    for; None when ``model`` has no such stages."""
    backbone = getattr(model, getattr(model, "base_model_prefix", "") or "", None)
    stages = getattr(getattr(backbone, "encoder", None), "stages", None)
    if stages is None or not hasattr(stages, "__getitem__") or len(stages) == 0:
        return None
    return stages[-1]


def resolve_method(model, method: str) -> str:
    """The concrete method, "rollout" or "gradcam", that ``method`` means for this model.

    Args:
        model: The checkpoint's PyTorch model; None for an ONNX export (which can't be explained).
        method: One of `METHODS`; "auto" is rollout for a ViT, Grad-CAM for a convolutional model.

    Raises:
        ExplainError: The method is unknown, the model is missing or of an unsupported architecture, or
            the method does not apply to it (rollout on a convolutional model).
    """
    if method not in METHODS:
        raise ExplainError(f"unknown explain method {method!r}; choose one of: {', '.join(METHODS)}")
    if model is None:
        raise ExplainError(
            "explain needs the checkpoint's PyTorch weights, and this detector runs an ONNX export; "
            "load the save_pretrained folder the export was made from (engine 'torch') to explain"
        )
    if find_vit_blocks(model) is not None:
        return "rollout" if method == "auto" else method
    if find_last_conv_stage(model) is not None:
        if method == "rollout":
            raise ExplainError(
                f"rollout needs attention, and this checkpoint is a {type(model).__name__}, a convolutional "
                "model without any; use method 'gradcam' (or 'auto', which picks it)"
            )
        return "gradcam"
    raise ExplainError(
        f"explain supports {SUPPORTED}; this checkpoint is a {type(model).__name__}, to which no "
        "explain method applies"
    )


def check_explainable(model, processor, method: str) -> str:
    """Raises `ExplainError` unless ``method`` applies to this model and processor.

    Returns:
        The concrete method (`resolve_method`): "rollout" or "gradcam", never "auto".
    """
    method = resolve_method(model, method)
    if getattr(processor, "do_center_crop", False):
        raise ExplainError(
            f"{type(processor).__name__} centre-crops its input, so the heatmap would not cover the whole "
            "image; explain supports processors that resize the whole image (like ViTImageProcessor)"
        )
    return method


def build_explainer_model(model):
    """A float32 copy of ``model`` in eval mode, with eager attention for a ViT, for heatmaps.

    A copy, not the model itself: the fused attention kernels (sdpa, flash) that make scoring fast never
    materialise the attention matrix, so rollout needs the eager implementation; switching the shared
    model back and forth would slow down and race with concurrent ``predict`` calls. Float32 because
    gradients in half precision underflow. Costs one more copy of the weights, made on first use.
    """
    explainer = copy.deepcopy(model)
    # Only a ViT is switched, for rollout: a convolutional model has no attention to switch, and asking
    # transformers to set one there does nothing at best, and warns for models without an attention
    # interface at worst.
    if find_vit_blocks(explainer) is not None:
        explainer.set_attn_implementation("eager")
    return explainer.float().eval()


def compute_token_map(model, processor, image: Image.Image, *, method: str, roles: LabelRoles) -> np.ndarray:
    """The heatmap of one image at the model's resolution (ViT patches or the last conv stage's
    feature map), normalised to [0, 1].

    Args:
        model: A model from `build_explainer_model` (eager attention for a ViT, float32).
        processor: The checkpoint's image processor.
        image: An RGB image (see `deepfake_detector.io.images.load_image`).
        method: One of `METHODS` ("auto" is resolved for this model).
        roles: The checkpoint's real and fake classes; Grad-CAM explains fake against real.

    Returns:
        Float32 array (rows, cols): the patch grid of a ViT, the (h, w) of a convolutional model's
        last stage.
    """
    import torch

    method = check_explainable(model, processor, method)
    device = next(model.parameters()).device
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]  # (1, 3, H_in, W_in)
    pixel_values = pixel_values.to(device=device, dtype=torch.float32)
    blocks = find_vit_blocks(model)
    if blocks is None:  # a convolutional model: resolve_method allows only Grad-CAM
        from deepfake_detector.explain.gradcam import compute_conv_gradcam_maps

        maps = compute_conv_gradcam_maps(
            model, find_last_conv_stage(model), pixel_values, fake_ids=roles.fake_ids, real_ids=roles.real_ids
        )  # (1, h, w)
        return compute_normalized(maps[0].float().cpu().numpy())
    patch = blocks.patch_size
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    if method == "rollout":
        from deepfake_detector.explain.rollout import compute_rollout_maps

        maps = compute_rollout_maps(model, pixel_values, grid)  # (1, rows, cols)
    else:
        from deepfake_detector.explain.gradcam import compute_vit_gradcam_maps

        maps = compute_vit_gradcam_maps(
            model,
            blocks.last_input_norm,
            pixel_values,
            grid,
            fake_ids=roles.fake_ids,
            real_ids=roles.real_ids,
        )  # (1, rows, cols)
    return compute_normalized(maps[0].float().cpu().numpy())


def compute_normalized(values: np.ndarray) -> np.ndarray:
    """Rescales to [0, 1] (min to 0, max to 1); a flat map becomes all zeros: nothing stands out."""
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not np.isfinite(low) or not np.isfinite(high) or high - low <= 1e-12:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def compute_image_heatmap(token_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Upsamples a (rows, cols) map to an image of ``size`` = (width, height), bilinearly.

    Returns:
        Float32 array (height, width) rescaled to [0, 1]; its maximum lies in the hottest patch's cell.
    """
    upsampled = Image.fromarray(np.asarray(token_map, dtype=np.float32)).resize(
        size, Image.Resampling.BILINEAR
    )
    # Pixel centres rarely fall on a cell's centre, where the token's own value is, so rescale again.
    return compute_normalized(np.asarray(upsampled, dtype=np.float32))


def compute_face_heatmap(
    token_maps: Sequence[np.ndarray],
    crop_boxes: Sequence[tuple[int, int, int, int]],
    size: tuple[int, int],
) -> np.ndarray:
    """Places each face crop's map onto an image of ``size`` = (width, height) at its crop box.

    Args:
        token_maps: One (rows, cols) map per face crop.
        crop_boxes: (left, top, right, bottom) of each crop in the image, right/bottom exclusive.
        size: (width, height) of the image.

    Returns:
        Float32 array (height, width): each crop's map upsampled to its box and normalised on its own,
        zero outside every box; where boxes overlap, the hotter value.
    """
    width, height = size
    heatmap = np.zeros((height, width), dtype=np.float32)  # (H, W)
    for token_map, (left, top, right, bottom) in zip(token_maps, crop_boxes, strict=True):
        region = heatmap[top:bottom, left:right]  # a view: (bottom - top, right - left)
        np.maximum(region, compute_image_heatmap(token_map, (right - left, bottom - top)), out=region)
    return heatmap
