"""Shared-context log-likelihood scoring: the core of every HF-LLM-based adapter.

A multiple-choice item has one context and several choices. Scoring each ``context + choice`` on
its own recomputes the context once per choice; here the context (text embeddings, possibly with
audio embeddings spliced in) runs once into a KV cache, and the choices run batched on copies of
that cache. The first token of each choice is scored from the context's last logits, so a choice
of one token needs no forward pass at all. Choices are right-padded: under causal attention the
padding comes after every real token and cannot touch its logits, so no attention mask is needed.

``score_contexts`` does the same across items: many contexts run in one forward (sorted by length
so a batch pads little, the padding hidden by an attention mask, explicit positions counting real
tokens only), then their choices' later tokens run batched on rows of that shared cache. Results
come back in input order, equal to ``choice_scores`` per item within float tolerance (padding
changes matmul shapes, hence the last bits).

A model spread over devices by ``--device-map`` (``salad_eval.models.placement``) is fed on its
input embeddings' device (``input_device``: a parameter's ``.device`` may be an offloaded
``meta``) and its logits are read where they come back (the last layer's device).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel

from salad_eval.errors import SaladError
from salad_eval.models.placement import input_device
from salad_eval.prompt import ChoiceScore


@dataclass(frozen=True)
class TokenScore:
    """One choice token as the model scored it after everything before it.

    ``rank`` counts from 1 in the order ``argmax`` takes (higher log-prob first, then the lower
    token id), so rank 1 is exactly the token greedy decoding picks and a choice ``is_greedy``
    iff all its tokens have rank 1. ``top``: the ``top_k`` likeliest tokens, best first.
    """

    token: int
    logprob: float
    rank: int
    top: tuple[tuple[int, float], ...] = ()


@dataclass(frozen=True)
class TokenChoiceScore(ChoiceScore):
    """A ``ChoiceScore`` with its tokens' own scores (under ``per_token``): ``context_positions``
    input positions (tokens and audio frames) came before the choice's first token."""

    context_positions: int = 0
    tokens: tuple[TokenScore, ...] = ()


_TOP_K: ContextVar[int | None] = ContextVar("salad_per_token_top_k", default=None)


@contextmanager
def per_token(top_k: int = 0) -> Iterator[None]:
    """Scorers called inside (in this thread) return ``TokenChoiceScore``s with each token's
    log-prob, rank and ``top_k`` alternatives; every adapter built on this module gets it with
    no change to its own code."""
    if top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    token = _TOP_K.set(top_k)
    try:
        yield
    finally:
        _TOP_K.reset(token)


