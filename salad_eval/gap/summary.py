"""summary.md: the results as tables a person reads without having seen the code."""

from __future__ import annotations

import json
from pathlib import Path

from salad_eval.gap.answers import generation_lines
from salad_eval.gap.records import METRICS
from salad_eval.gap.robustness import table_lines
from salad_eval.speech.diversity import summary_lines

_MAIN = ("text@base", "text@speech", "speech@speech", "speech@cascade")
_PARTS = ("gap", "forgetting", "misalignment", "cascade_gap")


def pct(fig: dict | None) -> str:
    """An accuracy-like figure in percentage points with its interval."""
    if fig is None:
        return "–"
    return f"{100 * fig['value']:.1f} [{100 * fig['ci_low']:.1f}, {100 * fig['ci_high']:.1f}]"


def _num(fig: dict | None) -> str:
    if fig is None:
        return "–"
    return f"{fig['value']:.3g} [{fig['ci_low']:.3g}, {fig['ci_high']:.3g}]"


def _decomposition(title: str, tables: dict[str, dict]) -> list[str]:
    conds = [c for c in _MAIN if any(c in t["accuracy"] for t in tables.values())]
    parts = [p for p in _PARTS if any(p in t for t in tables.values())]
    head = [title, "items", *conds, *(p.replace("_", " ") for p in parts)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, t in tables.items():
        cells = [f"`{name}`", str(t["n_items"])]
        cells += [pct(t["accuracy"].get(c)) for c in conds]
        cells += [pct(t.get(p)) for p in parts]
        lines.append("| " + " | ".join(cells) + " |")
    return lines + [""]


def _headline(results: dict, t: dict) -> str:
    acc = t["accuracy"]
    text = (
        f"Over {t['n_items']} items of {t['n_tasks']} task(s), the speech LLM answers "
        f"{pct(acc['speech@speech'])} % of the spoken questions correctly, against "
        f"{pct(acc['text@base'])} % for the original text LLM reading the same questions. "
        f"The gap is {pct(t['gap'])} points: {pct(t['forgetting'])} points of forgetting "
        f"(text skill the speech LLM lost in adaptation) plus {pct(t['misalignment'])} points "
        "of misalignment (questions it answers in text but not in speech)."
    )
    if "speech@cascade" in acc:
        text += (
            f" The ASR cascade reaches {pct(acc['speech@cascade'])} % "
            f"(cascade gap {pct(t.get('cascade_gap'))} points)."
        )
    return text


def _tests(tests: list[dict]) -> list[str]:
    lines = [
        "| a | b | voice | items | a right, b wrong | b right, a wrong | p (exact McNemar) |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in tests:
        lines.append(
            f"| {t['a']} | {t['b']} | {t['voice'] or '–'} | {t['n']} | {t['b10']} | {t['b01']} "
            f"| {t['p_value']:.3g} |"
        )
    return lines + [""]


def _corpus_divergences(figures: dict, setup: dict) -> list[str]:
    """Corpus F and M, the paper's definitions (``salad_eval.corpus_divergence``)."""
    text_words, speech_words = setup.get("span_words", ("?", "?"))
    corpus = Path(str(setup.get("corpus", "?"))).name
    held = " (held out: no training preset reads it)" if setup.get("held_out") else ""
    lines = [
        f"Forgetting F and misalignment M as the SALAD paper defines them, in nats per token "
        f"(95% bootstrap interval over documents): token-level KL divergences on "
        f"{setup.get('documents', '?')} documents of `{corpus}`{held}, each cut into spans of "
        f"{text_words} written and {speech_words} spoken words (voice "
        f"`{setup.get('voice', '?')}`). F = KL(base LLM ‖ speech LLM), both reading the "
        "documents as text, at every token; M = KL(speech LLM reading the text ‖ the speech LLM "
        "hearing the spoken spans), at every text token after the first spoken span, aligned as "
        "Stage I distils.",
        "",
        "| divergence | nats per token | documents | tokens |",
        "|---|---|---|---|",
    ]
    for name, label in (("F", "F, forgetting"), ("M", "M, misalignment")):
        fig = figures.get(name)
        if fig is not None:
            lines.append(f"| {label} | {_num(fig)} | {fig['n']} | {fig['tokens']} |")
        elif name == "F":
            lines.append(f"| {label} | – (the text LLM has another vocabulary) | | |")
    return lines + [""]


def _answer_kl(tables: dict[str, dict]) -> list[str]:
    lines = [
        "| group | answer KL, base ‖ speech LLM (text) | answer KL, speech LLM text ‖ speech "
        "| ASR WER |",
        "|---|---|---|---|",
    ]
    for name, t in tables.items():
        d = t.get("divergence", {})
        lines.append(
            f"| `{name}` | {_num(d.get('answer_F'))} | {_num(d.get('answer_M'))} "
            f"| {_num(d.get('wer'))} |"
        )
    return lines + [""]


def _flatten(node, prefix: str = ""):
    """Scalar leaves of a nested manifest as (dotted key, value)."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield from _flatten(child, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list) and all(not isinstance(x, dict | list) for x in node):
        yield prefix, ", ".join(str(_scalar(x)) for x in node)
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from _flatten(child, f"{prefix}[{i}]")
    else:
        yield prefix, _scalar(node)


def _scalar(value) -> str:
    """A value as one table cell: a text with line breaks (a stop sequence) as its JSON."""
    return json.dumps(value) if isinstance(value, str) and "\n" in value else value


def _manifest(manifest: dict, limit: int = 60) -> list[str]:
    """The manifest's settings as a table (the full manifest is in results.json)."""
    leaves = [(k, v) for k, v in _flatten(manifest) if v is not None and v != ""]
    if not leaves:
        return ["(no manifest was recorded)"]
    lines = ["| setting | value |", "|---|---|"]
    for key, value in leaves[:limit]:
        text = str(value).replace("|", "\\|")
        lines.append(f"| {key} | `{text if len(text) <= 120 else text[:117] + '...'}` |")
    if len(leaves) > limit:
        lines += ["", f"... and {len(leaves) - limit} more settings in results.json (`manifest`)."]
    return lines


def _endpoints(manifest: dict) -> list[str]:
    """What each model behind an endpoint was asked, and every item a failed request left out."""
    endpoints = manifest.get("endpoints") or {}
    if not endpoints:
        return []
    lines = [
        "## Models behind an endpoint",
        "",
        "| role | model | API | requests | retries | failed | tokens in | tokens out | audio s "
        "| cost |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for role, e in endpoints.items():
        cost = "–" if e.get("cost") is None else f"{e['cost']:.4f}"
        lines.append(
            f"| {role} | `{e['model_id']}` | {e['api']} | {e['requests']} | {e['retries']} | "
            f"{e['failed']} | {e['prompt_tokens']} | {e['completion_tokens']} | "
            f"{e['audio_seconds']} | {cost} |"
        )
    failed = [x for x in manifest.get("excluded_items", []) if "request failed" in x["reason"]]
    if failed:
        lines += ["", "Left out of every condition (a rerun asks again):", ""]
        lines += [f"- `{x['task']}/{x['item']}`: {x['reason']}" for x in failed]
    return lines + [""]


def _exposure(exposure: dict[str, str] | None) -> list[str]:
    """Which evaluation voices training heard: listening to an unseen voice is the real test."""
    if exposure is None:
        return ["The training voices of this model are not recorded (no `training.json`).", ""]
    return [
        "Evaluation voices: "
        + ", ".join(f"`{v}` ({e} in training)" for v, e in exposure.items())
        + ".",
        "",
    ]


def render_summary(results: dict, plots: list[str]) -> str:
    """The whole summary.md for one run."""
    metric = results["metric"]
    m = results["metrics"][metric]
    overall = m["overall"]
    level = round(100 * results["ci_level"])
    lines = [
        "# Text-speech understanding gap",
        "",
        _headline(results, overall),
        "",
        f"All figures are accuracies (metric `{metric}`) or differences of accuracies in "
        f"percentage points, each with its {level}% paired bootstrap confidence interval in "
        f"brackets ({results['n_boot']} resamples of the items, seed {results['seed']}); the "
        "conditions are scored on the identical items. With several tasks, figures are the mean "
        "over tasks; with several voices, an item's speech score is the mean over voices. "
        "gap = forgetting + misalignment holds exactly.",
        "",
        "## Does the model listen to its audio?",
        "",
        m["controls"]["sentence"],
        "",
        *_exposure(results.get("voice_exposure")),
        "## Conditions",
        "",
        "| condition | what it measures | accuracy | items |",
        "|---|---|---|---|",
    ]
    for cond, meaning in results["conditions"].items():
        fig = overall["accuracy"].get(cond)
        lines.append(f"| `{cond}` | {meaning} | {pct(fig)} | {fig['n'] if fig else 0} |")
    if "acc_gen" in results["metrics"]:
        lines += generation_lines(results, pct)
    lines += ["", "## Decomposition", ""]
    lines += _decomposition("overall", {"all tasks": overall})
    for key, title in (("tasks", "task"), ("domains", "domain"), ("voices", "voice")):
        if m[key]:
            lines += [f"### By {title}", ""] + _decomposition(title, m[key])
    if results.get("robustness"):
        lines += [
            "## Robustness: the acoustic conditions",
            "",
            "One row per voice and acoustic condition (`+...` in the voice name; every "
            "figure above exists per condition under *By voice*). Cascade WER is Whisper's "
            "on the perturbed clips; *listens?*: speech@speech significantly above a "
            "silent or shuffled-audio control.",
            "",
        ]
        lines += table_lines(results["robustness"], pct)
    if diversity := results["manifest"].get("voice_diversity"):
        lines += summary_lines(diversity)
    lines += ["## Paired significance tests", ""] + _tests(
        [t for t in m["mcnemar"] if t["scope"] == "all"]
    )
    if results.get("corpus_divergence"):
        lines += ["## Divergences: forgetting F and misalignment M", ""]
        lines += _corpus_divergences(
            results["corpus_divergence"], results["manifest"].get("corpus_divergence") or {}
        )
    if "divergence" in overall:
        lines += [
            "## Per-item answer KL (diagnostic) and ASR WER",
            "",
            "The KL divergence on each evaluation item's gold-answer tokens (nats per token, "
            "mean over items): where the items' answers move, a diagnostic, not the paper's F "
            "and M (those are measured on a held-out corpus, above). Also the cascade's ASR word "
            "error rate.",
            "",
        ]
        lines += _answer_kl({"all tasks": overall, **m["tasks"]})
    for other in METRICS:
        if other != metric and other in results["metrics"]:
            lines += [f"## The same decomposition with `{other}`", ""]
            lines += _decomposition("overall", {"all tasks": results["metrics"][other]["overall"]})
    lines += _endpoints(results["manifest"])
    if plots:
        lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    lines += ["## Run", ""] + _manifest(results["manifest"]) + [""]
    return "\n".join(lines)
