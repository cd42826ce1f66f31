"""Paired comparison of two runs (two models) on the items they have in common.

Two runs are paired item by item: the same task and item id and, for a speech condition, the
same voice. An item's speech score is the mean over the voices both runs scored it in (as the gap
report averages over voices). For every condition both runs have (and their gap, text@base -
speech@speech), per task and over all tasks (each task weighs the same, as in the gap report):

- ``b - a``, the difference of accuracies, with a paired bootstrap 95% CI: items are resampled
  within each task, the same resampled items for both runs and every condition, seeded
  (``stats.resample_indices``), so the result is deterministic;
- an exact McNemar test on per-item correctness. A text condition has one right/wrong pair per
  item; a speech condition one per (item, voice) both runs scored, so with several voices the
  test counts (item, voice) pairs. One item's voices are correlated, so with several voices the
  p-value is optimistic (the bootstrap CI, over items, is not). The gap is not a right/wrong
  outcome: no McNemar;
- a paired sign-flip (randomization) test over items, for every condition and the gap: each
  item's b - a (its mean over voices) keeps or flips its sign at random, ``SIGN_FLIPS`` times,
  seeded; p is the share of flips whose b - a (tasks weighing the same, as above) is at least as
  far from 0 as the observed one, counting the observed itself. The item is the unit, so it holds
  with any number of voices (or seeds) per item; with one voice it is McNemar's test, drawn.

Accuracies here are on the common items (and voices) only, so they can differ from each run's own
report when the runs scored different items or voices.
"""

from __future__ import annotations

import json
from math import lcm
from pathlib import Path

import numpy as np

from salad_eval.errors import SaladError
from salad_eval.gap.decompose import indices, rate_figure
from salad_eval.gap.records import METRICS, VALUES, Stratum, check_records, right
from salad_eval.stats import mcnemar_exact, paired_swap_test

CONDITIONS = ("text@base", "text@speech", "speech@speech", "speech@cascade")
SIGN_FLIPS = 10_000  # p resolves to 1e-4
GAP = "gap"
ALL = "all tasks"


def load_items(run_dir: Path) -> list[dict] | None:
    """A run's per-item records (``items.jsonl``), checked; None if the run has none."""
    path = Path(run_dir) / "items.jsonl"
    if not path.is_file():
        return None
    try:
        records = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except (UnicodeDecodeError, ValueError):
        raise SaladError(f"{path} is not JSON lines; rerun the gap run that wrote it") from None
    if not all(isinstance(r, dict) for r in records):
        raise SaladError(f"{path} is not a list of item records; rerun the gap run that wrote it")
    try:
        check_records(records)
    except SaladError as err:
        raise SaladError(f"{path}: {err}") from None
    return records


def _index(records: list[dict], field: str) -> tuple[dict, dict]:
    """{(task, item): {condition: {voice: correct}}} and {(task, item): (target, n choices)}."""
    outcomes: dict = {}
    shape: dict = {}
    for r in records:
        key = (r["task"], r["item"])
        outcomes.setdefault(key, {}).setdefault(r["condition"], {})[r["voice"]] = right(r, field)
        if "target" in r or "logprobs" in r:  # a generated answer has no per-choice scores
            shape.setdefault(
                key, (r.get("target"), len(r["logprobs"]) if "logprobs" in r else None)
            )
    return outcomes, shape


def _check_same_items(a: str, b: str, common: list, shape_a: dict, shape_b: dict) -> None:
    """The records carry no text, but an item's target and number of choices must agree."""
    for key in common:
        if key not in shape_a or key not in shape_b:
            continue
        (ta, na), (tb, nb) = shape_a[key], shape_b[key]
        if ta != tb or None not in (na, nb) and na != nb:
            raise SaladError(
                f"item {key[1]!r} of task {key[0]} differs between runs {a} and {b} (target "
                f"{ta} of {na} choices vs {tb} of {nb}); compare runs of the same task version"
            )


