"""The ASR quality check: every clip is transcribed by the embedded Whisper and scored.

A clip the TTS garbled (skipped words, babble) would silently turn a speech condition into a
different question. So each clip gets a Whisper transcript (cached by clip key) and its WER/CER
against the text it was meant to say; clips above a threshold are flagged and reported, never
dropped. Both sides go through the same speech normalization, so "25%" and "twenty five percent"
agree.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from dataclasses import dataclass

import jiwer
import numpy as np

from salad_eval.assets import ct2_whisper_dir
from salad_eval.speech import store
from salad_eval.speech.normalize import normalize

ASR_MODEL = "whisper-base"
WER_THRESHOLD = 0.3
_threads = 0


@dataclass(frozen=True)
class ClipQuality:
    transcript: str
    wer: float
    cer: float


def set_threads(threads: int) -> None:
    """CPU threads for the ASR model; call before its first use."""
    global _threads
    _threads = threads


def comparable(text: str) -> str:
    """Lowercase words without punctuation, numbers spelled out: what WER/CER compare."""
    text = normalize(text).lower().replace("'", "")
    return " ".join(re.sub(r"[^\w\s]|_", " ", text).split())


def error_rates(reference: str, hypothesis: str) -> tuple[float, float]:
    """(WER, CER) of ``hypothesis`` against ``reference``, both made comparable first."""
    ref, hyp = comparable(reference), comparable(hypothesis)
    if not ref:
        return (0.0, 0.0) if not hyp else (1.0, 1.0)
    if not hyp:
        return 1.0, 1.0
    return float(jiwer.wer(ref, hyp)), float(jiwer.cer(ref, hyp))


@functools.cache
def _model():
    from faster_whisper import WhisperModel  # noqa: PLC0415 - deferred: heavy faster_whisper, loaded on this path only

    directory = str(ct2_whisper_dir(ASR_MODEL))
    return WhisperModel(directory, device="cpu", compute_type="int8", cpu_threads=_threads)


def asr_id() -> str:
    """Names the transcriber in the transcript cache: a new model or package re-transcribes."""
    return f"faster-whisper-{importlib.metadata.version('faster-whisper')}-{ASR_MODEL}-int8-beam1"


def transcribe(audio: np.ndarray) -> str:
    """English transcript of 16 kHz float audio (greedy, no context carried between windows)."""
    segments, _ = _model().transcribe(
        audio, language="en", beam_size=1, condition_on_previous_text=False, vad_filter=False
    )
    return " ".join(segment.text.strip() for segment in segments).strip()


def check_clip(key: str, normalized_text: str, sha256: str, problems: list[str]) -> ClipQuality:
    """Transcribe a stored clip of digest ``sha256`` (once: the transcript is cached) and score it.

    A bad cached transcript is noted in ``problems`` and made again."""
    asr = asr_id()
    transcript = store.read_transcript(key, asr, sha256, problems)
    if transcript is None:
        transcript = transcribe(store.read_clip(key))
        store.write_transcript(key, asr, transcript, sha256)
    wer, cer = error_rates(normalized_text, transcript)
    return ClipQuality(transcript, wer, cer)
