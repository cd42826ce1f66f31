"""The report of ``salad-train run --seeds``: every seed's loop side by side, across seeds.

Each seed's loop writes its own ``seed-<s>/report.json`` (``loop_report``); this reads them and
writes ``seeds.{md,json,png}`` beside them:

- every figure (speech@speech and text@speech accuracy, gap, forgetting, misalignment) per task,
  model and seed, with the mean, the sample standard deviation and the range across seeds;
- the paired comparisons of each seed's report (Stage II against Stage I and against the random
  Stage II: ``b - a`` with its paired bootstrap CI, exact McNemar p and sign-flip p over items),
  with the mean and spread of ``b - a`` across seeds and the seed-level test (``seed_level``): a
  paired t over seeds of the per-seed ``b - a``. Each seed retrains both models, so the seed is
  the replicate of the *procedure*; this is the only p here that supports a claim about the
  procedure (Stage II against random as a recipe), and it needs ``MIN_SEEDS`` seeds: with fewer
  the report says it is not available;
- the same pairs pooled over seeds (``salad_eval.gap.paired``): the seeds share their evaluation
  items, so a seed is one more answer to the same item, as a voice is. An item's score is its
  mean over seeds (and voices); the bootstrap CI and the sign-flip p resample and flip items, so
  they hold although one item's answers across seeds are correlated. McNemar counts every (seed,
  item, voice) pair, so its pooled p is optimistic and shown for reference only. These pooled
  tests treat the trained models as fixed: they support a claim about *these trained instances*
  only. With seed-to-seed spread they reject a true null of the procedure far more often than
  alpha (tests/test_stats_simulated.py measures both).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from salad_eval.errors import SaladError
from salad_eval.figures import plt, save
from salad_eval.gap.compare import load_run
from salad_eval.gap.paired import load_items, paired_rows
from salad_eval.home import atomic_write_text
from salad_eval.stats import one_sample_t
from salad_train.loop.report import ALL, FIGURES

SHOWN = ("speech@speech", "text@speech", "gap")  # the conditions training moves
MIN_SEEDS = 3  # a t over 2 seeds has 1 degree of freedom: no claim about the procedure
ITEM_CLAIM = "these trained instances"
SEED_CLAIM = "the procedure"


def spread(values: list[float]) -> dict:
    """Mean, sample standard deviation (None for one value), min and max."""
    v = np.asarray(values, dtype=float)
    return {
        "n": len(v),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else None,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def read_reports(roots: dict[int, Path]) -> dict[int, dict]:
    reports = {}
    for seed, root in roots.items():
        path = Path(root) / "report.json"
        if not path.is_file():
            raise SaladError(
                f"{path} is missing: rerun `salad-train run --seeds` to finish seed {seed}"
            )
        reports[seed] = json.loads(path.read_text())
    return reports


def across_seeds(reports: dict[int, dict]) -> dict:
    """{task: {model: {figure: {"per_seed": {seed: value}, mean, sd, min, max}}}}."""
    tables: dict = {}
    for seed, report in reports.items():
        for task, by_model in report["tables"].items():
            for model, row in by_model.items():
                for figure in FIGURES:
                    if row.get(figure) is None:
                        continue
                    cell = (
                        tables.setdefault(task, {})
                        .setdefault(model, {})
                        .setdefault(figure, {"per_seed": {}})
                    )
                    cell["per_seed"][seed] = row[figure]["value"]
    for by_model in tables.values():
        for cells in by_model.values():
            for cell in cells.values():
                cell |= spread(list(cell["per_seed"].values()))
    return dict(sorted(tables.items(), key=lambda kv: (kv[0] == ALL, kv[0])))


def paired_across_seeds(reports: dict[int, dict]) -> list[dict]:
    """Each (a, b, task, condition) of the seeds' paired rows: per seed and the spread of b - a."""
    grouped: dict[tuple, dict] = {}
    for seed, report in reports.items():
        for row in report.get("paired", []):
            key = (row["a"], row["b"], row["task"], row["condition"])
            grouped.setdefault(key, {})[seed] = {
                "diff": row["diff"],
                "p_value": row["p_value"],
                "p_items": row.get("p_items"),
                "n_items": row["n_items"],
            }
    return [
        {
            "a": a,
            "b": b,
            "task": task,
            "condition": cond,
            "per_seed": per_seed,
            "diff": spread([r["diff"]["value"] for r in per_seed.values()]),
            "seed_level": seed_level([r["diff"]["value"] for r in per_seed.values()]),
        }
        for (a, b, task, cond), per_seed in grouped.items()
    ]


