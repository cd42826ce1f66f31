"""Documents -> aligned student and teacher sequences, as Stage I lays them out.

The layout itself (``plan_batch``, ``student_inputs``, the text-position masks) lives in
``salad_eval.interleave``: the corpus misalignment M that a gap report shows is measured on the
very positions Stage I distils. This module adds what only training needs (``span_length``, the
windowing budget of a span).
"""

from __future__ import annotations

from collections.abc import Callable

from salad_eval.interleave import (
    AUDIO,
    Plan,
    StudentInputs,
    plan_batch,
    span_tokens,
    student_inputs,
)
from salad_train.recipe.data import Span

__all__ = [
    "AUDIO",
    "Plan",
    "StudentInputs",
    "plan_batch",
    "span_length",
    "span_tokens",
    "student_inputs",
]


def span_length(span: Span, tokenizer, audio_length: Callable[[str], tuple[int, float]]) -> int:
    """The most student positions ``span`` can take: its clip or its text, whichever is longer
    (a recorded utterance is laid out either way), so a window of spans always fits."""
    tokens = len(tokenizer.encode(" " + span.text, add_special_tokens=False))
    return max(tokens, audio_length(span.audio)[0]) if span.audio else tokens
