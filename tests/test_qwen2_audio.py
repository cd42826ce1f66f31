"""The Qwen2-Audio adapter on a tiny random Qwen2-Audio built offline, scored on TTS speech."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
import torch

from salad_eval.models.qwen2_audio import Qwen2Audio
from salad_eval.prompt import Audio, ScoringRequest, Text
from salad_eval.speech.tts import synthesize
from salad_eval.speech.voices import parse_voice

CHOICES = (
    " yes",
    " no",
    " maybe not",
    " the quick brown fox",
    " a",
    " dog",
    " lazy",
    " it",
    " what",
)


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    """A 2-layer Qwen2-Audio with a BPE tokenizer trained here, saved as a hub-style directory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2AudioConfig,
        Qwen2AudioForConditionalGeneration,
        Qwen2AudioProcessor,
        WhisperFeatureExtractor,
    )

    specials = ["<unk>", "<|endoftext|>", "<|audio_bos|>", "<|AUDIO|>", "<|audio_eos|>"]
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    corpus = ["The quick brown fox jumps over the lazy dog. Question: what is it? Answer: yes no"]
    bpe.train_from_iterator(corpus * 10, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={
            "audio_token": "<|AUDIO|>",
            "audio_bos_token": "<|audio_bos|>",
            "audio_eos_token": "<|audio_eos|>",
        },
    )
    config = Qwen2AudioConfig(
        audio_config=dict(
            d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
            num_mel_bins=80,
        ),
        text_config=dict(
            model_type="qwen2", vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
        ),
        audio_token_id=tokenizer.convert_tokens_to_ids("<|AUDIO|>"),
    )  # fmt: skip
    path = tmp_path_factory.mktemp("qwen2-audio")
    torch.manual_seed(0)
    Qwen2AudioForConditionalGeneration(config).save_pretrained(path)
    Qwen2AudioProcessor(WhisperFeatureExtractor(feature_size=80), tokenizer).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("audio")
    paths = []
    for i, text in enumerate(["Is the fox quick?", "The dog is lazy."]):
        paths.append(root / f"{i}.wav")
        sf.write(paths[-1], synthesize(text, parse_voice("piper/joe")), 16_000)
    return paths


def per_choice(model: Qwen2Audio, request: ScoringRequest) -> list[float]:
    """The reference: the model's own forward (its own audio merge) over context + each choice."""
    inputs, conts = model.tokenize(request.prompt, request.choices)
    scores = []
    with torch.inference_mode():
        for cont in conts:
            ids = torch.cat([inputs["input_ids"], torch.tensor([cont])], dim=1)
            logits = model.model(
                input_ids=ids,
                input_features=inputs["input_features"],
                feature_attention_mask=inputs["feature_attention_mask"],
            ).logits[0]
            steps = logits[-len(cont) - 1 : -1].log_softmax(-1)
            scores.append(steps.gather(-1, torch.tensor(cont)[:, None]).sum().item())
    return scores


@pytest.mark.parametrize("batch_size", [1, 8])
def test_spoken_item_shared_context_matches_per_choice(tiny_qwen, clips, batch_size):
    model = Qwen2Audio(str(tiny_qwen))
    request = ScoringRequest(
        (Text("Question: "), Audio(str(clips[0]), "x"), Text(" and "), Audio(str(clips[1]), "y"),
         Text(" Answer:")),
        CHOICES,
    )  # fmt: skip
    scores = model.score([request], batch_size=batch_size)[0]
    assert len(scores) == len(CHOICES)
    assert all(s.n_tokens > 0 and s.logprob < 0 for s in scores)
    inputs, _ = model.tokenize(request.prompt, request.choices)
    n_audio = int((inputs["input_ids"] == model.model.config.audio_token_id).sum())
    assert n_audio > 25  # two clips of about a second each, at 25 Hz
    assert [s.logprob for s in scores] == pytest.approx(per_choice(model, request), abs=1e-4)


@pytest.fixture(scope="module")
def its_text_llm(tiny_qwen, tmp_path_factory) -> Path:
    """The tiny Qwen2-Audio's own decoder and LM head as a plain causal LM (its text@base)."""
    from transformers import AutoTokenizer, Qwen2ForCausalLM

    model = Qwen2Audio(str(tiny_qwen)).model
    llm = Qwen2ForCausalLM(model.config.text_config)
    llm.model.load_state_dict(model.model.language_model.state_dict())
    llm.lm_head.load_state_dict(model.lm_head.state_dict())
    path = tmp_path_factory.mktemp("qwen2-audio-text")
    llm.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_qwen).save_pretrained(path)
    return path


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_text_prompts_score_as_its_own_text_llm(tiny_qwen, its_text_llm, dtype):
    """text@speech == text@base exactly for an untouched LLM, in each dtype."""
    from salad_eval.models.text_lm import TextLM

    requests = [ScoringRequest((Text("Question: what is the fox? Answer:"),), CHOICES),
                ScoringRequest((Text("The quick brown "),), (" fox", "dog", " lazy dog"))]
    speech, text = Qwen2Audio(str(tiny_qwen), dtype=dtype), TextLM(str(its_text_llm), dtype=dtype)
    assert speech.dtype == text.dtype == dtype
    assert [[s.logprob for s in row] for row in speech.score(requests)] == [
        [s.logprob for s in row] for row in text.score(requests)
    ]
