"""Qwen3-Omni (its mixture-of-experts Thinker) on a tiny random model saved as the hub publishes
it (full ``model_type`` ``qwen3_omni_moe``, audio output disabled)."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest
from family_conformance import FamilyConformance

from salad_eval.models.qwen3_omni import Qwen3Omni

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths

SPECIALS = [
    "<unk>",
    "<|endoftext|>",
    "<|audio_start|>",
    "<|audio_pad|>",
    "<|audio_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
]


def save_tiny_qwen3_omni(path: Path) -> Path:
    """A tiny Qwen3-Omni: 1-layer audio and vision encoders, a 2-layer decoder of 4 experts."""
    from transformers import Qwen3OmniMoeConfig, Qwen3OmniMoeForConditionalGeneration

    tokenizer = checks.bpe_tokenizer(
        SPECIALS,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        audio_token="<|audio_pad|>",
        audio_bos_token="<|audio_start|>",
        audio_eos_token="<|audio_end|>",
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    thinker = dict(
        audio_config=dict(
            num_mel_bins=128,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            d_model=32,
            output_dim=32,
            n_window=50,
            downsample_hidden_size=16,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=32,
            deepstack_visual_indexes=[0],
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 1e6,
                "mrope_section": [4, 2, 2],
                "interleaved": True,
            },
        ),
        audio_token_id=ids["<|audio_pad|>"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        audio_start_token_id=ids["<|audio_start|>"],
        vision_start_token_id=ids["<|vision_start|>"],
    )
    config = Qwen3OmniMoeConfig(thinker_config=thinker, enable_audio_output=False)
    return checks.save_omni(Qwen3OmniMoeForConditionalGeneration, config, tokenizer, path)


class TestQwen3Omni(FamilyConformance):
    adapter = Qwen3Omni
    build = staticmethod(save_tiny_qwen3_omni)

    def own_audio_inputs(self, model, waves):
        from transformers.models.qwen3_omni_moe.processing_qwen3_omni_moe import (
            _get_feat_extract_output_lengths,
        )

        features, mask = checks.whisper_features(model.feature_extractor, waves)
        inputs = {"input_features": features, "feature_attention_mask": mask}
        return inputs, _get_feat_extract_output_lengths(mask.sum(-1))  # the processor's count

    def test_loads_the_moe_thinker_alone(self, model):
        assert type(model.model).__name__ == "Qwen3OmniMoeThinkerForConditionalGeneration"
        assert model.model.config.text_config.num_experts == 4
