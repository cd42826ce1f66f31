"""Turn what a user types after ``--model`` / ``--text-model`` into model adapters."""

from __future__ import annotations

import json
from pathlib import Path

from salad_eval.errors import SaladError


def _model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def speech_model_kind(name_or_path: str) -> str:
    """``salad`` or ``qwen2_audio``: what ``--model`` names, from config files alone (no weights
    read), so a wrong path fails before any model loads."""
    from salad_eval.models.speech_lm import is_speech_lm_checkpoint, load_speech_lm

    path = Path(name_or_path)
    if path.is_dir() and is_speech_lm_checkpoint(path):
        return "salad"
    if path.is_dir() and _model_type(path) == "qwen2_audio":
        return "qwen2_audio"
    if not path.is_dir() and "qwen2-audio" in name_or_path.lower():
        from salad_eval.assets.resolve import resolve

        resolve(name_or_path, build=False)  # a hub id must be reachable (or cached offline)
        return "qwen2_audio"
    if path.is_dir():
        load_speech_lm(path)  # raises the one-line "not a SALAD checkpoint" error
    raise SaladError(
        f"--model {name_or_path!r} is neither a SALAD checkpoint directory nor a Qwen2-Audio "
        "hub id/path; train one with `salad-train stage1` or pass an existing checkpoint"
    )


def load_speech_model(name_or_path: str, device: str = "cpu", dtype: str = "float32"):
    """A SALAD checkpoint directory, or a Qwen2-Audio by hub id or local path, in ``dtype``."""
    if speech_model_kind(name_or_path) == "salad":
        from salad_eval.models.speech_lm import load_speech_lm

        return load_speech_lm(Path(name_or_path), device=device, dtype=dtype)
    from salad_eval.models.qwen2_audio import Qwen2Audio

    return Qwen2Audio(name_or_path, device=device, dtype=dtype)


def default_text_model(speech_model, given: str | None) -> str:
    """The text LLM to compare with: ``--text-model``, else the speech LLM's own base LLM."""
    if given:
        return given
    config = getattr(speech_model, "config", None)
    base = getattr(config, "llm", None)
    if isinstance(base, str):
        return base
    raise SaladError("this speech model does not name its text backbone; pass --text-model")
