"""Training checkpoints that resume exactly, written so a kill at any moment loses nothing.

``<out>/checkpoints/step-NNNNNN/`` holds ``model/`` (a SALAD checkpoint: what ``load_speech_lm``
and ``salad-eval gap --model`` take) and ``state.pt`` (trainable weights bit for bit, optimizer,
scheduler, RNG states, step and data position). Each is built in a temporary sibling and renamed
into place; ``<out>/latest`` names the newest complete one. Older ones are removed, except the one
taken right before the learning-rate decay (``<out>/pre_decay``), which Stage II branches from.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from salad_eval.home import atomic_write_text


def rng_state() -> dict:
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    out: Path, step: int, speech_lm, state: dict, keep: frozenset[str] = frozenset()
) -> Path:
    """Write ``step-NNNNNN`` atomically, point ``latest`` at it, prune all but ``keep``."""
    root = out / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
    speech_lm.save(tmp / "model")
    torch.save(state, tmp / "state.pt")
    final = root / name
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write_text(out / "latest", name)
    for old in root.iterdir():
        if old.name not in keep | {name}:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(out: Path) -> Path | None:
    pointer = out / "latest"
    if not pointer.is_file():
        return None
    path = out / "checkpoints" / pointer.read_text().strip()
    return path if (path / "state.pt").is_file() else None


def load_state(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "state.pt", weights_only=False)
