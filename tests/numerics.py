"""The one float32 tolerance of the test suite, derived from the arithmetic.

Two float32 computations of one quantity that sum the same terms in another order (another
batch size, padding, another kernel for another processor: AVX-512 against AVX2, MKL against
oneDNN) differ by rounding alone. For a sum of ``n`` terms ``x_i`` the difference is at most
about ``n * eps * sum|x_i|`` (the worst case, every rounding in one direction) and typically
``sqrt(n) * eps * sum|x_i|`` (roundings are independent and cancel like a random walk), where
``eps = 2**-23 ~= 1.19e-7`` is float32's machine epsilon. A log-prob, a KL or a loss is a chain
of such sums: the longest dot product of the network (``terms``, its widest matmul or
convolution), a few layers deep, then a sum over tokens whose magnitude the value itself shows
(``sum|x_i| ~= |value|`` for log-probs, which only add negative terms). So two values ``a``, ``b``
agree when

    |a - b| <= MARGIN * sqrt(terms) * EPS32 * (max(|a|, |b|) + floor)

relative to the values' magnitude plus an absolute ``floor`` (in the values' unit) for values
near zero that come out of intermediates of order one (a log-prob of -0.01 is a difference of
logits of order one). A KL compares with ``floor=0``: its terms are p-weighted differences of
log-probs, small where the KL is, so its rounding scales with the KL itself. ``MARGIN`` = 4
covers the layers the roundings pass through and the tail beyond the typical case: SmolLM2's
batched scoring, the closest case measured (AVX2), reaches a third of the bound. It stays far
below what a real defect moves (a wrong token, a leaking pad, a clip that does not reach the
decoder move a log-prob by 1e-3 and more).

Example: the tiny Voxtral's batch sizes 1 and 8 (longest dot product 384) give log-probs up to
90 nats that differ by 1.5e-5: the bound is 4 * 19.6 * 1.19e-7 * 91 = 8.5e-4. A fixed absolute
1e-5 is below a single ulp of 90 (7.6e-6) times two: too tight for any reordering at all.

Where two computations run the same kernels on the same shapes, the result is an identity and
the tests compare with ``==``, with a comment naming the identity; this tolerance is for the
rest, and is the only one a test may apply to log-probs, KLs and losses.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EPS32 = 2.0**-23  # float32 machine epsilon (the spacing of float32 numbers at 1.0)
MARGIN = 4.0


def float32_tolerance(magnitude, *, terms: int, floor: float = 1.0):
    """The largest difference rounding alone explains between two float32 computations of a
    value of ``magnitude`` (a number or an array) whose longest reordered sum has ``terms``
    terms (module docstring)."""
    if terms < 1:
        raise ValueError(f"terms must be >= 1, got {terms}")
    return MARGIN * math.sqrt(terms) * EPS32 * (np.abs(magnitude) + floor)


def _as_array(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=np.float64)


def float32_close(a, b, *, terms: int, floor: float = 1.0) -> bool:
    """``a`` and ``b`` (numbers, sequences, arrays or tensors of one shape) agree elementwise
    within ``float32_tolerance`` of the larger of the two."""
    x, y = _as_array(a), _as_array(b)
    if x.shape != y.shape:
        return False
    bound = float32_tolerance(np.maximum(np.abs(x), np.abs(y)), terms=terms, floor=floor)
    return bool(np.all(np.abs(x - y) <= bound))


def assert_float32_close(actual, expected, *, terms: int, floor: float = 1.0) -> None:
    """``float32_close``, failing with the worst element, its difference and its bound."""
    x, y = _as_array(actual), _as_array(expected)
    assert x.shape == y.shape, f"shapes differ: {x.shape} != {y.shape}"
    if x.size == 0:
        return
    bound = float32_tolerance(np.maximum(np.abs(x), np.abs(y)), terms=terms, floor=floor)
    excess = np.abs(x - y) / bound
    worst = tuple(int(i) for i in np.unravel_index(int(np.argmax(excess)), x.shape))
    a, b = float(x[worst]), float(y[worst])
    assert excess[worst] <= 1.0, (
        f"float32 values differ beyond rounding (terms={terms}, floor={floor}): at {worst} "
        f"{a!r} != {b!r}, |diff| {abs(a - b):.3g} > bound {float(bound[worst]):.3g} "
        f"({float(excess[worst]):.1f}x)"
    )


def longest_reduction(*modules: torch.nn.Module) -> int:
    """The longest dot product in ``modules``: the widest linear layer's input or the largest
    convolution window (input channels per group times kernel size); ``terms`` for values the
    modules compute."""
    longest = 1
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, torch.nn.Linear):
                longest = max(longest, layer.in_features)
            elif isinstance(layer, torch.nn.modules.conv._ConvNd):
                window = layer.in_channels // layer.groups * math.prod(layer.kernel_size)
                longest = max(longest, window)
    return longest
