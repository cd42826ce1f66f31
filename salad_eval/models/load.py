"""Turn what a user types after ``--model`` / ``--text-model`` into model adapters."""

from __future__ import annotations

import json
from pathlib import Path

from salad_eval.assets.registry import REGISTRY
from salad_eval.assets.resolve import resolve
from salad_eval.errors import SaladError
from salad_eval.models.registry import families, family_for, supported

TEXT = "text"  # ``model_kind`` of a plain causal LM (``TextLM``)


def _model_type(path: Path) -> str | None:
    try:
        return json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _hub_model_type(repo_id: str) -> str | None:
    """``model_type`` of a hub repo's ``config.json`` (downloaded, or from the local HF cache)."""
    from huggingface_hub import hf_hub_download  # noqa: PLC0415 - deferred: heavy huggingface_hub, loaded on this path only

    try:
        return _model_type(Path(hf_hub_download(repo_id, "config.json")).parent)
    except Exception:  # unreachable, gated, no config.json: said in one line by the caller
        return None


def speech_model_kind(name_or_path: str, model_type: str | None = None) -> str:
    """``salad`` or the ``model_type`` of a registered family: what ``--model`` names, from
    config files alone (no weights read), so a wrong path fails before any model loads.
    ``model_type`` (``--model-type``) forces a family."""
    from salad_eval.models.speech_lm import is_speech_lm_checkpoint, load_speech_lm  # noqa: PLC0415 - deferred: speech_lm loads torch; a command checks names before models load

    path = Path(name_or_path)
    if model_type is not None:
        family_for(model_type)  # an unknown one is a one-line error listing the families
        if not path.is_dir():
            resolve(name_or_path, build=False)
        return model_type
    if path.is_dir() and is_speech_lm_checkpoint(path):
        return "salad"
    if path.is_dir() and (found := _model_type(path)) is not None:
        family_for(found)
        return found
    if path.is_dir():
        load_speech_lm(path)  # raises the one-line "not a SALAD checkpoint" error
    if not path.exists() and "/" in name_or_path:
        resolve(name_or_path, build=False)  # a hub id must be reachable (or cached offline)
        if (found := _hub_model_type(name_or_path)) is not None:
            family_for(found)
            return found
    raise SaladError(
        f"--model {name_or_path!r} is neither a SALAD checkpoint directory nor a speech LLM whose "
        f"config.json names a supported model_type ({supported()}); pass --model-type to force one"
    )


def model_kind(name_or_path: str, model_type: str | None = None) -> str:
    """What ``salad-eval serve --model`` names: ``salad``, a family's ``model_type``, or
    ``text`` for any other causal LM (an embedded LLM name, a hub id or a local path whose
    config names no supported family), from config files alone. ``model_type`` forces one
    (``text`` included)."""
    if model_type == TEXT:
        resolve(name_or_path, kind="llm", build=False)
        return TEXT
    if model_type is None and _is_text_llm(name_or_path):
        return TEXT
    path = Path(name_or_path)
    if model_type is None and not path.exists() and "/" not in name_or_path:
        raise SaladError(
            f"--model {name_or_path!r} is no SALAD checkpoint, speech LLM or text LLM: pass a "
            "directory, a hub id or an embedded LLM name (see `salad-eval assets`)"
        )
    return speech_model_kind(name_or_path, model_type)


def _is_text_llm(name_or_path: str) -> bool:
    from salad_eval.models.speech_lm import is_speech_lm_checkpoint  # noqa: PLC0415 - deferred: speech_lm loads torch; a command checks names before models load

    if name_or_path in REGISTRY:
        return REGISTRY[name_or_path].kind == "llm"
    path = Path(name_or_path)
    if path.is_dir():
        if is_speech_lm_checkpoint(path):
            return False
        found = _model_type(path)
    elif not path.exists() and "/" in name_or_path:
        resolve(name_or_path, build=False)  # a hub id must be reachable (or cached offline)
        found = _hub_model_type(name_or_path)
    else:
        return False
    return found is not None and not any(found in f.model_types for f in families())


def load_speech_model(
    name_or_path: str,
    device: str = "cpu",
    dtype: str = "float32",
    model_type: str | None = None,
    chat_template: bool = False,
    device_map: str | dict | None = None,
    max_memory: dict[int | str, int] | None = None,
):
    """A SALAD checkpoint directory, or any registered family by hub id or local path; with
    ``device_map`` (``--device-map``) its LLM is spread over devices within ``max_memory``
    (``salad_eval.models.placement``)."""
    from salad_eval.models.speech_lm import load_speech_lm  # noqa: PLC0415 - deferred: speech_lm loads torch; a command checks names before models load

    kind = speech_model_kind(name_or_path, model_type)
    if kind == "salad":
        if chat_template:
            raise SaladError(
                "--chat-template applies to external speech LLMs; a SALAD checkpoint is scored "
                "in the raw format it was trained on"
            )
        return load_speech_lm(
            Path(name_or_path),
            device=device,
            dtype=dtype,
            device_map=device_map,
            max_memory=max_memory,
        )
    family = family_for(kind)
    adapter = family.load_adapter()
    placed = {} if device_map is None else {"device_map": device_map, "max_memory": max_memory}
    try:
        return adapter(
            name_or_path, device=device, dtype=dtype, chat_template=chat_template, **placed
        )
    except (SaladError, MemoryError):
        raise
    except Exception as err:
        if model_type is None:
            raise
        # a forced family that the checkpoint is not: say so in one line, not a traceback
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SaladError(
            f"--model-type {model_type}: {name_or_path} does not load as "
            f"{family.name} ({reason[:200]})"
        ) from None


def default_text_model(speech_model, given: str | None) -> str:
    """The text LLM to compare with: ``--text-model``, else the speech LLM's own base LLM
    (a SALAD checkpoint's ``llm``, a family's published text backbone)."""
    if given:
        return given
    config = getattr(speech_model, "config", None)
    base = getattr(config, "llm", None)
    if isinstance(base, str):
        return base
    adapter = f"{type(speech_model).__module__}:{type(speech_model).__qualname__}"
    for family in families():
        if family.adapter != adapter:
            continue
        text_config = speech_model.model.config.get_text_config()
        backbone = family.text_backbone(speech_model.name, text_config)
        if backbone is not None and backbone.text_model is not None:
            return backbone.text_model
        if backbone is not None:
            raise SaladError(
                f"{speech_model.name}: its text backbone is not published "
                f"({backbone.source}); pass --text-model"
            )
    raise SaladError("this speech model does not name its text backbone; pass --text-model")
