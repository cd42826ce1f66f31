"""Recorded audio: a task's own recordings, scored as the voice ``recorded``.

A task may take its spoken parts from the data instead of a TTS engine: a prompt part
``speak: <template>`` with ``audio: <expression>`` (``tasks.py``) names the recording of what the
template says, as a file path relative to the data file or a Hugging Face ``Audio`` value. The
rendered text stays the transcript: the text conditions read it, and the clip check and the
cascade's WER compare what they hear against it. So ``recorded`` is one more voice: every
condition, control, decomposition and report works on it unchanged, beside any TTS voice.

Recordings enter the same verified store as synthesized clips (16 kHz mono FLAC, sha256 sidecar),
keyed by the source bytes and how they are converted: a rerun reuses them, and a changed
recording never reuses a stale clip, transcript or score. Finding each item's recording in the
data is task data (``salad_eval/recordings.py``).
"""

from __future__ import annotations

import functools
import hashlib
import io
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.speech.tts import to_16k

VOICE = "recorded"
CONVERSION = 1  # how a recording becomes a clip: decoded, channels averaged, resampled to 16 kHz


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
