"""Where a model's weights live when one device is not enough: accelerate's big-model loading.

``--device-map auto`` (``balanced``, ``sequential``; with ``--max-memory``) loads a model straight
onto several GPUs and, where they run out, the CPU and then the disk: transformers'
``from_pretrained(device_map=...)`` puts whole decoder layers on each device and hooks that move
activations between them; an offloaded layer's weights are ``meta`` placeholders that its hook
fills for each forward (from CPU memory, or from the checkpoint's safetensors or an offload
folder on disk). The same modules run the same arithmetic, only elsewhere, so scores do not
change (``tests/test_device_map.py``: within 1e-5 of the model on one device).

What this means for code that feeds such a model: a parameter's ``.device`` may be ``meta``, so
inputs go to ``input_device(module)`` (its hook's execution device), and an offloaded module's
weights are read only inside ``onloaded(module)``. Logits come back on the last layer's device.
Placement is no part of a model's fingerprint (``digest.weights_digest`` reads offloaded weights
where they are), so the score caches of a split model are those of the whole one; the run's
manifest records the device map (``Placement.record``).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import has_offloaded_params

from salad_eval.errors import SaladError
from salad_eval.home import home


@dataclass(frozen=True)
class Placement:
    """How a model is loaded: whole, then moved to one device (``device_map`` None), or spread
    by accelerate (``device_map``: a strategy such as ``"auto"`` or an explicit module -> device
    dict), within ``max_memory`` (device -> bytes; GPUs by index, ``"cpu"``, ``"disk"``)."""

    device_map: str | dict[str, Any] | None = None
    max_memory: dict[int | str, int] | None = None

    @property
    def spread(self) -> bool:
        return self.device_map is not None

    def load(self, loader: Any, path: str, **kwargs: Any) -> torch.nn.Module:
        """``loader.from_pretrained(path, **kwargs)``, placed by the device map when there is
        one. Weights offloaded to disk are read from the checkpoint's safetensors where they
        are stored as loaded; the others (converted on load, or from another format) are saved
        into a folder of the cache home, removed when the process ends."""
        if not self.spread:
            return loader.from_pretrained(path, **kwargs)
        folder = offload_folder()
        model = loader.from_pretrained(
            path,
            device_map=self.device_map,
            max_memory=self.max_memory,
            offload_folder=str(folder),
            **kwargs,
        )
        if any(folder.iterdir()):  # read at every forward: kept while the process runs
            atexit.register(shutil.rmtree, folder, True)
        else:
            folder.rmdir()
        return model

    def record(self, model: torch.nn.Module) -> dict[str, str] | None:
        """The device map that was used, as the manifest records it: module -> device (``""``:
        the whole model); None for a model loaded whole onto one device."""
        if not self.spread:
            return None
        used = getattr(model, "hf_device_map", None)
        if not used:  # everything fitted on one device: transformers dispatched nothing
            return {"": str(input_device(model))}
        return {name: str(device) for name, device in used.items()}


def forget_stale_tied_pointers(model: torch.nn.Module) -> None:
    """Drop the keys of accelerate's tied-weights map that no live tensor owns.

    Dispatch keys each tied weight (the embeddings and an LM head tied to them) by its
    ``data_ptr()`` at that moment, often an address inside the checkpoint's safetensors
    mapping, unmapped once the weights move out of it (``text_lm.own_memory``). An offloaded
    layer's hook looks each weight it reads from disk up in that map by address, so a weight
    read at a freed address is handed the tied one instead: seen as a layer norm given the
    embedding matrix, depending on where the kernel had mapped files in this process. A key is
    sound only while its tensor lives: the model's own weights and those its hooks hold in CPU
    memory."""
    hooks = [hook for module in model.modules() for hook in _align_hooks(module)]
    maps = {id(h.tied_params_map): h.tied_params_map for h in hooks if h.tied_params_map}
    if not maps:
        return
    live = {
        t.data_ptr() for t in [*model.parameters(), *model.buffers()] if t.device.type != "meta"
    }
    for hook in hooks:
        live.update(t.data_ptr() for t in _in_memory_weights(hook.weights_map))
    for tied in maps.values():
        for pointer in [p for p in tied if p not in live]:
            del tied[pointer]


def _align_hooks(module: torch.nn.Module) -> list:
    """The ``AlignDevicesHook``s on ``module`` (one, or inside a ``SequentialHook``)."""
    hook = getattr(module, "_hf_hook", None)
    hooks = getattr(hook, "hooks", [hook] if hook is not None else [])
    return [h for h in hooks if hasattr(h, "tied_params_map")]


def _in_memory_weights(weights_map: Any) -> list[torch.Tensor]:
    """The tensors a hook's ``weights_map`` keeps in CPU memory (not those it reads from disk)."""
    dataset = getattr(weights_map, "dataset", weights_map)  # PrefixedDataset -> its source
    held = getattr(dataset, "state_dict", dataset)  # OffloadedWeightsLoader -> its in-memory part
    return (
        [t for t in held.values() if isinstance(t, torch.Tensor)] if isinstance(held, dict) else []
    )


def offload_folder() -> Path:
    """A fresh folder for weights offloaded to disk, in the (git-ignored) cache home."""
    root = home() / "offload"
    root.mkdir(exist_ok=True)
    return Path(tempfile.mkdtemp(dir=root))


def input_device(module: torch.nn.Module) -> torch.device:
    """Where ``module``'s inputs go: its accelerate hook's execution device where it has one (the
    device an offloaded module runs on), else its first parameter's device (the first module's
    of a model spread over devices, e.g. its input embeddings); CPU for a module without any."""
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        for each in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
            device = getattr(each, "execution_device", None)
            if device is not None:
                return torch.device(device)  # an int is a GPU (the accelerator's) index
        for parameter in sub.parameters(recurse=False):
            if parameter.device.type != "meta":
                return parameter.device
    return torch.device("cpu")


def refuse_offloaded(model: torch.nn.Module, what: str) -> None:
    """A one-line error where a device map offloaded part of ``model`` (``meta`` weights) and
    ``what`` (a LoRA: peft moves its weights onto the ``meta`` device of the layer it adapts,
    where they would be lost) cannot run offloaded."""
    if any(parameter.device.type == "meta" for parameter in model.parameters()):
        raise SaladError(
            f"{what} cannot adapt layers that --device-map offloads to the CPU or disk; give the "
            "GPUs room for the whole model (--max-memory) or merge the LoRA into the weights"
        )


@contextmanager
def onloaded(*modules: torch.nn.Module) -> Iterator[None]:
    """Inside, each offloaded module's own weights are real tensors on its execution device,
    loaded once by its hook as for a forward and kept through any forward inside (for code that
    reads a weight without calling its module, as Whisper-style encoders read their positions);
    offloaded again after. A module that is not offloaded is left alone."""
    hooks = [(m, m._hf_hook) for m in modules if has_offloaded_params(m)]
    for module, hook in hooks:
        hook.pre_forward(module)
        hook.offload = False  # a forward inside neither reloads nor drops the weights
    try:
        yield
    finally:
        for module, hook in hooks:
            hook.offload = True
            hook.post_forward(module, None)


def offloaded_modules(model: torch.nn.Module, but: torch.nn.Module | None = None) -> list:
    """The modules of ``model`` whose own weights a device map offloaded, those of ``but``
    excepted (a model's decoder, say, when only its audio path is wanted)."""
    skip = {id(m) for m in but.modules()} if but is not None else set()
    return [m for m in model.modules() if id(m) not in skip and has_offloaded_params(m)]
