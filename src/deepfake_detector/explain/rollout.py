"""Attention rollout (Abnar & Zuidema, 2020, "Quantifying Attention Flow in Transformers").

Written here because no maintained library ships it for transformers models: captum has no attention
rollout, ``grad-cam`` (pytorch-grad-cam) needs torchvision, which has no CPU build in this project, and
the reference code (jacobgil/vit-explain) is not a package. It is a dozen lines of matrix products.

Rollout follows how information flows from the patch tokens to the class token through every block,
so it shows what the classifier could see, for any class: it is not specific to the fake class.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from deepfake_detector.errors import ExplainError


def compute_attention_rollout(attentions: Sequence[torch.Tensor]) -> torch.Tensor:
    """Multiplies the blocks' head-averaged attention, each mixed with the identity, first block first.

    Args:
        attentions: One tensor per block, each (B, heads, T, T), rows summing to 1 (softmax output).

    Returns:
        (B, T, T): row i says how much of token i's final state flows from each input token.
    """
    batch, _, tokens, _ = attentions[0].shape
    identity = torch.eye(tokens, dtype=torch.float32, device=attentions[0].device)  # (T, T)
    rollout = identity.expand(batch, tokens, tokens)  # (B, T, T)
    for attention in attentions:
        fused = attention.float().mean(dim=1)  # (B, T, T): heads averaged
        # The residual connection adds each token's own state back, so half of the flow stays in place.
        mixed = 0.5 * fused + 0.5 * identity  # (B, T, T)
        mixed = mixed / mixed.sum(dim=-1, keepdim=True)
        rollout = mixed @ rollout  # (B, T, T)
    return rollout


def compute_rollout_maps(model, pixel_values: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Attention rollout from the class token to every patch token.

    Args:
        model: A ViT classifier loaded with eager attention: the fused (sdpa, flash) kernels never
            materialise the attention matrix, so they return no attention maps.
        pixel_values: (B, 3, H_in, W_in), as the checkpoint's image processor makes them.
        grid: (rows, cols) of patch tokens for this input size.

    Returns:
        (B, rows, cols), unnormalised.
    """
    rows, cols = grid
    with torch.inference_mode():
        attentions = model(pixel_values=pixel_values, output_attentions=True).attentions
    if not attentions or any(attention is None for attention in attentions):
        raise ExplainError(
            "the model returned no attention maps; load it with attn_implementation='eager' for rollout"
        )
    rollout = compute_attention_rollout(attentions)  # (B, T, T)
    prefix = rollout.shape[-1] - rows * cols  # the class token (and any other non-patch tokens)
    from_class_token = rollout[:, 0, prefix:]  # (B, rows * cols)
    return from_class_token.reshape(-1, rows, cols)  # (B, rows, cols)
