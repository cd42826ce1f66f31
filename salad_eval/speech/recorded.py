"""Recorded audio: a task's own recordings, scored as the voice ``recorded``.

A task may take its spoken parts from the data instead of a TTS engine: a prompt part
``speak: <template>`` with ``audio: <expression>`` (``tasks.py``) names the recording of what the
template says, as a file path relative to the data file or a Hugging Face ``Audio`` value. The
rendered text stays the transcript: the text conditions read it, and the clip check and the
cascade's WER compare what they hear against it. So ``recorded`` is one more voice: every
condition, control, decomposition and report works on it unchanged, beside any TTS voice.

Recordings enter the same verified store as synthesized clips (16 kHz mono FLAC, sha256 sidecar),
keyed by the source bytes and how they are converted: a rerun reuses them, and a changed
recording never reuses a stale clip, transcript or score. Bytes that the data carries inline (an
``Audio`` value with ``bytes``, or a decoded ``array``) are first kept as a file under the store's
``recordings/``, named by their sha256, so every item refers to a file it can be rebuilt from.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_bytes
from salad_eval.speech import store
from salad_eval.speech.tts import to_16k

VOICE = "recorded"
CONVERSION = 1  # how a recording becomes a clip: decoded, channels averaged, resampled to 16 kHz


def source(value: object, base: Path | None) -> str | None:
    """The recording file of one data value; None when the data has none for this document.

    ``value``: a path (relative to ``base``, the data file's folder), or an ``Audio`` value:
    ``{"bytes", "path"}`` (undecoded) or ``{"array", "sampling_rate"}`` (decoded).
    """
    if value is None or value == "":
        return None
    if isinstance(value, str | os.PathLike):
        path = Path(value)
        if not path.is_absolute():
            if base is None:
                raise SaladError(f"recording {value} is a relative path but the data is not local")
            path = base / path
        if not path.is_file():
            raise SaladError(f"recording {path} does not exist; fix the audio column or the files")
        return str(path)
    if isinstance(value, dict):
        if value.get("bytes"):
            return _kept(bytes(value["bytes"]), Path(value.get("path") or "").suffix or ".wav")
        if value.get("array") is not None and value.get("sampling_rate"):
            buffer = io.BytesIO()
            sf.write(
                buffer,
                np.asarray(value["array"], dtype=np.float32),
                int(value["sampling_rate"]),
                format="WAV",
                subtype="FLOAT",
            )
            return _kept(buffer.getvalue(), ".wav")
        if value.get("path"):
            return source(value["path"], base)
    raise SaladError(
        f"cannot read a recording from a {type(value).__name__} value; give a file path or an "
        "Audio value (bytes/path or array/sampling_rate)"
    )


def _kept(data: bytes, suffix: str) -> str:
    """Inline bytes as a content-addressed file under the store (written once, checked after)."""
    sha256 = hashlib.sha256(data).hexdigest()
    path = store.root() / "recordings" / sha256[:2] / f"{sha256}{suffix}"
    if not path.is_file() or _sha256(path) != sha256:
        atomic_write_bytes(path, data)
    return str(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@functools.cache
def _source_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _sha256(Path(path))


def clip_fields(path: str) -> dict:
    """What a recorded clip is made from: its key is the hash of exactly this."""
    stat = Path(path).stat()
    sha256 = _source_sha256(path, stat.st_size, stat.st_mtime_ns)
    return {"engine": VOICE, "source_sha256": sha256, "conversion": CONVERSION}


def convert(path: str, fields: dict) -> np.ndarray:
    """The recording as 16 kHz mono float audio, from bytes checked against ``fields``."""
    data = Path(path).read_bytes()
    if hashlib.sha256(data).hexdigest() != fields["source_sha256"]:
        raise ValueError(f"recording {path} changed while the run read it")
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"recording {path} is not readable audio ({err})") from None
    return to_16k(audio.mean(axis=1), rate)
