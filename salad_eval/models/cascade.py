"""The ``speech@cascade`` topline: Whisper transcribes each spoken segment, the text LLM reads it.

Transcripts are cached on disk by (ASR fingerprint, clip content), so every condition, rerun and
voice set transcribes a clip once. How a transcript joins the text around it: Whisper's casing and
punctuation are kept (they are what a written question would have), surrounding whitespace is left
to the prompt's own text, and a clip that ends the prompt loses the final period Whisper adds to
every utterance, because the choices continue that sentence (HellaSwag-style prompts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from functools import cached_property
from typing import TypeVar

import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from salad_eval.assets import whisper_path
from salad_eval.home import cached_entry, home
from salad_eval.models.digest import weights_digest
from salad_eval.models.speech_lm import load_waveform
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Decoding,
    GenerationRequest,
    Model,
    Prompt,
    Reply,
    ScoringRequest,
    Text,
)
from salad_eval.scoring import file_hash, resolve_batch_size
from salad_eval.speech.quality import error_rates

R = TypeVar("R", ScoringRequest, GenerationRequest)
SAMPLE_RATE = 16_000
WINDOW_SECONDS = 30


class Cascade:
    """ASR (any Whisper: embedded name, hub id or path) followed by a text LLM.

    ``dtype`` is the text LLM's (when it is given by name); the ASR always runs in float32, so a
    transcript, cached by the ASR's fingerprint, is the same whatever the run's dtype.
    """

    def __init__(
        self,
        asr: str = "whisper-tiny.en",
        text_model: Model | str = "smollm2-135m",
        device: str = "cpu",
        dtype: str = "float32",
    ):
        path = whisper_path(asr)
        self.asr_name = asr
        self.processor = WhisperProcessor.from_pretrained(path)
        self.asr = WhisperForConditionalGeneration.from_pretrained(path, dtype=torch.float32)
        self.asr.to(device).eval()
        if isinstance(text_model, str):
            text_model = TextLM(text_model, dtype=dtype, device=device)
        self.text = text_model

    @property
    def dtype(self) -> str:
        return self.text.dtype

    @cached_property
    def asr_fingerprint(self) -> str:
        settings = f"greedy-en:{self.processor.to_json_string()}"
        return weights_digest(self.asr, extra=settings)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(f"{self.asr_fingerprint}:{self.text.fingerprint}".encode())
        return f"cascade-{digest.hexdigest()[:32]}"

    def transcribe(self, audio: Audio) -> str:
        """Whisper's transcript of one clip: greedy, English, no timestamps; cached on disk."""
        entry = home() / "transcripts" / self.asr_fingerprint[:16] / f"{file_hash(audio.path)}.txt"
        return cached_entry(
            entry,
            "transcript",
            lambda: self._run_asr(load_waveform(audio.path)),
            str.encode,
            bytes.decode,
        )  # sealed: a cut-off transcript is redone

    def _run_asr(self, wave) -> str:
        long_form = len(wave) > WINDOW_SECONDS * SAMPLE_RATE
        features = self.processor.feature_extractor(
            wave,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
            return_attention_mask=True,
            **({"truncation": False, "padding": "longest"} if long_form else {}),
        )
        options = {"language": "en", "task": "transcribe"} if self._multilingual else {}
        with torch.inference_mode():
            ids = self.asr.generate(
                features.input_features.to(self.asr.device, self.asr.dtype),
                attention_mask=features.attention_mask.to(self.asr.device),
                do_sample=False,
                num_beams=1,
                return_timestamps=long_form,  # Whisper needs them to stitch windows
                **options,
            )
        return self.processor.batch_decode(ids, skip_special_tokens=True)[0].strip()

    @cached_property
    def _multilingual(self) -> bool:
        return bool(getattr(self.asr.generation_config, "is_multilingual", False))

    def transcribed(self, prompt: Prompt) -> str:
        """The prompt as the text LLM reads it: each clip replaced by its transcript."""
        parts = []
        for i, seg in enumerate(prompt):
            if isinstance(seg, Text):
                parts.append(seg.text)
                continue
            text = self.transcribe(seg)
            if i == len(prompt) - 1 and text.endswith(".") and not text.endswith(".."):
                text = text[:-1]
            parts.append(text)
        return "".join(parts)

    def transcripts(self, prompt: Prompt) -> list[str]:
        """Whisper's transcript of each of the prompt's clips, in order (cached: no ASR rerun)."""
        return [self.transcribe(seg) for seg in prompt if isinstance(seg, Audio)]

    def transcript_wer(self, prompt: Prompt) -> float:
        """WER of the prompt's transcripts against the texts its clips speak (all clips joined)."""
        reference = " ".join(seg.transcript for seg in prompt if isinstance(seg, Audio))
        return error_rates(reference, " ".join(self.transcripts(prompt)))[0]

    def auto_batch_size(self, requests: Sequence[ScoringRequest]) -> int:
        """``--batch-size auto`` on the transcripts (each clip is transcribed once, cached)."""
        return resolve_batch_size(self.text, self._transcribed(requests), "auto")

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        """The text LLM's scores of the choices after the transcribed prompts."""
        return self.text.score(self._transcribed(requests), batch_size)

    def generate(
        self, requests: Sequence[GenerationRequest], decoding: Decoding, batch_size: int = 8
    ) -> list[list[Reply]]:
        """The text LLM's replies to the transcribed prompts."""
        return self.text.generate(self._transcribed(requests), decoding, batch_size)

    def _transcribed(self, requests: Sequence[R]) -> list[R]:
        """The requests as the text LLM reads them: each prompt as one text, its transcript."""
        return [replace(r, prompt=(Text(self.transcribed(r.prompt)),)) for r in requests]
