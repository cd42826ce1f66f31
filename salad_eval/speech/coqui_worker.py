"""The Coqui TTS worker: run by file path with the Coqui interpreter (``coqui.py`` starts it).

Coqui lives in its own environment (README: Coqui), which has no salad: this script imports only
the standard library, numpy, torch and TTS. It reads one JSON request a line on stdin and answers
each on stdout with one JSON line, followed for a clip by its float32 samples as raw bytes:

    {"op": "tts", "model": m, "text": t, "seed": s, "speaker": .., "language": .., "speed": ..}
        -> {"ok": true, "rate": 22050, "samples": n} + 4n bytes
    {"op": "load", "model": m} -> {"ok": true, "dir": the model's folder}
    anything that fails -> {"ok": false, "error": "one line"}

It exits when stdin closes, even mid-clip: its parent is gone, and so is whoever wanted the clip.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np
import torch

_models: dict = {}


def _model(name: str):
    """The TTS of ``name`` (a local model folder or a zoo name), loaded once."""
    if name not in _models:
        from TTS.api import TTS  # noqa: PLC0415 - deferred: a load request may never come

        folder = Path(name)
        if folder.is_dir():
            checkpoint = sorted(folder.glob("*.pth"), key=lambda p: p.name != "model.pth")
            if not checkpoint:
                raise ValueError(f"{name} holds no model .pth")
            _models[name] = TTS(
                model_path=str(checkpoint[0]), config_path=str(folder / "config.json")
            )
        else:
            _models[name] = TTS(model_name=name, progress_bar=False)
    return _models[name]


def _folder(name: str) -> str:
    if Path(name).is_dir():
        return str(Path(name).resolve())
    from TTS.utils.manage import ModelManager  # noqa: PLC0415 - deferred with TTS

    model_path, _, _ = ModelManager(progress_bar=False).download_model(name)
    return str(Path(model_path).resolve())


def _clip(request: dict) -> np.ndarray:
    tts = _model(request["model"])
    torch.manual_seed(request["seed"] % 2**63)  # VITS draws durations and latents from it
    options = {k: request[k] for k in ("speaker", "language") if request.get(k)}
    audio = tts.tts(request["text"], speed=request.get("speed", 1.0), **options)
    return np.asarray(audio, dtype=np.float32).reshape(-1)


def _requests():
    """Requests as they come; EOF on stdin (the parent gone) ends this process at once."""
    lines: list[bytes] = []
    ready = threading.Condition()
    source = sys.stdin.buffer
    sys.stdin = open(os.devnull)  # noqa: SIM115 - for good: a licence prompt (XTTS) reads EOF

    def read() -> None:
        for line in source:
            with ready:
                lines.append(line)
                ready.notify()
        os._exit(0)

    threading.Thread(target=read, daemon=True).start()
    while True:
        with ready:
            ready.wait_for(lambda: lines)
            line = lines.pop(0)
        yield json.loads(line)


def main() -> None:
    out = os.fdopen(os.dup(1), "wb")  # the protocol's own stream
    os.dup2(2, 1)  # whatever TTS prints goes to stderr, never into the protocol
    torch.set_num_threads(1)  # a clip is a function of its text, voice and seed, not of --workers
    for request in _requests():
        try:
            if request["op"] == "load":
                _model(request["model"])
                out.write(
                    json.dumps({"ok": True, "dir": _folder(request["model"])}).encode() + b"\n"
                )
            else:
                audio = _clip(request)
                rate = _model(request["model"]).synthesizer.output_sample_rate
                header = {"ok": True, "rate": rate, "samples": int(audio.size)}
                out.write(json.dumps(header).encode() + b"\n" + audio.tobytes())
        except Exception as err:  # noqa: BLE001 - every failure goes back to salad as one line
            message = f"{type(err).__name__}: {err}".splitlines()[0]
            out.write(json.dumps({"ok": False, "error": message}).encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    main()
