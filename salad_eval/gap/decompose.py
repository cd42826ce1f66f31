"""The gap and its decomposition, with paired bootstrap intervals, for one group of items.

    gap          = acc(text@base)   - acc(speech@speech)
    forgetting   = acc(text@base)   - acc(text@speech)
    misalignment = acc(text@speech) - acc(speech@speech)
    cascade gap  = acc(text@base)   - acc(speech@cascade)

A group spanning several tasks averages over tasks (each task weighs the same, as the paper's
averages do); the bootstrap resamples items within each task. gap = forgetting + misalignment
holds exactly: on the integer numerators (all three share one denominator), and on the floats,
because the gap's value and replicates are computed as the sum of the other two.
"""

from __future__ import annotations

from math import lcm

import numpy as np

from salad_eval.gap.records import ALL_CONDITIONS, CONTROLS, VALUES, Stratum
from salad_eval.stats import Figure, interval, resample_indices


def _rates(strata: list[Stratum], idxs: list[np.ndarray], a: str, b: str | None):
    """Replicates of mean score(a) [- score(b)] over items scored under both, and exact parts."""
    per_task, parts = [], []
    for s, idx in zip(strata, idxs, strict=True):
        mask = s.present[a] & (s.present[b] if b else True)
        count = int(mask.sum())
        if count == 0:
            continue
        vals = np.where(mask, s.scores[a] - (s.scores[b] if b else 0), 0)
        sums = vals[idx].sum(axis=1)
        counts = mask[idx].sum(axis=1) if count < len(mask) else count
        with np.errstate(invalid="ignore", divide="ignore"):
            per_task.append(sums / (counts * s.scale))
        parts.append((int(vals.sum()), count * s.scale, count))
    return per_task, parts


def _macro(per_task: list[np.ndarray]) -> np.ndarray:
    """Mean over tasks, replicate by replicate (a task absent from a replicate is left out)."""
    stacked = np.vstack(per_task)
    counts = (~np.isnan(stacked)).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nansum(stacked, axis=0) / counts


def _figure(samples: np.ndarray, n: int, num: int | None = None, den: int | None = None) -> Figure:
    low, high = interval(samples)
    return Figure(float(samples[0]), low, high, n, num, den)


def rate_figure(strata, idxs, a, b=None) -> tuple[Figure, np.ndarray] | None:
    per_task, parts = _rates(strata, idxs, a, b)
    if not parts:
        return None
    den = len(parts) * lcm(*(d for _, d, _ in parts))
    num = sum(s * den // (len(parts) * d) for s, d, _ in parts)
    samples = _macro(per_task)
    return _figure(samples, sum(c for _, _, c in parts), num, den), samples


def _mean_figure(strata, idxs, name: str) -> Figure | None:
    """Mean of a per-item real value (KL, WER) over the items that carry it."""
    per_task, n = [], 0
    for s, idx in zip(strata, idxs, strict=True):
        vals = s.values[name]
        have = ~np.isnan(vals)
        if not have.any():
            continue
        n += int(have.sum())
        with np.errstate(invalid="ignore", divide="ignore"):
            per_task.append(np.nansum(vals[idx], axis=1) / have[idx].sum(axis=1))
    return _figure(_macro(per_task), n) if per_task else None


def indices(strata: list[Stratum], n_boot: int, seed: int) -> list[np.ndarray]:
    """One resampling of each task's items, shared by every condition of the group."""
    return [resample_indices(len(s.items), n_boot, seed, s.task) for s in strata]


def decompose(strata: list[Stratum], n_boot: int = 1000, seed: int = 0) -> dict:
    """The decomposition table of one group (strata from ``records.build_strata``)."""
    idxs = indices(strata, n_boot, seed)
    accuracy = {}
    for cond in ALL_CONDITIONS:
        if fig := rate_figure(strata, idxs, cond):
            accuracy[cond] = fig[0].to_dict()
    forgetting, f_samples = rate_figure(strata, idxs, "text@base", "text@speech")
    misalignment, m_samples = rate_figure(strata, idxs, "text@speech", "speech@speech")
    assert forgetting.den == misalignment.den  # same items, same tasks: one denominator
    gap = _figure(
        f_samples + m_samples, forgetting.n, forgetting.num + misalignment.num, forgetting.den
    )
    table = {
        "n_items": sum(len(s.items) for s in strata),
        "n_tasks": len(strata),
        "accuracy": accuracy,
        "gap": gap.to_dict(),
        "forgetting": forgetting.to_dict(),
        "misalignment": misalignment.to_dict(),
    }
    if cascade := rate_figure(strata, idxs, "text@base", "speech@cascade"):
        table["cascade_gap"] = cascade[0].to_dict()
    margins = {}
    for control in CONTROLS:
        if margin := rate_figure(strata, idxs, "speech@speech", control):
            margins[control] = margin[0].to_dict()
    if margins:
        table["control_margin"] = margins
    divergence = {}
    for name in VALUES:
        if fig := _mean_figure(strata, idxs, name):
            divergence[name] = fig.to_dict()
    if divergence:
        table["divergence"] = divergence
    return table


def condition_rates(strata: list[Stratum], n_boot: int = 1000, seed: int = 0) -> dict:
    """A rate counted per item (strata of ``records.RATES``: no answer, agreement) under each
    condition, with the paired bootstrap interval of the decomposition's resampling."""
    idxs = indices(strata, n_boot, seed)
    return {
        cond: fig[0].to_dict()
        for cond in ALL_CONDITIONS
        if (fig := rate_figure(strata, idxs, cond))
    }
