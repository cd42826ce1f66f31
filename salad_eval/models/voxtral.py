"""Voxtral (``VoxtralForConditionalGeneration``): a Whisper-style encoder, a projector over four
stacked frames, a Llama-style decoder.

A prompt starts with ``<s>`` and a clip is ``[BEGIN_AUDIO]`` + one ``[AUDIO]`` per audio
embedding, as mistral-common writes them.
Its audio path is the processor's and the model's own: the clip padded with silence to a whole
number of 30 s windows, each window's log-mel frames through the encoder, every four frames
stacked and projected, so every clip of up to 30 s takes 375 positions.

The published checkpoints ship mistral-common's ``tekken.json``, which transformers converts to a
fast tokenizer without mistral-common (and its numpy pin); that conversion adds no ``<s>``, so
the adapter adds it to every encoding, as mistral-common and the HF Mistral tokenizers do (the
text LLM's ``text@base`` starts with it too).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.hf_audio import HFAudioLM

WINDOW_SAMPLES = 30 * SAMPLE_RATE  # the processor's pad_to_multiple_of


class Voxtral(HFAudioLM):
    family = "voxtral"
    model_class = "VoxtralForConditionalGeneration"
    audio_open = ("[BEGIN_AUDIO]",)
    audio_close = ()

    def load_tokenizer(self, path: str):
        from tokenizers import processors  # noqa: PLC0415 - deferred: heavy tokenizers, loaded on this path only

        tokenizer = super().load_tokenizer(path)
        if tokenizer.bos_token is None and tokenizer.convert_tokens_to_ids("<s>") == 1:
            tokenizer.bos_token, tokenizer.eos_token = "<s>", "</s>"  # tekken's ranks 1 and 2
        bos = tokenizer.bos_token_id
        if bos is not None and tokenizer.encode("a")[:1] != [bos]:
            backend = tokenizer.backend_tokenizer
            first = processors.TemplateProcessing(
                single=f"{tokenizer.bos_token} $A",
                pair=f"{tokenizer.bos_token} $A $B",
                special_tokens=[(tokenizer.bos_token, bos)],
            )
            steps = [backend.post_processor] if backend.post_processor is not None else []
            backend.post_processor = processors.Sequence([*steps, first])
        return tokenizer

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per clip: its 30 s windows through the encoder and projector (``VoxtralProcessor.
        _retrieve_input_features`` then ``get_audio_features``)."""
        window = 2 * self.model.config.audio_config.max_source_positions  # mel frames per 30 s
        out = []
        for wave in waves:
            mel = self.feature_extractor(
                wave,
                sampling_rate=SAMPLE_RATE,
                padding=True,
                truncation=False,
                pad_to_multiple_of=WINDOW_SAMPLES,
                return_tensors="pt",
            )["input_features"]
            windows = mel.reshape(mel.shape[1], -1, window).transpose(0, 1)
            windows = windows.to(self.input_device, self.model.dtype)
            out.append(self.model.get_audio_features(windows).pooler_output)
        return out
