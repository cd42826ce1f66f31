"""Answers by generation in a report: what the generated accuracy rests on.

Beside ``acc_gen`` (a decomposition like any metric's), a run that generates reports, per
condition, how often a reply gave no answer (the extraction rule found no letter: it counts as
wrong, so the denominator never changes) and, when it also scored by log-likelihood, how often
the generated letter is the log-likelihood argmax, and what the others were instead.
"""

from __future__ import annotations

from collections.abc import Callable

from salad_eval.gap.records import ALL_CONDITIONS


def disagreements(records: list[dict]) -> dict[str, dict[str, int]]:
    """Per condition, of the sampled replies whose letter is not the log-likelihood argmax's:
    how many gave no answer and how many another letter (``--answer both`` records)."""
    counts: dict[str, dict[str, int]] = {}
    for rec in records:
        if "agrees" not in rec:
            continue
        row = counts.setdefault(rec["condition"], {"replies": 0, "no_answer": 0, "other_letter": 0})
        row["replies"] += rec["samples"]
        row["no_answer"] += rec["no_answer"]
        row["other_letter"] += rec["samples"] - rec["agrees"] - rec["no_answer"]
    return {c: counts[c] for c in ALL_CONDITIONS if c in counts}


def generation_setup(records: list[dict]) -> dict | None:
    """The rule and decoding every generated record shares (None: no record generated)."""
    generated = [r for r in records if "rule" in r]
    if not generated:
        return None
    return {"rule": generated[0]["rule"], "decoding": generated[0]["decoding"]}


def generation_lines(results: dict, pct: Callable[[dict | None], str]) -> list[str]:
    """summary.md's section on generated answers: accuracy, no answers and agreement."""
    tables = results["metrics"]["acc_gen"]
    overall = tables["overall"]
    setup = results.get("generation") or {}
    decoding = setup.get("decoding", {})
    how = (
        "greedy"
        if not decoding.get("temperature")
        else f"sampled at temperature {decoding['temperature']}, top-p {decoding['top_p']}, "
        f"{decoding['samples']} sample(s) per item, seed {decoding['seed']}"
    )
    both = "acc" in results["metrics"]
    lines = [
        "## Answers by generation",
        "",
        f"Each model generated a reply ({how}, at most {decoding.get('max_new_tokens', '?')} "
        f"tokens) to the item as a lettered multiple-choice question (the task's `generate:` "
        f"template); rule `{setup.get('rule', '?')}` (`salad_eval/extraction.py`) extracted "
        "its letter. A reply with no letter (ambiguous, unparseable, empty, or cut off by the "
        "token limit) is a *no answer*: it counts as wrong, never as a guess, and has its own "
        "rate.",
        "",
    ]
    head = ["condition", "acc_gen", "no answer"]
    if both:
        head += ["acc (log-likelihood)", "agreement", "disagreements: no answer / other letter"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    disagree = setup.get("disagreements", {})
    for cond in results["conditions"]:
        if cond not in overall["accuracy"]:
            continue
        cells = [f"`{cond}`", pct(overall["accuracy"][cond])]
        cells.append(pct(overall.get("no_answer", {}).get(cond)))
        if both:
            cells.append(pct(results["metrics"]["acc"]["overall"]["accuracy"].get(cond)))
            cells.append(pct(overall.get("agreement", {}).get(cond)))
            row = disagree.get(cond)
            cells.append(f"{row['no_answer']} / {row['other_letter']}" if row else "–")
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for key, title in (("tasks", "task"), ("voices", "voice and acoustic condition")):
        groups = {k: t["no_answer"] for k, t in tables[key].items() if "no_answer" in t}
        if len(groups) < 2 and key == "tasks":
            continue
        conds = [c for c in results["conditions"] if any(c in g for g in groups.values())]
        lines += [f"No-answer rate by {title}:", ""]
        lines += ["| " + " | ".join([title, *conds]) + " |", "|" + "---|" * (len(conds) + 1)]
        for name, rates in groups.items():
            lines.append(
                "| " + " | ".join([f"`{name}`", *(pct(rates.get(c)) for c in conds)]) + " |"
            )
        lines.append("")
    return lines
