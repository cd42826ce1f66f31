"""The controls verdict: does the model's answer depend on its audio at all?

A speech LLM can score well above chance from the text around the audio alone (the choices, the
few-shot prompt). The silent and shuffled-audio controls rerun ``speech@speech`` with nothing or
the wrong thing to hear; a model is said to use its audio against a control only when
``speech@speech`` is significantly better: McNemar p < ``ALPHA`` and the bootstrap interval of the
accuracy margin above zero. A model that beats no control, for some voice, ignores its audio.
"""

from __future__ import annotations

ALPHA = 0.05


def _name(control: str) -> str:
    return control.split(":")[1] + " audio"


def verdict(voice_tables: dict[str, dict], tests: list[dict]) -> dict:
    """Per-voice control checks and one plain sentence for the summary."""
    p_values = {(t["voice"], t["b"]): t["p_value"] for t in tests if t["a"] == "speech@speech"}
    checks = []
    for voice, table in sorted(voice_tables.items()):
        for control, margin in table.get("control_margin", {}).items():
            p = p_values.get((voice, control), 1.0)
            checks.append(
                {
                    "voice": voice,
                    "control": control,
                    "margin": margin,
                    "p_value": p,
                    "significant": p < ALPHA and margin["ci_low"] > 0,
                }
            )
    if not checks:
        return {
            "checked": False,
            "ignores_audio": None,
            "sentence": "No silent or shuffled-audio control was run, so whether the model "
            "listens to its audio was not checked.",
        }
    deaf = sorted(
        voice
        for voice in {c["voice"] for c in checks}
        if not any(c["significant"] for c in checks if c["voice"] == voice)
    )
    details = "; ".join(
        f"{c['voice']} vs {_name(c['control'])}: {100 * c['margin']['value']:+.1f} points "
        f"[{100 * c['margin']['ci_low']:+.1f}, {100 * c['margin']['ci_high']:+.1f}], "
        f"p = {c['p_value']:.3g}"
        for c in checks
    )
    run = sorted({c["control"] for c in checks})
    weak = [c for c in checks if not c["significant"] and c["voice"] not in deaf]
    if deaf:
        sentence = (
            f"WARNING: no evidence that the model's answers depend on its audio (voice "
            f"{', '.join(deaf)}): speech@speech is not significantly better than with "
            f"{' or '.join(_name(c) for c in run)} ({details})."
        )
    elif weak:
        sentence = (
            "The model uses its audio, but not everywhere: speech@speech is not significantly "
            "better than "
            + ", ".join(f"{_name(c['control'])} for voice {c['voice']}" for c in weak)
            + f" ({details})."
        )
    else:
        sentence = (
            "The model listens to its audio: speech@speech is significantly better than "
            f"every control ({details})."
        )
    return {"checked": True, "ignores_audio": bool(deaf), "checks": checks, "sentence": sentence}
