"""The content-addressed audio store: one 16 kHz mono FLAC per (text, engine, voice) clip.

A clip's key hashes everything that changes its audio: the normalized text, the engine and its
version (package + model hash), the voice and its parameters, and the normalization version. So a
rerun finds every clip it already made, and a changed input never reuses a stale one. Clips are
written atomically (encoded in memory, then renamed into place): a process killed mid-write leaves
no truncated clip behind that a later run would trust.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.home import atomic_write_bytes, atomic_write_text, home
from salad_eval.speech.normalize import VERSION as NORMALIZATION_VERSION
from salad_eval.speech.tts import SAMPLE_RATE
from salad_eval.speech.voices import Voice


def root() -> Path:
    return home() / "audio"


def clip_key(normalized_text: str, voice: Voice, engine_version: str) -> str:
    fields = {
        "text": normalized_text,
        "engine": voice.engine,
        "engine_version": engine_version,
        "voice": voice.name,
        "params": [list(p) for p in voice.params],
        "normalization": NORMALIZATION_VERSION,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def clip_path(key: str) -> Path:
    return root() / "clips" / key[:2] / f"{key}.flac"


def has_clip(key: str) -> bool:
    return clip_path(key).is_file()


def write_clip(key: str, audio: np.ndarray) -> Path:
    """Store 16 kHz float audio as 16-bit FLAC (lossless from here on), atomically."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    path = clip_path(key)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def read_clip(key: str) -> np.ndarray:
    audio, rate = sf.read(clip_path(key), dtype="float32")
    assert rate == SAMPLE_RATE, f"{clip_path(key)} is not 16 kHz"
    return audio


def clip_seconds(key: str) -> float:
    return sf.info(clip_path(key)).frames / SAMPLE_RATE


def transcript_path(key: str, asr: str) -> Path:
    return root() / "transcripts" / asr / key[:2] / f"{key}.txt"


def read_transcript(key: str, asr: str) -> str | None:
    path = transcript_path(key, asr)
    return path.read_text() if path.is_file() else None


def write_transcript(key: str, asr: str, text: str) -> None:
    atomic_write_text(transcript_path(key, asr), text)
