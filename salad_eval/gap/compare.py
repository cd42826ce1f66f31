"""``salad-eval report``: several runs side by side, and the paper's figures across runs.

The figures: the gap against the training speech hours (from each run's manifest), speech
accuracy against log M (the corpus misalignment, per token, ``salad_eval.corpus_divergence``)
with a fitted line and R^2, and, for runs that hold a training ``metrics.jsonl`` with probe rows,
the probes along training. A run without a corpus M (one made with ``--no-divergences``, of an
external model, or before corpus divergences existed) is left out of the log M fit: its per-item
answer KL is another quantity. The fit needs ``MIN_FIT_RUNS`` runs (a line through two points has
R^2 1 whatever they are), and runs whose corpus F/M setups differ (corpus, documents, voice,
spans, seeds, version: ``SETUP_KEYS``) are refused: their M values are not on one scale.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from salad_eval.errors import SaladError
from salad_eval.figures import plt, save
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
from salad_eval.run_folder import check_complete

_COLUMNS = ("speech acc", "gap", "forgetting", "misalignment")
MIN_FIT_RUNS = 3
# what makes two runs' corpus M comparable (``corpus_divergence.gap_figures``' setup); the path
# may differ between machines, so the corpus is compared by its hash where it is recorded
SETUP_KEYS = (
    "corpus_hash",
    "documents",
    "voice",
    "span_words",
    "cut_seed",
    "synth_seed",
    "max_tokens",
    "version",
)


def load_run(run_dir: Path) -> dict:
    """A run's results.json, or a one-line error that says what is wrong with the directory."""
    path = Path(run_dir) / "results.json"
    check_complete(run_dir)
    if not path.is_file():
        raise SaladError(
            f"{run_dir} has no results.json; pass run directories written by `salad-eval gap`"
        )
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SaladError(f"{path} is not text; rerun the gap run that wrote it") from None
    except json.JSONDecodeError as err:
        raise SaladError(
            f"{path} is not valid JSON ({err.msg}); rerun the gap run that wrote it"
        ) from err
    try:
        _check_results(results)
    except (KeyError, TypeError, ValueError) as err:
        detail = f"no {err}" if isinstance(err, KeyError) else str(err)
        raise SaladError(
            f"{path} is not a gap report, or an incomplete one ({detail}); pass directories "
            "written by `salad-eval gap`, or rerun the run"
        ) from None
    return results


def _check_results(results: dict) -> None:
    """Every field the comparison reads is there, with numbers where it reads numbers."""
    metric = results["metric"]
    tables = results["metrics"][metric]
    for name, table in {**tables["tasks"], "overall": tables["overall"]}.items():
        int(table["n_items"])
        for figure in [*_row_figures(table), *table.get("divergence", {}).values()]:
            _check_figure(figure, name)
    for name, figure in (results.get("corpus_divergence") or {}).items():
        _check_figure(figure, f"corpus {name}")
    training = (results.get("manifest") or {}).get("training")
    if isinstance(training, dict) and training.get("speech_hours") is not None:
        float(training["speech_hours"])


def _check_figure(figure: dict, name: str) -> None:
    for key in ("value", "ci_low", "ci_high"):
        if not isinstance(figure[key], (int, float)):
            raise ValueError(f"{name}: {key} is not a number")


def corpus_m(results: dict) -> dict | None:
    """A run's corpus misalignment M figure (None without one)."""
    return (results.get("corpus_divergence") or {}).get("M")


def corpus_setup(results: dict) -> dict | None:
    """The corpus F/M setup a run's manifest records (None if it records none)."""
    return (results.get("manifest") or {}).get("corpus_divergence")


def check_same_setup(runs: dict[str, dict]) -> None:
    """One-line SaladError if two runs with a corpus M measured it under different setups."""
    recorded = {n: corpus_setup(r) for n, r in runs.items() if corpus_m(r) and corpus_setup(r)}
    if len(recorded) < 2:
        return
    first, *others = recorded
    for key in SETUP_KEYS:
        want = recorded[first].get(key)
        if key == "corpus_hash" and want is None:  # an older manifest: the corpus by name
            key, want = "corpus", recorded[first].get("corpus")
        for name in others:
            got = recorded[name].get(key)
            if got != want:
                raise SaladError(
                    f"runs {first} and {name} measured corpus M under different setups ({key} "
                    f"{want!r} vs {got!r}); compare runs whose `salad-eval gap` used the same "
                    "--corpus, documents, voice and spans"
                )


