"""Content digests of model weights, so a fingerprint moves exactly when the weights do."""

from __future__ import annotations

import hashlib

import torch


def weights_digest(*modules: torch.nn.Module, extra: str = "") -> str:
    """sha256 over ``extra`` and every tensor (name, dtype, shape, bytes) of ``modules``."""
    digest = hashlib.sha256(extra.encode())
    for module in modules:
        for name, tensor in module.state_dict().items():
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
