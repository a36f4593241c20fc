"""Grad-CAM (Selvaraju et al., 2017) for the fake-vs-real log-odds, computed by captum's `LayerGradCam`.

Two layers, one per supported architecture, both explaining the same `compute_fake_log_odds`:

- Convolutional checkpoints (ResNet, ConvNeXt, ConvNeXtV2, RegNet): the output of the backbone's last
  stage, a (B, C, h, w) activation, the setting Grad-CAM was designed for (`compute_conv_gradcam_maps`).
  The map has that stage's resolution (input / 32 for the usual 4-stage ResNet), and its peak can land
  one cell beside evidence smaller than about two cells: units there see the evidence too. In the
  sanity test (a tiny ResNet that learns a magenta square covering 4 x 4 last-stage cells), the peak hit
  the square on 33 to 40 of 40 images for eight training seeds.
- ViT checkpoints: the patch tokens entering the last block (`compute_vit_gradcam_maps`). captum's
  Grad-CAM expects a convolutional activation (B, channels, H, W); a ViT block gives tokens (B, T, D)
  instead, so a forward hook routes the patch tokens through `_TokenGrid`, an identity layer on their
  (B, D, rows, cols) arrangement, and captum attributes to that layer; the arithmetic (channel weights
  from spatially averaged gradients, weighted sum, ReLU) is captum's own. This is what
  pytorch-grad-cam's ``reshape_transform`` does for ViTs; that library needs torchvision, which has no
  CPU build in this project. The tokens are those entering the last block (the output of its first
  layer norm). The last block's output is no use: after it, only the class token reaches the
  classifier, so every patch token's gradient there is zero.

Grad-CAM is fragile on ViTs: it weights each channel by its gradient averaged over all tokens, which
assumes non-negative features (post-ReLU convolutions), while token features after LayerNorm are signed.
In the sanity test (tests/test_explain.py: a tiny ViT that learns a magenta patch), its peak hit the
patch on 40 of 40 images for three training seeds and on 3, 0 and 0 of 40 for three others; attention
rollout hit it 40 of 40 for all six, which is why rollout is what "auto" picks for a ViT.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from deepfake_detector.errors import ExplainError
from deepfake_detector.optional import require


class _TokenGrid(nn.Module):
    """Identity on (B, D, rows, cols): the convolution-shaped layer captum hooks."""

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        return grid


def compute_fake_log_odds(logits: torch.Tensor, fake_ids: Sequence[int], real_ids: Sequence[int]):
    """log P(fake) - log P(real) from logits (B, C): what the fake class's heatmap explains.

    Unlike the fake probability it does not saturate near 0 or 1 (where its gradient would vanish), it
    covers checkpoints with several fake classes, and it is independent of the label order. A
    calibration temperature only scales it, which Grad-CAM's normalisation removes.
    """
    fake = torch.logsumexp(logits[:, list(fake_ids)], dim=-1)  # (B,)
    real = torch.logsumexp(logits[:, list(real_ids)], dim=-1)  # (B,)
    return fake - real  # (B,)


def compute_vit_gradcam_maps(
    model,
    last_input_norm,
    pixel_values: torch.Tensor,
    grid: tuple[int, int],
    *,
    fake_ids: Sequence[int],
    real_ids: Sequence[int],
) -> torch.Tensor:
    """Grad-CAM for the fake-vs-real log-odds on the patch tokens entering the last block.

    Args:
        model: A ViT-style classifier, in eval mode.
        last_input_norm: The last block's first layer norm (`heatmaps.VitBlocks.last_input_norm`): the
            patch tokens are read at its output.
        pixel_values: (B, 3, H_in, W_in), as the checkpoint's image processor makes them.
        grid: (rows, cols) of patch tokens for this input size.
        fake_ids: Class indices of the fake role.
        real_ids: Class indices of the real role.

    Returns:
        (B, rows, cols), non-negative (ReLU applied, as in the paper), unnormalised.
    """
    captum_attr = require("captum.attr", "explain")
    rows, cols = grid
    token_grid = _TokenGrid()

    def through_grid(module, inputs, tokens: torch.Tensor) -> torch.Tensor:  # tokens (B, T, D)
        prefix = tokens.shape[1] - rows * cols
        patches = tokens[:, prefix:]  # (B, rows * cols, D)
        batch, _, dim = patches.shape
        arranged = token_grid(patches.transpose(1, 2).reshape(batch, dim, rows, cols))  # (B, D, rows, cols)
        return torch.cat([tokens[:, :prefix], arranged.flatten(2).transpose(1, 2)], dim=1)  # (B, T, D)

    def fake_log_odds(values: torch.Tensor) -> torch.Tensor:
        logits = model(pixel_values=values).logits  # (B, C)
        return compute_fake_log_odds(logits, fake_ids, real_ids)  # (B,)

    handle = last_input_norm.register_forward_hook(through_grid)
    try:
        # Gradients must flow even when the weights are frozen (requires_grad=False).
        inputs = pixel_values.detach().clone().requires_grad_(True)
        cams = captum_attr.LayerGradCam(fake_log_odds, token_grid).attribute(
            inputs, relu_attributions=True
        )  # (B, 1, rows, cols)
    finally:
        handle.remove()
    return cams[:, 0].detach()  # (B, rows, cols)


def compute_conv_gradcam_maps(
    model,
    stage: nn.Module,
    pixel_values: torch.Tensor,
    *,
    fake_ids: Sequence[int],
    real_ids: Sequence[int],
) -> torch.Tensor:
    """Grad-CAM for the fake-vs-real log-odds on the output of a convolutional backbone's stage.

    Args:
        model: A convolutional classifier (see `deepfake_detector.explain.heatmaps.find_last_conv_stage`),
            in eval mode: batch norm must use its running statistics, not the batch's.
        stage: The module whose (B, C, h, w) output is attributed, normally the backbone's last stage.
        pixel_values: (B, 3, H_in, W_in), as the checkpoint's image processor makes them.
        fake_ids: Class indices of the fake role.
        real_ids: Class indices of the real role.

    Returns:
        (B, h, w), non-negative (ReLU applied, as in the paper), unnormalised.

    Raises:
        ExplainError: The stage's output is not a (B, C, h, w) tensor (an architecture whose stages
            give tokens), so Grad-CAM's channel weighting would mean nothing.
    """
    captum_attr = require("captum.attr", "explain")

    def fake_log_odds(values: torch.Tensor) -> torch.Tensor:
        logits = model(pixel_values=values).logits  # (B, C)
        return compute_fake_log_odds(logits, fake_ids, real_ids)  # (B,)

    # Gradients must flow even when the weights are frozen (requires_grad=False).
    inputs = pixel_values.detach().clone().requires_grad_(True)
    cams = captum_attr.LayerGradCam(fake_log_odds, stage).attribute(inputs, relu_attributions=True)
    if not isinstance(cams, torch.Tensor) or cams.dim() != 4:
        what = f"shape {tuple(cams.shape)}" if isinstance(cams, torch.Tensor) else type(cams).__name__
        raise ExplainError(
            f"Grad-CAM needs a (batch, channels, height, width) activation, and the last stage of this "
            f"{type(model).__name__} gives {what}; explain supports ResNet, ConvNeXt, "
            "ConvNeXtV2, RegNet and ViT checkpoints"
        )
    return cams[:, 0].detach()  # (B, 1, h, w) -> (B, h, w)
