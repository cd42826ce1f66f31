"""Qwen3-Omni, its Thinker: a mixture-of-experts decoder (the Talker and Code2Wav never load).

Same shape as Qwen2.5-Omni (``qwen2_5_omni.py``): a clip is ``<|audio_start|>`` + one
``<|audio_pad|>`` per audio frame + ``<|audio_end|>``, its features come from the Thinker's own
``get_audio_features``, and with no image or video every rotary axis is sequential, so the
context is shared. Experts are routed per token with no capacity limit, so a choice's tokens are
routed the same in a batch of choices as alone.
"""

from __future__ import annotations

from salad_eval.models.qwen2_5_omni import Qwen25Omni


class Qwen3Omni(Qwen25Omni):
    family = "qwen3-omni"
    model_class = "Qwen3OmniMoeThinkerForConditionalGeneration"
    full_class = "Qwen3OmniMoeForConditionalGeneration"
    full_model_type = "qwen3_omni_moe"
    audio_open = ("<|audio_start|>",)
    audio_close = ("<|audio_end|>",)
