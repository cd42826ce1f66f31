"""Scored tokens -> vLLM's ``prompt_logprobs`` and the legacy completions' ``echo`` logprobs.

The numbers come from salad's own scorer (``lm_scoring.per_token``): a request is scored as a
context and a continuation, exactly as ``Model.score`` scores a choice, and each continuation
token's log-prob, rank and top-k are read from the tensors its ``ChoiceScore`` sums. So the
continuation's entries add up to the in-process ``score`` (float rounding apart) and its ranks
are all 1 iff the in-process ``is_greedy``.

Where the continuation starts:

- chat under ``continue_final_message``: the final assistant message (what salad scores as the
  choice, tokenized as salad tokenizes a choice after its context);
- otherwise, for a text prompt: every token after the first (``split_first_token``), as vLLM
  (whose first entry is null);
- an audio prompt without a marked continuation is refused (the app says so in a 400).

Deviation from vLLM: the context's positions are ``null`` (one entry per input position, audio
frames included), not only the first: salad's scorer runs the context once for all its choices
and keeps the last position's logits only, so it has no number for them, and none is made up.
The non-null entries are then exactly the tokens salad scores as the choice, a context's trailing
whitespace included (salad, as lm-eval, moves it into the choice: under a chat template, the
generation prompt's final newline).
A token vLLM would give ``-inf`` gets -9999.0, as vLLM's JSON does.
"""

from __future__ import annotations

import math
from typing import Any

from salad_eval.models.lm_scoring import TokenChoiceScore, TokenScore
from salad_eval.models.text_lm import LMEvalEncoder
from salad_eval.prompt import ChoiceScore
from salad_eval.serve.protocol import RequestError

FLOOR = -9999.0  # vLLM's stand-in for -inf in JSON


def split_first_token(tokenizer, text: str) -> tuple[str, str]:
    """(head, tail) of a text prompt: head its first token (with a BOS the tokenizer adds, the
    context salad scores the rest after), tail the rest. A head that would end in whitespace
    takes the next tokens too (salad moves a context's trailing whitespace into the choice)."""
    try:
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
            "offset_mapping"
        ]
    except (NotImplementedError, KeyError, TypeError):  # a slow tokenizer: decode instead
        ids = tokenizer.encode(text, add_special_tokens=False)
        offsets = []
        for i in range(1, len(ids) + 1):
            prefix = tokenizer.decode(ids[:i])
            offsets.append((0, len(prefix) if text.startswith(prefix) else 0))
    for _, end in offsets:
        head = text[:end]
        if head.strip() and not head[-1].isspace():
            return head, text[end:]
    return text, ""


def prompt_logprobs(score: ChoiceScore, tokenizer) -> list[dict[str, Any] | None]:
    """vLLM's ``prompt_logprobs``: null per context position, then per continuation token
    ``{token_id: {logprob, rank, decoded_token}}`` holding the token itself and its top-k."""
    tokens = _tokens_of(score)
    entries: list[dict[str, Any] | None] = [None] * score.context_positions
    for token in tokens:
        entry = {str(token.token): _entry(token.logprob, token.rank, token.token, tokenizer)}
        for rank, (other, logprob) in enumerate(token.top, start=1):
            entry.setdefault(str(other), _entry(logprob, rank, other, tokenizer))
        entries.append(entry)
    return entries


def echo_logprobs(
    score: ChoiceScore, tokenizer, head: str, tail: str, prompt: str
) -> dict[str, Any]:
    """The legacy ``logprobs`` of an echoed prompt split as ``split_first_token`` split it:
    ``tokens``, ``token_logprobs`` and ``top_logprobs`` (null for the context), ``text_offset``
    (each token's first character in ``prompt``)."""
    tokens = _tokens_of(score)
    context_ids, (tail_ids,) = LMEvalEncoder(tokenizer).encode_pair(head, [tail])
    if len(context_ids) != score.context_positions or tail_ids != [t.token for t in tokens]:
        raise RequestError(
            "the prompt's tokens do not split at its first token; use prompt_logprobs",
            status=422,
        )
    ids = [*context_ids, *tail_ids]
    top: list[dict[str, float] | None] = [None] * len(context_ids)
    for token in tokens:
        alternatives = {_decode(tokenizer, token.token): _finite(token.logprob)}
        for other, logprob in token.top:
            alternatives.setdefault(_decode(tokenizer, other), _finite(logprob))
        top.append(alternatives)
    return {
        "tokens": [_decode(tokenizer, i) for i in ids],
        "token_logprobs": [None] * len(context_ids) + [_finite(t.logprob) for t in tokens],
        "top_logprobs": top,
        "text_offset": text_offsets(tokenizer, ids, prompt),
    }


def text_offsets(tokenizer, ids: list[int], text: str) -> list[int]:
    """Where each token starts in ``text``: the length of the text its predecessors decode to
    (special tokens the text does not spell take no room), at most ``len(text)``."""

    def decoded(part: list[int]) -> str:
        return tokenizer.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    pieces = [decoded([i]) for i in ids]
    if "".join(pieces) == decoded(ids):  # each token decodes on its own: running lengths
        offsets, at = [], 0
        for piece in pieces:
            offsets.append(min(at, len(text)))
            at += len(piece)
        return offsets
    return [min(len(decoded(ids[:i])), len(text)) for i in range(len(ids))]


def _tokens_of(score: ChoiceScore) -> tuple[TokenScore, ...]:
    if not isinstance(score, TokenChoiceScore):
        raise RequestError(
            "this model's scorer does not give per-token log-probs; ask without "
            "prompt_logprobs/logprobs",
            status=400,
        )
    return score.tokens


def _entry(logprob: float, rank: int, token: int, tokenizer) -> dict[str, Any]:
    return {"logprob": _finite(logprob), "rank": rank, "decoded_token": _decode(tokenizer, token)}


def _decode(tokenizer, token: int) -> str:
    return tokenizer.decode([token], clean_up_tokenization_spaces=False)


def _finite(logprob: float) -> float:
    if math.isnan(logprob):
        raise ValueError("the model gave a NaN log-prob")
    return FLOOR if logprob == -math.inf else logprob
