"""Shared-context scoring, lm-eval tokenization, the score cache and the metrics."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from numerics import assert_float32_close, longest_reduction

from salad_eval.errors import SaladError
from salad_eval.models.lm_scoring import score_continuations, score_separately
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, ChoiceScore, ScoringRequest, Text
from salad_eval.scoring import item_metrics, score

CONTEXT = "Question: Which planet is the largest in the solar system?\nAnswer:"
CHOICES = (
    " Jupiter",
    " Mars",
    " the Earth, where we live",
    " Saturn, the planet with the famous rings",
    " Venus",
    " Mercury is",
    " Neptune",
    " a small moon of Pluto",
    " Uranus",
    " the Sun",
)


@pytest.fixture(scope="module")
def text_lm() -> TextLM:
    return TextLM("smollm2-135m")


@pytest.mark.integration
@pytest.mark.numerics
@pytest.mark.parametrize("batch_size", [1, 8])
def test_shared_context_equals_per_choice(text_lm: TextLM, batch_size: int) -> None:
    context, conts = text_lm.encoder.encode_pair(CONTEXT, CHOICES)
    embeds = text_lm.embed(context)
    shared = score_continuations(text_lm.llm, embeds, conts, batch_size=batch_size)
    alone = score_separately(text_lm.llm, embeds, conts)
    assert len({len(c) for c in conts}) > 3  # right padding really happens
    for (lp, greedy), (ref_lp, ref_greedy) in zip(shared, alone, strict=True):
        assert_float32_close(lp, ref_lp, terms=longest_reduction(text_lm.llm))
        assert greedy == ref_greedy
    best = [lp for lp, _ in shared]
    assert best.index(max(best)) == [lp for lp, _ in alone].index(max(lp for lp, _ in alone))


@pytest.mark.integration
@pytest.mark.numerics
def test_batch_sizes_agree(text_lm: TextLM) -> None:
    context, conts = text_lm.encoder.encode_pair(CONTEXT, CHOICES)
    embeds = text_lm.embed(context)
    one = score_continuations(text_lm.llm, embeds, conts, batch_size=1)
    for batch_size in (3, 8, 16):
        other = score_continuations(text_lm.llm, embeds, conts, batch_size=batch_size)
        assert [g for _, g in other] == [g for _, g in one]
        assert_float32_close(
            [lp for lp, _ in other], [lp for lp, _ in one], terms=longest_reduction(text_lm.llm)
        )


@pytest.mark.integration
@pytest.mark.numerics
def test_greedy_continuation_is_flagged(text_lm: TextLM) -> None:
    context, _ = text_lm.encoder.encode_pair(CONTEXT, ())
    ids = text_lm.tokenizer(CONTEXT, return_tensors="pt").input_ids
    greedy = text_lm.llm.generate(ids, max_new_tokens=3, do_sample=False)[0, ids.shape[1] :]
    scored = score_continuations(text_lm.llm, text_lm.embed(context), [greedy.tolist(), [0, 1]])
    assert scored[0][1] is True and scored[1][1] is False
    assert scored[0][0] > scored[1][0]


@pytest.mark.integration
def test_lm_eval_tokenization(text_lm: TextLM) -> None:
    tok = text_lm.tokenizer
    context, conts = text_lm.encoder.encode_pair("Answer: ", ["yes", " no"])
    assert context == tok.encode("Answer:")  # the trailing space moves to the continuation
    assert conts[0] == tok.encode("Answer: yes")[len(context) :]
    assert conts[1] == tok.encode("Answer:  no")[len(context) :]
    context, conts = text_lm.encoder.encode_pair("", [" yes"])
    assert context == [text_lm.encoder.prefix_token_id]
    assert conts == [tok.encode(" yes", add_special_tokens=False)]


@pytest.mark.integration
def test_text_model_rejects_audio(text_lm: TextLM) -> None:
    request = ScoringRequest((Text("Q: "), Audio("clip.flac", "hello")), (" a", " b"))
    with pytest.raises(SaladError, match="audio prompt"):
        text_lm.score([request])


@pytest.mark.integration
def test_fingerprint_follows_weights(text_lm: TextLM) -> None:
    fresh = TextLM("smollm2-135m")
    assert fresh.fingerprint == text_lm.fingerprint
    fresh.llm.lm_head.weight.data[0, 0] += 1.0
    del fresh.__dict__["fingerprint"]  # computed once; recompute for the changed weights
    assert fresh.fingerprint != text_lm.fingerprint


class CountingModel:
    """A real model whose calls are counted and whose fingerprint can be changed."""

    def __init__(self, inner: TextLM, fingerprint: str, shift: float = 0.0):
        self.inner, self._fingerprint, self.shift, self.calls = inner, fingerprint, shift, 0

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        self.calls += len(requests)
        return [
            [ChoiceScore(s.logprob + self.shift, s.n_tokens, s.n_chars, s.is_greedy) for s in row]
            for row in self.inner.score(requests, batch_size)
        ]


@pytest.mark.integration
def test_score_cache(text_lm: TextLM, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    clip = tmp_path / "clip.flac"
    clip.write_bytes(b"not really audio")
    requests = [
        ScoringRequest((Text(CONTEXT),), CHOICES[:4]),
        ScoringRequest((Text("The capital of France is"),), (" Paris", " Rome")),
    ]
    model = CountingModel(text_lm, "model-a")
    first = score(model, requests)
    assert model.calls == 2
    assert score(model, requests) == first and model.calls == 2  # nothing recomputed
    assert score(model, requests, cache=False) == first and model.calls == 4
    changed = CountingModel(text_lm, "model-b", shift=-1.0)
    again = score(changed, requests)
    assert changed.calls == 2  # a new fingerprint never reuses a stale score
    assert again[0][0].logprob == first[0][0].logprob - 1.0  # identity: the same double sum
    assert first[0][0].n_chars == len(CHOICES[0]) and first[0][0].n_tokens >= 1


@pytest.mark.integration
def test_score_cache_keys_audio_by_content(text_lm: TextLM, tmp_path, monkeypatch) -> None:
    from salad_eval.scoring import request_key

    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    a, b, c = (tmp_path / n for n in ("a.flac", "b.flac", "c.flac"))
    a.write_bytes(b"one")
    b.write_bytes(b"one")
    c.write_bytes(b"two")

    def key(path, transcript="x"):
        return request_key("m", ScoringRequest((Audio(str(path), transcript),), (" a",)))

    assert key(a) == key(b) == key(b, transcript="y")
    assert key(a) != key(c)


def test_metrics_follow_lm_eval() -> None:
    def scores(*lps: float) -> list[ChoiceScore]:
        return [ChoiceScore(lp, 1, 1, False) for lp in lps]

    choices = (" ab", " abcdef")  # lengths 2 and 6 without the delimiter
    assert item_metrics(scores(-4.0, -6.0), 0, choices) == {"acc": 1.0, "acc_norm": 0.0}
    assert item_metrics(scores(-4.0, -6.0), 1, choices) == {"acc": 0.0, "acc_norm": 1.0}
    # ties go to the first maximum, as np.argmax does in lm-eval
    assert item_metrics(scores(-2.0, -2.0), 0, (" a", " b")) == {"acc": 1.0, "acc_norm": 1.0}
    assert item_metrics(scores(-2.0, -2.0), 1, (" a", " b")) == {"acc": 0.0, "acc_norm": 0.0}
