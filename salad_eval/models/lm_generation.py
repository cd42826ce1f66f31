"""Batched generation over input embeddings: the reply of every HF-LLM-based adapter.

Every adapter already turns a prompt into its LLM's input embeddings (text, with audio spliced
in) to score it; generation starts from the same embeddings, so a generated reply reads exactly
the context that log-likelihood scores. Many contexts run per forward in ``lm_scoring``'s layout
(each context's last token in the last slot, the padding before it masked, positions counting
real tokens only), then one token per row per step on the shared KV cache.

Decoding is greedy (``temperature`` 0) or sampled: temperature, then nucleus (``top_p``), each
row drawing from its own generator seeded by its request and sample number, so a sampled reply
does not depend on the batch it ran in. A reply ends at the model's end of sequence or at the
first of its stop sequences (``until``; the stop sequence is cut off), else it is *truncated*:
the token limit cut it off, which the extraction rule counts as no answer.

``context_lengths()`` lets a caller see how many input positions (tokens and audio frames) each
context had, without a second pass over the prompts: the server's ``usage.prompt_tokens``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from transformers import PreTrainedModel

from salad_eval.models.lm_scoring import context_batches, frozen, pack_contexts, sliding_window
from salad_eval.models.placement import input_device
from salad_eval.prompt import Decoding, GenerationRequest, Reply

_LENGTHS: ContextVar[list[int] | None] = ContextVar("salad_context_lengths", default=None)


@contextmanager
def context_lengths() -> Iterator[list[int]]:
    """The list it yields gets, per request that ``generate_replies`` answers inside (in this
    thread, in request order), the number of positions of its context."""
    lengths: list[int] = []
    token = _LENGTHS.set(lengths)
    try:
        yield lengths
    finally:
        _LENGTHS.reset(token)


def end_ids(tokenizer, llm) -> set[int]:
    """Token ids that end a reply: the tokenizer's end of sequence and the generation config's
    (a chat model's end-of-turn token), where they exist."""
    ids = {tokenizer.eos_token_id}
    config = getattr(llm, "generation_config", None)
    configured = getattr(config, "eos_token_id", None)
    ids |= set(configured) if isinstance(configured, (list, tuple)) else {configured}
    return {i for i in ids if isinstance(i, int)}


def sample_seed(seed: int, sample: int) -> int:
    """The generator seed of sample ``sample`` of a request seeded ``seed``."""
    digest = hashlib.blake2b(f"{seed}:{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def generate_replies(
    llm: PreTrainedModel,
    tokenizer,
    stop_ids: set[int],
    contexts: Sequence[torch.Tensor],
    requests: Sequence[GenerationRequest],
    decoding: Decoding,
    batch_size: int = 8,
) -> list[list[Reply]]:
    """Per request, ``decoding.samples`` replies to context ``contexts[i]`` ((T_i, d) input
    embeddings); ``tokenizer`` decodes them (stop sequences are matched on the text)."""

    def decode(ids: list[int]) -> str:
        return tokenizer.decode(ids, skip_special_tokens=True)

    if len(contexts) != len(requests):
        raise ValueError("contexts and requests must have one entry per request")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if (recorded := _LENGTHS.get()) is not None:
        recorded.extend(int(context.shape[0]) for context in contexts)
    rows = [(i, s) for i in range(len(requests)) for s in range(decoding.samples)]
    lengths = [contexts[i].shape[0] for i, _ in rows]
    order = sorted(range(len(rows)), key=lambda r: -lengths[r])  # longest first, as scoring
    window = sliding_window(llm)
    replies: list[list[Reply | None]] = [[None] * decoding.samples for _ in requests]
    with frozen(llm), torch.inference_mode():
        for batch in context_batches(
            order, lengths, [decoding.max_new_tokens] * len(rows), batch_size, window
        ):
            generators = [
                _generator(llm, requests[rows[r][0]].seed, rows[r][1], decoding) for r in batch
            ]
            tokens = _generate_batch(
                llm,
                [contexts[rows[r][0]] for r in batch],
                decoding,
                generators,
                _stopper(decode, stop_ids, [requests[rows[r][0]].until for r in batch]),
            )
            for r, ids in zip(batch, tokens, strict=True):
                i, s = rows[r]
                replies[i][s] = _reply(decode, stop_ids, ids, requests[i].until, decoding)
    return [[r for r in sampled if r is not None] for sampled in replies]


def _generator(llm, seed: int, sample: int, decoding: Decoding) -> torch.Generator | None:
    if decoding.greedy:
        return None
    device = input_device(llm.get_input_embeddings())
    return torch.Generator(device=device).manual_seed(sample_seed(seed, sample))


def _stopper(
    decode: Callable[[list[int]], str], stop_ids: set[int], until: list[tuple[str, ...]]
) -> Callable[[int, list[int]], bool]:
    """Whether row ``row``'s tokens so far end its reply."""

    def stopped(row: int, tokens: list[int]) -> bool:
        if tokens and tokens[-1] in stop_ids:
            return True
        return bool(until[row]) and any(stop in decode(tokens) for stop in until[row])

    return stopped


def _reply(
    decode: Callable[[list[int]], str],
    stop_ids: set[int],
    tokens: list[int],
    until: tuple[str, ...],
    decoding: Decoding,
) -> Reply:
    """The reply text up to its end: the end-of-sequence token or the first stop sequence."""
    ended = bool(tokens) and tokens[-1] in stop_ids
    text = decode(tokens[:-1] if ended else tokens)
    cuts = [text.index(stop) for stop in until if stop in text]
    if cuts:
        text, ended = text[: min(cuts)], True
    truncated = not ended and len(tokens) >= decoding.max_new_tokens
    return Reply(text=text, n_tokens=len(tokens), truncated=truncated)


def _next_tokens(
    logits: torch.Tensor, decoding: Decoding, generators: list[torch.Generator | None]
) -> list[int]:
    """One token per row: the argmax, or a draw from the tempered nucleus."""
    if decoding.greedy:
        return logits.argmax(-1).tolist()
    chosen = []
    for row, generator in zip(logits.float(), generators, strict=True):
        probs = (row / decoding.temperature).softmax(-1)
        if decoding.top_p < 1.0:
            sorted_probs, indices = probs.sort(descending=True)
            before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the tokens ranked above
            sorted_probs[before >= decoding.top_p] = 0.0  # the top token always stays
            probs = torch.zeros_like(probs).scatter(0, indices, sorted_probs)
        # drawn where the generator is (the input embeddings' device): a model spread over
        # devices returns its logits on the last one, yet draws as it would whole on the first
        probs = probs.to(generator.device)
        chosen.append(int(torch.multinomial(probs, 1, generator=generator)))
    return chosen


def _generate_batch(
    llm: PreTrainedModel,
    contexts: list[torch.Tensor],
    decoding: Decoding,
    generators: list[torch.Generator | None],
    stopped: Callable[[int, list[int]], bool],
) -> list[list[int]]:
    """Token ids generated after each context, until each stops or the token limit.

    The first pass lays contexts out as ``lm_scoring._score_batch`` does (padding masked before
    each context's last token, so no query is fully masked); each later step appends one token
    per row at the next real position. A finished row keeps running (its tokens are dropped):
    the batch's shapes, hence every other row's arithmetic, do not depend on when rows stop.
    """
    embed = llm.get_input_embeddings()
    device = input_device(embed)
    lengths = [c.shape[0] for c in contexts]
    inputs, mask, positions = pack_contexts(llm, contexts)
    out = llm(
        inputs_embeds=inputs,
        attention_mask=mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    generated: list[list[int]] = [[] for _ in contexts]
    done = [False] * len(contexts)
    next_position = torch.tensor(lengths, dtype=torch.long, device=device)
    for step in range(decoding.max_new_tokens):
        chosen = _next_tokens(out.logits[:, -1], decoding, generators)
        for row, token in enumerate(chosen):
            if not done[row]:
                generated[row].append(token)
                done[row] = stopped(row, generated[row])
        if all(done) or step == decoding.max_new_tokens - 1:
            break
        mask = torch.cat([mask, torch.ones((len(contexts), 1), dtype=mask.dtype, device=device)], 1)
        ids = torch.tensor(chosen, dtype=torch.long, device=device)[:, None]
        out = llm(
            inputs_embeds=embed(ids),
            attention_mask=mask,
            position_ids=next_position[:, None],
            cache=out.cache,
            use_cache=True,
            logits_to_keep=1,
        )
        next_position = next_position + 1
    return generated
