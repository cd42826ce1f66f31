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
