"""Per-item records (one per item x condition x voice) -> paired score arrays per task.

A record is one line of ``items.jsonl``. The decomposition only uses items scored in all three
conditions it needs (``text@base``, ``text@speech``, ``speech@speech``), so every figure of one
decomposition rests on the same items. With several voices, a speech condition scores an item by
the fraction of its voices answered correctly (and a generated answer by the fraction of its
sampled replies); scores are kept as integers (correct counts scaled to a common number of voices
and samples per task) so that sums and differences stay exact.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from math import fsum, lcm

import numpy as np

from salad_eval.conditions import CONDITIONS, CONTROLS
from salad_eval.errors import SaladError

ALL_CONDITIONS = CONDITIONS + CONTROLS
CORE = ("text@base", "text@speech", "speech@speech")
TEXT_ONLY = ("text@base", "text@speech")
METRICS = {"acc": "correct", "acc_norm": "correct_norm", "acc_gen": "correct_gen"}
# rates counted like an accuracy, item by item, beside acc_gen: replies with no answer, and
# (``--answer both``) replies whose letter is the log-likelihood argmax's
RATES = {"no_answer": "no_answer", "agreement": "agrees"}
# per-sample counts (of ``samples`` replies each) rather than one bool per record
SAMPLED = {"correct_gen", "no_answer", "agrees"}
# per-item real values carried by some rows: the answer-token KL of each item (a diagnostic; the
# reported F and M are corpus_divergence's), base vs speech LLM on text and text vs speech, and
# the cascade's ASR WER
VALUES = {
    "answer_F": ("text@speech", "answer_kl"),
    "answer_M": ("speech@speech", "answer_kl"),
    "wer": ("speech@cascade", "wer"),
}
_REQUIRED = ("task", "item", "domain", "condition", "voice")


@dataclass(frozen=True)
class Stratum:
    """One task's items in paired arrays, indexed like ``items``.

    ``scores[c][i]`` is item i's correct count under condition c, scaled so that ``scale`` means
    all voices correct; ``present[c][i]`` says whether item i was scored under c at all.
    """

    task: str
    items: tuple[str, ...]
    scale: int
    scores: dict[str, np.ndarray]
    present: dict[str, np.ndarray]
    values: dict[str, np.ndarray]  # VALUES: per-item means over voices, NaN if absent


def check_records(records: list[dict]) -> None:
    """Raise a one-line SaladError on the first record that breaks the items.jsonl schema."""
    if not records:
        raise SaladError("no item records to analyse; run `salad-eval gap` first or check --limit")
    seen = set()
    for n, rec in enumerate(records, 1):
        missing = [key for key in _REQUIRED if key not in rec]
        if missing or not any(field in rec for field in METRICS.values()):
            missing = missing or ["correct (or correct_gen)"]
            raise SaladError(f"record {n} lacks {', '.join(missing)}; items.jsonl is not a gap run")
        cond = rec["condition"]
        if cond not in ALL_CONDITIONS:
            raise SaladError(
                f"record {n} has unknown condition {cond!r}; expected one of {ALL_CONDITIONS}"
            )
        if (cond in TEXT_ONLY) != (rec["voice"] is None):
            raise SaladError(f"record {n}: {cond} rows must have voice null exactly when text-only")
        key = (rec["task"], rec["item"], cond, rec["voice"])
        if key in seen:
            raise SaladError(f"record {n} repeats {key}; merge duplicate runs before reporting")
        seen.add(key)


def select(
    records: Iterable[dict],
    task: str | None = None,
    domain: str | None = None,
    voice: str | None = None,
) -> list[dict]:
    """The records of one group; a voice keeps the text rows, which do not depend on voice."""
    return [
        rec
        for rec in records
        if (task is None or rec["task"] == task)
        and (domain is None or rec["domain"] == domain)
        and (voice is None or rec["voice"] in (None, voice))
    ]


def metrics_of(records: Iterable[dict]) -> list[str]:
    """The metrics every record carries (acc and acc_norm by log-likelihood, acc_gen by
    generation)."""
    records = list(records)
    return [m for m, field in METRICS.items() if all(field in r for r in records)]


def count(rec: dict, field: str) -> tuple[int, int]:
    """(successes, trials) of a record: a bool of one trial, or a count of ``samples``."""
    if field in SAMPLED:
        return int(rec[field]), int(rec["samples"])
    return int(bool(rec[field])), 1


def right(rec: dict, field: str) -> bool:
    """A record right or wrong, for tests on binary outcomes (McNemar): a sampled generation
    record counts as right when most of its samples are."""
    successes, trials = count(rec, field)
    return 2 * successes > trials


def build_strata(records: Iterable[dict], metric: str) -> list[Stratum]:
    """Paired arrays per task (sorted), keeping the items scored in all of ``CORE``; ``metric``
    is one of ``METRICS`` or ``RATES``."""
    field = METRICS.get(metric) or RATES[metric]
    rows: dict[tuple[str, str], dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        rows[rec["task"], rec["item"]][rec["condition"]].append(rec)
    by_task: dict[str, list[tuple[str, dict[str, list[dict]]]]] = defaultdict(list)
    for (task, item), conds in sorted(rows.items()):
        if all(cond in conds for cond in CORE):
            by_task[task].append((item, conds))
    strata = []
    for task, items in sorted(by_task.items()):
        scale = lcm(*(len(r) * count(r[0], field)[1] for _, conds in items for r in conds.values()))
        n = len(items)
        scores = {c: np.zeros(n, dtype=np.int64) for c in ALL_CONDITIONS}
        present = {c: np.zeros(n, dtype=bool) for c in ALL_CONDITIONS}
        values = {name: np.full(n, np.nan) for name in VALUES}
        for i, (_, conds) in enumerate(items):
            for cond, recs in conds.items():
                trials = len(recs) * count(recs[0], field)[1]
                scores[cond][i] = sum(count(r, field)[0] for r in recs) * (scale // trials)
                present[cond][i] = True
            for name, (cond, key) in VALUES.items():
                vals = [r[key] for r in conds.get(cond, ()) if r.get(key) is not None]
                if vals:
                    values[name][i] = fsum(vals) / len(vals)  # fsum: the same in any row order
        strata.append(
            Stratum(task, tuple(item for item, _ in items), scale, scores, present, values)
        )
    return strata