def _strata(common: list, out_a: dict, out_b: dict) -> tuple[list[Stratum], dict]:
    """One stratum per task; scores keyed ``"a <condition>"`` / ``"b <condition>"``.

    Also returns the McNemar pairs: {(task, condition): [(a right, b right), ...]}.
    """
    by_task: dict[str, list[str]] = {}
    for task, item in common:
        by_task.setdefault(task, []).append(item)
    strata, pairs = [], {}
    for task, items in sorted(by_task.items()):
        voices = {}  # (item, condition) -> the voices both runs scored
        for item in items:
            conds_a, conds_b = out_a[task, item], out_b[task, item]
            for cond in CONDITIONS:
                shared = set(conds_a.get(cond, ())) & set(conds_b.get(cond, ()))
                if shared:
                    voices[item, cond] = sorted(shared, key=str)
        scale = lcm(1, *(len(v) for v in voices.values()))
        n = len(items)
        names = [f"{run} {c}" for run in "ab" for c in (*CONDITIONS, GAP)]
        scores = {name: np.zeros(n, dtype=np.int64) for name in names}
        present = {name: np.zeros(n, dtype=bool) for name in names}
        for i, item in enumerate(items):
            for cond in CONDITIONS:
                if (item, cond) not in voices:
                    continue
                shared = voices[item, cond]
                for run, outcome in (("a", out_a[task, item]), ("b", out_b[task, item])):
                    right = sum(outcome[cond][v] for v in shared)
                    scores[f"{run} {cond}"][i] = right * (scale // len(shared))
                    present[f"{run} {cond}"][i] = True
                pairs.setdefault((task, cond), []).extend(
                    (out_a[task, item][cond][v], out_b[task, item][cond][v]) for v in shared
                )
            if (item, "text@base") in voices and (item, "speech@speech") in voices:
                for run in "ab":
                    scores[f"{run} {GAP}"][i] = (
                        scores[f"{run} text@base"][i] - scores[f"{run} speech@speech"][i]
                    )
                    present[f"{run} {GAP}"][i] = True
        strata.append(Stratum(task, tuple(items), scale, scores, present, {}))
    return strata, pairs


def sign_flip_p(strata: list[Stratum], name: str, flips: int = SIGN_FLIPS, seed: int = 0) -> float:
    """Two-sided paired sign-flip p of ``b <name>`` - ``a <name>`` over the strata's items."""
    diffs = []
    for s in strata:
        both = s.present[f"a {name}"] & s.present[f"b {name}"]
        if both.any():
            d = (s.scores[f"b {name}"][both] - s.scores[f"a {name}"][both]) / s.scale
            diffs.append((d[d != 0], both.sum()))  # a tie flips to itself
    if not diffs:  # no item scored by both runs: nothing to test
        return 1.0
    observed = np.mean([d.sum() / n for d, n in diffs])
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, flips, 1000):  # chunks keep a paper-scale task in memory
        drawn = np.zeros(min(1000, flips - start))
        for d, n in diffs:
            signs = rng.integers(0, 2, size=(drawn.size, d.size)) * 2 - 1
            drawn += signs @ d / n
        hits += int(np.sum(np.abs(drawn / len(diffs)) >= abs(observed) - 1e-12))
    return (1 + hits) / (1 + flips)


def _rows(strata, idxs, pairs, label: str, seed: int) -> list[dict]:
    rows = []
    for cond in (*CONDITIONS, GAP):
        diff = rate_figure(strata, idxs, f"b {cond}", f"a {cond}")
        if diff is None:
            continue
        fig_a, fig_b = (rate_figure(strata, idxs, f"{run} {cond}")[0] for run in "ab")
        row = {
            "task": label,
            "condition": cond,
            "n_items": diff[0].n,
            "a_value": fig_a.value,
            "b_value": fig_b.value,
            "diff": diff[0].to_dict(),
            "n_pairs": None,
            "b_right_a_wrong": None,
            "a_right_b_wrong": None,
            "p_value": None,
            "p_items": sign_flip_p(strata, cond, seed=seed),
        }
        if cond != GAP:
            found = [p for s in strata for p in pairs.get((s.task, cond), ())]
            b01 = sum(b and not a for a, b in found)
            b10 = sum(a and not b for a, b in found)
            row |= {
                "n_pairs": len(found),
                "b_right_a_wrong": b01,
                "a_right_b_wrong": b10,
                "p_value": mcnemar_exact(b01, b10),
            }
        rows.append(row)
    return rows


