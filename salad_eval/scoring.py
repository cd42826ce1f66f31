"""The scoring engine: any ``Model`` over many requests, with an on-disk score cache and metrics.

Requests reach the model many per call, so adapters batch across items (``score_contexts``).
Scores are cached one small JSON file per request under ``home()/scores/``, keyed by the model's
fingerprint and the request's content (audio by the hash of its file's bytes, not its path), so a
rerun recomputes nothing, a killed run resumes where it stopped, and a changed model or clip never
reuses a stale score. Each entry is sealed and validated when read (``home.cached_entry``): a bad
one is rescored. Metrics are lm-eval's ``acc`` and ``acc_norm``, ties included (``np.argmax``
picks the first maximum).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from salad_eval.errors import SaladError
from salad_eval.home import BadEntry, checked_float, home, json_bytes, read_entry, write_entry
from salad_eval.progress import progress_bar
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Failed,
    GenerationRequest,
    Model,
    ScoringRequest,
)

DEFAULT_BATCH_SIZE = 8  # rows per forward pass, on a CPU and where ``auto`` has no finder
CALL_BATCHES = 8  # batches of requests handed to a model per call (and cached together)

_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_hash(path: str | Path) -> str:
    """blake2b of a file's bytes, memoized per (path, size, mtime) within the process."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.blake2b(digest_size=16)
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def request_key(fingerprint: str, request: ScoringRequest) -> str:
    """A content hash of (model, prompt, choices); audio counts by its bytes only."""
    prompt = [
        ["audio", file_hash(seg.path)] if isinstance(seg, Audio) else ["text", seg.text]
        for seg in request.prompt
    ]
    payload = json.dumps([fingerprint, prompt, list(request.choices)], ensure_ascii=False)
    return hashlib.blake2b(payload.encode("utf-8"), digest_size=20).hexdigest()


def _entry(key: str) -> Path:
    return home() / "scores" / key[:2] / f"{key}.json"


def _parse(data: bytes, n_choices: int) -> list[ChoiceScore]:
    """A cached score entry: one valid ``ChoiceScore`` per choice."""
    rows = json.loads(data)
    if not isinstance(rows, list) or len(rows) != n_choices:
        raise BadEntry(f"expected {n_choices} scores")
    scores = [ChoiceScore(**row) for row in rows]
    for s in scores:
        checked_float(s.logprob)
        if (
            s.logprob > 1e-4
            or not isinstance(s.is_greedy, bool)
            or not all(
                isinstance(n, int) and not isinstance(n, bool) and n >= 0
                for n in (s.n_tokens, s.n_chars)
            )
        ):
            raise BadEntry(f"invalid score {s}")
    return scores


def request_size(request: ScoringRequest | GenerationRequest) -> int:
    """A cheap stand-in for a request's length in positions: characters of its text and of its
    choices (if any), plus its audio files' bytes / 256 (about 8 per second of 16 kHz audio)."""
    size = sum(len(choice) for choice in getattr(request, "choices", ()))
    for seg in request.prompt:
        size += os.stat(seg.path).st_size // 256 if isinstance(seg, Audio) else len(seg.text)
    return size


def resolve_batch_size(
    model: Model, requests: Sequence[ScoringRequest], batch_size: int | str
) -> int:
    """``batch_size`` as rows per forward: an int >= 1 as given, or ``"auto"``: what the model's
    ``auto_batch_size(requests)`` finds (the largest that fits on its GPU), else the default."""
    if batch_size == "auto":
        finder = getattr(model, "auto_batch_size", None)
        return finder(requests) if finder is not None and requests else DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise SaladError(f"batch size must be an integer >= 1 or 'auto', got {batch_size!r}")
    return batch_size


def score(
    model: Model,
    requests: Sequence[ScoringRequest],
    batch_size: int | str = DEFAULT_BATCH_SIZE,
    cache: bool = True,
) -> list[list[ChoiceScore] | Failed]:
    """Per request, one ``ChoiceScore`` per choice; cached scores are read, never recomputed.
    An endpoint's request that failed after its retries is ``Failed``, and is not cached.

    The model gets ``CALL_BATCHES`` batches' worth of requests per call and batches across them.
    Calls are cut from all requests in one fixed order (longest first, by ``request_size``), not
    from the missing ones, and a call with any score missing is scored whole: its requests batch
    together the same way whatever the cache holds, so a killed run resumes to the same bits as
    an uninterrupted one.
    """
    return _score_calls(model, requests, batch_size, cache, rank=0, size=1)