def seed_level(diffs: list[float]) -> dict:
    """The seed-level test of b - a: the per-seed differences' mean, sd and paired t over seeds
    (``stats.one_sample_t``), or, with fewer than ``MIN_SEEDS`` seeds, no p and a note why."""
    test = one_sample_t(diffs)
    if len(diffs) < MIN_SEEDS:
        test |= {
            "t": None,
            "p": None,
            "note": f"not available: {len(diffs)} seed{'s' * (len(diffs) != 1)}, a claim about "
            f"the procedure needs at least {MIN_SEEDS}",
        }
    elif test["p"] is None:
        test["note"] = "no p: every seed has the same b - a"
    return test | {"claim": SEED_CLAIM}


def seed_replicates(records: list[dict], seed: int) -> list[dict]:
    """A seed's records with the seed in the voice: pooled, each seed is one more answer to an
    item (text rows included), averaged over as voices are."""
    return [
        {**r, "voice": f"seed {seed}" + (f"/{r['voice']}" if r["voice"] else "")} for r in records
    ]


def pooled_paired(reports: dict[int, dict], n_boot: int = 1000) -> list[dict]:
    """The seeds' pairs on their common items, every seed's answers pooled per item."""
    pairs = list(
        dict.fromkeys((r["a"], r["b"]) for rep in reports.values() for r in rep.get("paired", []))
    )
    rows = []
    for a, b in pairs:
        pooled: dict[str, list[dict]] = {a: [], b: []}
        metric = None
        for seed, report in reports.items():
            runs = report["gap_runs"]
            if a not in runs or b not in runs:
                continue
            metric = metric or load_run(Path(runs[a]))["metric"]
            for model in (a, b):
                records = load_items(Path(runs[model])) or []
                pooled[model] += seed_replicates(records, seed)
        if pooled[a] and pooled[b]:
            rows += paired_rows(a, pooled[a], b, pooled[b], metric, n_boot)
    return [r | {"claim": ITEM_CLAIM} for r in rows]


def _pct(value: float | None, sign: bool = False) -> str:
    return "–" if value is None else f"{100 * value:{'+' if sign else ''}.1f}"


def _diff(d: dict) -> str:
    return f"{100 * d['value']:+.1f} [{100 * d['ci_low']:+.1f}, {100 * d['ci_high']:+.1f}]"