def probe_rows(run_dir: Path) -> list[dict]:
    """The probe rows of a training ``metrics.jsonl`` in ``run_dir`` (empty if none)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    try:
        rows = [
            json.loads(line)
            for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()
        ]
    except ValueError:
        raise SaladError(f"{path} is not JSON lines; remove it or rerun the training") from None
    return sorted(
        (r for r in rows if isinstance(r, dict) and "probe" in r and "tokens_seen" in r),
        key=lambda r: r["tokens_seen"],
    )


def _row_figures(table: dict) -> list[dict]:
    return [
        table["accuracy"]["speech@speech"],
        table["gap"],
        table["forgetting"],
        table["misalignment"],
    ]


def comparison_rows(runs: dict[str, dict]) -> list[dict]:
    """One row per run and task (plus "all tasks"), each cell a figure with CI and n."""
    rows = []
    for name, res in runs.items():
        m = res["metrics"][res["metric"]]
        for task, table in {**m["tasks"], "all tasks": m["overall"]}.items():
            figs = _row_figures(table)
            rows.append(
                {
                    "run": name,
                    "task": task,
                    "metric": res["metric"],
                    "n_items": table["n_items"],
                    **dict(zip(_COLUMNS, figs, strict=True)),
                }
            )
    return sorted(rows, key=lambda r: (r["task"] == "all tasks", r["task"], r["run"]))


def _markdown(rows: list[dict]) -> str:
    head = ["task", "run", "items", *(f"{c} [95% CI]" for c in _COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["task"], r["run"], str(r["n_items"]), *(pct(r[c]) for c in _COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fit(x: np.ndarray, y: np.ndarray) -> dict:
    """Least-squares line y = slope * x + intercept and its R^2."""
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1 - float((resid**2).sum()) / total if total > 0 else float("nan")
    return {"slope": float(slope), "intercept": float(intercept), "r2": r2, "n": len(x)}


def plot_gap_vs_hours(runs: dict[str, dict], path: Path) -> str | None:
    points = [
        (n, r["manifest"]["training"]["speech_hours"], r["metrics"][r["metric"]]["overall"]["gap"])
        for n, r in runs.items()
        if isinstance(r.get("manifest", {}).get("training"), dict)
        and r["manifest"]["training"].get("speech_hours") is not None
    ]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, hours, gap in points:
        ax.errorbar(
            [hours],
            [100 * gap["value"]],
            capsize=4,
            fmt="o",
            yerr=[[100 * (gap["value"] - gap["ci_low"])], [100 * (gap["ci_high"] - gap["value"])]],
        )
        ax.annotate(
            name, (hours, 100 * gap["value"]), textcoords="offset points", xytext=(5, 5), fontsize=8
        )
    if all(h > 0 for _, h, _ in points):
        ax.set_xscale("log")
    ax.set_xlabel("training speech (hours)")
    ax.set_ylabel("gap: text@base - speech@speech (points)")
    ax.set_title("Gap vs training speech hours (95% CI)")
    return save(fig, path)


def plot_acc_vs_log_m(runs: dict[str, dict], path: Path) -> tuple[str | None, dict | None]:
    points = []
    for name, r in runs.items():
        overall = r["metrics"][r["metric"]]["overall"]
        m = corpus_m(r)
        if m and m["value"] > 0:
            points.append(
                (name, math.log(m["value"]), 100 * overall["accuracy"]["speech@speech"]["value"])
            )
    if not points:
        return None, None
    fig, ax = plt.subplots(figsize=(6, 4))
    names, x, y = zip(*points, strict=True)
    x, y = np.array(x), np.array(y)
    ax.scatter(x, y, zorder=3)
    for name, xi, yi in points:
        ax.annotate(name, (xi, yi), textcoords="offset points", xytext=(5, 5), fontsize=8)
    fit = None
    if len(points) >= MIN_FIT_RUNS and len(set(x)) >= 2:
        fit = _fit(x, y)
        grid = np.linspace(x.min(), x.max(), 50)
        ax.plot(
            grid,
            fit["slope"] * grid + fit["intercept"],
            "--",
            color="grey",
            label=f"fit: slope {fit['slope']:.2f}, R$^2$ = {fit['r2']:.2f}",
        )
        ax.legend(fontsize=8)
    ax.set_xlabel("log M (corpus KL misalignment, nats per token)")
    ax.set_ylabel("speech@speech accuracy (%)")
    ax.set_title("Speech accuracy vs log misalignment")
    return save(fig, path), fit


def plot_training(curves: dict[str, list[dict]], path: Path) -> str | None:
    if not curves:
        return None
    fig, (acc_ax, kl_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        tokens = [r["tokens_seen"] for r in rows]
        for key, style in (("text_acc", "--"), ("speech_acc", "-")):
            ys = [r["probe"].get(key) for r in rows]
            if any(v is not None for v in ys):
                acc_ax.plot(
                    tokens,
                    [100 * v if v is not None else np.nan for v in ys],
                    style,
                    marker="o",
                    label=f"{name} {key}",
                )
        for key, style in (("F", "--"), ("M", "-")):
            ys = [r["probe"].get(key) for r in rows]
            if any(v is not None for v in ys):
                kl_ax.plot(
                    tokens,
                    [v if v is not None else np.nan for v in ys],
                    style,
                    marker="o",
                    label=f"{name} {key}",
                )
    acc_ax.set(
        xlabel="tokens seen", ylabel="probe accuracy (%)", title="Probe accuracy during training"
    )
    kl_ax.set(
        xlabel="tokens seen",
        ylabel="KL (nats)",
        title="Forgetting F and misalignment M during training",
    )
    for ax in (acc_ax, kl_ax):
        ax.legend(fontsize=7)
    return save(fig, path)


def compare_runs(run_dirs: list[Path], out: Path, n_boot: int = 1000, seed: int = 0) -> dict:
    """Write comparison.md, comparison.json and the cross-run plots into ``out``.

    With two runs or more, the paired comparison of each other run against the first, on their
    common items (``salad_eval.gap.paired``; ``n_boot`` resamples seeded by ``seed``).
    """
    if not run_dirs:
        raise SaladError("no run directory given; pass one or more directories with results.json")
    runs: dict[str, dict] = {}
    items: dict[str, list[dict] | None] = {}
    curves: dict[str, list[dict]] = {}
    for run_dir in map(Path, run_dirs):
        name = run_dir.resolve().name
        name = name if name not in runs else str(run_dir)
        runs[name] = load_run(run_dir)
        items[name] = load_items(run_dir)
        if rows := probe_rows(run_dir):
            curves[name] = rows
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = comparison_rows(runs)
    names = list(runs)
    paired, paired_notes = paired_comparison(
        {n: (runs[n], items[n]) for n in names}, [(names[0], b) for b in names[1:]], n_boot, seed
    )
    paired_table = paired_markdown(paired)
    check_same_setup(runs)  # before the paired corpus M, which pairs documents by position
    divergences = [
        row
        for b in names[1:]
        for row in paired_divergences(names[0], {n: (runs[n], items[n]) for n in names}, b, seed)
    ]
    divergence_table = divergences_markdown(divergences)
    hours = plot_gap_vs_hours(runs, out / "gap_vs_speech_hours.png")
    log_m, fit = plot_acc_vs_log_m(runs, out / "speech_acc_vs_log_m.png")
    training = plot_training(curves, out / "training_curves.png")
    plots = [p for p in (hours, log_m, training) if p]
    table = _markdown(rows)
    notes = []
    if hours is None:
        notes.append(
            "No run records `training.speech_hours` in its manifest: no gap-vs-hours plot."
        )
    without = [name for name, r in runs.items() if not (corpus_m(r) or {}).get("value", 0) > 0]
    if without and log_m is not None:
        notes.append(f"Left out of the log M fit (no corpus M): {', '.join(without)}.")
    unchecked = [n for n, r in runs.items() if corpus_m(r) and not corpus_setup(r)]
    if unchecked and log_m is not None:
        notes.append(
            f"No corpus F/M setup recorded, so not checked to match: {', '.join(unchecked)}."
        )
    if log_m is None:
        notes.append(
            "No run has a corpus misalignment M (rerun `salad-eval gap` with "
            "divergences on): no accuracy-vs-log-M plot."
        )
    elif len(runs) - len(without) < MIN_FIT_RUNS:
        notes.append(
            f"{len(runs) - len(without)} run(s) with a corpus M: the log M fit needs at least "
            f"{MIN_FIT_RUNS}, so no line is fitted."
        )
    elif fit is None:
        notes.append("Fewer than two distinct values of M: no line fitted.")
    else:
        notes.append(
            f"speech accuracy = {fit['slope']:.2f} * log M + {fit['intercept']:.2f} "
            f"(R^2 = {fit['r2']:.2f}, {fit['n']} runs)."
        )
    md = [
        "# Run comparison",
        "",
        "Figures in percentage points, 95% paired bootstrap CI in brackets.",
        "",
        table,
        "",
        *notes,
        "",
    ]
    if paired_table or paired_notes:
        md += ["## Paired comparison", "", paired_note(), "", paired_table, "", *paired_notes, ""]
    if divergence_table:
        md += ["## Paired divergences", "", divergence_table, ""]
    md += [*(f"![{p}]({p})" for p in plots), ""]
    atomic_write_text(out / "comparison.md", "\n".join(md))
    result = {
        "runs": list(runs),
        "rows": rows,
        "fit_log_m": fit,
        "plots": plots,
        "table": table,
        "paired": paired,
        "paired_table": paired_table,
        "paired_notes": paired_notes,
        "paired_divergences": divergences,
    }
    atomic_write_text(out / "comparison.json", json.dumps(result, indent=1) + "\n")
    return result
