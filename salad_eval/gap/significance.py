"""Exact McNemar tests between paired conditions, one voice at a time.

McNemar needs a right/wrong outcome per item in both conditions; a speech condition has one per
voice, so speech conditions are compared voice by voice (the text conditions need no voice).
"""

from __future__ import annotations

from salad_eval.gap.records import METRICS, TEXT_ONLY, right
from salad_eval.stats import mcnemar_exact

PAIRS = (
    ("text@base", "speech@speech"),
    ("text@base", "text@speech"),
    ("text@speech", "speech@speech"),
    ("text@base", "speech@cascade"),
    ("speech@speech", "speech@speech:silent"),
    ("speech@speech", "speech@speech:shuffled"),
)


def mcnemar_tests(records: list[dict], metric: str, scope: str = "all") -> list[dict]:
    """McNemar test of every pair present, per voice, on the items scored under both sides.

    ``b10`` counts items right under ``a`` and wrong under ``b``; ``b01`` the reverse.
    """
    field = METRICS[metric]
    outcome = {(r["task"], r["item"], r["condition"], r["voice"]): right(r, field) for r in records}
    items = sorted({(r["task"], r["item"]) for r in records})
    voices = sorted({r["voice"] for r in records if r["voice"] is not None})
    tests = []
    for a, b in PAIRS:
        for voice in [None] if (a in TEXT_ONLY and b in TEXT_ONLY) else voices:
            va, vb = (None if c in TEXT_ONLY else voice for c in (a, b))
            b10 = b01 = n = 0
            for task, item in items:
                xa, xb = outcome.get((task, item, a, va)), outcome.get((task, item, b, vb))
                if xa is None or xb is None:
                    continue
                n += 1
                b10 += xa and not xb
                b01 += xb and not xa
            if n:
                tests.append(
                    {
                        "scope": scope,
                        "a": a,
                        "b": b,
                        "voice": voice,
                        "n": n,
                        "b10": b10,
                        "b01": b01,
                        "p_value": mcnemar_exact(b01, b10),
                    }
                )
    return tests
