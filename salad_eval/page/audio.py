"""The page's audio: every clip an item was heard in, copied from the verified audio store.

The store keeps FLAC, which Chromium and Firefox play but older Safari does not. The page gets
16-bit PCM WAV instead: every current browser plays it, its duration is exact (no encoder delay
or padding, so the player's length is the clip's) and it is lossless, so a listener hears the very
samples the model heard, with no codec artefact laid over the acoustic condition under study (a
``codec=mp3`` or ``packetloss`` voice, say). At 16 kHz mono it costs 32 kB a second.

A copy is named by the clip's content (the first 16 hex digits of the sha256 the run recorded),
so a rerun or a comparison page never copies a clip twice. A clip the store no longer holds, or
holds other bytes for than the run scored, is not copied: the page names it missing, in words.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import re
from pathlib import Path

import soundfile as sf

from salad_eval.home import atomic_write_bytes
from salad_eval.speech import store

log = logging.getLogger(__name__)

SUFFIX = ".wav"
MIME = "audio/wav"
_COPY = re.compile(r"[0-9a-f]{16}\.wav")
MISSING = (
    "missing from the audio store (deleted, or the run was made on another machine); "
    "`salad-eval audio import` an export of the run's clips, then write the page again"
)
CHANGED = (
    "the audio store now holds other audio under this clip's key than the run scored "
    "(a later synthesis or import); rerun the gap run to see its own clips"
)


def wav_bytes(flac: bytes) -> tuple[bytes, int]:
    """FLAC bytes as 16-bit PCM WAV bytes, and their frames."""
    audio, rate = sf.read(io.BytesIO(flac), dtype="int16")
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue(), len(audio)


def _copy(key: str, sha256: str) -> tuple[bytes | None, str]:
    """The clip as WAV bytes, or None and why it is missing."""
    try:
        data = store.clip_path(key).read_bytes()
    except FileNotFoundError:
        return None, MISSING
    if hashlib.sha256(data).hexdigest() != sha256:
        return None, CHANGED
    try:
        wav, _ = wav_bytes(data)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        return None, f"unreadable in the audio store ({err}); rerun the gap run to make it again"
    return wav, ""


def copy_clips(
    clips: dict[str, tuple[str, str]], folder: Path | None, prefix: str = "audio"
) -> dict[str, dict]:
    """{clip id: {"src", "s" (seconds)}} for each clip copied, {"missing": why} for the others.

    ``folder``: where the WAV copies go (``src`` is ``<prefix>/<id>.wav``; copies already there
    are kept, others of no clip here are removed); None puts each clip in its ``src`` as a data
    URI instead (one self-contained page).
    """
    audio: dict[str, dict] = {}
    for clip in sorted(clips):
        key, sha256 = clips[clip]
        target = folder / f"{clip}{SUFFIX}" if folder is not None else None
        if target is not None and target.is_file():
            try:
                audio[clip] = {"src": f"{prefix}/{target.name}", "s": _seconds(target)}
                continue
            except (sf.LibsndfileError, RuntimeError):
                pass  # not a readable copy: made again below
        wav, why = _copy(key, sha256)
        if wav is None:
            audio[clip] = {"missing": why}
            continue
        seconds = _seconds(io.BytesIO(wav))
        if target is None:
            src = f"data:{MIME};base64," + base64.b64encode(wav).decode("ascii")
        else:
            atomic_write_bytes(target, wav)
            src = f"{prefix}/{target.name}"
        audio[clip] = {"src": src, "s": seconds}
    if folder is not None and folder.is_dir():
        for stale in folder.iterdir():  # copies of clips no longer on the page
            if _COPY.fullmatch(stale.name) and stale.stem not in clips:
                stale.unlink()
    missing = sum("missing" in a for a in audio.values())
    if missing:
        log.warning(
            "report.html: %s of %s clips could not be copied; their players say why",
            missing,
            len(audio),
        )
    return audio


def _seconds(source) -> float:
    info = sf.info(source)
    return round(info.frames / info.samplerate, 4)
