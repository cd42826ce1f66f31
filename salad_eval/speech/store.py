"""The content-addressed, verified audio store: one 16 kHz mono FLAC per clip.

A clip's key hashes everything that changes its audio: the normalized text, the engine and its
version (package + model hash), the voice and its parameters, the normalization version and the
synthesis seed. So a rerun finds every clip it already made, and a changed input never reuses a
stale one. Clips are written atomically (encoded in memory, then renamed into place), each followed
by a sidecar ``<key>.json``: the sha256 of the FLAC's bytes, its frame count and the clip's fields.

Every read is verified: a clip counts only if its sidecar parses, its bytes hash to the recorded
digest and its header says 16 kHz with the recorded frames; a transcript only if it parses and was
made from the bytes the clip has now. A bad entry (truncated, zero bytes, garbage, a clip without
sidecar) is discarded, noted in the caller's ``problems`` and counted in ``home.REBUILT``: it is
made again, never used.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.home import REBUILT, atomic_write_bytes, atomic_write_text, home
from salad_eval.speech.normalize import VERSION as NORMALIZATION_VERSION
from salad_eval.speech.tts import SAMPLE_RATE
from salad_eval.speech.voices import Voice

MIN_FRAMES = SAMPLE_RATE // 20  # under 50 ms is no speech: an engine failure, not a clip


@dataclass(frozen=True)
class StoredClip:
    sha256: str
    frames: int

    @property
    def seconds(self) -> float:
        return self.frames / SAMPLE_RATE


def root() -> Path:
    return home() / "audio"


def clip_fields(normalized_text: str, voice: Voice, engine_version: str, seed: int = 0) -> dict:
    """What a clip says and how it was made: its key is the hash of exactly this."""
    return {
        "text": normalized_text,
        "engine": voice.engine,
        "engine_version": engine_version,
        "voice": voice.name,
        "params": [list(p) for p in voice.params],
        "normalization": NORMALIZATION_VERSION,
        "seed": seed,
    }


def key_of(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def clip_key(normalized_text: str, voice: Voice, engine_version: str, seed: int = 0) -> str:
    return key_of(clip_fields(normalized_text, voice, engine_version, seed))


def clip_path(key: str) -> Path:
    return root() / "clips" / key[:2] / f"{key}.flac"


def _sidecar(key: str) -> Path:
    return clip_path(key).with_suffix(".json")


def encode(audio: np.ndarray) -> bytes:
    """16 kHz float audio as 16-bit FLAC bytes (lossless from here on)."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def flac_frames(data: bytes) -> int:
    """Frames of FLAC bytes; ValueError unless they decode as a 16 kHz clip of some length."""
    try:
        audio, rate = sf.read(io.BytesIO(data), dtype="int16")
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise ValueError(f"not a readable FLAC ({err})") from None
    if rate != SAMPLE_RATE or len(audio) < MIN_FRAMES:
        raise ValueError(f"{len(audio)} frames at {rate} Hz")
    return len(audio)


def write_flac(fields: dict, data: bytes) -> StoredClip:
    """Store FLAC bytes (checked by decoding) under the key of ``fields``; then its sidecar."""
    key, frames = key_of(fields), flac_frames(data)
    stored = StoredClip(hashlib.sha256(data).hexdigest(), frames)
    atomic_write_bytes(clip_path(key), data)
    sidecar = {"sha256": stored.sha256, "frames": frames, "clip": fields}
    atomic_write_text(_sidecar(key), json.dumps(sidecar, ensure_ascii=False))
    return stored


def write_clip(fields: dict, audio: np.ndarray) -> StoredClip:
    return write_flac(fields, encode(audio))


def discard(key: str) -> None:
    for path in (_sidecar(key), clip_path(key)):
        path.unlink(missing_ok=True)


def _check(key: str) -> StoredClip:
    """The stored clip, verified (cheaply: a hash and a header); ValueError saying what is wrong."""
    try:
        sidecar = json.loads(_sidecar(key).read_text())
        data = clip_path(key).read_bytes()
        stored = StoredClip(str(sidecar["sha256"]), int(sidecar["frames"]))
    except FileNotFoundError as err:
        raise ValueError(f"{Path(err.filename).name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"unreadable sidecar ({type(err).__name__})") from None
    if hashlib.sha256(data).hexdigest() != stored.sha256:
        raise ValueError(f"{len(data)} bytes that do not match their sha256")
    try:
        header = sf.info(io.BytesIO(data))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise ValueError(f"not a readable FLAC ({err})") from None
    if header.samplerate != SAMPLE_RATE or not MIN_FRAMES <= header.frames == stored.frames:
        raise ValueError(f"{header.frames} frames at {header.samplerate} Hz")
    return stored


def stored_clip(key: str, problems: list[str]) -> StoredClip | None:
    """The verified clip, or None when there is none; a bad one is discarded and noted."""
    if not clip_path(key).exists() and not _sidecar(key).exists():
        return None
    try:
        return _check(key)
    except ValueError as why:
        problems.append(f"clip {clip_path(key)}: {why}")
        REBUILT["clip"] += 1
        discard(key)
        return None


def sidecar(key: str) -> dict:
    """The sidecar of a verified clip: sha256, frames and the clip's fields."""
    return json.loads(_sidecar(key).read_text())


def read_clip(key: str) -> np.ndarray:
    audio, _ = sf.read(clip_path(key), dtype="float32")
    return audio


def transcript_path(key: str, asr: str) -> Path:
    return root() / "transcripts" / asr / key[:2] / f"{key}.json"


def read_transcript(key: str, asr: str, sha256: str, problems: list[str]) -> str | None:
    """The transcript of the clip's current bytes (``sha256``), or None; a bad one is noted."""
    path = transcript_path(key, asr)
    try:
        entry = json.loads(path.read_text())
        text, heard = entry["text"], entry["clip_sha256"]
        if not isinstance(text, str) or not isinstance(heard, str):
            raise TypeError
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as err:
        problems.append(f"transcript {path}: unreadable ({type(err).__name__})")
        REBUILT["clip transcript"] += 1
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return None
    return text if heard == sha256 else None  # made from other bytes (an import): transcribe again


def write_transcript(key: str, asr: str, text: str, sha256: str) -> None:
    entry = {"text": text, "clip_sha256": sha256}
    atomic_write_text(transcript_path(key, asr), json.dumps(entry, ensure_ascii=False))
