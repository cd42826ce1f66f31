"""Cross-item batched scoring: many contexts per forward score as each does alone, in order."""

from __future__ import annotations

import pytest

from salad_eval.models.lm_scoring import choice_scores, score_contexts
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import ScoringRequest, Text

# Mixed lengths on purpose: contexts of 3 to ~40 tokens, choices of 1 to ~8 tokens, 2 to 4 each.
ITEMS = (
    ("Question: Which planet is the largest in the solar system?\nAnswer:",
     (" Jupiter", " Mars", " the Earth, where we live")),
    ("The cat sat on the", (" mat", " roof of the old house")),
    ("2 + 2 =", (" 4", " 5", " twenty-two", " four")),
    ("Once upon a time, in a kingdom by the sea, there lived a king who had three sons and a "
     "daughter. The eldest son was brave, the second was clever, and the youngest was",
     (" kind", " the laziest of them all", " a frog")),
    ("Water boils at", (" 100 degrees Celsius at sea level", " 0 degrees")),
)  # fmt: skip


@pytest.fixture(scope="module")
def text_lm() -> TextLM:
    return TextLM("smollm2-135m")


def assert_same(batched, alone) -> None:
    assert len(batched) == len(alone)
    for got, ref in zip(batched, alone, strict=True):
        assert [s.logprob for s in got] == pytest.approx([s.logprob for s in ref], abs=1e-4)
        assert [(s.n_tokens, s.n_chars, s.is_greedy) for s in got] == [
            (s.n_tokens, s.n_chars, s.is_greedy) for s in ref
        ]


@pytest.mark.parametrize("batch_size", [1, 2, 8])
def test_score_contexts_equals_per_request(text_lm: TextLM, batch_size: int) -> None:
    pairs = [text_lm.encoder.encode_pair(context, choices) for context, choices in ITEMS]
    contexts = [text_lm.embed(ids) for ids, _ in pairs]
    continuations = [conts for _, conts in pairs]
    assert len({c.shape[0] for c in contexts}) >= 4  # padding really happens
    alone = [
        choice_scores(text_lm.llm, c, conts, choices)
        for c, conts, (_, choices) in zip(contexts, continuations, ITEMS, strict=True)
    ]
    batched = score_contexts(text_lm.llm, contexts, continuations, [ch for _, ch in ITEMS],
                             batch_size=batch_size)  # fmt: skip
    assert_same(batched, alone)


def test_text_lm_scores_batched_in_order(text_lm: TextLM) -> None:
    requests = [ScoringRequest((Text(context),), choices) for context, choices in ITEMS]
    one_by_one = [text_lm.score([r], batch_size=1)[0] for r in requests]
    assert_same(text_lm.score(requests, batch_size=4), one_by_one)
    assert_same(text_lm.score(requests[::-1], batch_size=3), one_by_one[::-1])
