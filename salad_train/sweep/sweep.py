"""`salad-train sweep`: Stage I once per alpha (and data variant), then the paper's Fig. 3 and 4.

Each run trains into ``<sweep.out_dir>/alpha-<a>[-<variant>]/`` with ``loss.alpha=<a>`` and probes
every ``train.probe_every`` steps (``salad_train/recipe/probe.py``: corpus M and F, text and speech
accuracy, against tokens seen). A run whose ``model/training.json`` exists is skipped, and a killed
one resumes from its last checkpoint, so rerunning the command continues the sweep. The CTC
warm-up (``train.align_steps``) does not depend on alpha, so it runs once per variant: the other
alphas start from the first run's warm-up checkpoint, exactly as if they had run it. The report
reads every probe row of every run and writes into the sweep dir:

- ``sweep.json``: every point and every fit value;
- ``fig3.png``: speech accuracy against log M and text accuracy against F over all points, each
  with its line, leave-one-out R^2 and the partial R^2 of one driver given the other;
- ``fig4.png``: M, F and accuracy against training tokens per run (log x), with the power-law fit
  M(D) = E + B D^-beta per run;
- ``sweep.md``: the same numbers in words and tables.

A variant is a name and dotted overrides applied on top of the config (``narrow:data.max_documents
=100``), e.g. a narrow and a broad corpus: every alpha runs once per variant. Log M is the natural
log (R^2 does not depend on the base); points with M <= 0 are left out of the log-M fits.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_text
from salad_train.config import load_config
from salad_train.recipe.checkpoint import latest_checkpoint
from salad_train.recipe.metrics import read_metrics
from salad_train.recipe.stage1 import WARMUP, run_stage1
from salad_train.sweep import fits
from salad_train.sweep.plots import fig3, fig4

log = logging.getLogger(__name__)
RUN_DIR = re.compile(r"^alpha-(?P<alpha>\d+(?:\.\d+)?)(?:-(?P<variant>[A-Za-z]\w*))?$")
VARIANT_NAME = re.compile(r"^[A-Za-z]\w*$")
_OVERRIDE_START = re.compile(r",(?=[A-Za-z_]\w*\.[\w.]+=)")  # a comma before the next section.key=


@dataclass
class Variant:
    name: str
    overrides: list[str] = field(default_factory=list)


@dataclass
class SweepRun:
    alpha: float
    variant: str | None
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def parse_variant(spec: str) -> Variant:
    """``name:key=value,key=value`` as a ``Variant``; a comma inside a value (a list, a voice's
    options) stays in it, since only a comma before the next ``section.key=`` splits."""
    name, sep, rest = spec.partition(":")
    if not sep or not VARIANT_NAME.match(name) or not rest.strip():
        raise SaladError(
            f"--variant {spec!r} must look like name:section.key=value[,section.key=value...] "
            "with a name of letters, digits and _ starting with a letter"
        )
    return Variant(name, [part.strip() for part in _OVERRIDE_START.split(rest) if part.strip()])


def run_dir(root: Path, alpha: float, variant: str | None) -> Path:
    return root / (f"alpha-{alpha:g}" + (f"-{variant}" if variant else ""))


def plan_runs(config_name: str, overrides: list[str], variants: list[Variant]):
    """The sweep's runs with each one's validated config, before anything trains."""
    base = load_config(config_name, overrides)
    alphas = base.sweep.alphas
    if not alphas:
        raise SaladError("sweep.alphas is empty: give at least one alpha (--alphas 0,0.5,1)")
    if len({f"{a:g}" for a in alphas}) != len(alphas):
        raise SaladError(f"sweep.alphas {alphas} repeats a value")
    if len({v.name for v in variants}) != len(variants):
        raise SaladError("two --variant options share a name")
    probe_every = base.sweep.probe_every or base.train.probe_every or max(1, base.train.steps // 5)
    root = Path(base.sweep.out_dir)
    planned = []
    for variant in variants or [None]:
        for alpha in alphas:
            path = run_dir(root, alpha, variant.name if variant else None)
            config = load_config(
                config_name,
                [
                    *overrides,
                    *(variant.overrides if variant else []),
                    f"loss.alpha={alpha}",
                    f"train.probe_every={probe_every}",
                    f"train.out_dir={path}",
                ],
            )
            planned.append((SweepRun(alpha, variant.name if variant else None, path), config))
    return root, planned


def share_warmup(source: Path, run: Path) -> bool:
    """Start ``run`` from ``source``'s warm-up checkpoint and its warm-up metrics rows, unless
    ``run`` has a checkpoint of its own or ``source`` kept none. The warm-up does not read
    ``loss.alpha`` and a resume is exact, so the run trains as if it had warmed up itself."""
    warmup = source / "checkpoints" / WARMUP
    if latest_checkpoint(run) is not None or not (warmup / "state.pt").is_file():
        return False
    (run / "checkpoints").mkdir(parents=True, exist_ok=True)
    shutil.copytree(warmup, run / "checkpoints" / WARMUP, dirs_exist_ok=True)
    metrics = source / "metrics.jsonl"
    if metrics.is_file():  # the warm-up's rows (step 0), as the run would have written them
        rows = [
            ln
            for ln in metrics.read_text().splitlines(keepends=True)
            if ln.strip() and json.loads(ln).get("step", 0) == 0
        ]
        atomic_write_text(run / "metrics.jsonl", "".join(rows))
    atomic_write_text(run / "latest", WARMUP)
    return True


def run_sweep(config_name: str, overrides: list[str], variants: list[Variant] = ()) -> Path:
    """Train every run not yet done (Stage I, as ``salad-train stage1``), then write the report.
    The runs of one variant differ only in ``loss.alpha``, so the first one's warm-up (if the
    config has one) is run once and shared with the others."""
    root, planned = plan_runs(config_name, list(overrides), list(variants))
    first: dict[str | None, Path] = {}  # variant -> its first run, whose warm-up the others share
    for number, (run, config) in enumerate(planned, 1):
        source = first.setdefault(run.variant, run.path)
        if (run.path / "model" / "training.json").is_file():
            log.info("[%s/%s] %s: done, skipped", number, len(planned), run.name)
            continue
        shared = source != run.path and share_warmup(source, run.path)
        log.info(
            "[%s/%s] %s: loss.alpha=%g%s",
            number,
            len(planned),
            run.name,
            run.alpha,
            f", warm-up shared from {source.name}" if shared else "",
        )
        run_stage1(config, keep_warmup=source == run.path)
    write_report(root, [run for run, _ in planned])
    return root


def discover_runs(root: Path) -> list[SweepRun]:
    """The ``alpha-<a>[-<variant>]`` run dirs under a sweep dir, by variant then alpha."""
    runs = []
    for path in sorted(Path(root).iterdir()):
        match = RUN_DIR.match(path.name)
        if path.is_dir() and match:
            runs.append(SweepRun(float(match["alpha"]), match["variant"], path))
    return sorted(runs, key=lambda r: (r.variant or "", r.alpha))


def probe_points(run: SweepRun) -> list[dict]:
    """The run's probe rows as flat points (step, tokens, M, F, accuracies), in step order."""
    path = run.path / "metrics.jsonl"
    rows = read_metrics(path) if path.is_file() else []
    points = []
    for row in rows:
        probe = row.get("probe")
        if not isinstance(probe, dict):
            continue
        points.append(
            {
                "run": run.name,
                "alpha": run.alpha,
                "variant": run.variant,
                "step": row.get("step"),
                "tokens_seen": row.get("tokens_seen"),
                **{
                    k: probe.get(k)
                    for k in ("M", "F", "text_acc", "speech_acc", "answer_M", "answer_F")
                },
            }
        )
    return sorted(points, key=lambda p: p["step"] or 0)


