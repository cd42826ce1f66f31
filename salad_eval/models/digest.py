"""Content digests of model weights, so a fingerprint moves exactly when the weights do."""

from __future__ import annotations

import hashlib

import torch
from accelerate.utils import align_module_device


def weights_digest(*modules: torch.nn.Module, extra: str = "") -> str:
    """sha256 over ``extra`` and every tensor (name, dtype, shape, bytes) of ``modules``.

    Where a tensor is placed does not count: one offloaded by a device map (a ``meta``
    placeholder, ``salad_eval.models.placement``) is read from where its hook keeps it, so a
    model spread over devices has the fingerprint (and the caches) of the same model whole.
    """
    digest = hashlib.sha256(extra.encode())
    for module in modules:
        for name, tensor in module.state_dict().items():
            if tensor.device.type == "meta":
                tensor = _offloaded(module, name)
            flat = tensor.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{name}:{flat.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(flat.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _offloaded(module: torch.nn.Module, name: str) -> torch.Tensor:
    """The weights of an offloaded tensor ``name`` of ``module``, loaded onto the CPU."""
    owner_name, _, leaf = name.rpartition(".")
    owner = module.get_submodule(owner_name)
    with align_module_device(owner, torch.device("cpu")):
        tensor = getattr(owner, leaf).detach().clone()
    if tensor.device.type == "meta":
        raise RuntimeError(f"{name} has no weights to digest (a meta tensor without a hook)")
    return tensor
