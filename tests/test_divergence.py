"""Divergences per token over a fixed-length continuation, and the per-item cache keyed by the
clip's bytes (tiny random LLMs with SmolLM2's tokenizer; the cache logic with a counting stub)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from numerics import assert_float32_close, float32_close

from salad_eval.divergence import continuation_logprobs, divergence
from salad_eval.prompt import Audio, Item, Text

LONG = (
    " the river ran past the old mill and on through the quiet farms where the cows stood"
    " in the long grass of the summer fields"
)


@pytest.fixture(scope="module")
def two_llms(tmp_path_factory):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from salad_eval.assets import llm_path
    from salad_eval.models.text_lm import TextLM

    tokenizer = AutoTokenizer.from_pretrained(llm_path())
    models = []
    for seed in (0, 1):
        out = tmp_path_factory.mktemp(f"llm{seed}")
        torch.manual_seed(seed)
        LlamaForCausalLM(
            LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=4,
                num_key_value_heads=2,
                tie_word_embeddings=True,
            )
        ).save_pretrained(out)
        tokenizer.save_pretrained(out)
        models.append(TextLM(str(out)))
    return models


@pytest.mark.numerics
def test_divergence_is_a_per_token_mean_over_the_first_tokens(two_llms):
    p, q = two_llms
    prompt = (Text("Where did the river go?"),)
    _, ids = p.encoder.encode_pair("Where did the river go?", [LONG])
    p_log = continuation_logprobs(p, prompt, LONG, ids[0])
    q_log = continuation_logprobs(q, prompt, LONG, ids[0])
    per_position = (p_log.exp() * (p_log - q_log)).sum(-1)
    assert len(ids[0]) > 20
    # float32 sums over sequences of other lengths; each KL a sum over the vocabulary, relative
    # to the KL itself (floor 0: its terms are p-weighted log-prob differences, small with it)
    terms = len(p.tokenizer)
    whole = divergence(p, prompt, q, prompt, LONG)
    assert_float32_close(whole, float(per_position.mean()), terms=terms, floor=0.0)
    at_8 = divergence(p, prompt, q, prompt, LONG, max_tokens=8)
    assert_float32_close(at_8, float(per_position[:8].mean()), terms=terms, floor=0.0)
    assert not float32_close(at_8, whole, terms=terms, floor=0.0)
    # a longer text has the same fixed-length continuation, so the same value
    longer = divergence(p, prompt, q, prompt, LONG + " and far away to the sea", max_tokens=8)
    assert_float32_close(longer, at_8, terms=terms, floor=0.0)


def test_the_misalignment_cache_is_keyed_by_the_clip_bytes(tmp_path, monkeypatch):
    from salad_eval import divergence as kl
    from salad_eval.scoring import Shard

    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "home"))
    clip = tmp_path / "a.flac"
    clip.write_bytes(b"first clip")
    item = Item("t", "0", "d", (Text("Q"),), (" yes",), 0)
    spoken = {"0": (Audio(str(clip), "Q"),)}
    calls = []

    def compute(_: Item) -> float:
        calls.append(1)
        return float(len(calls))

    def m() -> float:
        return kl.answer_kls("M", [item], Shard(), compute, ["model", "voice"], spoken)[0]

    assert m() == 1.0 and m() == 1.0  # cached
    shutil.copy(clip, tmp_path / "b.flac")
    spoken["0"] = (Audio(str(tmp_path / "b.flac"), "Q"),)
    assert m() == 1.0  # another path, the same bytes: still cached
    Path(tmp_path / "b.flac").write_bytes(b"a new TTS")
    assert m() == 2.0  # new audio, same text: measured again


def test_a_teacher_makes_the_misalignment_stage1s_distillation_kl(two_llms):
    """select.signal=distillation: the teacher reads the text, the model the other prompt."""
    from salad_eval.divergence import misalignment_kl

    teacher, model = two_llms
    item = Item("t", "0", "d", (Text("Where did the river go?"),), (LONG,), 0)
    other = (Text("Where did it go?"),)
    own = misalignment_kl(model, item, other, 8)
    assert own == divergence(model, item.context, model, other, LONG, 8)
    distilled = misalignment_kl(model, item, other, 8, teacher=teacher)
    assert distilled == divergence(teacher, item.context, model, other, LONG, 8) != own