def _finite(points: list[dict], *keys: str, positive: tuple[str, ...] = ()) -> list[dict]:
    def ok(p: dict, k: str) -> bool:
        v = p.get(k)
        return isinstance(v, (int, float)) and np.isfinite(v) and (k not in positive or v > 0)

    return [p for p in points if all(ok(p, k) for k in keys)]


def _too_few(n: int, need: int = fits.MIN_POINTS) -> dict:
    return {"n": n, "fit": None, "note": f"too few points for a fit: {n} (at least {need} needed)"}


def driver_fit(points: list[dict], target: str, driver: str) -> dict:
    """``target`` ~ a + b ``driver`` (driver "log_M" or "F") over all usable points: the line, its
    in-sample, point-wise leave-one-out and leave-one-run-out R^2, and the partial R^2 of the
    driver given the other one."""
    usable = _finite(points, target, "M", "F", positive=("M",))
    if len(usable) < fits.MIN_POINTS:
        return _too_few(len(usable))
    y = np.array([p[target] for p in usable])
    log_m = np.log([p["M"] for p in usable])
    f = np.array([p["F"] for p in usable])
    x, control = (log_m, f) if driver == "log_M" else (f, log_m)
    if np.ptp(x) == 0:
        note = f"no fit: all {len(usable)} points share one value of {driver}"
        return {"n": len(usable), "fit": None, "note": note}
    line = fits.linear_fit(x, y)
    result = {
        "n": len(usable),
        "fit": "linear",
        **{k: line[k] for k in ("intercept", "slope")},
        "r2": line["r2"],
        "loo_r2": fits.loo_r2(x, y),
        "n_runs": len({p["run"] for p in usable}),
        "loro_r2": fits.loro_r2(x, y, [p["run"] for p in usable]),
        "partial_r2": fits.partial_r2(y, x, control),
        "partial_given": "F" if driver == "log_M" else "log_M",
    }
    return result


