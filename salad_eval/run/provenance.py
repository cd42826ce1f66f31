"""A run's provenance: the exact setup, code, versions and models beside every result."""

from __future__ import annotations

import platform
import subprocess
import sys
import time
from dataclasses import asdict
from importlib import metadata

import torch

from salad_eval.home import in_checkout, project_root


def git_commit() -> str | None:
    if not in_checkout():  # an installed wheel: its version is in `versions`
        return None
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project_root(), capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=project_root(),
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else None
    except OSError:
        return None


def versions() -> dict[str, str]:
    packages = [
        "salad",
        "torch",
        "transformers",
        "peft",
        "lm_eval",
        "numpy",
        "kokoro-onnx",
        "piper-tts",
        "faster-whisper",
    ]
    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def manifest(setup, models, task_info, voices, synth_info, excluded, training) -> dict:
    def entry(name: str | None, model) -> dict:
        found = {"name": name, "fingerprint": model.fingerprint, "dtype": model.dtype}
        # where --device-map put its modules (placement is no part of the fingerprint; the
        # cascade's text LLM is the text model, recorded there)
        if placed := getattr(model, "device_map", None):
            found["device_map"] = placed
        return found

    return {
        "command": " ".join(sys.argv),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "git_commit": git_commit(),
        "versions": versions(),
        "torch_threads": torch.get_num_threads(),  # CPU kernels round differently per count
        "setup": asdict(setup),
        "tasks": task_info,
        "voices": voices,
        "synthesis": synth_info,
        "models": {
            "speech": entry(setup.names.get("speech"), models.speech),
            "text": entry(setup.names.get("text"), models.text),
            "cascade": None
            if models.cascade is None
            else entry(setup.names.get("asr"), models.cascade),
        },
        "excluded_items": excluded,
        "training": training,
        # models behind an endpoint: where (never a key), what the server said, what was asked
        "endpoints": {
            role: model.report()
            for role, model in (("speech", models.speech), ("text", models.text))
            if callable(getattr(model, "report", None))
        },
    }
