"""Phi-4-multimodal (``Phi4MultimodalForCausalLM``) on the generic HF speech-LLM base.

A clip is one audio placeholder per audio embedding and nothing around it, as its processor
writes it. The audio path is the model's own: its log-mel features (80 mels), the conformer
encoder, the speech projector, merged by the model's own embedding module over a run of
placeholders. Each clip is encoded alone (its processor batches a prompt's clips, padding the
shorter ones, which moves their embeddings by about 1e-5). The decoder is the model itself
(Phi-4-mini's, frozen in training); the speech LoRA that the native checkpoints keep in
``speech-lora/`` is loaded beside it and is on for spoken prompts only (``speech_lora``), as
the model card sets it for audio.

The processor is not used: it also builds the image processor, which needs torchvision; the
tokenizer and feature extractor it would hold are loaded directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from salad_eval.errors import SaladError
from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.hf_audio import HFAudioLM
from salad_eval.models.speech_lora import NO_ADAPTER, SpeechLoRA, load_lora

SPEECH_LORA = "speech-lora"


class Phi4Multimodal(SpeechLoRA, HFAudioLM):
    """``Phi4MultimodalForCausalLM`` + its speech LoRA, tokenizer and feature extractor."""

    family = "phi-4-multimodal"
    model_class = "Phi4MultimodalForCausalLM"

    def load_model(self, path: str, dtype: torch.dtype) -> nn.Module:
        from transformers import Phi4MultimodalForCausalLM  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        model = self.placement.load(Phi4MultimodalForCausalLM, path, dtype=dtype, **NO_ADAPTER)
        try:
            load_lora(model, path, SPEECH_LORA)
        except (OSError, ValueError) as error:
            raise SaladError(
                f"{path}: no speech LoRA in {SPEECH_LORA}/ ({error}); a native "
                "Phi-4-multimodal checkpoint carries one"
            ) from None
        return model

    def decoder_parts(self) -> tuple[nn.Module, nn.Module]:
        return self.model.model, self.model.lm_head

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        merge = self.model.model.embed_tokens_extend
        audio_token = self.model.config.audio_config.audio_token_id
        out = []
        for wave in waves:
            inputs = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            size = int(inputs["audio_embed_sizes"][0])
            ids = torch.full((1, size), audio_token, device=self.input_device)
            blank = torch.zeros(
                1,
                size,
                self.model.config.hidden_size,
                device=self.input_device,
                dtype=self.model.dtype,
            )
            merged = merge(  # one clip: no padding, so the extractor gives no attention mask
                ids,
                blank,
                audio_input_features=inputs["audio_input_features"],
                audio_embed_sizes=inputs["audio_embed_sizes"],
            )
            out.append(merged[0])
        return out
