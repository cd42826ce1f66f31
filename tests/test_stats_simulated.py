"""The statistics behind the loop's and the sweep's conclusions, on simulated data whose answer is
known (issue 31): each test measures a rate or a mean over many seeded draws and checks it with a
margin of a few Monte-Carlo standard errors. Pure numpy: the unit tier."""

from __future__ import annotations

import numpy as np
import pytest

from salad_eval.gap.paired import sign_flip_p
from salad_eval.gap.records import Stratum
from salad_eval.stats import paired_swap_test
from salad_train.loop.seeds import MIN_SEEDS, seed_level
from salad_train.sweep import fits

ALPHA = 0.05


def _null_seeds(rng, draws: int, seeds: int, items: int, spread: float) -> np.ndarray:
    """Right/wrong of models a and b, ``(draws, 2, seeds, items)``, under the procedure's null:
    both models come from the same recipe; each trained instance shifts every item's logit by its
    own N(0, spread) (seed-to-seed spread), items differ in difficulty."""
    difficulty = rng.normal(0, 1.5, size=(draws, 1, 1, items))
    instance = rng.normal(0, spread, size=(draws, 2, seeds, 1))
    p_right = 1 / (1 + np.exp(-(difficulty + instance)))
    return (rng.random(p_right.shape) < p_right).astype(np.int64)


def test_seed_level_test_holds_alpha_where_the_item_pooled_test_does_not():
    rng = np.random.default_rng(31)
    draws, seeds, items = 1000, 3, 500
    right = _null_seeds(rng, draws, seeds, items, spread=0.2)
    per_seed = (right[:, 1] - right[:, 0]).mean(axis=2)  # (draws, seeds): each seed's b - a
    p_seed = np.array([seed_level(list(d))["p"] for d in per_seed])
    fpr_seed = np.mean(p_seed < ALPHA)
    # Monte-Carlo sd of a rate of 0.05 over 1,000 draws is 0.007: 2 points is about 3 sd
    assert abs(fpr_seed - ALPHA) <= 0.02, fpr_seed

    # the old test on the same data: seeds pooled as replicates of each item, sign flips of items
    pooled_draws = 200
    p_items = []
    for d in range(pooled_draws):
        counts = right[d].sum(axis=1)  # (2, items): right answers over seeds, scale = seeds
        present = np.ones(items, dtype=bool)
        stratum = Stratum(
            "t",
            tuple(map(str, range(items))),
            seeds,
            {"a speech@speech": counts[0], "b speech@speech": counts[1]},
            {"a speech@speech": present, "b speech@speech": present},
            {},
        )
        p_items.append(sign_flip_p([stratum], "speech@speech", flips=1000, seed=d))
    fpr_items = np.mean(np.array(p_items) < ALPHA)
    # about 0.4 expected here; sd of a rate over 200 draws is at most 0.035
    assert fpr_items > ALPHA + 0.1, fpr_items


def test_seed_level_test_detects_a_real_procedure_effect_and_needs_three_seeds():
    rng = np.random.default_rng(7)
    per_seed = rng.normal(0.05, 0.02, size=(200, 5))  # a 5-point gain, seed sd 2 points
    power = np.mean([seed_level(list(d))["p"] < ALPHA for d in per_seed])
    assert power > 0.8, power
    two = seed_level([0.05, 0.04])
    assert two["p"] is None and "not available" in two["note"] and MIN_SEEDS == 3
    assert two["mean"] == np.mean([0.05, 0.04]) and two["claim"] == "the procedure"


def _runs(rng, n_runs: int, n_points: int) -> np.ndarray:
    """Per run, a level of its own plus a drift over its probe checkpoints (autocorrelated)."""
    level = rng.normal(0, 1, (n_runs, 1))
    return (level + np.cumsum(rng.normal(0, 0.3, (n_runs, n_points)), axis=1)).ravel()


