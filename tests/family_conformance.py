"""The conformance suite every speech-LLM family passes, one place for all (as transformers'
``ModelTesterMixin``): ``tests/test_family_<name>.py`` holds one class of it that names the
family's adapter and tiny model builder, sets what differs and adds the family's own tests.
The checks themselves are ``family_checks``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

import family_checks as checks
import numpy as np
import pytest
import torch

from salad_eval.models.lm_scoring import score_separately
from salad_eval.prompt import Audio


class FamilyConformance:
    """The common checks on a tiny random model of the family, built once per class.

    A family sets ``adapter`` and ``build`` (saves its tiny model at a path and returns it),
    ``own_audio_inputs(model, waves)`` for ``test_audio_path_is_the_models_own`` (the forward's
    audio arguments and each clip's placeholder count, as its processor computes them), and
    overrides a test where the common one does not fit it.
    """

    adapter: type
    build: Callable[[Path], Path]
    clips_grow = True  # a longer clip takes more positions; False: every clip fills one window
    gap_options: tuple[str, ...] = ()  # more ``salad-eval gap`` options for its gap run

    @pytest.fixture(scope="class")
    @classmethod
    def model_dir(cls, tmp_path_factory) -> Path:
        return cls.build(tmp_path_factory.mktemp(cls.adapter.__name__) / "model")

    @pytest.fixture(scope="class")
    @classmethod
    def model(cls, model_dir):
        return cls.adapter(str(model_dir))

    @pytest.fixture(scope="class")
    @classmethod
    def gap_text_llm(cls, tiny_qwen2) -> Path:
        """The gap run's ``--text-model``: a tiny Qwen2 unless the family has its own."""
        return tiny_qwen2

    @pytest.fixture(scope="class")
    @classmethod
    def gap_run(cls, model_dir, gap_text_llm, tmp_path_factory) -> tuple[Path, dict]:
        out = tmp_path_factory.mktemp(f"{cls.adapter.__name__}-gap") / "report"
        return out, checks.gap_report(model_dir, gap_text_llm, out, *cls.gap_options)

    def test_shared_context_equals_per_choice(self, model, clips):
        checks.check_shared_equals_separate(model, checks.mixed_requests(clips))

    def test_batch_sizes_agree(self, model, clips):
        checks.check_batch_sizes(model, checks.mixed_requests(clips))

    def test_audio_moves_scores(self, model, clips):
        checks.check_audio_moves_scores(model, clips, grows=self.clips_grow)

    def test_audio_path_is_the_models_own(self, model, clips):
        checks.check_own_audio_path(model, clips, partial(self.own_audio_inputs, model))

    def test_generation_is_batch_invariant_and_reads_the_context(self, model, clips):
        checks.check_generation(model, clips)

    @pytest.mark.slow  # a whole gap run
    def test_gap_report_is_complete(self, gap_run):
        checks.check_gap_report(*gap_run)


class TextLLMConformance(FamilyConformance):
    """A family whose decoder and LM head also load as a plain causal LM, its ``text_llm``
    fixture: text prompts score bit for bit as through it, and its gap run takes it as text@base.
    """

    @pytest.fixture(scope="class")
    @classmethod
    def gap_text_llm(cls, text_llm) -> Path:
        return text_llm

    @pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
    def test_text_prompts_score_as_its_own_text_llm(self, model_dir, text_llm, dtype):
        """text@speech == text@base for an untouched decoder, in each dtype."""
        checks.check_text_prompts_score_as_text_llm(self.adapter, model_dir, text_llm, dtype)


class SpeechLoRAConformance(TextLLMConformance):
    """A family with a speech LoRA beside its weights: on for spoken prompts, off for text."""

    def test_mixed_requests_keep_their_order(self, model, clips):
        """Spoken and text requests are scored in two groups (LoRA on, off), answered in order."""
        checks.check_mixed_requests_keep_their_order(model, clips)

    def test_lora_is_on_for_speech_only(self, model, clips):
        """The same text context scores apart with the LoRA on; a text prompt is scored without."""
        request = checks.mixed_requests(clips)[0]
        pieces, conts = model.tokenize(request.prompt, request.choices)
        with torch.inference_mode():
            context = model.embed(pieces)
            model.use_lora_for((Audio(str(clips["short"]), "x"),))
            on = [lp for lp, _ in score_separately(model.decoder, context, conts)]
        off = [s.logprob for s in model.score([request])[0]]
        assert np.abs(np.array(on) - np.array(off)).max() > 1e-3

    @pytest.mark.slow  # a whole gap run
    def test_gap_report_is_complete(self, gap_run):
        checks.check_gap_report(*gap_run)
        checks.check_no_forgetting(gap_run[0])  # its LoRA is off for text
