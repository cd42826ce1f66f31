"""Qwen2-Audio on a tiny random ``Qwen2AudioForConditionalGeneration`` built offline."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import pytest
import torch
from family_conformance import TextLLMConformance
from numerics import assert_float32_close

from salad_eval.models.qwen2_audio import Qwen2Audio
from salad_eval.prompt import Audio, ScoringRequest, Text

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def save_tiny_qwen2_audio(path: Path) -> Path:
    """A 2-layer Qwen2-Audio with its tokenizer and feature extractor, saved as on the hub."""
    from transformers import (
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    tokenizer = checks.bpe_tokenizer(
        [
            "<unk>",
            "<|endoftext|>",
            "<|audio_bos|>",
            "<|AUDIO|>",
            "<|audio_eos|>",
            "<|im_start|>",
            "<|im_end|>",
        ],
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        audio_token="<|AUDIO|>",
        audio_bos_token="<|audio_bos|>",
        audio_eos_token="<|audio_eos|>",
    )
    tokenizer.chat_template = CHATML
    config = Qwen2AudioConfig(
        audio_config=dict(
            d_model=32,
            encoder_layers=1,
            encoder_attention_heads=2,
            encoder_ffn_dim=64,
            num_mel_bins=80,
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        ),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(path)
    Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(path)
    return path


class TestQwen2Audio(TextLLMConformance):
    adapter = Qwen2Audio
    build = staticmethod(save_tiny_qwen2_audio)
    gap_options = ("--chat-template",)

    @pytest.fixture(scope="class")
    @classmethod
    def text_llm(cls, model, tmp_path_factory) -> Path:
        """The tiny Qwen2-Audio's own decoder and LM head as a plain causal LM (its text@base)."""
        return checks.qwen2_text_llm(model, tmp_path_factory.mktemp("qwen2-audio-text"))

    def test_audio_path_is_the_models_own(self, model, clips):
        """Per choice, the model's own forward (processor inputs, its own audio merge) agrees."""
        from transformers import Qwen2AudioProcessor

        processor = Qwen2AudioProcessor.from_pretrained(model.name)
        request = ScoringRequest(
            (
                Text("Question: "),
                Audio(str(clips["short"]), "x"),
                Text(" and "),
                Audio(str(clips["long"]), "y"),
                Text(" Answer:"),
            ),
            checks.CHOICES,
        )
        from salad_eval.models.speech_lm import load_waveform

        span = "<|audio_bos|><|AUDIO|><|audio_eos|>"
        waves = [load_waveform(s.path) for s in request.prompt if isinstance(s, Audio)]
        inputs = processor(
            text=f"Question: {span} and {span} Answer:",
            audio=waves,
            sampling_rate=16_000,
            return_tensors="pt",
        )
        _, conts = model.tokenize(request.prompt, request.choices)
        expected = []
        with torch.inference_mode():
            for cont in conts:
                ids = torch.cat([inputs["input_ids"], torch.tensor([cont])], dim=1)
                logits = model.model(
                    input_ids=ids,
                    input_features=inputs["input_features"],
                    feature_attention_mask=inputs["feature_attention_mask"],
                ).logits[0]
                steps = logits[-len(cont) - 1 : -1].log_softmax(-1)
                expected.append(steps.gather(-1, torch.tensor(cont)[:, None]).sum().item())
        scores = model.score([request])[0]
        assert_float32_close([s.logprob for s in scores], expected, terms=checks.terms_of(model))

    def test_chat_template_wraps_spoken_prompts(self, model_dir, model, clips):
        """One user turn in the model's template, the clips inside it in its own audio format."""
        chat = Qwen2Audio(str(model_dir), chat_template=True)
        assert chat.fingerprint != model.fingerprint
        request = checks.mixed_requests(clips)[3]  # two clips between text
        pieces, conts = chat.tokenize(request.prompt, request.choices)
        assert [type(p) for p in pieces] == [list, Audio, list, Audio, list]
        ids = model.tokenizer.convert_tokens_to_ids
        assert pieces[0][0] == ids("<|im_start|>")
        turn = model.tokenizer.encode("<|im_end|>\n<|im_start|>assistant")  # its "\n" moves on
        assert pieces[-1][-len(turn) :] == turn
        assert conts == [model.tokenizer.encode("\n" + c.lstrip()) for c in request.choices]
        raw, templated = model.score([request])[0], chat.score([request])[0]
        assert [s.logprob for s in raw] != [s.logprob for s in templated]

    @pytest.mark.slow  # a whole gap run
    def test_gap_report_records_the_chat_template(self, gap_run):
        manifest = gap_run[1]["manifest"]
        assert manifest["setup"]["prompt_format"] == "chat"
        assert manifest["tasks"]["demo"]["prompt_format"] == "chat"
        from salad_eval.tasks import get_task

        assert manifest["tasks"]["demo"]["fingerprint"] == get_task("demo").fingerprint + "+chat"

    def test_exact_per_choice_fallback_scores_the_same(self, model_dir, model, clips):
        """A family whose audio path cannot share the cache sets ``shares_context = False``."""

        class Separate(Qwen2Audio):
            shares_context = False

        requests = checks.mixed_requests(clips)
        shared = [s.logprob for row in model.score(requests) for s in row]
        separate = [s.logprob for row in Separate(str(model_dir)).score(requests) for s in row]
        assert_float32_close(separate, shared, terms=checks.terms_of(model))
