"""Planned student layouts when a clip comes out shorter than planned (a vocabulary adapter)."""

from __future__ import annotations

import torch
from transformers import AutoTokenizer

from salad_eval.assets.resolve import resolve
from salad_train.recipe.batch import AUDIO, plan_batch, student_inputs
from salad_train.recipe.data import Span

PLANNED = 6  # audio positions planned per clip, boundaries included


def test_a_shorter_clip_moves_the_text_positions_and_keeps_their_targets():
    tokenizer = AutoTokenizer.from_pretrained(resolve("smollm2-135m", kind="llm"))
    docs = [
        (Span("The cat"), Span("sat on", "a.wav"), Span("the mat today")),
        (Span("Birds sing", "b.wav"), Span("in the morning")),
    ]
    plan = plan_batch(docs, tokenizer, lambda clip: (PLANNED, 1.0), max_tokens=64)
    actual = {"a.wav": 3, "b.wav": PLANNED}  # a.wav lost three frames, b.wav none

    def embed_tokens(ids):
        return ids[:, None].float().expand(-1, 2)  # an embedding that shows the token id

    def embed_audio(clip):
        return torch.full((actual[clip], 2), -7.0)

    inputs = student_inputs(plan, embed_tokens, embed_audio)
    for row in range(len(docs)):
        planned_ids = plan.student_ids[row][plan.student_attention[row].bool()]
        shift = PLANNED - actual["a.wav"] if row == 0 else 0
        n = int(inputs.attention[row].sum())
        assert n == len(planned_ids) - shift
        # the text tokens in order, with the audio where the clip was
        got = inputs.embeds[row, :n, 0]
        assert torch.equal(got[got != -7.0], planned_ids[planned_ids != AUDIO].float())
        # the same number of text positions, predicting the same tokens, each the token after it
        planned_targets = plan.targets[row][plan.student_mask[row]]
        assert torch.equal(inputs.targets[row][inputs.mask[row]], planned_targets)
        positions = inputs.mask[row].nonzero().flatten()
        following = inputs.embeds[row, positions + 1, 0]
        assert torch.equal(following, inputs.targets[row][positions].float())
    assert inputs.mask.sum() == plan.student_mask.sum()