def paired_rows(
    a: str,
    records_a: list[dict],
    b: str,
    records_b: list[dict],
    metric: str = "acc",
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Rows of ``b`` against ``a`` (``b - a``) per task and over all tasks, per condition."""
    if metric not in METRICS:
        raise SaladError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    out_a, shape_a = _index(records_a, METRICS[metric])
    out_b, shape_b = _index(records_b, METRICS[metric])
    common = sorted(set(out_a) & set(out_b))
    if not common:
        raise SaladError(
            f"runs {a} and {b} share no item (same task and item id); compare runs of the same "
            "tasks"
        )
    _check_same_items(a, b, common, shape_a, shape_b)
    strata, pairs = _strata(common, out_a, out_b)
    idxs = indices(strata, n_boot, seed)
    rows = []
    for stratum, idx in zip(strata, idxs, strict=True):
        rows += _rows([stratum], [idx], pairs, stratum.task, seed)
    rows += _rows(strata, idxs, pairs, ALL, seed)
    if not rows:
        raise SaladError(
            f"runs {a} and {b} share items but no condition and voice on them; compare runs "
            "scored with the same voices"
        )
    return [{"a": a, "b": b, "metric": metric, **row} for row in rows]


def paired_comparison(
    runs: dict[str, tuple[dict, list[dict] | None]],
    pairs: list[tuple[str, str]],
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[list[dict], list[str]]:
    """Rows for each ``(a, b)`` of ``pairs``; ``runs`` maps a name to (results.json, records).

    A pair uses the headline metric of its baseline ``a``. A run without ``items.jsonl``, or a
    pair of runs of different tasks (side by side in the report all the same), is left out, with
    a note saying so.
    """
    rows, notes = [], []
    missing = [name for name, (_, records) in runs.items() if records is None]
    if missing and any(a in missing or b in missing for a, b in pairs):
        notes.append(
            "No `items.jsonl` in "
            + ", ".join(missing)
            + ": no paired comparison with "
            + ("it." if len(missing) == 1 else "them.")
        )
    for a, b in pairs:
        (res_a, rec_a), (res_b, rec_b) = runs[a], runs[b]
        if rec_a is None or rec_b is None:
            continue
        if not {(r["task"], r["item"]) for r in rec_a} & {(r["task"], r["item"]) for r in rec_b}:
            notes.append(f"{a} and {b} share no item: no paired comparison of them.")
            continue
        metric = res_a["metric"]
        if metric not in res_b["metrics"]:
            notes.append(f"{b} has no {metric} ({a}'s headline): no paired comparison of them.")
            continue
        if res_b["metric"] != metric:
            notes.append(f"{b} leads with {res_b['metric']}; paired against {a} on {metric}.")
        rows += paired_rows(a, rec_a, b, rec_b, metric, n_boot, seed)
    return rows, notes


def _value(row: dict, key: str) -> str:
    return f"{100 * row[key]:.1f}"


def paired_markdown(rows: list[dict]) -> str:
    """The "Paired comparison" table (empty string when there are no rows)."""
    if not rows:
        return ""
    head = [
        "a",
        "b",
        "task",
        "condition",
        "items in common",
        "a acc",
        "b acc",
        "b - a [95% CI]",
        "b right / a wrong",
        "a right / b wrong",
        "McNemar p",
        "sign-flip p (items)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        d = r["diff"]
        mcnemar = (
            ["–"] * 3
            if r["p_value"] is None
            else [str(r["b_right_a_wrong"]), str(r["a_right_b_wrong"]), f"{r['p_value']:.3g}"]
        )
        cells = [
            r["a"],
            r["b"],
            r["task"],
            r["condition"],
            str(r["n_items"]),
            _value(r, "a_value"),
            _value(r, "b_value"),
            f"{100 * d['value']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]",
            *mcnemar,
            f"{r['p_items']:.3g}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_note(who: str = "Each other run (b) against the first (a)") -> str:
    """What the paired table shows, in one paragraph; ``who`` names the pairs."""
    return (
        f"{who} on the items both scored (same task, item and, for speech, voice; an item's "
        "speech score is the mean over the common voices). b - a in points with a paired "
        "bootstrap 95% CI over items; the gap rows hold each run's gap (text@base - "
        "speech@speech). Exact McNemar on right/wrong pairs: one per item for text, one per "
        "(item, voice) for speech (with several voices these pairs are not independent, so p is "
        "then optimistic). The sign-flip p is a paired randomization test over items "
        f"({SIGN_FLIPS} flips, seeded): valid with any number of voices, and for the gap."
    )


def _answer_kl(records: list[dict], condition: str) -> dict:
    """{(task, item): {voice: answer_kl}} of one condition's rows that carry it."""
    out: dict = {}
    for r in records:
        if r["condition"] == condition and isinstance(r.get("answer_kl"), (int, float)):
            out.setdefault((r["task"], r["item"]), {})[r["voice"]] = float(r["answer_kl"])
    return out


def paired_divergences(
    a: str, runs: dict[str, tuple[dict, list[dict] | None]], b: str, seed: int = 0
) -> list[dict]:
    """b against a on the divergences, paired by unit (``stats.paired_swap_test``): corpus M per
    document (both runs' ``corpus_documents``, same documents in the same order: the caller has
    checked the setups match) and the per-item answer KL (answer M: speech@speech, answer F:
    text@speech) per item, its mean over the voices both runs scored it in."""
    (res_a, rec_a), (res_b, rec_b) = runs[a], runs[b]
    rows = []
    docs_a, docs_b = res_a.get("corpus_documents"), res_b.get("corpus_documents")
    if docs_a and docs_b and len(docs_a) == len(docs_b):
        test = paired_swap_test(
            [d["m_sum"] for d in docs_a],
            [d["m_sum"] for d in docs_b],
            [d["m_tokens"] for d in docs_a],
            [d["m_tokens"] for d in docs_b],
            seed=seed,
        )
        if test["diff"] is not None:
            rows.append({"a": a, "b": b, "figure": "corpus M", "unit": "document", **test})
    for name, (condition, _) in (
        ("answer M", VALUES["answer_M"]),
        ("answer F", VALUES["answer_F"]),
    ):
        if rec_a is None or rec_b is None:
            break
        kl_a, kl_b = _answer_kl(rec_a, condition), _answer_kl(rec_b, condition)
        pairs = []
        for key in sorted(set(kl_a) & set(kl_b)):
            voices = set(kl_a[key]) & set(kl_b[key])
            if voices:
                pairs.append(
                    (
                        np.mean([kl_a[key][v] for v in voices]),
                        np.mean([kl_b[key][v] for v in voices]),
                    )
                )
        if pairs:
            test = paired_swap_test([p[0] for p in pairs], [p[1] for p in pairs], seed=seed)
            rows.append({"a": a, "b": b, "figure": name, "unit": "item", **test})
    return rows


def divergences_markdown(rows: list[dict]) -> str:
    """The paired divergence table (empty string when there are no rows)."""
    if not rows:
        return ""
    note = (
        "Divergences, b against a, paired by document (corpus M: KL summed over each "
        "document's tokens, pooled per token) or by item (answer KL, its mean over the common "
        "voices): b - a with a paired bootstrap 95% CI over those units, and a paired swap p "
        "(each unit's two values swapped at random, 10,000 times, seeded)."
    )
    lines = [
        note,
        "",
        "| a | b | figure | paired by | n | a | b | b - a [95% CI] | swap p |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['a']} | {r['b']} | {r['figure']} | {r['unit']} | {r['n']} | {r['a_value']:.4g} "
            f"| {r['b_value']:.4g} | {r['diff']:+.4g} [{r['ci_low']:+.4g}, {r['ci_high']:+.4g}] "
            f"| {r['p']:.3g} |"
        )
    return "\n".join(lines)