def test_leave_one_run_out_r2_is_not_inflated_on_null_runs_and_finds_a_real_line():
    rng = np.random.default_rng(3)
    runs = np.repeat(np.arange(3), 5)  # 3 runs x 5 probe points, as in a small sweep
    loo, loro, real = [], [], []
    for _ in range(400):
        x, y = _runs(rng, 3, 5), _runs(rng, 3, 5)  # null: x and y unrelated across runs
        loo.append(fits.loo_r2(x, y))
        loro.append(fits.loro_r2(x, y, runs))
        real.append(fits.loro_r2(x, 2 * x + rng.normal(0, 0.3, x.size), runs))
    loo, loro = np.array(loo), np.array(loro)
    # the point-wise figure is inflated: about 20% of null draws > 0.5 (sd of that rate 0.02)
    assert np.mean(loo > 0.5) > 0.1
    assert np.mean(loro) <= 0 and np.median(loro) <= 0, (np.mean(loro), np.median(loro))
    assert np.mean(loro > 0.5) < np.mean(loo > 0.5) / 2
    assert np.median(real) > 0.7, np.median(real)


def test_leave_one_run_out_r2_needs_three_runs():
    x = np.arange(6.0)
    assert np.isnan(fits.loro_r2(x, x, [0, 0, 0, 1, 1, 1]))
    assert fits.loro_r2(x, 3 - 2 * x, [0, 0, 1, 1, 2, 2]) == pytest.approx(1.0)


def test_power_law_fits_a_rising_misalignment_as_rising_and_a_falling_one_as_falling():
    rng = np.random.default_rng(5)
    D = np.geomspace(1e4, 1e7, 8)  # tokens seen at 8 probe points
    for sign, trend in ((-1, "rising"), (1, "falling")):
        for _ in range(10):
            M = 0.5 + sign * 4 * D**-0.3 + rng.normal(0, 0.005, D.size)
            fit = fits.power_law_fit(D, M)
            assert fit["trend"] == trend and np.sign(fit["B"]) == sign, fit
            assert fit["r2"] > 0.9, fit
        ci = fits.power_law_ci(D, M, n_boot=60)
        assert sign * ci["B"][0] > 0 or sign * ci["B"][1] > 0  # the CI leans the right way
        assert ci["B"][0] <= fit["B"] <= ci["B"][1], (ci, fit)
        assert (ci["B"][0] > 0) == (ci["B"][1] > 0), ci  # and excludes flat at this noise
    # pure noise around a flat M: the B interval spans 0
    spans = [
        (lambda ci: ci["B"][0] <= 0 <= ci["B"][1])(
            fits.power_law_ci(D, 0.5 + rng.normal(0, 0.005, D.size), n_boot=60)
        )
        for _ in range(3)
    ]
    assert sum(spans) >= 2, spans


def test_paired_swap_test_holds_alpha_on_documents_and_items_and_detects_a_shift():
    rng = np.random.default_rng(11)
    null_docs, shift_docs, null_items = [], [], []
    for _ in range(400):
        # corpus M: 32 documents of 20-120 tokens, each with its own level that both models share
        tokens = rng.integers(20, 120, 32)
        level = tokens * rng.gamma(2, 0.5, 32)
        a, b = level * rng.lognormal(0, 0.2, (2, 32))
        null_docs.append(paired_swap_test(a, b, tokens, tokens, flips=500, n_boot=20)["p"])
        shift_docs.append(paired_swap_test(a, 0.8 * b, tokens, tokens, flips=500, n_boot=20)["p"])
        # answer KL: 200 items, one value per item and model
        item = rng.gamma(1.0, 1.0, 200)
        ka, kb = item * rng.lognormal(0, 0.5, (2, 200))
        null_items.append(paired_swap_test(ka, kb, flips=500, n_boot=20)["p"])
    # sd of a rate of 0.05 over 400 draws is 0.011: 3 sd either side
    for p in (null_docs, null_items):
        assert 0.017 <= np.mean(np.array(p) < ALPHA) <= 0.085, np.mean(np.array(p) < ALPHA)
    assert np.mean(np.array(shift_docs) < ALPHA) > 0.75  # a 20% lower M: about 0.9 measured
