"""The WSD schedule's endpoints: warmup up to the plateau, then a decay whose first step is
already below the plateau and whose last step is at zero (Stage I and Stage II alike)."""

from __future__ import annotations

import pytest

from salad_train.recipe.optim import decay_start, wsd_factor


@pytest.mark.parametrize(
    ("total", "warmup", "fraction"), [(100, 10, 0.2), (23000, 500, 0.2), (3, 0, 1.0)]
)
def test_wsd_endpoints(total, warmup, fraction):
    factors = [wsd_factor(s, warmup, total, fraction) for s in range(total)]
    start = decay_start(total, fraction)
    if warmup:
        assert factors[warmup - 1] == 1.0 and factors[0] == 1 / warmup
    assert all(f == 1.0 for f in factors[warmup:start])  # the plateau
    assert factors[start] < 1.0  # the decay's first step is below the plateau
    assert factors[-1] == 0.0  # ... and its last is at zero
    decay = factors[start:]
    steps = {round(a - b, 12) for a, b in zip(decay, decay[1:], strict=False)}
    assert steps == {round(1 / (total - start), 12)}  # linear
    assert wsd_factor(total, warmup, total, fraction) == 0.0  # after the run: still zero
