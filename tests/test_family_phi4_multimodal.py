"""Phi-4-multimodal on a tiny random model saved as the native checkpoints are, speech LoRA in
``speech-lora/`` (``tiny_audio_llms``): the LoRA is on for spoken prompts only."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import numpy as np
import pytest
import soundfile as sf
from family_conformance import SpeechLoRAConformance
from numerics import assert_float32_close

from salad_eval.models.phi4_multimodal import Phi4Multimodal
from salad_eval.models.speech_lm import load_waveform
from salad_eval.models.speech_lora import NO_ADAPTER
from salad_eval.models.tiny_audio_llms import save_tiny_phi4_multimodal
from salad_eval.prompt import Audio, ScoringRequest, Text

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths


class TestPhi4Multimodal(SpeechLoRAConformance):
    adapter = Phi4Multimodal
    build = staticmethod(save_tiny_phi4_multimodal)

    def test_shared_context_equals_per_choice(self, model, clips):
        for request in checks.mixed_requests(clips):  # one at a time: the LoRA follows each prompt
            checks.check_shared_equals_separate(model, [request])

    def test_audio_path_is_the_models_own(self, model, clips, tmp_path):
        """Per choice, the model's own forward agrees: its feature extractor over both clips at
        once, its placeholder counts and merge, with the speech LoRA on. The clips are of one
        length: the adapter encodes each clip alone, where a batch would pad the shorter one
        (which moves its embeddings by about 1e-5)."""
        first = load_waveform(str(clips["short"]))
        padded = np.zeros_like(load_waveform(str(clips["long"])))
        padded[: len(first)] = first
        sf.write(tmp_path / "short-padded.wav", padded, 16_000)
        short, long = Audio(str(tmp_path / "short-padded.wav"), "x"), Audio(str(clips["long"]), "y")
        request = ScoringRequest(
            (Text("Q: "), short, Text(" and "), long, Text(" A:")), checks.CHOICES
        )
        pieces, conts = model.tokenize(request.prompt, request.choices)
        waves = [load_waveform(p.path) for p in pieces if isinstance(p, Audio)]
        inputs = dict(model.feature_extractor(waves, sampling_rate=16_000, return_tensors="pt"))
        counts = iter(inputs["audio_embed_sizes"].tolist())
        placeholder = model.model.config.audio_config.audio_token_id
        ids = [
            i for p in pieces for i in ([placeholder] * next(counts) if isinstance(p, Audio) else p)
        ]
        model.use_lora_for(request.prompt)
        expected = checks.own_forward_scores(model.model, ids, conts, **inputs)
        assert_float32_close(
            [s.logprob for s in model.score([request])[0]], expected, terms=checks.terms_of(model)
        )

    @pytest.fixture(scope="class")
    @classmethod
    def text_llm(cls, model_dir, tmp_path_factory) -> Path:
        """The tiny model's own decoder and LM head as a plain causal LM (its text@base)."""
        from transformers import Phi3Config, Phi3ForCausalLM, Phi4MultimodalForCausalLM

        base = Phi4MultimodalForCausalLM.from_pretrained(model_dir, **NO_ADAPTER)
        config = base.config.to_dict()
        llm = Phi3ForCausalLM(
            Phi3Config(
                **{
                    k: config[k]
                    for k in Phi3Config().to_dict()
                    if k in config and k != "model_type"
                }
            )
        )
        missing, _ = llm.load_state_dict(base.state_dict(), strict=False)  # less the audio/vision
        assert not missing
        return checks.save_text_llm(
            llm, model_dir, tmp_path_factory.mktemp("phi-4-multimodal-text")
        )

    def test_published_text_backbone(self):
        checks.check_published_text_backbones(
            "phi4_multimodal",
            {"microsoft/Phi-4-multimodal-instruct": "microsoft/Phi-4-mini-instruct"},
        )
