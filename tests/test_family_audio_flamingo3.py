"""Audio Flamingo 3 on a tiny random model saved as the hub publishes it (``tiny_audio_llms``)."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest

from salad_eval.models.audio_flamingo3 import AudioFlamingo3
from salad_eval.models.tiny_audio_llms import save_tiny_audio_flamingo3

pytestmark = pytest.mark.numerics  # scores compared across batches and paths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_audio_flamingo3(tmp_path_factory.mktemp("audio-flamingo-3") / "model")


@pytest.fixture(scope="module")
def model(model_dir) -> AudioFlamingo3:
    return AudioFlamingo3(str(model_dir))


def test_shared_context_equals_per_choice(model, clips):
    checks.check_shared_equals_separate(model, checks.mixed_requests(clips))


def test_batch_sizes_agree(model, clips):
    checks.check_batch_sizes(model, checks.mixed_requests(clips))


def test_audio_moves_scores(model, clips):
    checks.check_audio_moves_scores(model, clips)


def test_audio_path_is_the_models_own(model, model_dir, clips):
    """Its processor's features and ``<sound>`` counts, through the model's own forward."""
    from transformers import AudioFlamingo3Processor

    processor = AudioFlamingo3Processor.from_pretrained(model_dir)

    def own_inputs(waves):
        features, mask = checks.whisper_features(processor.feature_extractor, waves)
        counts = processor._get_audio_token_length(mask.sum(-1))
        return {"input_features": features, "input_features_mask": mask}, counts

    checks.check_own_audio_path(model, clips, own_inputs)


@pytest.fixture(scope="module")
def text_llm(model, tmp_path_factory) -> Path:
    """The tiny model's own Qwen2 decoder and LM head as a plain causal LM (its text@base)."""
    return checks.qwen2_text_llm(model, tmp_path_factory.mktemp("audio-flamingo-3-text"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_text_prompts_score_as_its_own_text_llm(model_dir, text_llm, dtype):
    """text@speech == text@base bit for bit for an untouched decoder, in each dtype."""
    checks.check_text_prompts_score_as_text_llm(AudioFlamingo3, model_dir, text_llm, dtype)


@pytest.fixture(scope="module")
def gap_run(model_dir, tiny_qwen2, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("audio-flamingo-3-gap") / "report"
    return out, checks.gap_report(model_dir, tiny_qwen2, out)


@pytest.mark.slow  # a whole gap run
def test_gap_report_is_complete(gap_run):
    checks.check_gap_report(*gap_run)


def test_published_text_backbone():
    checks.check_published_text_backbones(
        "audioflamingo3", {"nvidia/audio-flamingo-3-hf": "Qwen/Qwen2.5-7B"}
    )