def m_power_law(points: list[dict]) -> dict:
    """M(D) = E + B D^-beta over one run's probe points (D: tokens seen), its trend (B < 0:
    rising) and bootstrap CIs of E, B and beta over the probe points."""
    usable = _finite(points, "M", "tokens_seen", positive=("tokens_seen",))
    if len(usable) < fits.MIN_POINTS:
        return _too_few(len(usable))
    D, M = [p["tokens_seen"] for p in usable], [p["M"] for p in usable]
    return {"fit": "power_law", **fits.power_law_fit(D, M), "ci": fits.power_law_ci(D, M)}


def _nan_to_none(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    return value


def write_report(root: Path, runs: list[SweepRun] | None = None) -> dict:
    """``sweep.json``, ``fig3.png``, ``fig4.png`` and ``sweep.md`` for the runs (default: every
    run dir under ``root``); returns what ``sweep.json`` holds."""
    root = Path(root)
    runs = discover_runs(root) if runs is None else runs
    per_run = {run.name: probe_points(run) for run in runs}
    points = [p for run in runs for p in per_run[run.name]]
    summary = {
        "runs": [
            {
                "name": r.name,
                "alpha": r.alpha,
                "variant": r.variant,
                "dir": str(r.path),
                "points": len(per_run[r.name]),
                "m_power_law": m_power_law(per_run[r.name]),
            }
            for r in runs
        ],
        "fig3": {
            "speech_acc_vs_log_M": driver_fit(points, "speech_acc", "log_M"),
            "text_acc_vs_F": driver_fit(points, "text_acc", "F"),
        },
        "points": points,
    }
    summary = _nan_to_none(summary)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / "sweep.json", json.dumps(summary, indent=1))
    fig3(points, summary["fig3"], root / "fig3.png")
    fig4(runs, per_run, {r["name"]: r["m_power_law"] for r in summary["runs"]}, root / "fig4.png")
    atomic_write_text(root / "sweep.md", markdown(summary))
    return summary


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _with_ci(value, ci) -> str:
    low, high = ci if ci else (None, None)
    return f"{_num(value)} [{_num(low)}, {_num(high)}]"


def _fit_line(title: str, fit: dict, driver: str) -> str:
    if fit.get("fit") is None:
        return f"- {title}: {fit['note']}."
    given = fit["partial_given"].replace("_", " ")
    return (
        f"- {title} ({fit['n']} points): slope {_num(fit['slope'])} per unit {driver}, "
        f"R^2 {_num(fit['r2'])}, leave-one-out R^2 {_num(fit['loo_r2'])} (point-wise: "
        f"inflated by autocorrelated checkpoints), leave-one-run-out R^2 "
        f"{_num(fit['loro_r2'])} over {fit['n_runs']} runs (n/a under 3), partial R^2 of "
        f"{driver} given {given} {_num(fit['partial_r2'])}."
    )


def markdown(summary: dict) -> str:
    f3 = summary["fig3"]
    lines = [
        "# Alpha sweep: Stage I per loss.alpha",
        "",
        f"{len(summary['runs'])} runs, {len(summary['points'])} probe points. The paper reports "
        "speech accuracy falling with log M (R^2 0.75) and text accuracy falling with F "
        "(R^2 0.74).",
        "",
        "## Fig. 3: accuracy against the drivers (all runs, all probe points)",
        "",
        _fit_line("speech accuracy ~ log M", f3["speech_acc_vs_log_M"], "log M"),
        _fit_line("text accuracy ~ F", f3["text_acc_vs_F"], "F"),
        "",
        "![Fig. 3](fig3.png)",
        "",
        "## Fig. 4: M, F and accuracy against training tokens",
        "",
        "M(D) = E + B D^-beta per run (D: tokens seen). B < 0 is M rising with data towards E; "
        "[bootstrap 95% CIs over the run's probe points, which are autocorrelated, so if "
        "anything too narrow]; a B interval that spans 0 leaves M's direction open.",
        "",
        "| run | alpha | variant | points | trend | E | B | beta | R^2 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in summary["runs"]:
        fit = run["m_power_law"]
        cells = (
            [fit["trend"]]
            + [_with_ci(fit[k], fit["ci"][k]) for k in ("E", "B", "beta")]
            + [_num(fit["r2"])]
            if fit.get("fit")
            else [fit["note"], "", "", "", ""]
        )
        lines.append(
            f"| {run['name']} | {run['alpha']:g} | {run['variant'] or ''} | "
            f"{run['points']} | " + " | ".join(cells) + " |"
        )
    lines += ["", "![Fig. 4](fig4.png)", "", "Every point and fit value: `sweep.json`.", ""]
    return "\n".join(lines)
