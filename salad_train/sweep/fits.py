"""The fits behind the paper's Fig. 3 and Fig. 4 (arXiv 2510.13632): plain numpy/scipy, no models.

Fig. 3 puts speech accuracy against log M and text accuracy against F over every run and probe
point of an alpha sweep, each with a line, its point-wise leave-one-out R^2 (``loo_r2``), its
leave-one-run-out R^2 (``loro_r2``, the one that holds with autocorrelated checkpoints) and the
partial R^2 of one driver given the other (``partial_r2``). Fig. 4 fits M against training
tokens D with a power law per alpha (``power_law_fit``). Each function needs ``MIN_POINTS``
points and raises ``TooFewPoints`` (a ``ValueError``) with fewer, so a report can say so instead
of failing.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.optimize import OptimizeWarning, curve_fit

from salad_eval.stats import interval, resample_indices

MIN_POINTS = 3


class TooFewPoints(ValueError):
    """A fit was asked of fewer points than it needs."""


def _arrays(*columns, need: int = MIN_POINTS) -> list[np.ndarray]:
    arrays = [np.asarray(c, dtype=float) for c in columns]
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError("the columns of a fit must have the same length")
    if n < need:
        raise TooFewPoints(f"{n} point{'s' * (n != 1)}: a fit needs at least {need}")
    return arrays


def _design(*columns: np.ndarray) -> np.ndarray:
    """An intercept column plus each regressor (a 1-D column or the columns of a 2-D array)."""
    parts = [np.ones(len(columns[0]))]
    for column in columns:
        parts.extend(column.T if column.ndim == 2 else [column])
    return np.column_stack(parts)


def _sse(y: np.ndarray, design: np.ndarray) -> float:
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    return float(np.sum((y - design @ coef) ** 2))


def linear_fit(x, y) -> dict[str, float]:
    """Least squares y ~ a + b x: ``intercept`` a, ``slope`` b, in-sample ``r2`` and ``n``."""
    x, y = _arrays(x, y)
    slope, intercept = np.polyfit(x, y, 1)
    total = float(np.sum((y - y.mean()) ** 2))
    sse = float(np.sum((y - intercept - slope * x) ** 2))
    return {
        "intercept": float(intercept),
        "slope": float(slope),
        "r2": 1 - sse / total if total > 0 else float("nan"),
        "n": len(x),
    }


def loo_r2(x, y) -> float:
    """Leave-one-out cross-validated R^2 of the line y ~ a + b x: each point is predicted by the
    line fitted to all the others, and R^2 = 1 - PRESS / total SS (PRESS: the sum of those squared
    prediction errors; total SS: about the mean of all y). Unlike the in-sample R^2 it can be
    negative, when the line predicts held-out points worse than their mean does."""
    x, y = _arrays(x, y)
    press = 0.0
    for i in range(len(x)):
        rest = np.arange(len(x)) != i
        if np.ptp(x[rest]) == 0:
            return float("nan")  # the others share one x: no line through them
        slope, intercept = np.polyfit(x[rest], y[rest], 1)
        press += (y[i] - intercept - slope * x[i]) ** 2
    total = float(np.sum((y - y.mean()) ** 2))
    return 1 - press / total if total > 0 else float("nan")


def loro_r2(x, y, runs) -> float:
    """Leave-one-run-out R^2 of the line y ~ a + b x: each run's points are predicted by the line
    fitted to the other runs' points, R^2 = 1 - PRESS / total SS as in ``loo_r2``. A run's probe
    checkpoints are autocorrelated, so leaving out one point leaves its neighbours to predict it
    and inflates ``loo_r2``; a run is the independent unit. NaN with fewer than 3 runs (a line
    through one held-in run says nothing across runs) or where the other runs share one x."""
    x, y = _arrays(x, y)
    runs = np.asarray(runs)
    if len(runs) != len(x):
        raise ValueError("the columns of a fit must have the same length")
    names = np.unique(runs)
    if len(names) < 3:
        return float("nan")
    press = 0.0
    for name in names:
        rest = runs != name
        if np.ptp(x[rest]) == 0:
            return float("nan")
        slope, intercept = np.polyfit(x[rest], y[rest], 1)
        press += float(np.sum((y[~rest] - intercept - slope * x[~rest]) ** 2))
    total = float(np.sum((y - y.mean()) ** 2))
    return 1 - press / total if total > 0 else float("nan")


def partial_r2(y, x, controls) -> float:
    """Partial R^2 of ``x`` given ``controls`` (one column or an n x k array): the share of the
    variance the controls leave unexplained in y that adding x explains,
    1 - SSE(y ~ 1 + controls + x) / SSE(y ~ 1 + controls)."""
    y, x, controls = _arrays(y, x, controls)
    reduced = _sse(y, _design(controls))
    if reduced <= 1e-12 * max(float(np.sum(y**2)), 1.0):
        return float("nan")  # the controls explain y exactly: nothing is left for x
    return max(0.0, 1 - _sse(y, _design(controls, x)) / reduced)


def _power_law(d, e, b, beta):
    return e + b * d ** (-beta)


def _linear_part(x: np.ndarray, M: np.ndarray, betas: np.ndarray):
    """For each beta, least squares M ~ E + B x^-beta with E >= 0 and B of either sign: the
    unconstrained solution, or, where it has E < 0, the best line through the origin (the one
    bound of a convex problem). Returns (E, B, SSE) arrays over ``betas``."""
    z = x[None, :] ** (-betas[:, None])  # (betas, points)
    n, sx, sy = len(x), z.sum(axis=1), M.sum()
    sxx, sxy = (z * z).sum(axis=1), z @ M
    det = n * sxx - sx**2
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(det > 0, (n * sxy - sx * sy) / det, 0.0)
        e = np.where(det > 0, (sy - b * sx) / n, sy / n)
        bound = e < 0
        b = np.where(bound, sxy / sxx, b)
        e = np.where(bound, 0.0, e)
    sse = ((M[None, :] - e[:, None] - b[:, None] * z) ** 2).sum(axis=1)
    return e, b, sse


def power_law_fit(D, M) -> dict:
    """Fit M(D) = E + B * D^-beta (E >= 0; B of either sign; 0 < beta <= 10) and return ``E``,
    ``B``, ``beta``, ``r2``, ``n`` and ``trend``. B > 0 is M falling towards its floor E; B < 0
    is M *rising* towards E (the paper's alpha = 0 finding), which a B >= 0 bound would fit as
    flat; B = 0 is flat. Deterministic: D is scaled by its smallest value, beta starts at the
    best of a fixed grid (for a fixed beta, E and B are a linear least-squares problem), and
    ``scipy.optimize.curve_fit`` refines all three from there."""
    D, M = _arrays(D, M)
    if np.any(D <= 0):
        raise ValueError("a power law in D needs D > 0")
    scale = float(D.min())
    x = D / scale
    grid = np.geomspace(1e-3, 10, 200)
    es, bs, sses = _linear_part(x, M, grid)
    best = int(np.argmin(sses))
    beta0, e0, b0 = float(grid[best]), float(es[best]), float(bs[best])
    try:
        with warnings.catch_warnings():  # few points: no covariance, which is not used here
            warnings.simplefilter("ignore", OptimizeWarning)
            (e, b, beta), _ = curve_fit(
                _power_law,
                x,
                M,
                p0=[e0, b0, beta0],
                bounds=([0, -np.inf, 1e-6], [np.inf, np.inf, 10]),
                method="trf",
                xtol=1e-15,
                ftol=1e-15,
                gtol=1e-15,
                max_nfev=20000,
            )
    except RuntimeError:  # no convergence: keep the grid's answer
        e, b, beta = e0, b0, beta0
    total = float(np.sum((M - M.mean()) ** 2))
    sse = float(np.sum((M - _power_law(x, e, b, beta)) ** 2))
    return {
        "E": float(e),
        "B": float(b * scale**beta),
        "beta": float(beta),
        "r2": 1 - sse / total if total > 0 else float("nan"),
        "n": len(D),
        "trend": "falling" if b > 0 else "rising" if b < 0 else "flat",
    }


def power_law_ci(D, M, n_boot: int = 200, seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap 95% CIs of ``E``, ``B`` and ``beta`` over probe points: the points
    are resampled with replacement (``stats.resample_indices``) and refitted; a resample with
    fewer than ``MIN_POINTS`` distinct D is dropped. Probe points of one run are autocorrelated,
    so these intervals are if anything too narrow; a B interval that spans 0 says the direction
    of M is not established."""
    D, M = _arrays(D, M)
    idx = resample_indices(len(D), n_boot, seed, "power law")
    reps = np.full((n_boot + 1, 3), np.nan)
    for r, rows in enumerate(idx):
        if r == 0 or len(np.unique(D[rows])) < MIN_POINTS:
            continue  # row 0 is the point estimate, which ``interval`` leaves out
        fit = power_law_fit(D[rows], M[rows])
        reps[r] = fit["E"], fit["B"], fit["beta"]
    return {name: list(interval(reps[:, k])) for k, name in enumerate(("E", "B", "beta"))}


def power_law(D, E: float, B: float, beta: float) -> np.ndarray:
    """M(D) = E + B * D^-beta, for drawing a fitted curve."""
    return E + B * np.asarray(D, dtype=float) ** (-beta)