@contextmanager
def frozen(llm: torch.nn.Module) -> Iterator[None]:
    """Score with every weight of ``llm`` frozen (``requires_grad`` False), restored after.

    ATen's ``matmul`` (a bias-free ``linear`` such as ``lm_head``) picks its kernel by the
    weight's ``requires_grad``: on a strided 3-D input (the last position's hidden states that
    ``logits_to_keep`` slices out) a weight that requires grad folds the input into one ``mm``,
    a frozen one runs ``bmm`` on it, and the two sum in another order (1 ulp apart). A speech
    LLM that trains its LLM (``llm_mode: full``) and its frozen base (``TextLM``) then scored
    the same text apart; frozen here, both run the same kernels, so text@speech == text@base
    holds bit for bit whatever the weights' training state.
    """
    trainable = [p for p in llm.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in trainable:
            p.requires_grad_(True)


def score_continuations(
    llm: PreTrainedModel,
    context_embeds: torch.Tensor,
    continuations: list[list[int]],
    batch_size: int = 8,
) -> list[tuple[float, bool]]:
    """Per continuation: (sum of its tokens' log-probs after the context, is it the greedy one),
    and under ``per_token`` a third element, its ``TokenScore``s.

    ``context_embeds`` is the (T, d) input-embedding sequence of the shared context, T >= 1.
    """
    if context_embeds.ndim != 2 or context_embeds.shape[0] == 0:
        raise ValueError(f"context_embeds must be (T>=1, d), got {tuple(context_embeds.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    embed = llm.get_input_embeddings()
    device = input_device(embed)
    results: list[tuple[float, bool]] = []
    with frozen(llm), torch.inference_mode():
        out = llm(
            inputs_embeds=context_embeds[None].to(device, embed.weight.dtype),
            use_cache=True,
            logits_to_keep=1,
        )
        first = out.logits[0, -1].float().log_softmax(-1)
        for start in range(0, len(continuations), batch_size):
            batch = continuations[start : start + batch_size]
            rest = _rest_logprobs(llm, out.cache, batch, device)
            for i, tokens in enumerate(batch):
                results.append(_judged(first, rest[i] if rest is not None else None, tokens))
    return results


def choice_scores(
    llm: PreTrainedModel,
    context_embeds: torch.Tensor,
    continuations: list[list[int]],
    choices: Sequence[str],
    batch_size: int = 8,
) -> list[ChoiceScore]:
    """``score_continuations`` as a ``Model`` answers: one ``ChoiceScore`` per choice."""
    scored = score_continuations(llm, context_embeds, continuations, batch_size)
    positions = context_embeds.shape[0]
    return [
        _choice_score(judged, cont, choice, positions)
        for judged, cont, choice in zip(scored, continuations, choices, strict=True)
    ]


def score_contexts(
    llm: PreTrainedModel,
    contexts: Sequence[torch.Tensor],
    continuations: Sequence[list[list[int]]],
    choices: Sequence[Sequence[str]],
    batch_size: int = 8,
) -> list[list[ChoiceScore]]:
    """``choice_scores`` of many requests at once: request ``i`` is context ``contexts[i]``
    ((T_i, d) input embeddings) with choices ``choices[i]`` tokenized as ``continuations[i]``.

    ``batch_size`` bounds the rows of every forward pass: contexts per context pass, choices per
    continuation pass (as lm-eval's ``batch_size`` counts sequences).
    """
    if not len(contexts) == len(continuations) == len(choices):
        raise ValueError("contexts, continuations and choices must have one entry per request")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for context in contexts:
        if context.ndim != 2 or context.shape[0] == 0:
            raise ValueError(f"each context must be (T>=1, d), got {tuple(context.shape)}")
    # Longest first (as lm-eval): a batch holds similar lengths, and the first one is the
    # largest, so memory runs out at once if it does at all.
    order = sorted(range(len(contexts)), key=lambda i: -contexts[i].shape[0])
    results: list[list[ChoiceScore]] = [[] for _ in contexts]
    with frozen(llm), torch.inference_mode():
        lengths = [c.shape[0] for c in contexts]
        choice_lengths = [max(map(len, conts), default=0) for conts in continuations]
        window = sliding_window(llm)
        for batch in context_batches(order, lengths, choice_lengths, batch_size, window):
            scored = _score_batch(
                llm, [contexts[i] for i in batch], [continuations[i] for i in batch], batch_size
            )
            for i, rows in zip(batch, scored, strict=True):
                results[i] = [
                    _choice_score(judged, cont, choice, lengths[i])
                    for judged, cont, choice in zip(rows, continuations[i], choices[i], strict=True)
                ]
    return results


def context_batches(
    order: list[int],
    lengths: list[int],
    choice_lengths: list[int],
    batch_size: int,
    window: int | None,
) -> list[list[int]]:
    """``order`` (longest first) cut into batches of at most ``batch_size``.

    1-token contexts batch only among themselves (``_score_batch``: no padding query may be
    fully masked). Under a sliding window, padding slots would push real tokens out of the
    window, so a batch holds several requests only while its longest context plus the longest
    choice of any of them fits in the window; a longer request is scored alone (exact).
    """

    def fits(batch: list[int]) -> bool:
        if len(batch) > batch_size or (lengths[batch[-1]] == 1 < lengths[batch[0]]):
            return False
        return window is None or lengths[batch[0]] + max(choice_lengths[j] for j in batch) <= window

    batches: list[list[int]] = []
    for i in order:
        if batches and fits([*batches[-1], i]):
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def sliding_window(llm) -> int | None:
    """The sliding attention window of ``llm``'s decoder, if any of its layers uses one."""
    config = getattr(llm, "config", None)
    config = getattr(config, "text_config", None) or config
    window = getattr(config, "sliding_window", None)
    if not isinstance(window, int) or getattr(config, "use_sliding_window", True) is False:
        return None
    layer_types = getattr(config, "layer_types", None)
    if layer_types is not None and not any("sliding" in str(t) for t in layer_types):
        return None
    return window


CPU_BATCH_SIZE = 8  # ``auto`` off a GPU: CPU matmuls gain little past it (bench/scoring.py)
MAX_AUTO_BATCH = 512


def find_batch_size(
    llm: PreTrainedModel, context_length: int, continuation_length: int, n_choices: int
) -> int:
    """The largest power-of-two batch (at most ``MAX_AUTO_BATCH``) whose worst case fits: that
    many contexts of ``context_length`` positions, each with ``n_choices`` choices of
    ``continuation_length`` tokens, scored as ``score_contexts`` does (lm-eval's ``auto``).
    Off a GPU there is no memory to fill, so it is ``CPU_BATCH_SIZE``."""
    weight = llm.get_input_embeddings().weight
    device = input_device(llm.get_input_embeddings())
    if device.type != "cuda":
        return CPU_BATCH_SIZE

    def fits(size: int) -> bool:
        contexts = [torch.randn(context_length, weight.shape[1], device=device)] * size
        conts = [[[0] * max(continuation_length, 1)] * n_choices] * size
        try:
            score_contexts(llm, contexts, conts, [[""] * n_choices] * size, batch_size=size)
            return True
        except torch.cuda.OutOfMemoryError:
            return False
        finally:
            torch.cuda.empty_cache()

    size = largest_batch(fits)
    if not size:
        raise SaladError(
            f"one context of {context_length} positions does not fit on {device}; "
            "use a smaller dtype or a larger GPU"
        )
    return size


def largest_batch(fits: Callable[[int], bool], start: int = MAX_AUTO_BATCH) -> int:
    """The first of ``start``, ``start / 2``, ... 1 that ``fits``; 0 when none does."""
    size = start
    while size >= 1 and not fits(size):
        size //= 2
    return size


def _score_batch(
    llm: PreTrainedModel,
    contexts: list[torch.Tensor],
    continuations: list[list[list[int]]],
    rows_per_pass: int,
) -> list[list[tuple]]:
    """One context pass over padded ``contexts``, then their choices on its cache.

    Each context's last token sits in the last slot and the padding just before it, masked, with
    positions counting real tokens only: every first-choice-token distribution is then the last
    slot's (one row of logits per context, as at batch size 1), and every padding query still
    sees a real token before it (``context_batches`` keeps 1-token contexts apart), so none is fully
    masked (no NaN). Attention reads positions, not slots, so the layout changes nothing else.
    """
    device = input_device(llm.get_input_embeddings())
    lengths = [c.shape[0] for c in contexts]
    inputs, mask, positions = pack_contexts(llm, contexts)
    out = llm(
        inputs_embeds=inputs,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    firsts = out.logits[:, -1].float().log_softmax(-1)
    # (context row, choice index, tokens) of every choice needing a continuation pass, longest
    # first: a pass pads its rows to its longest choice
    later = sorted(
        (
            (row, k, tokens)
            for row, conts in enumerate(continuations)
            for k, tokens in enumerate(conts)
            if len(tokens) > 1
        ),
        key=lambda case: -len(case[2]),
    )
    scored = {
        (row, k): _judged(firsts[row], None, tokens)
        for row, conts in enumerate(continuations)
        for k, tokens in enumerate(conts)
        if len(tokens) <= 1
    }
    for start in range(0, len(later), rows_per_pass):
        chunk = later[start : start + rows_per_pass]
        steps = _rest_on_rows(llm, out.cache, mask, lengths, chunk, device)
        for (row, k, tokens), step in zip(chunk, steps, strict=True):
            scored[row, k] = _judged(firsts[row], step, tokens)
    return [[scored[row, k] for k in range(len(conts))] for row, conts in enumerate(continuations)]


def pack_contexts(
    llm: PreTrainedModel, contexts: list[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs, attention mask, positions) of contexts run in one forward: each context's last
    token in the last slot and the padding just before it, masked, positions counting real tokens
    only (``_score_batch`` says why)."""
    embed = llm.get_input_embeddings()
    device, dtype = input_device(embed), embed.weight.dtype
    longest = max(c.shape[0] for c in contexts)
    inputs = torch.zeros((len(contexts), longest, contexts[0].shape[1]), dtype=dtype, device=device)
    mask = torch.zeros((len(contexts), longest), dtype=torch.long, device=device)
    positions = torch.arange(longest, device=device).repeat(len(contexts), 1)
    for row, context in enumerate(contexts):
        n = context.shape[0]
        inputs[row, : n - 1] = context[:-1].to(device, dtype)
        inputs[row, -1] = context[-1].to(device, dtype)
        mask[row, : n - 1] = 1
        mask[row, -1] = 1
        positions[row, -1] = n - 1
    return inputs, mask, positions


def _rest_on_rows(
    llm: PreTrainedModel,
    context_cache,
    context_mask: torch.Tensor,
    lengths: list[int],
    chunk: list[tuple[int, int, list[int]]],
    device: torch.device,
) -> torch.Tensor:
    """Log-probs (n, L-1, V) predicting tokens 1.. of each choice in ``chunk``, each on a copy of
    its own context's row of the cache, positioned right after that context's last real token."""
    picked = torch.tensor([row for row, _, _ in chunk], dtype=torch.long)  # on the CPU: it
    rows = picked.to(device)  # indexes every layer's cache, whatever device holds that layer
    longest = max(len(tokens) for _, _, tokens in chunk) - 1
    inputs = torch.zeros((len(chunk), longest), dtype=torch.long, device=device)
    mask = torch.zeros((len(chunk), longest), dtype=torch.long, device=device)
    for i, (_, _, tokens) in enumerate(chunk):
        inputs[i, : len(tokens) - 1] = torch.tensor(tokens[:-1], dtype=torch.long)
        mask[i, : len(tokens) - 1] = 1
    starts = torch.tensor(lengths, dtype=torch.long, device=device)[rows]
    positions = starts[:, None] + torch.arange(longest, device=device)
    cache = copy.deepcopy(context_cache)
    cache.batch_select_indices(picked)
    logits = llm(
        inputs_embeds=llm.get_input_embeddings()(inputs),
        attention_mask=torch.cat([context_mask[rows], mask], dim=1),
        position_ids=positions,
        cache=cache,
        use_cache=True,
    ).logits
    return logits.float().log_softmax(-1)


def _rest_logprobs(
    llm: PreTrainedModel, context_cache, batch: list[list[int]], device: torch.device
) -> torch.Tensor | None:
    """Log-probs (n, L-1, V) predicting tokens 1.. of each choice, run on a copy of the cache."""
    longest = max(len(tokens) for tokens in batch)
    if longest <= 1:
        return None
    inputs = torch.zeros((len(batch), longest - 1), dtype=torch.long, device=device)
    for i, tokens in enumerate(batch):
        inputs[i, : len(tokens) - 1] = torch.tensor(tokens[:-1], dtype=torch.long)
    cache = copy.deepcopy(context_cache)
    cache.batch_repeat_interleave(len(batch))
    embeds = llm.get_input_embeddings()(inputs)
    logits = llm(inputs_embeds=embeds, cache=cache, use_cache=True).logits
    return logits.float().log_softmax(-1)


def _score_one(
    first: torch.Tensor, rest: torch.Tensor | None, tokens: list[int]
) -> tuple[float, bool]:
    if not tokens:
        return 0.0, True
    logprob = first[tokens[0]].item()
    greedy = int(first.argmax()) == tokens[0]
    if len(tokens) > 1:
        assert rest is not None
        targets = torch.tensor(tokens[1:], dtype=torch.long, device=rest.device)
        steps = rest[: len(tokens) - 1]
        logprob += steps.gather(-1, targets[:, None]).sum().item()
        greedy = greedy and bool((steps.argmax(-1) == targets).all())
    return logprob, greedy


def _judged(first: torch.Tensor, rest: torch.Tensor | None, tokens: list[int]) -> tuple:
    """``_score_one``'s (log-prob, greedy), and under ``per_token`` the tokens' own scores, read
    from the same log-prob rows."""
    scored = _score_one(first, rest, tokens)
    top_k = _TOP_K.get()
    if top_k is None:
        return scored
    return (*scored, _token_scores(first, rest, tokens, top_k))


def _token_scores(
    first: torch.Tensor, rest: torch.Tensor | None, tokens: list[int], top_k: int
) -> tuple[TokenScore, ...]:
    """Each token's log-prob, rank (``TokenScore``) and the ``top_k`` likeliest tokens."""
    if not tokens:
        return ()
    steps = first[None]
    if len(tokens) > 1:
        assert rest is not None
        steps = torch.cat([steps, rest[: len(tokens) - 1]])
    targets = torch.tensor(tokens, dtype=torch.long, device=steps.device)[:, None]
    chosen = steps.gather(-1, targets)
    ids = torch.arange(steps.shape[-1], device=steps.device)
    # argmax's order: ties go to the lower token id, so rank 1 <=> argmax == token
    above = (steps > chosen) | ((steps == chosen) & (ids[None] < targets))
    ranks = above.sum(-1) + 1
    tops: list[tuple[tuple[int, float], ...]] = [()] * len(tokens)
    if top_k:
        values, indices = steps.topk(min(top_k, steps.shape[-1]), dim=-1)
        tops = [
            tuple(zip(row_ids, row_values, strict=True))
            for row_ids, row_values in zip(indices.tolist(), values.tolist(), strict=True)
        ]
    return tuple(
        TokenScore(token=t, logprob=lp, rank=r, top=top)
        for t, lp, r, top in zip(tokens, chosen[:, 0].tolist(), ranks.tolist(), tops, strict=True)
    )


def _choice_score(judged: tuple, tokens: list[int], choice: str, positions: int) -> ChoiceScore:
    """The ``ChoiceScore`` of a judged choice; a ``TokenChoiceScore`` under ``per_token``."""
    logprob, greedy, *detail = judged
    common = {
        "logprob": logprob,
        "n_tokens": len(tokens),
        "n_chars": len(choice),
        "is_greedy": greedy,
    }
    if not detail:
        return ChoiceScore(**common)
    return TokenChoiceScore(**common, context_positions=positions, tokens=detail[0])


def score_separately(
    llm: PreTrainedModel, context_embeds: torch.Tensor, continuations: list[list[int]]
) -> list[tuple[float, bool]]:
    """The reference: one forward pass over ``context + choice`` per choice, no cache sharing.

    Kept beside the fast path so tests and the benchmark compare against the same definition.
    """
    embed = llm.get_input_embeddings()
    device = input_device(embed)
    results = []
    with frozen(llm), torch.inference_mode():
        for tokens in continuations:
            if not tokens:
                results.append((0.0, True))
                continue
            ids = torch.tensor(tokens, dtype=torch.long, device=device)
            full = torch.cat([context_embeds.to(device, embed.weight.dtype), embed(ids)])
            logits = llm(inputs_embeds=full[None]).logits[0].float().log_softmax(-1)
            steps = logits[context_embeds.shape[0] - 1 : -1]
            ids = ids.to(steps.device)  # the logits' device: the last layer's, under a device map
            logprob = steps.gather(-1, ids[:, None]).sum().item()
            results.append((logprob, bool((steps.argmax(-1) == ids).all())))
    return results
