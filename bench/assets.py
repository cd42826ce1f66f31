"""Asset preparation (cold, into an empty temporary home) and load (warm) times, per asset.

Cold = converting from the installed wheel (GGUF dequantization, CT2 -> transformers, joining
split files); warm prepare = the no-op second call; load = the model's own loader on the prepared
path (libraries imported beforehand, so it is model loading only).

    .venv/bin/python bench/assets.py [--assets smollm2-135m whisper-tiny.en ...] [--gemma]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import tempfile
import time
from collections.abc import Callable

from salad_eval import assets
from salad_eval.assets.registry import REGISTRY


def _loaders() -> dict[str, Callable[[str], object]]:
    from faster_whisper import WhisperModel
    from kokoro_onnx import Kokoro
    from piper import PiperVoice
    from sentence_transformers import SentenceTransformer
    from transformers import AutoModelForCausalLM, WhisperForConditionalGeneration

    def espeak(_: str) -> int:
        library, data = assets.espeak_paths()
        return ctypes.CDLL(str(library)).espeak_Initialize(2, 0, str(data).encode(), 0)

    def kokoro(_: str) -> Kokoro:
        return Kokoro(*(str(p) for p in assets.kokoro_files()))

    return {
        "smollm2-135m": AutoModelForCausalLM.from_pretrained,
        "gemma3-270m": AutoModelForCausalLM.from_pretrained,
        "whisper-tiny.en": WhisperForConditionalGeneration.from_pretrained,
        "whisper-base": WhisperForConditionalGeneration.from_pretrained,
        "ct2-whisper-tiny.en": lambda p: WhisperModel(p, compute_type="int8"),
        "ct2-whisper-base": lambda p: WhisperModel(p, compute_type="int8"),
        "kokoro-82m": kokoro,
        "piper-joe": PiperVoice.load,
        "espeak-ng": espeak,
        "all-minilm-l6-v2": lambda p: SentenceTransformer(p, device="cpu"),
    }


def _seconds(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assets", nargs="*", default=assets.default_assets())
    parser.add_argument("--gemma", action="store_true", help="also gemma3-270m (about a minute)")
    args = parser.parse_args()
    names = args.assets + (["gemma3-270m"] if args.gemma else [])
    loaders = _loaders()
    cold_home = tempfile.mkdtemp(prefix="salad-bench-assets-")
    default_home = os.environ.get("SALAD_HOME")
    rows = []
    try:
        for name in names:
            os.environ["SALAD_HOME"] = cold_home
            cold = _seconds(lambda n=name: assets.prepare(n))
            warm = _seconds(lambda n=name: assets.prepare(n))
            load = _seconds(lambda n=name: loaders[n](str(assets.prepare(n))))
            built = "built" if REGISTRY[name].build else "located"
            rows.append((name, built, cold, warm, load))
    finally:
        shutil.rmtree(cold_home, ignore_errors=True)
        if default_home is None:
            os.environ.pop("SALAD_HOME", None)
        else:
            os.environ["SALAD_HOME"] = default_home
    print(f"{'asset':<22}{'':>8}{'cold prepare s':>16}{'warm prepare ms':>17}{'load s':>9}")
    for name, built, cold, warm, load in rows:
        print(f"{name:<22}{built:>8}{cold:>16.2f}{warm * 1000:>17.2f}{load:>9.2f}")


if __name__ == "__main__":
    main()
