"""Where a task's own recordings are: the data value of a spoken part -> a local audio file.

A task part ``speak: <template>`` with ``audio: <expression>`` (``tasks.py``) names its recording
as a path relative to the data file, or as a Hugging Face ``Audio`` value. This is task data, read
when items are loaded; turning the file into a clip of the audio store is ``speech/recorded.py``'s.
Bytes that the data carries inline (``bytes``, or a decoded ``array``) are kept once as a file
under the audio store's ``recordings/``, named by their sha256, so every item refers to a file it
can be rebuilt from.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_bytes, home


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
    path = home() / "audio" / "recordings" / sha256[:2] / f"{sha256}{suffix}"
    if not path.is_file() or _sha256(path) != sha256:
        atomic_write_bytes(path, data)
    return str(path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
