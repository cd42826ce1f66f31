"""The run's PNG plots: gap decomposition per task, misalignment by domain, accuracy by voice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from salad_eval.figures import error_bars, plt, save
from salad_eval.gap.robustness import plot_robustness
from salad_eval.speech.diversity import plot_diversity


def gap_decomposition(tables: dict[str, dict], metric: str, path: Path) -> str:
    """Per task: forgetting and misalignment stacked, the gap (their sum) with CI, cascade gap."""
    names = list(tables)
    x = np.arange(len(names))
    f = np.array([100 * tables[n]["forgetting"]["value"] for n in names])
    m = np.array([100 * tables[n]["misalignment"]["value"] for n in names])
    gaps = [tables[n]["gap"] for n in names]
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(names) + 4), 4.2))
    up, down = np.zeros(len(names)), np.zeros(len(names))
    for vals, label, color in ((f, "forgetting", "#4c72b0"), (m, "misalignment", "#dd8452")):
        # positive parts stack up from 0, negative parts down, so neither hides the other
        ax.bar(x, vals, 0.6, bottom=np.where(vals >= 0, up, down), label=label, color=color)
        up, down = up + vals.clip(min=0), down + vals.clip(max=0)
    ax.errorbar(
        x,
        [100 * g["value"] for g in gaps],
        yerr=error_bars(gaps),
        fmt="o",
        color="black",
        capsize=4,
        label="gap (95% CI)",
    )
    cascade = [
        (i, tables[n]["cascade_gap"]["value"])
        for i, n in enumerate(names)
        if "cascade_gap" in tables[n]
    ]
    if cascade:
        ci, cv = zip(*cascade, strict=True)
        ax.scatter(
            ci,
            [100 * v for v in cv],
            marker="_",
            s=700,
            linewidths=2.5,
            color="#2ca02c",
            label="cascade gap",
            zorder=3,
        )
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(x, names, rotation=20, ha="right")
    ax.set_ylabel(f"points of {metric}")
    ax.set_title("Gap decomposition per task: gap = forgetting + misalignment")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, path)


def misalignment_by_domain(tables: dict[str, dict], metric: str, path: Path) -> str:
    """Misalignment (text@speech - speech@speech) of each domain, sorted, with CIs."""
    names = sorted(tables, key=lambda n: tables[n]["misalignment"]["value"])
    figs = [tables[n]["misalignment"] for n in names]
    fig, ax = plt.subplots(figsize=(6.5, max(2.5, 0.32 * len(names) + 1.5)))
    y = np.arange(len(names))
    ax.barh(y, [100 * f["value"] for f in figs], color="#dd8452", xerr=error_bars(figs), capsize=3)
    ax.set_yticks(y, [f"{n} (n={tables[n]['n_items']})" for n in names], fontsize=8)
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_xlabel(f"misalignment: text@speech - speech@speech (points of {metric})")
    ax.set_title("Misalignment by domain (95% CI)")
    return save(fig, path)


def accuracy_by_voice(tables: dict[str, dict], metric: str, path: Path) -> str:
    """Speech-condition accuracies per voice, text accuracies as reference lines."""
    names = list(tables)
    conds = [
        c
        for c in (
            "speech@speech",
            "speech@cascade",
            "speech@speech:silent",
            "speech@speech:shuffled",
        )
        if any(c in tables[n]["accuracy"] for n in names)
    ]
    width = 0.8 / len(conds)
    fig, ax = plt.subplots(figsize=(max(7.5, 1.6 * len(names) + 4.5), 4.2))
    x = np.arange(len(names))
    for k, cond in enumerate(conds):
        figs = [tables[n]["accuracy"].get(cond) for n in names]
        have = [i for i, f in enumerate(figs) if f]
        ax.bar(
            x[have] + (k - (len(conds) - 1) / 2) * width,
            [100 * figs[i]["value"] for i in have],
            width,
            yerr=error_bars([figs[i] for i in have]),
            capsize=3,
            label=cond,
        )
    first = tables[names[0]]["accuracy"]
    for cond, style in (("text@base", "--"), ("text@speech", ":")):
        ax.axhline(100 * first[cond]["value"], color="black", ls=style, lw=1.2, label=cond)
    ax.set_xticks(x, names, rotation=15, ha="right")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_ylim(0, 100)
    ax.set_title("Accuracy by voice (95% CI); text conditions as lines")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    return save(fig, path)


def plot_run(results: dict, run_dir: Path) -> list[str]:
    """Draw the run's plots into ``run_dir``; return their file names."""
    metric = results["metric"]
    m = results["metrics"][metric]
    tasks = {**m["tasks"], "all tasks": m["overall"]} if len(m["tasks"]) > 1 else m["tasks"]
    plots = [gap_decomposition(tasks, metric, run_dir / "gap_decomposition.png")]
    if m["domains"]:
        plots.append(
            misalignment_by_domain(m["domains"], metric, run_dir / "misalignment_by_domain.png")
        )
    if m["voices"]:
        plots.append(accuracy_by_voice(m["voices"], metric, run_dir / "accuracy_by_voice.png"))
    if results.get("robustness"):
        plots += plot_robustness(results["robustness"], metric, run_dir)
    if (results["manifest"].get("voice_diversity") or {}).get("distances"):
        plots.append(plot_diversity(results["manifest"]["voice_diversity"], run_dir))
    return plots
