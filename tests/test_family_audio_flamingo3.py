"""Audio Flamingo 3 on a tiny random model saved as the hub publishes it (``tiny_audio_llms``)."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest
from family_conformance import TextLLMConformance

from salad_eval.models.audio_flamingo3 import AudioFlamingo3
from salad_eval.models.tiny_audio_llms import save_tiny_audio_flamingo3

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths


class TestAudioFlamingo3(TextLLMConformance):
    adapter = AudioFlamingo3
    build = staticmethod(save_tiny_audio_flamingo3)

    @pytest.fixture(scope="class")
    @classmethod
    def text_llm(cls, model, tmp_path_factory) -> Path:
        """The tiny model's own Qwen2 decoder and LM head as a plain causal LM (its text@base)."""
        return checks.qwen2_text_llm(model, tmp_path_factory.mktemp("audio-flamingo-3-text"))

    def own_audio_inputs(self, model, waves):
        """Its processor's features and ``<sound>`` counts."""
        from transformers import AudioFlamingo3Processor

        processor = AudioFlamingo3Processor.from_pretrained(model.name)
        features, mask = checks.whisper_features(processor.feature_extractor, waves)
        counts = processor._get_audio_token_length(mask.sum(-1))
        return {"input_features": features, "input_features_mask": mask}, counts

    def test_published_text_backbone(self):
        checks.check_published_text_backbones(
            "audioflamingo3", {"nvidia/audio-flamingo-3-hf": "Qwen/Qwen2.5-7B"}
        )
