"""Answers by generation: the decoding loop, its batching, seeding and stopping, and the cache."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from salad_eval import generation
from salad_eval.assets import llm_path
from salad_eval.errors import SaladError
from salad_eval.models.lm_generation import _next_tokens, _reply
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Decoding, GenerationRequest, Reply, Text, text_prompt
from salad_eval.tasks import load_items

QUESTIONS = [
    "Question: What is the capital of France?\nA. Berlin\nB. Paris\nC. Rome\nD. Madrid\n"
    "Answer with the letter of the correct option.\nAnswer:",
    "Question: How many legs does a spider have?\nA. six\nB. eight\nAnswer:",
    "The sky is",
    "Question: Which animal says moo?\nA. a cat\nB. a cow\nC. a dog\nAnswer:",
    "Question: Which of these is a fruit? Think about what grows on trees.\nA. carrot\n"
    "B. apple\nC. potato\nD. onion\nAnswer with the letter of the correct option.\nAnswer:",
    "Once upon a time",
    "Q: 2 + 2 = ?\nA. 3\nB. 4\nC. 5\nAnswer:",
    "Question: What colour is grass?\nA. green\nB. red\nAnswer:",
    "Question: Where do penguins live?\nA. the Arctic\nB. the Antarctic\nAnswer:",
    "Hello",
]


def requests(until: tuple[str, ...] = ("\n\n",)) -> list[GenerationRequest]:
    return [GenerationRequest((Text(q),), until) for q in QUESTIONS]


@pytest.fixture(scope="module")
def text_lm() -> TextLM:
    return TextLM("smollm2-135m")


@pytest.mark.integration
@pytest.mark.numerics
@pytest.mark.parametrize("chat", [False, True])
def test_text_replies_equal_lm_eval_generate_until(chat: bool) -> None:
    """text@base by generation is lm-eval's ``hf`` ``generate_until`` (greedy, stop sequence),
    reply for reply, raw and with the chat template, on the demo's multiple-choice prompts."""
    items = load_items("demo", 4, answer="generate")
    reference = HFLM(pretrained=llm_path(), device="cpu", batch_size=4)
    contexts = [item.text_context for item in items]
    if chat:
        contexts = [
            reference.apply_chat_template([{"role": "user", "content": c}]) for c in contexts
        ]
    settings = {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}
    theirs = reference.generate_until(
        [Instance("generate_until", {}, (c, settings), 0) for c in contexts], disable_tqdm=True
    )
    model = TextLM("smollm2-135m", chat_template=chat)
    asked = [GenerationRequest(text_prompt(item), ("\n\n",)) for item in items]
    ours = model.generate(asked, Decoding(max_new_tokens=12), batch_size=4)
    assert [r.text for (r,) in ours] == theirs
    assert any(r.text.strip() for (r,) in ours)


@pytest.mark.integration
@pytest.mark.numerics
def test_greedy_replies_equal_at_batch_sizes_1_and_8(text_lm: TextLM) -> None:
    decoding = Decoding(max_new_tokens=10)
    one = text_lm.generate(requests(), decoding, batch_size=1)
    eight = text_lm.generate(requests(), decoding, batch_size=8)
    assert one == eight
    assert len({len(r[0].text) for r in one}) > 3  # replies of several lengths really batched


@pytest.mark.integration
def test_sampled_replies_are_seeded_per_request_not_per_batch(text_lm: TextLM) -> None:
    decoding = Decoding(max_new_tokens=4, temperature=1.0, top_p=0.95, samples=2)
    asked = [replace(r, seed=i) for i, r in enumerate(requests()[:3])]
    one = text_lm.generate(asked, decoding, batch_size=1)
    eight = text_lm.generate(asked[::-1], decoding, batch_size=8)[::-1]
    assert one == eight  # another batch, another order: the same draws
    assert all(len(sampled) == 2 for sampled in one)
    assert any(len({r.text for r in sampled}) > 1 for sampled in one)  # samples differ
    again = text_lm.generate([replace(r, seed=r.seed + 100) for r in asked], decoding, 8)
    assert again != one  # another seed, other draws


@pytest.mark.integration
def test_stop_sequences_end_a_reply_and_the_limit_truncates_it(text_lm: TextLM) -> None:
    decoding = Decoding(max_new_tokens=12)
    free = text_lm.generate(requests(until=())[:6], decoding, batch_size=8)
    stopped = text_lm.generate(requests(until=("\n",))[:6], decoding, batch_size=8)
    for (whole,), (cut,) in zip(free, stopped, strict=True):
        assert "\n" not in cut.text
        assert whole.text.startswith(cut.text)
        assert cut.truncated == ("\n" not in whole.text and whole.truncated)
    assert any(r.truncated for (r,) in free)  # 12 tokens of free text hit the limit


def test_reply_ends_at_the_first_stop_or_end_token() -> None:
    decode = lambda ids: "".join(chr(i) for i in ids)  # noqa: E731 - a token is a character
    limit = Decoding(max_new_tokens=6)
    eos = 0
    text = [ord(c) for c in "B\nxy"]
    assert _reply(decode, {eos}, text, ("\n",), limit) == Reply("B", 4, False)
    assert _reply(decode, {eos}, [ord("B"), eos], (), limit) == Reply("B", 2, False)
    full = [ord(c) for c in "abcdef"]
    assert _reply(decode, {eos}, full, (), limit) == Reply("abcdef", 6, True)
    assert _reply(decode, {eos}, full, ("cd", "b"), limit) == Reply("a", 6, False)


