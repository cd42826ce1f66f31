"""Voxtral on a tiny random ``VoxtralForConditionalGeneration``, with a tokenizer laid out as
mistral-common's (``[AUDIO]`` = 24, ``[BEGIN_AUDIO]`` = 25, a BOS before every encoding)."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest
import torch

from salad_eval.models.voxtral import Voxtral

SPECIALS = ["<unk>", "<s>", "</s>", *[f"[control_{i}]" for i in range(3, 24)], "[AUDIO]",
            "[BEGIN_AUDIO]"]  # fmt: skip


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    tokenizer = checks.bpe_tokenizer(SPECIALS, prepend_bos=True, bos_token="<s>",
                                     eos_token="</s>", pad_token="</s>")  # fmt: skip
    assert tokenizer.convert_tokens_to_ids(["[AUDIO]", "[BEGIN_AUDIO]"]) == [24, 25]
    config = VoxtralConfig(
        audio_config=dict(hidden_size=32, intermediate_size=128, num_hidden_layers=1,
                          num_attention_heads=2, num_mel_bins=128, max_source_positions=1500),
        text_config=dict(model_type="llama", vocab_size=len(tokenizer), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, head_dim=16),
        audio_token_id=24,
    )  # fmt: skip
    path = tmp_path_factory.mktemp("voxtral") / "model"
    torch.manual_seed(0)
    VoxtralForConditionalGeneration(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def model(model_dir) -> Voxtral:
    return Voxtral(str(model_dir))


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    return checks.speech_clips(tmp_path_factory.mktemp("audio"))


def test_spoken_prompts_start_with_bos(model, clips):
    pieces, _ = model.tokenize(checks.mixed_requests(clips)[1].prompt, checks.CHOICES)
    assert pieces[0] == [model.tokenizer.bos_token_id]


def test_shared_context_equals_per_choice(model, clips):
    checks.check_shared_equals_separate(model, checks.mixed_requests(clips))


def test_batch_sizes_agree(model, clips):
    checks.check_batch_sizes(model, checks.mixed_requests(clips))


def test_audio_moves_scores(model, clips):
    checks.check_audio_moves_scores(model, clips, grows=False)  # 30 s windows: 375 each


def test_audio_path_is_the_models_own(model, clips):
    def own_inputs(waves):
        """``VoxtralProcessor._retrieve_input_features``: 30 s windows stacked on the batch."""
        windows = []
        for wave in waves:
            mel = model.feature_extractor(wave, sampling_rate=16_000, padding=True,
                                          truncation=False, pad_to_multiple_of=480_000,
                                          return_tensors="pt")["input_features"]  # fmt: skip
            windows.append(mel.reshape(128, -1, 3000).transpose(0, 1))
        counts = [len(w) * 375 for w in windows]  # 1500 encoder frames / 4 stacked per window
        return {"input_features": torch.cat(windows)}, counts

    checks.check_own_audio_path(model, clips, own_inputs)


@pytest.fixture(scope="module")
def gap_run(model_dir, tiny_qwen2, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("voxtral-gap") / "report"
    return out, checks.gap_report(model_dir, tiny_qwen2, out)


def test_gap_report_is_complete(gap_run):
    checks.check_gap_report(*gap_run)
