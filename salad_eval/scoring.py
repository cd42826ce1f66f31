"""The scoring engine: any ``Model`` over many requests, with an on-disk score cache and metrics.

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
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from salad_eval.home import BadEntry, checked_float, home, json_bytes, read_entry, write_entry
from salad_eval.progress import progress_bar
from salad_eval.prompt import Audio, ChoiceScore, Model, ScoringRequest

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
        if s.logprob > 1e-4 or not isinstance(s.is_greedy, bool) or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0
            for n in (s.n_tokens, s.n_chars)
        ):
            raise BadEntry(f"invalid score {s}")
    return scores


def score(
    model: Model, requests: Sequence[ScoringRequest], batch_size: int = 8, cache: bool = True
) -> list[list[ChoiceScore]]:
    """Per request, one ``ChoiceScore`` per choice; cached scores are read, never recomputed."""
    results: list[list[ChoiceScore] | None] = [None] * len(requests)
    entries: list[Path] = []
    if cache:
        fingerprint = model.fingerprint
        entries = [_entry(request_key(fingerprint, r)) for r in requests]
        results = [read_entry(path, "score", lambda data, r=r: _parse(data, len(r.choices)))
                   for path, r in zip(entries, requests, strict=True)]  # fmt: skip
    todo = [i for i, r in enumerate(results) if r is None]
    with progress_bar(transient=True, disable=len(todo) < 2) as progress:
        bar = progress.add_task("scoring", total=len(todo))
        for i in todo:
            (scores,) = model.score([requests[i]], batch_size=batch_size)
            if len(scores) != len(requests[i].choices):
                raise RuntimeError(
                    f"model returned {len(scores)} scores for {len(requests[i].choices)} choices"
                )
            results[i] = scores
            if cache:
                write_entry(entries[i], json_bytes([asdict(s) for s in scores]))
            progress.advance(bar)
    return [r for r in results if r is not None]


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
