"""Gemma-3n on a tiny random model (``tiny_audio_llms``): per-layer inputs, AltUp, KV sharing and
a sliding window shorter than the contexts, the vision tower left out."""

from __future__ import annotations

import family_checks as checks
import numpy as np
import pytest
import soundfile as sf
import torch
from family_conformance import FamilyConformance
from numerics import assert_float32_close

from salad_eval.models.gemma3n import Gemma3n
from salad_eval.models.lm_scoring import score_separately
from salad_eval.models.speech_lm import load_waveform
from salad_eval.models.tiny_audio_llms import save_tiny_gemma3n
from salad_eval.prompt import Audio, ScoringRequest, Text

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths


def _own_scores(model, prompt, choices, waves) -> list[float]:
    """Per choice, the model's own forward on token ids (the processor's span around each clip)
    with its feature extractor over all the prompt's clips at once."""
    pieces, conts = model.tokenize(prompt, choices)
    config = model.model.config
    span = [config.audio_token_id] * config.audio_soft_tokens_per_image
    ids = [
        i
        for p in pieces
        for i in (model._open + span + model._close if isinstance(p, Audio) else p)
    ]
    inputs = (
        model.feature_extractor(waves, sampling_rate=16_000, return_tensors="pt") if waves else {}
    )
    return checks.own_forward_scores(model.model, ids, conts, **inputs)


class TestGemma3n(FamilyConformance):
    adapter = Gemma3n
    build = staticmethod(save_tiny_gemma3n)
    clips_grow = False  # every clip is 188 tokens

    def test_shared_context_equals_per_choice(self, model, clips):
        """The cache path equals one uncached forward over ``context + choice`` per choice."""
        requests = checks.mixed_requests(clips)
        for request, row in zip(requests, model.score(requests), strict=True):
            pieces, conts = model.tokenize(request.prompt, request.choices)
            with torch.inference_mode():
                context = model.embed(pieces)
                reference = [lp for lp, _ in score_separately(model.decoder, context, conts)]
            assert (
                context.shape[0] > model.model.config.text_config.sliding_window or len(pieces) == 1
            )
            assert_float32_close([s.logprob for s in row], reference, terms=checks.terms_of(model))

    def test_audio_path_is_the_models_own(self, model, clips, tmp_path):
        """Per choice, the model's own forward from token ids agrees: its audio span, features,
        encoder and merge, and the per-layer inputs it looks up from the ids. Two clips of one
        length (the adapter encodes each clip alone; a batch pads the shorter one)."""
        first = load_waveform(str(clips["short"]))
        padded = np.zeros_like(load_waveform(str(clips["long"])))
        padded[: len(first)] = first
        sf.write(tmp_path / "short-padded.wav", padded, 16_000)
        short, long = Audio(str(tmp_path / "short-padded.wav"), "x"), Audio(str(clips["long"]), "y")
        prompt = (Text("Q: "), short, Text(" and "), long, Text(" A:"))
        scores = model.score([ScoringRequest(prompt, checks.CHOICES)])[0]
        expected = _own_scores(model, prompt, checks.CHOICES, [padded, load_waveform(long.path)])
        assert_float32_close([s.logprob for s in scores], expected, terms=checks.terms_of(model))
        text = (Text("Question: what is the fox? Answer:"),)
        scores = model.score([ScoringRequest(text, checks.CHOICES)])[0]
        expected = _own_scores(model, text, checks.CHOICES, [])
        assert_float32_close([s.logprob for s in scores], expected, terms=checks.terms_of(model))
        ids = torch.tensor(model.tokenize(text, ())[0])
        with (
            torch.inference_mode()
        ):  # and the per-layer inputs matter: embeddings alone score apart
            alone = model.model(inputs_embeds=model.model.get_input_embeddings()(ids)).logits
            assert (model.model(input_ids=ids).logits - alone).abs().max() > 1e-3

    def test_published_text_backbone(self):
        checks.check_published_text_backbones(  # neither text LLM is published
            "gemma3n", {"google/gemma-3n-E4B-it": None, "google/gemma-3n-E2B": None}
        )