def test_nucleus_keeps_the_top_token_and_temperature_sharpens() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    generators = [torch.Generator().manual_seed(0)]
    tiny_nucleus = Decoding(temperature=1.0, top_p=1e-6)
    assert {_next_tokens(logits, tiny_nucleus, generators)[0] for _ in range(50)} == {1}
    draws = {_next_tokens(logits, Decoding(temperature=1.0), generators)[0] for _ in range(200)}
    assert draws == {0, 1, 2, 3}
    assert _next_tokens(logits, Decoding(), [None]) == [1]  # greedy: the argmax


class Recorder:
    """A generating model that counts its calls and replies with the request's seed."""

    fingerprint = "recorder-1"
    dtype = "float32"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, asked, decoding, batch_size=8):
        self.calls += 1
        return [
            [
                Reply(f"{r.prompt[0].text}:{r.seed % 1000}:{s}", 1, False)
                for s in range(decoding.samples)
            ]
            for r in asked
        ]


def test_replies_are_cached_by_model_request_and_decoding(fresh_home) -> None:
    model = Recorder()
    asked = requests()
    greedy = Decoding()
    first = generation.generate(model, asked, greedy, batch_size=2)
    assert model.calls > 0
    calls = model.calls
    assert generation.generate(model, asked, greedy, batch_size=2) == first
    assert model.calls == calls  # a rerun generates nothing
    sampled = Decoding(temperature=0.7, samples=2)
    generation.generate(model, asked, sampled, batch_size=2)
    assert model.calls > calls  # other decoding settings: other entries
    keys = {generation.reply_key("m", asked[0], d) for d in (greedy, sampled, Decoding(seed=1))}
    keys.add(generation.reply_key("m", replace(asked[0], until=("\n",)), greedy))
    keys.add(generation.reply_key("other", asked[0], greedy))
    assert len(keys) == 5


def test_a_damaged_reply_entry_is_generated_again(fresh_home) -> None:
    model = Recorder()
    asked = requests()[:3]
    first = generation.generate(model, asked, Decoding(), batch_size=8)
    key = generation.reply_key(model.fingerprint, asked[1], Decoding())
    entry = generation._entry(key)
    entry.write_bytes(entry.read_bytes()[:-5])
    calls = model.calls
    assert generation.generate(model, asked, Decoding(), batch_size=8) == first
    assert model.calls == calls + 1


def test_request_seeds_come_from_content_not_position(fresh_home) -> None:
    model = Recorder()
    asked = requests()[:4]
    sampled = Decoding(temperature=1.0, samples=2)
    forward = generation.generate(model, asked, sampled, batch_size=8, cache=False)
    backward = generation.generate(model, asked[::-1], sampled, batch_size=8, cache=False)
    assert forward == backward[::-1]
    other = generation.generate(model, asked, replace(sampled, seed=7), batch_size=8, cache=False)
    assert other != forward


def test_a_model_that_only_scores_is_refused_in_one_line() -> None:
    class ScoreOnly:
        fingerprint, dtype = "s", "float32"

        def score(self, asked, batch_size=8):
            return []

    with pytest.raises(SaladError, match="cannot generate") as err:
        generation.check_generates(ScoreOnly(), "speech model")
    assert "\n" not in str(err.value)


@pytest.mark.integration
def test_greedy_replies_equal_across_two_empty_cache_homes(text_lm, tmp_path) -> None:
    decoding = Decoding(max_new_tokens=8)
    replies = []
    old = os.environ.get("SALAD_HOME")
    try:
        for name in ("one", "two"):
            os.environ["SALAD_HOME"] = str(tmp_path / name)
            replies.append(generation.generate(text_lm, requests()[:4], decoding, batch_size=4))
            assert list((tmp_path / name / "replies").rglob("*.json"))
    finally:
        if old is None:
            del os.environ["SALAD_HOME"]
        else:
            os.environ["SALAD_HOME"] = old
    assert replies[0] == replies[1]


def test_a_plugin_family_that_only_scores_is_refused_before_it_loads(monkeypatch) -> None:
    """checks.generation_inputs reads the family's adapter class, never builds it."""
    from salad_eval import checks

    class ScoreOnlyAdapter:
        def __init__(self, *args, **kwargs):
            raise AssertionError("the adapter was built before the refusal")

        def score(self, requests, batch_size=8):
            return []

    class Family:
        def load_adapter(self):
            return ScoreOnlyAdapter

    monkeypatch.setattr(checks, "speech_model_kind", lambda model, model_type=None: "plugin_lm")
    monkeypatch.setattr(checks, "family_for", lambda kind: Family())
    with pytest.raises(SaladError, match="plugin_lm model whose adapter .*only scores") as err:
        checks.generation_inputs(["demo"], None, "org/plugin-model")
    assert "\n" not in str(err.value)
