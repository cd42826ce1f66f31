"""Paired statistics: bootstrap confidence intervals over items and exact McNemar tests.

Every figure carries its point value, its 95% interval and the number of items behind it, so a
reader can tell a real difference from noise. Intervals are paired: one set of resampled item
indices per task serves every condition, so differences between conditions keep their pairing.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from math import comb

import numpy as np
from scipy.stats import t as student_t

CI_LEVEL = 0.95


@dataclass(frozen=True)
class Figure:
    """One reported number: point value, bootstrap interval, item count.

    ``num``/``den`` are the exact integer numerator and denominator behind an accuracy or a
    difference of accuracies (absent for means of real values such as KL divergences).
    """

    value: float
    ci_low: float
    ci_high: float
    n: int
    num: int | None = None
    den: int | None = None

    def to_dict(self) -> dict:
        out = {"value": self.value, "ci_low": self.ci_low, "ci_high": self.ci_high, "n": self.n}
        if self.num is not None:
            out |= {"num": self.num, "den": self.den}
        return out


def resample_indices(n_items: int, n_boot: int, seed: int, stratum: str) -> np.ndarray:
    """``(n_boot + 1, n_items)`` indices; row 0 is the identity (the point estimate).

    Seeded by the stratum name and size, so every group with the same items resamples alike.
    """
    rng = np.random.default_rng([seed, zlib.crc32(stratum.encode()), n_items])
    boot = rng.integers(0, n_items, size=(n_boot, n_items), dtype=np.int32)
    return np.vstack([np.arange(n_items, dtype=np.int32)[None, :], boot])


def interval(samples: np.ndarray) -> tuple[float, float]:
    """Percentile interval of the bootstrap replicates (row 0, the point estimate, excluded)."""
    reps = samples[1:]
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return float("nan"), float("nan")
    tail = (1 - CI_LEVEL) / 2 * 100
    low, high = np.percentile(reps, [tail, 100 - tail])
    return float(low), float(high)


def mcnemar_exact(b01: int, b10: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of the discordant pairs at 1/2."""
    n = b01 + b10
    if n == 0:
        return 1.0
    k = min(b01, b10)
    tail = sum(comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


def one_sample_t(values) -> dict:
    """Two-sided one-sample t test of mean 0 over independent replicates (e.g. per-seed or
    per-document differences b - a, so it is the paired t): ``n``, ``mean``, sample ``sd``,
    ``t`` and ``p``; ``t`` and ``p`` are None with fewer than 2 values or no spread."""
    v = np.asarray(values, dtype=float)
    n = len(v)
    out = {"n": n, "mean": float(v.mean()) if n else None, "sd": None, "t": None, "p": None}
    if n < 2:
        return out
    sd = float(v.std(ddof=1))
    out["sd"] = sd
    if sd == 0:
        return out
    t = float(v.mean() / (sd / np.sqrt(n)))
    return out | {"t": t, "p": float(2 * student_t.sf(abs(t), n - 1))}


def paired_swap_test(
    num_a, num_b, den_a=None, den_b=None, flips: int = 10_000, n_boot: int = 1000, seed: int = 0
) -> dict:
    """Model b against model a on the same units (documents, items) for a pooled ratio
    sum(num) / sum(den) per model (den 1 per unit: a mean), e.g. corpus M (KL summed per
    document over its tokens) or the per-item answer KL.

    ``diff`` is b - a with a paired bootstrap 95% CI over units; ``p`` is a paired swap
    (randomization) test: under the null the two models are exchangeable on each unit, so each
    unit's (a, b) pair is swapped at random ``flips`` times, seeded; p counts the swaps whose
    |b - a| is at least the observed one, the observed included. The unit is the replicate, so
    it holds however many tokens a document has."""
    num_a, num_b = np.asarray(num_a, dtype=float), np.asarray(num_b, dtype=float)
    den_a = np.ones_like(num_a) if den_a is None else np.asarray(den_a, dtype=float)
    den_b = np.ones_like(num_b) if den_b is None else np.asarray(den_b, dtype=float)
    n = len(num_a)
    if n == 0 or den_a.sum() <= 0 or den_b.sum() <= 0:
        empty = ("a_value", "b_value", "diff", "ci_low", "ci_high", "p")
        return {"n": n} | dict.fromkeys(empty)

    def diff(rows: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return num_b[rows].sum(-1) / den_b[rows].sum(-1) - num_a[rows].sum(-1) / den_a[
                rows
            ].sum(-1)

    idx = resample_indices(n, n_boot, seed, "paired swap")
    low, high = interval(diff(idx))
    observed = float(diff(np.arange(n)))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, flips, 1000):  # chunks keep many units in memory
        swap = rng.integers(0, 2, size=(min(1000, flips - start), n)).astype(bool)
        nb, db = np.where(swap, num_a, num_b).sum(1), np.where(swap, den_a, den_b).sum(1)
        na, da = np.where(swap, num_b, num_a).sum(1), np.where(swap, den_b, den_a).sum(1)
        hits += int(np.sum(np.abs(nb / db - na / da) >= abs(observed) - 1e-12))
    return {
        "n": n,
        "a_value": float(num_a.sum() / den_a.sum()),
        "b_value": float(num_b.sum() / den_b.sum()),
        "diff": observed,
        "ci_low": low,
        "ci_high": high,
        "p": (1 + hits) / (1 + flips),
    }
