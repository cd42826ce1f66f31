"""The generation engine: any generating ``Model`` over many requests, with an on-disk reply cache.

The twin of ``salad_eval.scoring`` for ``--answer generate``. Replies are cached one small JSON
file per request under ``home()/replies/``, keyed by the model's fingerprint, the request's
content (audio by its bytes), its stop sequences and every decoding setting, and sealed and
validated when read as scores are: a rerun generates nothing and a killed run resumes. Calls are
cut from all requests in one fixed order (``scoring.call_plan``) and a call with any reply missing
is generated whole, so a resumed run batches, and so rounds, exactly as an uninterrupted one.

Each request gets its own seed from the run's seed and its content, so a sampled reply depends
on the item and the sample number only: not on the batch, the shard or the other items.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.home import BadEntry, home, json_bytes, read_entry, write_entry
from salad_eval.progress import progress_bar
from salad_eval.prompt import Audio, Decoding, Failed, GenerationRequest, Model, Reply
from salad_eval.scoring import DEFAULT_BATCH_SIZE, call_plan, file_hash

FORMAT = 1  # of the cached replies and of how they are made; in every key


def check_generates(model: Model, role: str) -> None:
    """Refuse, in one line and before any work, a model that can only score."""
    if not callable(getattr(model, "generate", None)):
        raise SaladError(
            f"--answer generate: the {role} ({type(model).__name__}) cannot generate, it only "
            "scores; use --answer loglik, or give its adapter a generate(requests, decoding, "
            "batch_size) method (CONTRIBUTING.md: a model family)"
        )


def reply_key(fingerprint: str, request: GenerationRequest, decoding: Decoding) -> str:
    """A content hash of (model, prompt, stop sequences, decoding); audio counts by its bytes."""
    prompt = [
        ["audio", file_hash(seg.path)] if isinstance(seg, Audio) else ["text", seg.text]
        for seg in request.prompt
    ]
    payload = json.dumps(
        [FORMAT, fingerprint, prompt, list(request.until), asdict(decoding)], ensure_ascii=False
    )
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=20).hexdigest()


def seeded(request: GenerationRequest, key: str) -> GenerationRequest:
    """The request with its own seed: a sampled reply depends on the request, not its batch."""
    return replace(request, seed=int(key[:15], 16))


def _entry(key: str) -> Path:
    return home() / "replies" / key[:2] / f"{key}.json"


def _parse(data: bytes, decoding: Decoding) -> list[Reply]:
    """A cached entry: ``decoding.samples`` valid replies."""
    rows = json.loads(data)
    if not isinstance(rows, list) or len(rows) != decoding.samples:
        raise BadEntry(f"expected {decoding.samples} replies")
    replies = [Reply(**row) for row in rows]
    for r in replies:
        if (
            not isinstance(r.text, str)
            or not isinstance(r.truncated, bool)
            or isinstance(r.n_tokens, bool)
            or not isinstance(r.n_tokens, int)
            or not 0 <= r.n_tokens <= decoding.max_new_tokens
        ):
            raise BadEntry(f"invalid reply {r}")
    return replies


def rows_per_forward(batch_size: int | str) -> int:
    """``--batch-size`` as rows per generation forward: ``auto`` is the default here, since a
    reply's length is unknown until it is generated."""
    return DEFAULT_BATCH_SIZE if batch_size == "auto" else int(batch_size)


def generate(
    model: Model,
    requests: Sequence[GenerationRequest],
    decoding: Decoding,
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    cache: bool = True,
) -> list[list[Reply] | Failed]:
    """Per request, ``decoding.samples`` replies; cached replies are read, never regenerated.
    An endpoint's request that failed after its retries is ``Failed``, and is not cached."""
    return _generate_calls(model, requests, decoding, batch_size, cache, rank=0, size=1)


def fill_shard(
    model: Model,
    requests: Sequence[GenerationRequest],
    decoding: Decoding,
    batch_size: int | str,
    rank: int,
    size: int,
) -> None:
    """Cache the replies of this process's share of ``generate``'s calls (as
    ``scoring.fill_shard``); ``generate`` then reads them all back."""
    _generate_calls(model, requests, decoding, batch_size, True, rank, size)


def _generate_calls(
    model: Model,
    requests: Sequence[GenerationRequest],
    decoding: Decoding,
    batch_size: int | str,
    cache: bool,
    rank: int,
    size: int,
) -> list[list[Reply] | Failed | None]:
    keys = [reply_key(model.fingerprint, r, decoding) for r in requests]
    requests = [seeded(r, key) for r, key in zip(requests, keys, strict=True)]
    entries = [_entry(key) for key in keys]
    results: list[list[Reply] | None] = [None] * len(requests)
    if cache:
        results = [read_entry(path, "reply", lambda d: _parse(d, decoding)) for path in entries]
    if all(r is not None for r in results):
        return results
    rows = rows_per_forward(batch_size)
    calls = [
        call
        for n, (_, call) in enumerate(call_plan(requests, lambda group: rows))
        if n % size == rank and any(results[i] is None for i in call)
    ]
    todo = sum(results[i] is None for call in calls for i in call)
    with progress_bar(transient=True, disable=todo < 2) as progress:
        bar = progress.add_task("generating", total=todo)
        for call in calls:
            replies = model.generate([requests[i] for i in call], decoding, batch_size=rows)
            if len(replies) != len(call) or any(
                not isinstance(r, Failed) and len(r) != decoding.samples for r in replies
            ):
                raise RuntimeError(
                    f"model returned {len(replies)} reply lists for {len(call)} requests"
                )
            for i, sampled in zip(call, replies, strict=True):
                if results[i] is None:
                    results[i] = sampled
                    if cache and not isinstance(sampled, Failed):
                        write_entry(entries[i], json_bytes([asdict(r) for r in sampled]))
                    progress.advance(bar)
    return results
