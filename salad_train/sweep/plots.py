"""The sweep's figures: Fig. 3 (accuracy against log M and F) and Fig. 4 (against tokens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from salad_eval.figures import plt, save
from salad_train.sweep.fits import power_law


def _colors(names: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("viridis")
    return {n: cmap(i / max(len(names) - 1, 1)) for i, n in enumerate(names)}


def _two(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"  # None: undefined (e.g. a constant y)


def _usable(points: list[dict], key: str, positive: bool = False) -> list[dict]:
    return [
        p
        for p in points
        if isinstance(p.get(key), (int, float))
        and isinstance(p.get("M"), (int, float))
        and p["M"] > 0
        and isinstance(p.get("F"), (int, float))
        and (not positive or p[key] > 0)
    ]


def _panel(ax, points: list[dict], target: str, driver: str, fit: dict, colors: dict) -> None:
    usable = _usable(points, target)
    for name, color in colors.items():
        mine = [p for p in usable if p["run"] == name]
        if mine:
            x = [np.log(p["M"]) if driver == "log_M" else p["F"] for p in mine]
            ax.scatter(x, [100 * p[target] for p in mine], color=color, label=name, zorder=3)
    if fit.get("fit"):
        xs = [np.log(p["M"]) if driver == "log_M" else p["F"] for p in usable]
        grid = np.linspace(min(xs), max(xs), 50)
        r2, loo, loro, partial = (
            _two(fit.get(k)) for k in ("r2", "loo_r2", "loro_r2", "partial_r2")
        )
        ax.plot(
            grid,
            100 * (fit["intercept"] + fit["slope"] * grid),
            "--",
            color="grey",
            label=f"R$^2$ {r2}, LOO {loo}, leave-one-run-out {loro} ({fit.get('n_runs')} runs), "
            f"partial {partial}",
        )
    else:
        ax.text(0.5, 0.5, fit["note"], transform=ax.transAxes, ha="center", fontsize=8, wrap=True)
    what = "speech@speech" if target == "speech_acc" else "text@speech"
    ax.set_xlabel("log M (nats per token)" if driver == "log_M" else "F (nats per token)")
    ax.set_ylabel(f"{what} accuracy (%)")
    ax.legend(fontsize=7)


def fig3(points: list[dict], fits: dict, path: Path) -> str:
    """Two panels: speech accuracy against log M, text accuracy against F, every probe point."""
    colors = _colors(list(dict.fromkeys(p["run"] for p in points)))
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    _panel(left, points, "speech_acc", "log_M", fits["speech_acc_vs_log_M"], colors)
    left.set_title("Speech accuracy vs log misalignment")
    _panel(right, points, "text_acc", "F", fits["text_acc_vs_F"], colors)
    right.set_title("Text accuracy vs forgetting")
    return save(fig, path)


def fig4(runs: list, per_run: dict[str, list[dict]], m_fits: dict[str, dict], path: Path) -> str:
    """M (with its power-law fit), F and accuracy against training tokens, one colour per run."""
    colors = _colors([r.name for r in runs])
    fig, (ax_m, ax_f, ax_acc) = plt.subplots(1, 3, figsize=(15, 4.2))
    for run in runs:
        color = colors[run.name]
        pts = [
            p
            for p in per_run[run.name]
            if isinstance(p.get("tokens_seen"), (int, float)) and p["tokens_seen"] > 0
        ]
        d = np.array([p["tokens_seen"] for p in pts], dtype=float)

        def series(key: str, pts=pts, d=d) -> tuple[np.ndarray, np.ndarray]:
            keep = [i for i, p in enumerate(pts) if isinstance(p.get(key), (int, float))]
            return d[keep], np.array([pts[i][key] for i in keep], dtype=float)

        ax_m.plot(*series("M"), "o", color=color, label=run.name)
        fit = m_fits.get(run.name) or {}
        if fit.get("fit") and len(d):
            grid = np.geomspace(d.min(), d.max(), 60)
            ax_m.plot(
                grid,
                power_law(grid, fit["E"], fit["B"], fit["beta"]),
                "--",
                color=color,
                label=f"E {fit['E']:.3g} + B D^-{fit['beta']:.2f}",
            )
        ax_f.plot(*series("F"), "o-", color=color, label=run.name)
        x, y = series("speech_acc")
        ax_acc.plot(x, 100 * y, "o-", color=color, label=f"{run.name} speech")
        x, y = series("text_acc")
        ax_acc.plot(x, 100 * y, "s:", color=color, label=f"{run.name} text")
    for ax, label in (
        (ax_m, "M (nats per token)"),
        (ax_f, "F (nats per token)"),
        (ax_acc, "accuracy (%)"),
    ):
        ax.set_xscale("log")
        ax.set_xlabel("training tokens seen")
        ax.set_ylabel(label)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    ax_m.set_title("Misalignment vs tokens")
    ax_f.set_title("Forgetting vs tokens")
    ax_acc.set_title("Accuracy vs tokens")
    return save(fig, path)
