"""Qwen2.5-Omni (its Thinker) on a tiny random model saved as the hub publishes it (full
``model_type`` ``qwen2_5_omni``, audio output disabled, ``spk_dict.pt`` beside it)."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest
import torch
from family_conformance import FamilyConformance

from salad_eval.models.qwen2_5_omni import Qwen25Omni

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths

SPECIALS = [
    "<unk>",
    "<|endoftext|>",
    "<|audio_bos|>",
    "<|AUDIO|>",
    "<|audio_eos|>",
    "<|IMAGE|>",
    "<|VIDEO|>",
    "<|vision_bos|>",
]


def tiny_thinker(tokenizer) -> dict:
    """A Thinker config: 1-layer audio and vision encoders, a 2-layer decoder."""
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIALS}
    return dict(
        audio_config=dict(
            num_mel_bins=128,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            d_model=32,
            output_dim=32,
            n_window=50,
        ),
        vision_config=dict(
            depth=1,
            hidden_size=16,
            intermediate_size=32,
            num_heads=2,
            out_hidden_size=32,
            fullatt_block_indexes=[0],
        ),
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        ),
        audio_token_index=ids["<|AUDIO|>"],
        image_token_index=ids["<|IMAGE|>"],
        video_token_index=ids["<|VIDEO|>"],
        audio_start_token_id=ids["<|audio_bos|>"],
        audio_end_token_id=ids["<|audio_eos|>"],
        vision_start_token_id=ids["<|vision_bos|>"],
    )


def save_tiny_qwen2_5_omni(path: Path) -> Path:
    """A tiny Qwen2.5-Omni, its Talker's voices beside it."""
    from transformers import Qwen2_5OmniConfig, Qwen2_5OmniForConditionalGeneration

    tokenizer = checks.bpe_tokenizer(
        SPECIALS,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        audio_token="<|AUDIO|>",
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
    )
    config = Qwen2_5OmniConfig(thinker_config=tiny_thinker(tokenizer), enable_audio_output=False)
    checks.save_omni(Qwen2_5OmniForConditionalGeneration, config, tokenizer, path)
    torch.save({}, path / "spk_dict.pt")  # the Talker's voices: loaded, unused by the Thinker
    return path


class TestQwen25Omni(FamilyConformance):
    adapter = Qwen25Omni
    build = staticmethod(save_tiny_qwen2_5_omni)

    def own_audio_inputs(self, model, waves):
        features, mask = checks.whisper_features(model.feature_extractor, waves)
        counts = model.model.model.audio_tower._get_feat_extract_output_lengths(mask.sum(-1))[1]
        return {"input_features": features, "feature_attention_mask": mask}, counts

    def test_loads_the_thinker_alone(self, model):
        assert type(model.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"

    def test_text_model_defaults_to_the_published_backbone(self, model):
        import copy

        from salad_eval.errors import SaladError
        from salad_eval.models.load import default_text_model

        published = copy.copy(model)
        published.name = "Qwen/Qwen2.5-Omni-7B"
        assert default_text_model(published, None) == "Qwen/Qwen2.5-7B"
        assert default_text_model(published, "my/llm") == "my/llm"
        with pytest.raises(SaladError, match="pass --text-model"):
            default_text_model(model, None)  # a tiny local model: no published backbone
