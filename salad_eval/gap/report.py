"""From per-item records to a finished run report: results.json, summary.md and plots.

This is the public entry point of the analysis: the runner scores the conditions and hands the
records here; nothing below touches a model.
"""

from __future__ import annotations

import json
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.gap.answers import disagreements, generation_setup
from salad_eval.gap.controls import verdict
from salad_eval.gap.decompose import condition_rates, decompose
from salad_eval.gap.plots import plot_run
from salad_eval.gap.records import (
    METRICS,
    RATES,
    build_strata,
    check_records,
    metrics_of,
    select,
)
from salad_eval.gap.robustness import robustness_rows
from salad_eval.gap.significance import mcnemar_tests
from salad_eval.gap.summary import render_summary
from salad_eval.home import atomic_write_text
from salad_eval.speech.voices import exposure
from salad_eval.stats import CI_LEVEL

CONDITION_MEANINGS = {
    "text@base": "the original text LLM reads the question as text",
    "text@speech": "the speech LLM reads the same text",
    "speech@speech": "the speech LLM hears the question spoken",
    "speech@cascade": "ASR transcribes the spoken question, the original text LLM reads it",
    "speech@speech:silent": "control: the speech LLM hears silence of the same length",
    "speech@speech:shuffled": "control: the speech LLM hears another item's audio",
}


def _group(records: list[dict], metric: str, n_boot: int, seed: int) -> dict | None:
    strata = build_strata(records, metric)
    if not strata:
        return None
    table = decompose(strata, n_boot, seed)
    if metric == "acc_gen":  # what the generated accuracy rests on, condition by condition
        for rate, field in RATES.items():
            if all(field in r for r in records):
                table[rate] = condition_rates(build_strata(records, rate), n_boot, seed)
    return table


def _tables(records: list[dict], metric: str, n_boot: int, seed: int) -> dict:
    """Every decomposition table, the McNemar tests and the controls verdict for one metric."""
    overall = _group(records, metric, n_boot, seed)
    if overall is None:
        raise SaladError(
            "no item was scored under text@base, text@speech and speech@speech together; "
            "rerun `salad-eval gap` so that all three conditions finish"
        )

    def by(key: str) -> dict:
        parts: dict[str, list[dict]] = {}
        for rec in records:
            parts.setdefault(rec[key], []).append(rec)
        parts.pop(None, None)
        if key == "voice":  # a voice's group keeps the text rows, which every voice shares
            parts = {v: select(records, voice=v) for v in parts}
        tables = {k: _group(recs, metric, n_boot, seed) for k, recs in sorted(parts.items())}
        return {k: t for k, t in tables.items() if t is not None}

    voices = by("voice")
    tests = mcnemar_tests(records, metric)
    for task in sorted({r["task"] for r in records}):
        tests += mcnemar_tests(select(records, task=task), metric, scope=task)
    return {
        "overall": overall,
        "tasks": by("task"),
        "domains": by("domain"),
        "voices": voices,
        "mcnemar": tests,
        "controls": verdict(voices, [t for t in tests if t["scope"] == "all"]),
    }


def _exposure(voices: list[str], training: dict | None) -> dict[str, str] | None:
    """Per evaluation voice, whether training heard it (None: the training voices are unknown)."""
    if not training or "voices" not in training:
        return None
    return {v: exposure(v, training["voices"]) for v in voices}


def analyse(
    records: list[dict],
    manifest: dict,
    metric: str = "acc",
    n_boot: int = 1000,
    seed: int = 0,
    corpus_divergence: dict | None = None,
) -> dict:
    """The content of results.json: every figure for both metrics; ``metric`` leads the report.

    ``corpus_divergence``: the run's corpus F and M (``salad_eval.corpus_divergence``), figures
    of the model rather than of the items, kept beside them as ``corpus_divergence``."""
    if metric not in METRICS:
        raise SaladError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if n_boot < 1:
        raise SaladError("n_boot must be at least 1 bootstrap resample; 1000 is the default")
    check_records(records)
    present = metrics_of(records)
    if metric not in present:
        raise SaladError(
            f"metric {metric} is not in these records (they hold {', '.join(present)}); "
            f"acc_gen needs --answer generate or both, acc and acc_norm --answer loglik or both"
        )
    voices = sorted({r["voice"] for r in records if r["voice"] is not None})
    metrics = {m: _tables(records, m, n_boot, seed) for m in present}
    return {
        "metric": metric,
        "ci_level": CI_LEVEL,
        "n_boot": n_boot,
        "seed": seed,
        "conditions": {
            c: CONDITION_MEANINGS[c]
            for c in CONDITION_MEANINGS
            if any(r["condition"] == c for r in records)
        },
        "tasks": sorted({r["task"] for r in records}),
        "voices": voices,
        "voice_exposure": _exposure(voices, manifest.get("training")),
        "n_items": metrics[metric]["overall"]["n_items"],
        "metrics": metrics,
        "controls": metrics[metric]["controls"],
        "robustness": robustness_rows(metrics[metric]["voices"], metrics[metric]["controls"]),
        "generation": None
        if "acc_gen" not in present
        else {**generation_setup(records), "disagreements": disagreements(records)},
        "corpus_divergence": {k: v for k, v in (corpus_divergence or {}).items() if k in ("F", "M")}
        or None,
        "corpus_documents": (corpus_divergence or {}).get("documents"),
        "manifest": manifest,
    }


def write_report(
    run_dir: Path,
    records: list[dict],
    manifest: dict,
    metric: str = "acc",
    n_boot: int = 1000,
    seed: int = 0,
    corpus_divergence: dict | None = None,
) -> dict:
    """Write results.json, summary.md and the PNG plots into ``run_dir``; return the results."""
    results = analyse(records, manifest, metric, n_boot, seed, corpus_divergence)
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    plots = plot_run(results, run_dir)
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=1) + "\n")
    atomic_write_text(run_dir / "summary.md", render_summary(results, plots))
    return results
