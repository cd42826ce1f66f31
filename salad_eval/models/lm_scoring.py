"""Shared-context log-likelihood scoring: the core of every HF-LLM-based adapter.

A multiple-choice item has one context and several choices. Scoring each ``context + choice`` on
its own recomputes the context once per choice; here the context (text embeddings, possibly with
audio embeddings spliced in) runs once into a KV cache, and the choices run batched on copies of
that cache. The first token of each choice is scored from the context's last logits, so a choice
of one token needs no forward pass at all. Choices are right-padded: under causal attention the
padding comes after every real token and cannot touch its logits, so no attention mask is needed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from salad_eval.prompt import ChoiceScore


def score_continuations(
    llm: PreTrainedModel,
    context_embeds: torch.Tensor,
    continuations: list[list[int]],
    batch_size: int = 8,
) -> list[tuple[float, bool]]:
    """Per continuation: (sum of its tokens' log-probs after the context, is it the greedy one).

    ``context_embeds`` is the (T, d) input-embedding sequence of the shared context, T >= 1.
    """
    if context_embeds.ndim != 2 or context_embeds.shape[0] == 0:
        raise ValueError(f"context_embeds must be (T>=1, d), got {tuple(context_embeds.shape)}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    embed = llm.get_input_embeddings()
    device = embed.weight.device
    results: list[tuple[float, bool]] = []
    with torch.inference_mode():
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
                results.append(_score_one(first, rest[i] if rest is not None else None, tokens))
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
    return [
        ChoiceScore(logprob=lp, n_tokens=len(cont), n_chars=len(choice), is_greedy=greedy)
        for (lp, greedy), cont, choice in zip(scored, continuations, choices, strict=True)
    ]


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


def score_separately(
    llm: PreTrainedModel, context_embeds: torch.Tensor, continuations: list[list[int]]
) -> list[tuple[float, bool]]:
    """The reference: one forward pass over ``context + choice`` per choice, no cache sharing.

    Kept beside the fast path so tests and the benchmark compare against the same definition.
    """
    embed = llm.get_input_embeddings()
    device = embed.weight.device
    results = []
    with torch.inference_mode():
        for tokens in continuations:
            if not tokens:
                results.append((0.0, True))
                continue
            ids = torch.tensor(tokens, dtype=torch.long, device=device)
            full = torch.cat([context_embeds.to(device, embed.weight.dtype), embed(ids)])
            logits = llm(inputs_embeds=full[None]).logits[0].float().log_softmax(-1)
            steps = logits[context_embeds.shape[0] - 1 : -1]
            logprob = steps.gather(-1, ids[:, None]).sum().item()
            results.append((logprob, bool((steps.argmax(-1) == ids).all())))
    return results
