"""The scoring engine: any ``Model`` over many requests, with an on-disk score cache and metrics.

Scores are cached one small JSON file per request under ``home()/scores/``, keyed by the model's
fingerprint and the request's content (audio by the hash of its file's bytes, not its path), so a
rerun recomputes nothing, a killed run resumes where it stopped, and a changed model or clip never
reuses a stale score. Metrics are lm-eval's ``acc`` and ``acc_norm``, ties included (``np.argmax``
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
from rich.progress import Progress

from salad_eval.home import atomic_write_text, home
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


def _load(key: str) -> list[ChoiceScore] | None:
    try:
        rows = json.loads(_entry(key).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return [ChoiceScore(**row) for row in rows]


def _store(key: str, scores: list[ChoiceScore]) -> None:
    atomic_write_text(_entry(key), json.dumps([asdict(s) for s in scores]))


def score(
    model: Model, requests: Sequence[ScoringRequest], batch_size: int = 8, cache: bool = True
) -> list[list[ChoiceScore]]:
    """Per request, one ``ChoiceScore`` per choice; cached scores are read, never recomputed."""
    results: list[list[ChoiceScore] | None] = [None] * len(requests)
    keys: list[str] = []
    if cache:
        fingerprint = model.fingerprint
        keys = [request_key(fingerprint, r) for r in requests]
        results = [_load(k) for k in keys]
    todo = [i for i, r in enumerate(results) if r is None]
    with Progress(transient=True, disable=len(todo) < 2) as progress:
        bar = progress.add_task("scoring", total=len(todo))
        for i in todo:
            (scores,) = model.score([requests[i]], batch_size=batch_size)
            if len(scores) != len(requests[i].choices):
                raise RuntimeError(
                    f"model returned {len(scores)} scores for {len(requests[i].choices)} choices"
                )
            results[i] = scores
            if cache:
                _store(keys[i], scores)
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
