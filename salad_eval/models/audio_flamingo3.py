"""Audio Flamingo 3 (``AudioFlamingo3ForConditionalGeneration``) on the generic HF speech-LLM base.

A clip is one ``<sound>`` per audio frame and nothing around it, as its processor writes it. The
audio path is the model's own: the clip cut into 30 s windows as the processor cuts it, Whisper
features of each window (128 mels, padded to 30 s), the encoder masked to the window's frames,
the projector, then the valid frames of every window in order (``get_audio_features``). The
processor takes one clip per text; salad lays out the spans itself, so a prompt may hold many.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.hf_audio import HFAudioLM


class AudioFlamingo3(HFAudioLM):
    """``AudioFlamingo3ForConditionalGeneration`` + its tokenizer and Whisper feature extractor."""

    family = "audio-flamingo-3"
    model_class = "AudioFlamingo3ForConditionalGeneration"

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        window = SAMPLE_RATE * self.feature_extractor.chunk_length
        out = []
        for wave in waves:
            chunks = [wave[start : start + window] for start in range(0, max(len(wave), 1), window)]
            inputs = self.feature_extractor(
                chunks,
                sampling_rate=SAMPLE_RATE,
                return_attention_mask=True,
                padding="max_length",
                return_tensors="pt",
            )
            features = inputs["input_features"].to(self.input_device, self.model.dtype)
            mask = inputs["attention_mask"].to(self.input_device)
            out.append(self.model.get_audio_features(features, mask).pooler_output)
        return out
