"""Granite-Speech on a tiny random model saved as the hub publishes it, LoRA beside the weights
(``tiny_audio_llms``): the LoRA is on for spoken prompts only."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import numpy as np
import pytest
import torch
from family_conformance import SpeechLoRAConformance
from numerics import assert_float32_close

from salad_eval.models.granite_speech import GraniteSpeech
from salad_eval.models.lm_scoring import score_separately
from salad_eval.models.speech_lm import load_waveform
from salad_eval.models.speech_lora import NO_ADAPTER
from salad_eval.models.tiny_audio_llms import save_tiny_granite_speech
from salad_eval.prompt import Audio, ScoringRequest, Text

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths


class _FullModel(torch.nn.Module):
    """The whole model's own forward over ``inputs_embeds``, logits over ``logits_scaling``
    (``granite_speech``: as its text LLM and its earlier forward scale them)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, **kwargs):
        out = self.model(**kwargs)
        out.logits = out.logits / self.model.config.text_config.logits_scaling
        return out


class TestGraniteSpeech(SpeechLoRAConformance):
    adapter = GraniteSpeech
    build = staticmethod(save_tiny_granite_speech)

    def test_shared_context_equals_per_choice(self, model, clips):
        assert model.model.config.text_config.logits_scaling != 1
        for request in checks.mixed_requests(clips):
            # the LoRA follows the prompt; the reference runs with it
            row = model.score([request])[0]
            pieces, conts = model.tokenize(request.prompt, request.choices)
            with torch.inference_mode():
                reference = score_separately(_FullModel(model.model), model.embed(pieces), conts)
            assert all(
                s.n_tokens == len(c) > 0 and s.logprob < 0 for s, c in zip(row, conts, strict=True)
            )
            assert_float32_close(
                [s.logprob for s in row], [lp for lp, _ in reference], terms=checks.terms_of(model)
            )

    def test_log_mel_is_the_feature_extractors(self, model, clips):
        """``LogMel`` against the same steps in numpy (``transformers.audio_utils.spectrogram``)."""
        from transformers.audio_utils import spectrogram, window_function

        wave = load_waveform(str(clips["long"]))
        features, _ = model.feature_extractor(wave)
        mel = spectrogram(
            wave.astype(np.float64),
            window_function(400, "hann", frame_length=512),
            frame_length=512,
            hop_length=160,
            power=2.0,
            center=True,
            pad_mode="reflect",
            mel_filters=model.feature_extractor.mel_bank.double().numpy(),
            mel_floor=1e-10,
            log_mel="log10",
        ).T
        mel = np.maximum(mel, mel.max() - 8.0) / 4 + 1
        mel = mel[: len(mel) // 2 * 2].reshape(1, -1, 160)
        assert features.shape == mel.shape
        # not the shared float32 bound: float32 against a float64 reference down to the -80 dB
        # floor, where float32's error relative to a bin's power grows as that power falls
        assert np.abs(features.numpy() - mel).max() < 1e-4

    def test_audio_path_is_the_models_own(self, model, clips):
        """Per choice, the model's own forward (its placeholders, features and merge) agrees."""
        clip = Audio(str(clips["long"]), "y")
        request = ScoringRequest((Text("Q: "), clip, Text(" A:")), checks.CHOICES)
        pieces, conts = model.tokenize(request.prompt, request.choices)
        features, n_outputs = model.feature_extractor(load_waveform(clip.path))
        placeholder = model.model.config.audio_token_id
        ids = [i for p in pieces for i in ([placeholder] * n_outputs if p is clip else p)]
        model.use_lora_for(request.prompt)
        full = _FullModel(model.model)
        expected = checks.own_forward_scores(full, ids, conts, input_features=features)
        assert_float32_close(
            [s.logprob for s in model.score([request])[0]], expected, terms=checks.terms_of(model)
        )

    @pytest.fixture(scope="class")
    @classmethod
    def text_llm(cls, model_dir, tmp_path_factory) -> Path:
        """The tiny model's own decoder and LM head as a plain causal LM (its text@base)."""
        from transformers import GraniteForCausalLM, GraniteSpeechForConditionalGeneration

        base = GraniteSpeechForConditionalGeneration.from_pretrained(model_dir, **NO_ADAPTER)
        llm = GraniteForCausalLM(base.config.text_config)
        llm.model.load_state_dict(base.model.language_model.state_dict())
        llm.lm_head.load_state_dict(base.lm_head.state_dict())
        return checks.save_text_llm(llm, model_dir, tmp_path_factory.mktemp("granite-speech-text"))

    def test_published_text_backbone(self):
        checks.check_published_text_backbones(
            "granite_speech",
            {
                "ibm-granite/granite-speech-3.3-2b": "ibm-granite/granite-3.3-2b-instruct",
                "ibm-granite/granite-speech-3.3-8b": "ibm-granite/granite-3.3-8b-instruct",
            },
        )

    def test_a_lora_that_matches_no_module_is_an_error(self, model_dir, tmp_path):
        import shutil

        from safetensors.torch import load_file, save_file

        from salad_eval.errors import SaladError

        copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
        weights = load_file(copy / "adapter_model.safetensors")
        save_file({"other." + k: v for k, v in weights.items()}, copy / "adapter_model.safetensors")
        with pytest.raises(SaladError, match="match no module"):
            GraniteSpeech(str(copy))
