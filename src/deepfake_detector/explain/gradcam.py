"""Grad-CAM (Selvaraju et al., 2017) on a ViT's patch tokens, computed by captum's `LayerGradCam`.

captum's Grad-CAM expects a convolutional activation (B, channels, H, W). A ViT block gives tokens
(B, T, D) instead, so a forward hook routes the patch tokens through `_TokenGrid`, an identity layer
on their (B, D, rows, cols) arrangement, and captum attributes to that layer; the arithmetic (channel
weights from spatially averaged gradients, weighted sum, ReLU) is captum's own. This is what
pytorch-grad-cam's ``reshape_transform`` does for ViTs; that library needs torchvision, which has no CPU
build in this project.

The tokens are those entering the last block (the output of its first layer norm). The last block's
output is no use: after it, only the class token reaches the classifier, so every patch token's gradient
there is zero.

Grad-CAM is fragile on ViTs: it weights each channel by its gradient averaged over all tokens, which
assumes non-negative features (post-ReLU convolutions), while token features after LayerNorm are signed.
In the sanity test (tests/test_explain.py: a tiny ViT that learns a magenta patch), its peak hit the
patch on 40 of 40 images for three training seeds and on 3, 0 and 0 of 40 for three others; attention
rollout hit it 40 of 40 for all six, which is why rollout is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

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


def compute_gradcam_maps(
    model,
    pixel_values: torch.Tensor,
    grid: tuple[int, int],
    *,
    fake_ids: Sequence[int],
    real_ids: Sequence[int],
) -> torch.Tensor:
    """Grad-CAM for the fake-vs-real log-odds on the patch tokens entering the last block.

    Args:
        model: A ViT classifier (``model.vit.layers`` with ``layernorm_before``), in eval mode.
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

    handle = model.vit.layers[-1].layernorm_before.register_forward_hook(through_grid)
    try:
        # Gradients must flow even when the weights are frozen (requires_grad=False).
        inputs = pixel_values.detach().clone().requires_grad_(True)
        cams = captum_attr.LayerGradCam(fake_log_odds, token_grid).attribute(
            inputs, relu_attributions=True
        )  # (B, 1, rows, cols)
    finally:
        handle.remove()
    return cams[:, 0].detach()  # (B, rows, cols)
