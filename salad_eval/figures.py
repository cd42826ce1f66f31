"""matplotlib for every figure salad draws: the headless backend, PNG saving, error bars.

Reports, robustness ladders, voice diversity, comparisons and the training reports import ``plt``
from here, so the backend is chosen once, before pyplot loads, whoever draws first.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display, the same pixels on every machine
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["error_bars", "plt", "save"]


def error_bars(figs: list[dict]) -> np.ndarray:
    """Asymmetric error bars (percentage points) from figures' intervals."""
    return np.array(
        [
            [100 * (f["value"] - f["ci_low"]) for f in figs],
            [100 * (f["ci_high"] - f["value"]) for f in figs],
        ]
    ).clip(min=0)


def save(fig, path: Path) -> str:
    """Write a figure as PNG and return its file name (plots are linked by name)."""
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path.name