def fill_shard(
    model: Model,
    requests: Sequence[ScoringRequest],
    batch_size: int | str,
    rank: int,
    size: int,
) -> None:
    """Cache the scores of this process's share of ``score``'s calls (every ``size``-th, from
    ``rank``): the calls are those of one process, so sharded scores equal unsharded ones bit
    for bit; ``score`` then reads them all back."""
    _score_calls(model, requests, batch_size, True, rank, size)


def call_plan(
    requests: Sequence[ScoringRequest | GenerationRequest], rows_of: Callable[[list], int]
) -> list[tuple[int, list[int]]]:
    """(rows per forward, request indices) of every model call, from all requests (so a resumed
    run makes the same calls); ``rows_of(group)`` is a group's rows per forward. All-text
    requests and spoken ones are cut apart: a text prompt batches with the same neighbours in a
    speech LLM's run as in its text LLM's, so an untouched LLM still gives ``text@speech ==
    text@base`` bit for bit."""
    calls = []
    for spoken in (False, True):
        group = [
            i
            for i, r in enumerate(requests)
            if any(isinstance(seg, Audio) for seg in r.prompt) == spoken
        ]
        if not group:
            continue
        rows = rows_of([requests[i] for i in group])
        group.sort(key=lambda i: -request_size(requests[i]))  # stable: ties keep input order
        per_call = rows * CALL_BATCHES
        calls += [(rows, group[s : s + per_call]) for s in range(0, len(group), per_call)]
    return calls


def _score_calls(
    model: Model,
    requests: Sequence[ScoringRequest],
    batch_size: int | str,
    cache: bool,
    rank: int,
    size: int,
) -> list[list[ChoiceScore] | Failed | None]:
    results: list[list[ChoiceScore] | Failed | None] = [None] * len(requests)
    entries: list[Path] = []
    if cache:
        fingerprint = model.fingerprint
        entries = [_entry(request_key(fingerprint, r)) for r in requests]
        results = [
            read_entry(path, "score", lambda data, r=r: _parse(data, len(r.choices)))
            for path, r in zip(entries, requests, strict=True)
        ]
    if all(r is not None for r in results):
        return results
    calls = [
        (rows, call)
        for n, (rows, call) in enumerate(
            call_plan(requests, lambda group: resolve_batch_size(model, group, batch_size))
        )
        if n % size == rank and any(results[i] is None for i in call)
    ]
    todo = sum(results[i] is None for _, call in calls for i in call)
    with progress_bar(transient=True, disable=todo < 2) as progress:
        bar = progress.add_task("scoring", total=todo)
        for rows, call in calls:
            scored = model.score([requests[i] for i in call], batch_size=rows)
            if len(scored) != len(call):
                raise RuntimeError(f"model returned {len(scored)} rows for {len(call)} requests")
            for i, scores in zip(call, scored, strict=True):
                if isinstance(scores, Failed):  # asked again by the next run
                    results[i] = scores
                    progress.advance(bar)
                    continue
                if len(scores) != len(requests[i].choices):
                    raise RuntimeError(
                        f"model returned {len(scores)} scores for {len(requests[i].choices)} "
                        "choices"
                    )
                if results[i] is None:
                    results[i] = scores
                    if cache:
                        write_entry(entries[i], json_bytes([asdict(s) for s in scores]))
                    progress.advance(bar)
    return results


def item_metrics(
    scores: Sequence[ChoiceScore], target: int, choices: Sequence[str], delimiter: str = " "
) -> dict[str, float]:
    """lm-eval's ``acc`` and ``acc_norm`` for one item.

    ``choices`` are the continuation texts (``Item.choices``) and ``delimiter`` the task's target
    delimiter that starts each of them: as in lm-eval, ``acc_norm`` divides each log-prob by the
    length in characters of the choice without it.
    """
    lls = np.array([s.logprob for s in scores])
    lengths = np.array([float(len(c.removeprefix(delimiter))) for c in choices])
    return {
        "acc": float(np.argmax(lls) == target),
        "acc_norm": float(np.argmax(lls / lengths) == target),
    }


class Shard:
    """Which requests this process scores (all of them without ``accelerate launch``)."""

    def __init__(self) -> None:
        self.rank, self.size, self._state = 0, 1, None
        try:
            from accelerate import PartialState  # noqa: PLC0415 - deferred: heavy library, only when sharding

            state = PartialState(cpu=True)
            if state.num_processes > 1:
                self.rank, self.size, self._state = state.process_index, state.num_processes, state
        except (ImportError, RuntimeError, ValueError):
            pass

    @property
    def main(self) -> bool:
        return self.rank == 0

    def take(self, n: int) -> list[int]:
        return list(range(self.rank, n, self.size))

    def wait(self) -> None:
        if self._state is not None:
            self._state.wait_for_everyone()
