"""The final report of ``salad-train run``: what each stage bought, per task, with 95% CIs.

Every figure is read from the gap runs' own ``results.json`` (``salad_eval.gap.compare.load_run``);
nothing is re-derived here. Columns are the compared models (Stage I, Stage II, and the
random-selection Stage II when ablated); rows are tasks and figures. Below them, Stage II paired
against Stage I and against the random Stage II on their common items (``salad_eval.gap.paired``:
the difference with a paired bootstrap CI, an exact McNemar test and a sign-flip test over items,
from each run's items.jsonl), and the same pairs on the divergences (corpus M paired by document,
the answer KL by item: ``paired.paired_divergences``). These p-values hold the trained models
fixed: they speak for these trained instances, not for the procedure (``seeds.py``'s seed-level
test does, over at least 3 seeds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from salad_eval.figures import plt, save
from salad_eval.gap.compare import check_same_setup, load_run
from salad_eval.gap.paired import (
    divergences_markdown,
    load_items,
    paired_comparison,
    paired_divergences,
    paired_markdown,
    paired_note,
)
from salad_eval.gap.summary import pct
from salad_eval.home import atomic_write_text

FIGURES = {  # name in the report -> how to find it in a decomposition table
    "speech@speech acc": ("accuracy", "speech@speech"),
    "text@speech acc": ("accuracy", "text@speech"),
    "gap": ("gap",),
    "forgetting": ("forgetting",),
    "misalignment": ("misalignment",),
}
ALL = "all tasks"


def _figure(table: dict, path: tuple[str, ...]) -> dict | None:
    node = table
    for part in path:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def loop_tables(gap_dirs: dict[str, Path]) -> dict:
    """{task: {model: {figure: {value, ci_low, ci_high} | None, "n_items": n}}}."""
    tables: dict[str, dict] = {}
    for model, run_dir in gap_dirs.items():
        results = load_run(run_dir)
        metric = results["metrics"][results["metric"]]
        for task, table in {**metric["tasks"], ALL: metric["overall"]}.items():
            row = {name: _figure(table, path) for name, path in FIGURES.items()}
            tables.setdefault(task, {})[model] = {**row, "n_items": table["n_items"]}
    return dict(sorted(tables.items(), key=lambda kv: (kv[0] == ALL, kv[0])))


def _pairs(models: list[str]) -> list[tuple[str, str]]:
    """(a, b) with b the second model (Stage II): against the first (Stage I), then the rest."""
    if len(models) < 2:
        return []
    return [(models[0], models[1]), *((m, models[1]) for m in models[2:])]


def heard_voices(exposure: dict[str, dict | None]) -> dict[str, str]:
    """The evaluation voices some compared model heard in training (``seen`` or ``speaker
    seen``), from each gap run's ``voice_exposure``."""
    heard: dict[str, str] = {}
    for voices in exposure.values():
        for voice, seen in (voices or {}).items():
            if seen != "unseen" and heard.get(voice) != "seen":
                heard[voice] = seen
    return heard


def unseen_voices(exposure: dict[str, dict | None]) -> list[str]:
    """The evaluation voices, when every compared model's training is known and heard none."""
    if not exposure or any(not voices for voices in exposure.values()):
        return []
    seen = {status for voices in exposure.values() for status in voices.values()}
    return sorted({v for voices in exposure.values() for v in voices}) if seen == {"unseen"} else []