def _p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def _markdown(
    seeds: list[int],
    tables: dict,
    per_seed: list[dict],
    pooled: list[dict],
    heard: dict[str, str],
    unseen: list[str],
) -> str:
    names = ", ".join(map(str, seeds))
    lines = [
        f"# SALAD loop across seeds {names}",
        "",
        "Each seed repeats Stage I, selection and Stage II (`train.seed` = `select.seed` = "
        "the seed) and evaluates on the same items and voices; `seed-<s>/report.md` is that "
        "seed's full report. Points; sd is the sample standard deviation across seeds.",
        "",
    ]
    if heard:
        voices = ", ".join(f"`{v}` ({s} in training)" for v, s in heard.items())
        lines += [f"**Warning: evaluation voices heard in training**: {voices}.", ""]
    elif unseen:
        lines += [
            f"Evaluation voices: {', '.join(f'`{v}`' for v in unseen)}, unseen in training "
            "by every model of every seed.",
            "",
        ]
    cols = [f"seed {s}" for s in seeds]
    for task, by_model in tables.items():
        lines += [
            f"## {task}",
            "",
            "| figure | model | " + " | ".join(cols) + " | mean | sd | range |",
            "|---|---|" + "---|" * (len(cols) + 3),
        ]
        for figure in FIGURES:
            for model, cells in by_model.items():
                if figure not in cells:
                    continue
                c = cells[figure]
                values = [_pct(c["per_seed"].get(s)) for s in seeds]
                lines.append(
                    f"| {figure} | {model} | "
                    + " | ".join(values)
                    + f" | {_pct(c['mean'])} | {_pct(c['sd'])} | "
                    f"{_pct(c['min'])} to {_pct(c['max'])} |"
                )
        lines.append("")
    shown = [r for r in per_seed if r["task"] == ALL and r["condition"] in SHOWN]
    if shown:
        pooled_by = {(r["a"], r["b"], r["condition"]): r for r in pooled if r["task"] == ALL}
        lines += [
            "## Paired: Stage II (b) against Stage I and the random Stage II (a), all tasks",
            "",
            "Per seed: b - a [paired bootstrap 95% CI] and the sign-flip p over items "
            "(McNemar's p is in each seed's report.md). Seed-level: the mean and sd of the "
            "per-seed b - a and a paired t over seeds; each seed retrains both models, so this "
            f"is the p for a claim about **{SEED_CLAIM}** (the recipe), and it needs at least "
            f"{MIN_SEEDS} seeds. Pooled: an item's score is its mean over seeds; the CI "
            "resamples and the sign-flip test flips items with the trained models held fixed, "
            f"so they support a claim about **{ITEM_CLAIM}** only, not about the procedure. "
            "The pooled McNemar p counts every (seed, item, voice) pair and is optimistic: for "
            "reference.",
            "",
            "| a | b | condition | "
            + " | ".join(cols)
            + " | mean b - a (sd) | seed-level p (the procedure) | pooled b - a [CI] | pooled "
            "sign-flip p (these instances) | pooled McNemar p |",
            "|---|---|---|" + "---|" * (len(cols) + 5),
        ]
        for r in shown:
            cells = []
            for s in seeds:
                one = r["per_seed"].get(s)
                cells.append(
                    "–" if one is None else f"{_diff(one['diff'])}, p {_p(one['p_items'])}"
                )
            d = r["diff"]
            mean = f"{_pct(d['mean'], True)} ({_pct(d['sd'])})"
            level = r["seed_level"]
            seed_p = _p(level["p"]) if level["p"] is not None else level.get("note", "–")
            pool = pooled_by.get((r["a"], r["b"], r["condition"]))
            pool_cells = (
                [_diff(pool["diff"]), _p(pool["p_items"]), _p(pool["p_value"])]
                if pool
                else ["–"] * 3
            )
            lines.append(
                f"| {r['a']} | {r['b']} | {r['condition']} | "
                + " | ".join(cells)
                + f" | {mean} | {seed_p} | "
                + " | ".join(pool_cells)
                + " |"
            )
        lines.append("")
    return "\n".join(lines) + "\n![speech@speech per seed](seeds.png)\n"


def _plot(seeds: list[int], tables: dict, path: Path) -> str:
    overall = tables.get(ALL, {})
    models = [m for m, cells in overall.items() if "speech@speech acc" in cells]
    fig, ax = plt.subplots(figsize=(1.8 * max(len(models), 2) + 1, 3.8))
    for i, model in enumerate(models):
        cell = overall[model]["speech@speech acc"]
        values = [100 * cell["per_seed"][s] for s in seeds if s in cell["per_seed"]]
        ax.bar(i, 100 * cell["mean"], 0.6, alpha=0.5)
        ax.scatter([i] * len(values), values, color="black", zorder=3, s=14)
    ax.set_xticks(range(len(models)), models, rotation=15)
    ax.set_ylabel("speech@speech accuracy (points)")
    ax.set_title(f"All tasks: mean over seeds {', '.join(map(str, seeds))} (dots: each seed)")
    return save(fig, path)


def write_seeds_report(roots: dict[int, Path], out: Path, n_boot: int = 1000) -> dict:
    """Write ``seeds.{md,json,png}`` into ``out`` from each seed's loop report; return the JSON."""
    out = Path(out)
    seeds = list(roots)
    reports = read_reports(roots)
    tables = across_seeds(reports)
    per_seed = paired_across_seeds(reports)
    pooled = pooled_paired(reports, n_boot)
    heard: dict[str, str] = {}
    for report in reports.values():
        heard |= report.get("voices_heard_in_training") or {}
    listed = [report.get("voices_unseen_in_training") or [] for report in reports.values()]
    unseen = listed[0] if all(v == listed[0] for v in listed) else []  # every seed said so
    plot = _plot(seeds, tables, out / "seeds.png")
    result = {
        "seeds": seeds,
        "loops": {s: str(r) for s, r in roots.items()},
        "tables": tables,
        "paired_per_seed": per_seed,
        "paired_pooled": pooled,
        "voices_heard_in_training": heard,
        "voices_unseen_in_training": unseen,
        "plot": plot,
    }
    atomic_write_text(out / "seeds.json", json.dumps(result, indent=1, default=str) + "\n")
    atomic_write_text(out / "seeds.md", _markdown(seeds, tables, per_seed, pooled, heard, unseen))
    return result
