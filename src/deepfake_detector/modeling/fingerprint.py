"""A fingerprint of the weights a model holds in memory, to tell exactly which model answered."""

from __future__ import annotations

import hashlib


def compute_weights_sha256(model) -> str:
    """SHA-256 over every parameter and buffer of a PyTorch model: names, dtypes, shapes and bytes.

    Hashes what was loaded, not the files, so it identifies the weights whatever folder, hub revision
    or format they came from, and changes if they are cast (say to float16). Two models give the same
    hash exactly when their state dicts are equal bit for bit.

    Args:
        model: A ``torch.nn.Module``.

    Returns:
        The hex digest.
    """
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        # uint8 view: the raw bytes of any dtype (bfloat16 included, which NumPy can't hold)
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()