def _markdown(
    tables: dict,
    models: list[str],
    training: dict[str, dict],
    paired: tuple[list[dict], list[str]] = ([], []),
    heard: dict[str, str] | None = None,
    unseen: tuple[str, ...] | list[str] = (),
) -> str:
    lines = [
        "# SALAD loop: Stage I vs Stage II",
        "",
        "Accuracy-like figures in percentage points with 95% paired bootstrap CIs, read from "
        "each gap run's results.json. gap = text@base - speech@speech = forgetting "
        "(text@base - text@speech) + misalignment (text@speech - speech@speech); lower gap, "
        "forgetting and misalignment are better.",
        "",
    ]
    if heard:
        voices = ", ".join(f"`{voice}` ({seen} in training)" for voice, seen in heard.items())
        lines += [
            f"**Warning: evaluation voices heard in training**: {voices}. These figures do "
            "not show how the models listen to a voice they never heard; evaluate on "
            "unseen voices (e.g. `run.voices=heldout`).",
            "",
        ]
    elif unseen:
        lines += [
            f"Evaluation voices: {', '.join(f'`{v}`' for v in unseen)}, unseen in training "
            "by every model compared.",
            "",
        ]
    for task, by_model in tables.items():
        lines += [
            f"## {task}",
            "",
            "| figure | " + " | ".join(models) + " |",
            "|---|" + "---|" * len(models),
        ]
        lines.append(
            "| items | "
            + " | ".join(str(by_model[m]["n_items"]) if m in by_model else "–" for m in models)
            + " |"
        )
        for name in FIGURES:
            cells = [pct(by_model[m][name]) if m in by_model else "–" for m in models]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    rows, notes = paired
    if rows or notes:
        who = "Stage II (b) against Stage I and the random Stage II (a)"
        lines += [
            "## Paired comparison",
            "",
            paired_note(who),
            "These p-values hold the trained models fixed: they support a claim about these "
            "trained instances, not about the procedure (for that: `--seeds` with at least 3 "
            "seeds, the seed-level test of seeds.md).",
            "",
            paired_markdown(rows),
            "",
            *notes,
            "",
        ]
    lines += ["## Models", ""]
    for model, info in training.items():
        hours = info.get("speech_hours")
        extra = (
            f", {info['selected_texts']} selected texts "
            f"({info['selected_speech_hours']:.3f} h; {info['selection']}/report.md), "
            f"natural speech: {info['natural']}"
            if "selected_texts" in info
            else ""
        )
        lines.append(
            f"- {model}: stage {info.get('stage')}, {info.get('steps')} steps, "
            f"{hours:.3f} h of speech seen in all{extra}"
        )
    return "\n".join(lines) + "\n\n![figures](report.png)\n"


def _plot(tables: dict, models: list[str], path: Path) -> str:
    tasks = list(tables)
    fig, axes = plt.subplots(1, len(FIGURES), figsize=(4 * len(FIGURES), 3.8))
    width = 0.8 / len(models)
    x = np.arange(len(tasks))
    for ax, name in zip(axes, FIGURES, strict=True):
        for i, model in enumerate(models):
            figs = [tables[t].get(model, {}).get(name) for t in tasks]
            values = [100 * f["value"] if f else np.nan for f in figs]
            low = [100 * (f["value"] - f["ci_low"]) if f else 0 for f in figs]
            high = [100 * (f["ci_high"] - f["value"]) if f else 0 for f in figs]
            ax.bar(
                x + (i - (len(models) - 1) / 2) * width,
                values,
                width,
                yerr=[low, high],
                capsize=3,
                label=model,
            )
        ax.axhline(0, color="grey", linewidth=0.5)
        ax.set_xticks(x, tasks, rotation=20)
        ax.set_title(name)
        ax.set_ylabel("points")
    axes[0].legend(fontsize=8)
    fig.suptitle("Stage I vs Stage II per task (95% CI)")
    return save(fig, path)


def write_loop_report(gap_dirs: dict[str, Path], out: Path) -> dict:
    """Write ``report.md``, ``report.json`` and ``report.png`` into ``out``; return the JSON."""
    out = Path(out)
    models = list(gap_dirs)
    tables = loop_tables(gap_dirs)
    results = {m: load_run(d) for m, d in gap_dirs.items()}
    training = {m: r["manifest"].get("training") or {} for m, r in results.items()}
    exposure = {m: r.get("voice_exposure") for m, r in results.items()}
    heard, unseen = heard_voices(exposure), unseen_voices(exposure)
    runs = {m: (r, load_items(gap_dirs[m])) for m, r in results.items()}
    paired = paired_comparison(runs, _pairs(models))
    check_same_setup(results)  # one loop, one corpus setup: the documents pair by position
    divergences = [row for a, b in _pairs(models) for row in paired_divergences(a, runs, b)]
    plot = _plot(tables, models, out / "report.png")
    report = {
        "models": models,
        "gap_runs": {m: str(d) for m, d in gap_dirs.items()},
        "figures": list(FIGURES),
        "tables": tables,
        "training": training,
        "voices_heard_in_training": heard,
        "voices_unseen_in_training": unseen,
        "plot": plot,
        "paired": paired[0],
        "paired_notes": paired[1],
        "paired_divergences": divergences,
    }
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str) + "\n")
    md = _markdown(tables, models, training, paired, heard, unseen)
    if divergences:
        md += "\n## Paired divergences\n\n" + divergences_markdown(divergences) + "\n"
    atomic_write_text(out / "report.md", md)
    return report
