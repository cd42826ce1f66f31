"""Voxtral (``VoxtralForConditionalGeneration``): a Whisper-style encoder, a projector over four
stacked frames, a Llama-style decoder.

A clip is ``[BEGIN_AUDIO]`` + one ``[AUDIO]`` per audio embedding, as mistral-common writes it.
Its audio path is the processor's and the model's own: the clip padded with silence to a whole
number of 30 s windows, each window's log-mel frames through the encoder, every four frames
stacked and projected, so every clip of up to 30 s takes 375 positions. The published
checkpoints ship a mistral-common tokenizer (``tekken.json``): install ``mistral-common``
(``pip install 'salad[voxtral]'``) to read it; a checkpoint with a ``tokenizer.json`` loads
without it.
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
        try:
            return super().load_tokenizer(path)
        except (OSError, ValueError, ImportError) as error:
            from salad_eval.errors import SaladError

            raise SaladError(
                f"{path}: its tokenizer does not load ({error}); Voxtral's tekken.json needs "
                "`pip install 'salad[voxtral]'`"
            ) from None

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per clip: its 30 s windows through the encoder and projector (``VoxtralProcessor.
        _retrieve_input_features`` then ``get_audio_features``)."""
        window = 2 * self.model.config.audio_config.max_source_positions  # mel frames per 30 s
        out = []
        for wave in waves:
            mel = self.feature_extractor(
                wave, sampling_rate=SAMPLE_RATE, padding=True, truncation=False,
                pad_to_multiple_of=WINDOW_SAMPLES, return_tensors="pt",
            )["input_features"]  # fmt: skip
            windows = mel.reshape(mel.shape[1], -1, window).transpose(0, 1)
            windows = windows.to(self.model.device, self.model.dtype)
            out.append(self.model.get_audio_features(windows).pooler_output)
        return out
