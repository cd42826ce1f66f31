"""Turn whatever a user passes for a model (embedded name, local path, hub id) into a loadable path.

The embedded stack is the default that works everywhere; users with the hub pass hub ids, and
anyone can pass a local directory. Offline, a hub id counts only if it is in the local HF cache.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from salad_eval.assets.registry import REGISTRY, asset, prepare, unknown
from salad_eval.errors import SaladError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve(name_or_path: str, kind: str | None = None, build: bool = True) -> str:
    """An embedded asset name -> its prepared path; a local path -> itself; a hub id -> itself.

    ``kind`` (``llm``, ``asr``, ``tts``, ``embedder``) rejects an embedded asset of another kind.
    ``build=False`` only checks the name (before any work): an embedded asset stays unprepared.
    """
    if name_or_path in REGISTRY:
        spec = asset(name_or_path)
        if kind is not None and spec.kind != kind:
            names = ", ".join(n for n, a in REGISTRY.items() if a.kind == kind)
            raise SaladError(
                f"{name_or_path!r} is a {spec.kind} asset, not {kind}; use one of {names}"
            )
        return str(prepare(name_or_path)) if build else name_or_path
    if Path(name_or_path).expanduser().exists():
        return str(Path(name_or_path).expanduser())
    if _HUB_ID.match(name_or_path):
        return _hub_id(name_or_path)
    raise unknown(name_or_path)


def _offline() -> bool:
    return any(
        os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}
        for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _hub_id(repo_id: str) -> str:
    """The id itself when the hub is reachable or the repo is in the local HF cache."""
    if not _offline():
        return repo_id
    from huggingface_hub import snapshot_download  # noqa: PLC0415 - deferred: heavy huggingface_hub, loaded on this path only
    from huggingface_hub.errors import LocalEntryNotFoundError  # noqa: PLC0415 - deferred: heavy huggingface_hub, loaded on this path only

    try:
        snapshot_download(repo_id, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        raise SaladError(
            f"hub id {repo_id!r} is unreachable offline (HF_HUB_OFFLINE=1) and not in the local HF "
            "cache; go online, pass a local path, or use an embedded name (`salad-eval assets`)"
        ) from None
    return repo_id
