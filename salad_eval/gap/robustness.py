"""Robustness: how the gap grows with the acoustics (noise, rooms, rate, channel).

Every acoustic condition is a voice (``kokoro/jm_kumo+noise=white:snr=5``), so every figure of
the report already exists per condition (``results.json`` -> ``metrics.<m>.voices``). This
module lines them up: a table with one row per condition (speaker, acoustics, SNR, RT60, the
speech accuracies, gap, misalignment, cascade WER, whether the model still listens) and plots of
speech@speech and cascade accuracy against SNR and against RT60, with their CIs, so one sees
where the end-to-end model falls below the cascade.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from salad_eval.errors import SaladError
from salad_eval.figures import error_bars, plt, save
from salad_eval.speech.voices import parse_voice


def condition(voice: str) -> dict:
    """Speaker, acoustics and, where the condition is one noise or one room, its SNR / RT60."""
    try:
        v = parse_voice(voice)
    except SaladError:  # a voice this version cannot name (another engine): heard as it is
        return {"speaker": voice, "acoustics": "clean", "noise": None, "snr": None, "rt60": None}
    acoustics = "+".join(str(p) for p in v.acoustics) or "clean"
    only = v.acoustics[0] if len(v.acoustics) == 1 else None
    return {
        "speaker": str(v.clean),
        "acoustics": acoustics,
        "noise": only.kind if only and only.name == "noise" else None,
        "snr": only.settings["snr"] if only and only.name == "noise" else None,
        "rt60": only.settings["rt60"] if only and only.name == "reverb" else None,
    }


def robustness_rows(voice_tables: dict[str, dict], controls: dict) -> list[dict]:
    """One row per voice of a run that has any acoustic condition (else no rows)."""
    if all(condition(v)["acoustics"] == "clean" for v in voice_tables):
        return []
    listens = {}
    for check in controls.get("checks", []):
        listens[check["voice"]] = listens.get(check["voice"], False) or check["significant"]
    rows = []
    for voice, t in voice_tables.items():
        acc = t["accuracy"]
        rows.append(
            {
                "voice": voice,
                **condition(voice),
                "n_items": t["n_items"],
                "speech@speech": acc.get("speech@speech"),
                "speech@cascade": acc.get("speech@cascade"),
                "text@speech": acc.get("text@speech"),
                "gap": t["gap"],
                "misalignment": t["misalignment"],
                "cascade_gap": t.get("cascade_gap"),
                "cascade_wer": t.get("divergence", {}).get("wer"),
                "listens": listens.get(voice),
            }
        )

    def order(r: dict) -> tuple:  # clean, the noise ladders from quiet to loud, rooms, the rest
        ladder = r["snr"] is None, r["noise"] or "", -(r["snr"] or 0), r["rt60"] is None
        return r["speaker"], r["acoustics"] != "clean", *ladder, r["rt60"] or 0, r["acoustics"]

    return sorted(rows, key=order)


def table_lines(rows: list[dict], pct) -> list[str]:
    """The robustness table of summary.md."""
    head = [
        "speaker",
        "acoustics",
        "SNR dB",
        "RT60 s",
        "items",
        "speech@speech",
        "speech@cascade",
        "gap",
        "misalignment",
        "cascade WER",
        "listens?",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        wer = r["cascade_wer"]
        cells = [
            f"`{r['speaker']}`",
            f"`{r['acoustics']}`",
            "–" if r["snr"] is None else f"{r['snr']:g}",
            "–" if r["rt60"] is None else f"{r['rt60']:g}",
            str(r["n_items"]),
            pct(r["speech@speech"]),
            pct(r["speech@cascade"]),
            pct(r["gap"]),
            pct(r["misalignment"]),
            "–" if wer is None else f"{100 * wer['value']:.1f}%",
            {None: "–", True: "yes", False: "no"}[r["listens"]],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _series(rows: list[dict], axis: str) -> dict[tuple[str, str], list[tuple[float, dict]]]:
    """Per speaker (and noise kind), the points of a ladder along ``axis``; clean joins each one
    (at SNR +inf, RT60 0)."""
    series: dict[tuple[str, str], list[tuple[float, dict]]] = {}
    for r in rows:
        if r[axis] is not None:
            series.setdefault((r["speaker"], r["noise"] or "reverb"), []).append((r[axis], r))
    for (speaker, _), points in series.items():
        clean = [r for r in rows if r["speaker"] == speaker and r["acoustics"] == "clean"]
        if clean:
            points.append((np.inf if axis == "snr" else 0.0, clean[0]))
        points.sort(key=lambda p: p[0], reverse=axis == "snr")
    return {k: v for k, v in series.items() if len(v) > 1}


def plot_robustness(rows: list[dict], metric: str, run_dir: Path) -> list[str]:
    """accuracy_vs_snr.png and accuracy_vs_rt60.png (where the run has such ladders)."""
    plots = []
    for axis, label, name in (
        ("snr", "SNR (dB)", "accuracy_vs_snr.png"),
        ("rt60", "RT60 (s)", "accuracy_vs_rt60.png"),
    ):
        series = _series(rows, axis)
        if not series:
            continue
        fig, ax = plt.subplots(figsize=(7.5, 4.2))
        finite = [x for points in series.values() for x, _ in points if np.isfinite(x)]
        clean_x = max(finite) + 10 if axis == "snr" else 0.0
        for (speaker, kind), points in series.items():
            xs = [clean_x if not np.isfinite(x) else x for x, _ in points]
            step = 0.012 * (max(xs) - min(xs))  # the two conditions side by side, bars apart
            for cond, style, shift in (
                ("speech@speech", "-o", -step),
                ("speech@cascade", "--s", step),
            ):
                figs = [r[cond] for _, r in points]
                if any(f is None for f in figs):
                    continue
                at = [x + shift for x in xs]
                ax.errorbar(
                    at,
                    [100 * f["value"] for f in figs],
                    yerr=error_bars(figs),
                    fmt=style,
                    capsize=3,
                    label=f"{cond} {speaker} ({kind})",
                )
            text = points[0][1]["text@speech"]
            if text:
                ax.axhline(100 * text["value"], color="black", ls=":", lw=1, label="text@speech")
        if axis == "snr":
            ticks = sorted(set(finite)) + [clean_x]
            ax.set_xticks(ticks, [f"{t:g}" for t in ticks[:-1]] + ["clean"])
            ax.invert_xaxis()  # worse to the right
        ax.set_xlabel(label)
        ax.set_ylabel(f"{metric} (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"Accuracy against {label.split()[0]} (95% CI)")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
        plots.append(save(fig, run_dir / name))
    return plots
