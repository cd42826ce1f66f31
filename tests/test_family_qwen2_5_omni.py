"""Qwen2.5-Omni (its Thinker) on a tiny random model saved as the hub publishes it (full
``model_type`` ``qwen2_5_omni``, audio output disabled, ``spk_dict.pt`` beside it)."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest
import torch

from salad_eval.models.qwen2_5_omni import Qwen25Omni

pytestmark = pytest.mark.numerics  # scores compared across batches and paths

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


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
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
    path = tmp_path_factory.mktemp("qwen2.5-omni") / "model"
    checks.save_omni(Qwen2_5OmniForConditionalGeneration, config, tokenizer, path)
    torch.save({}, path / "spk_dict.pt")  # the Talker's voices: loaded, unused by the Thinker
    return path


@pytest.fixture(scope="module")
def model(model_dir) -> Qwen25Omni:
    return Qwen25Omni(str(model_dir))


def test_loads_the_thinker_alone(model):
    assert type(model.model).__name__ == "Qwen2_5OmniThinkerForConditionalGeneration"


def test_shared_context_equals_per_choice(model, clips):
    checks.check_shared_equals_separate(model, checks.mixed_requests(clips))


def test_batch_sizes_agree(model, clips):
    checks.check_batch_sizes(model, checks.mixed_requests(clips))


def test_audio_moves_scores(model, clips):
    checks.check_audio_moves_scores(model, clips)


def test_audio_path_is_the_models_own(model, clips):
    def own_inputs(waves):
        features, mask = checks.whisper_features(model.feature_extractor, waves)
        counts = model.model.model.audio_tower._get_feat_extract_output_lengths(mask.sum(-1))[1]
        return {"input_features": features, "feature_attention_mask": mask}, counts

    checks.check_own_audio_path(model, clips, own_inputs)


@pytest.fixture(scope="module")
def gap_run(model_dir, tiny_qwen2, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("qwen2.5-omni-gap") / "report"
    return out, checks.gap_report(model_dir, tiny_qwen2, out)


@pytest.mark.slow  # a whole gap run
def test_gap_report_is_complete(gap_run):
    checks.check_gap_report(*gap_run)


def test_text_model_defaults_to_the_published_backbone(model):
    import copy

    from salad_eval.errors import SaladError
    from salad_eval.models.load import default_text_model

    published = copy.copy(model)
    published.name = "Qwen/Qwen2.5-Omni-7B"
    assert default_text_model(published, None) == "Qwen/Qwen2.5-7B"
    assert default_text_model(published, "my/llm") == "my/llm"
    with pytest.raises(SaladError, match="pass --text-model"):
        default_text_model(model, None)  # a tiny local model: no published backbone
