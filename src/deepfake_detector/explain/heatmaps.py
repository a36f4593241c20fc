"""One image in, one heatmap for the fake class out, at the image's own size.

Both methods apply to ViT checkpoints (``model.vit.layers`` in transformers 5.x, a class token ahead
of the patch tokens), such as the seed model; other architectures are refused with the methods that
exist and what they need. The token map is upsampled to the image bilinearly: the checkpoint's image
processor resizes the whole image to the model's input without cropping, so each patch covers the same
fraction of the original image. In face mode each face crop gets its own map, placed back onto the full
image at the crop's box (`compute_face_heatmap`).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
from PIL import Image

from deepfake_detector.errors import ExplainError
from deepfake_detector.modeling.labels import LabelRoles

METHODS = ("rollout", "gradcam")


def check_explainable(model, processor, method: str) -> None:
    """Raises `ExplainError` unless ``method`` is known and applies to this model and processor."""
    if method not in METHODS:
        raise ExplainError(f"unknown explain method {method!r}; choose one of: {', '.join(METHODS)}")
    if model is None:
        raise ExplainError(
            "explain needs the checkpoint's PyTorch weights, and this detector runs an ONNX export; "
            "load the save_pretrained folder the export was made from (engine 'torch') to explain"
        )
    layers = getattr(getattr(model, "vit", None), "layers", None)
    if not layers or not hasattr(layers[-1], "layernorm_before") or not hasattr(model.config, "patch_size"):
        raise ExplainError(
            f"explain methods ({', '.join(METHODS)}) apply to ViT checkpoints only "
            "(ViTForImageClassification, like the seed model: a class token and patch tokens, blocks in "
            f"model.vit.layers); this checkpoint is a {type(model).__name__}, to which none of them applies"
        )
    if getattr(processor, "do_center_crop", False):
        raise ExplainError(
            f"{type(processor).__name__} centre-crops its input, so the heatmap would not cover the whole "
            "image; explain supports processors that resize the whole image (like ViTImageProcessor)"
        )


def build_explainer_model(model):
    """A float32 copy of ``model`` with eager attention, for heatmaps.

    A copy, not the model itself: the fused attention kernels (sdpa, flash) that make scoring fast never
    materialise the attention matrix, so rollout needs the eager implementation; switching the shared
    model back and forth would slow down and race with concurrent ``predict`` calls. Float32 because
    gradients in half precision underflow. Costs one more copy of the weights, made on first use.
    """
    explainer = copy.deepcopy(model)
    explainer.set_attn_implementation("eager")
    return explainer.float().eval()


def compute_token_map(model, processor, image: Image.Image, *, method: str, roles: LabelRoles) -> np.ndarray:
    """The heatmap of one image at patch resolution, normalised to [0, 1].

    Args:
        model: A model from `build_explainer_model` (eager attention, float32).
        processor: The checkpoint's image processor.
        image: An RGB image (see `deepfake_detector.io.images.load_image`).
        method: One of `METHODS`.
        roles: The checkpoint's real and fake classes; Grad-CAM explains fake against real.

    Returns:
        Float32 array (rows, cols).
    """
    import torch

    check_explainable(model, processor, method)
    device = next(model.parameters()).device
    pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"]  # (1, 3, H_in, W_in)
    pixel_values = pixel_values.to(device=device, dtype=torch.float32)
    patch = model.config.patch_size
    grid = (pixel_values.shape[-2] // patch, pixel_values.shape[-1] // patch)
    if method == "rollout":
        from deepfake_detector.explain.rollout import compute_rollout_maps

        maps = compute_rollout_maps(model, pixel_values, grid)  # (1, rows, cols)
    else:
        from deepfake_detector.explain.gradcam import compute_gradcam_maps

        maps = compute_gradcam_maps(
            model, pixel_values, grid, fake_ids=roles.fake_ids, real_ids=roles.real_ids
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
