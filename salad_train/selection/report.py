"""The selection report: what each cluster is about, how misaligned it is, and what was chosen.

``report.md`` is for a reader who has not seen the code: one row per cluster (size, M(c), weight,
share of the selection, top words, examples), sorted by M(c). ``report.json`` holds the same
numbers plus the run's totals; ``report.png`` plots M(c) beside each cluster's pool and selection
shares.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from salad_eval.divergence import CONTINUATION_TOKENS
from salad_eval.figures import plt
from salad_eval.home import atomic_write_text
from salad_train.config import Config

_WORD = re.compile(r"[a-z][a-z']+")


def top_words(texts_by_cluster: Sequence[Sequence[str]], n: int = 6) -> list[list[str]]:
    """Per cluster the words with the highest TF-IDF (term count x log(K / clusters using it))."""
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS  # noqa: PLC0415 - deferred: optional sklearn, loaded on this path only

    counts = [
        Counter(
            w
            for t in texts
            for w in _WORD.findall(t.lower())
            if w not in ENGLISH_STOP_WORDS and len(w) > 2
        )
        for texts in texts_by_cluster
    ]
    spread = Counter(w for c in counts for w in c)
    k = len(counts)
    return [
        [
            w
            for w, _ in sorted(
                c.items(), key=lambda kv: (-kv[1] * math.log(k / spread[kv[0]]), kv[0])
            )[:n]
        ]
        for c in counts
    ]


def _plot(path: Path, rows: list[dict], gamma: float) -> None:
    names = [f"c{r['cluster']}\n{r['top_words'][0] if r['top_words'] else ''}" for r in rows]
    x = np.arange(len(rows))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6, 0.35 * len(rows) + 2), 6), sharex=True)
    top.bar(x, [np.nan if r["M"] is None else r["M"] for r in rows], color="tab:red")
    top.set_ylabel("misalignment M(c)\n(mean KL, nats)")
    top.set_title("Stage II selection: clusters sorted by misalignment")
    width = 0.4
    bottom.bar(
        x - width / 2,
        [r["pool_share"] for r in rows],
        width,
        label="share of pool",
        color="tab:gray",
    )
    bottom.bar(
        x + width / 2,
        [r["selected_share"] for r in rows],
        width,
        color="tab:blue",
        label=f"share of selection (gamma = {gamma:g})",
    )
    bottom.plot(x, [r["weight"] for r in rows], "k.", label="sampling weight P(c)")
    bottom.set_ylabel("share")
    bottom.legend(fontsize=8)
    bottom.set_xticks(x, names, rotation=90 if len(rows) > 20 else 0, fontsize=8)
    bottom.set_xlabel("cluster")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


KL_OF = {  # select.signal: what the KL compares
    "misalignment": "between its next-token predictions after the written text and after the "
    "same words spoken",
    "distillation": "of its next-token predictions after the words spoken from the base LLM's "
    "after the written text (Stage I's distillation KL)",
}


def _markdown(rows: list[dict], totals: dict) -> str:
    t = totals
    lines = [
        "# Stage II active selection",
        "",
        f"The text pool ({t['pool']} documents) was embedded with `{t['embedder']}` and cut into "
        f"{t['clusters']} balanced clusters. For each cluster the Stage I model's misalignment "
        "M(c) "
        "was measured on a few synthesized probe texts whose clips ASR reads back (probes: how "
        f"many): the KL divergence {KL_OF[t['signal']]} (per token over the continuation's first "
        f"{CONTINUATION_TOKENS} tokens, averaged over texts and voices; higher = speech "
        f"understood worse). Clusters were then sampled with P(c) ~ P_pool(c) x "
        f"M(c)^{t['gamma']:g} (gamma = 0 would be random selection) until the kept speech "
        "reached the budget.",
        "",
        f"- budget: {t['budget_hours']:.4f} h of kept speech ({t['budget_of']}); estimated "
        f"{t['est_hours']:.4f} h, synthesized {t['hours']:.4f} h ({t['kept_hours']:.4f} h kept)",
        f"- selected texts: {t['selected']}; dropped {t['dropped']} (synthesis failed or ASR "
        f"character error rate above {t['max_cer']:.0%}); kept {t['kept']}",
        f"- voices: {', '.join(t['voices'])}",
        *(
            ["- gamma = 0: M(c) was not measured (it cannot change the weights)"]
            * (t["gamma"] == 0)
        ),
        "",
        "| cluster | size | probes | M(c) | weight P(c) | selected | share of selection "
        "| top words | examples |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        examples = " / ".join(e[:80] + ("..." if len(e) > 80 else "") for e in r["examples"])
        lines.append(
            f"| c{r['cluster']} | {r['size']} | {r['probes']} | "
            f"{'-' if r['M'] is None else format(r['M'], '.3f')} | {r['weight']:.3f} | "
            f"{r['selected']} | {r['selected_share']:.1%} | {', '.join(r['top_words'])} | "
            f"{examples.replace('|', '/')} |"
        )
    lines += ["", "![M(c) and selection share per cluster](report.png)", ""]
    return "\n".join(lines)


def write_report(
    out: Path,
    *,
    pool: Sequence[str],
    labels: np.ndarray,
    misalignment: np.ndarray,
    weights: np.ndarray,
    chosen: Sequence,
    probes: dict[int, int],
    budget_hours: float,
    config: Config,
    key: str,
) -> dict:
    """Write ``report.md``, ``report.json`` and ``report.png``; return the JSON content."""
    s = config.select
    k = len(weights)
    members = [[pool[i] for i in np.flatnonzero(labels == c)] for c in range(k)]
    words = top_words(members)
    picked = Counter(c.cluster for c in chosen)
    rows = [
        {
            "cluster": c,
            "size": len(members[c]),
            "probes": probes[c],
            "pool_share": len(members[c]) / len(pool),
            "M": None if np.isnan(misalignment[c]) else float(misalignment[c]),  # gamma 0: none
            "weight": float(weights[c]),
            "selected": picked[c],
            "selected_share": picked[c] / max(1, len(chosen)),
            "top_words": words[c],
            "examples": members[c][:2],
        }
        for c in range(k)
    ]
    rows.sort(key=lambda r: -(r["M"] or 0.0))
    kept = [c for c in chosen if not c.dropped]
    totals = {
        "key": key,
        "pool": len(pool),
        "clusters": k,
        "embedder": s.embedder,
        "gamma": s.gamma,
        "signal": s.signal,
        "seed": s.seed,
        "max_cer": s.max_cer,
        "voices": list(config.data.voices),
        "budget_hours": budget_hours,
        "budget_of": "select.budget_hours"
        if s.budget_hours is not None
        else f"select.budget_share={s.budget_share:g} x the Stage I dataset's speech "
        "hours, each clip once",
        "est_hours": sum(c.est_seconds for c in chosen) / 3600,
        "hours": sum(c.seconds for c in chosen) / 3600,
        "kept_hours": sum(c.seconds for c in kept) / 3600,
        "selected": len(chosen),
        "dropped": len(chosen) - len(kept),
        "kept": len(kept),
    }
    out.mkdir(parents=True, exist_ok=True)
    _plot(out / "report.png", rows, s.gamma)
    atomic_write_text(out / "report.md", _markdown(rows, totals))
    report = {**totals, "clusters_detail": rows}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    return report
