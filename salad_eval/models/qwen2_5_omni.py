"""Qwen2.5-Omni, its Thinker (the speech-understanding LLM; the Talker and vocoder never load).

A clip is ``<|audio_bos|>`` + one ``<|AUDIO|>`` per audio frame + ``<|audio_eos|>``, as its
processor writes it; the audio path is the Thinker's own ``get_audio_features`` (Whisper features
of the clip, its valid frames through the windowed audio encoder and projection). Text and audio
get the same sequential positions on all three rotary axes when there is no image or video (the
Thinker's ``get_rope_index``), so the decoder runs on plain positions and shares the context.

A full checkpoint (``model_type`` ``qwen2_5_omni``, as published) loads with audio output
disabled, which builds only the Thinker; a Thinker saved alone (``qwen2_5_omni_thinker``) loads
directly.
"""

from __future__ import annotations

import torch
from torch import nn

from salad_eval.models.hf_audio import HFAudioLM


class Qwen25Omni(HFAudioLM):
    family = "qwen2.5-omni"
    model_class = "Qwen2_5OmniThinkerForConditionalGeneration"
    full_class = "Qwen2_5OmniForConditionalGeneration"
    full_model_type = "qwen2_5_omni"
    audio_open = ("<|audio_bos|>",)
    audio_close = ("<|audio_eos|>",)

    def load_model(self, path: str, dtype: torch.dtype) -> nn.Module:
        import transformers  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        if transformers.AutoConfig.from_pretrained(path).model_type == self.full_model_type:
            full = self.placement.load(
                getattr(transformers, self.full_class), path, dtype=dtype, enable_audio_output=False
            )
            if placed := getattr(full, "hf_device_map", None):  # the Thinker's part of the map
                full.thinker.hf_device_map = {
                    name.removeprefix("thinker").lstrip("."): device
                    for name, device in placed.items()
                }
            return full.thinker
        return super().load_model(path, dtype)
