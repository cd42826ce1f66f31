"""The Python API: ``salad_eval.evaluate(...)`` runs a gap measurement and returns its results.

It is what ``salad-eval gap`` runs (the command only parses options and prints the summary), so
a call and a command line with the same arguments give the same run directory and figures::

    import salad_eval

    results = salad_eval.evaluate(model="runs/tiny/model", tasks=["demo"], voices="heldout",
                                  limit=20, out="reports/api-demo")
    print(results["metrics"]["acc"]["overall"]["gap"]["value"])
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from salad_eval import checks
from salad_eval.errors import SaladError


def evaluate(
    model: str,
    tasks: str | Sequence[str] = ("demo",),
    voices: str | Sequence[str] = "default",
    *,
    limit: int | None = None,
    shots: int = 0,
    shot_budget: int | None = None,
    metric: str = "acc",
    exclude_items: str | Path | None = None,
    text_model: str | None = None,
    asr: str = "whisper-base",
    out: str | Path | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    batch_size: int | str = 8,
    workers: int = 1,
    n_boot: int = 1000,
    seed: int = 1234,
    synth_seed: int = 0,
    controls: bool = True,
    data_dir: str | None = None,
    include_path: Sequence[str] = (),
    log_samples: bool = False,
    model_type: str | None = None,
    chat_template: bool = False,
    divergences: bool = True,
    divergence_corpus: str | Path | None = None,
    divergence_docs: int | None = None,
    divergence_voice: str | None = None,
) -> dict:
    """Score text@base, text@speech, speech@speech, speech@cascade (and the controls) on the same
    items, write the run directory (``results.json``, ``summary.md``, ``items.jsonl``, plots and
    an lm-eval style ``results_<date>.json``; ``samples_<task>_<date>.jsonl`` with
    ``log_samples``) and return what ``results.json`` holds.

    ``model`` is a SALAD checkpoint directory or any supported speech LLM's hub id/path
    (``salad-eval models``; ``model_type`` forces a family); ``chat_template`` wraps every
    prompt in each model's chat template, as lm-eval's ``--apply_chat_template``; ``tasks`` and
    ``voices`` take lists or the comma-separated strings of the command line; ``include_path``
    adds folders of task YAMLs; ``batch_size`` is rows per forward pass, or ``"auto"`` (the
    largest that fits the GPU). ``metric`` (``acc`` or ``acc_norm``) leads the summary, plots
    and listening verdict; results.json holds both. ``shot_budget`` keeps, of the ``shots``
    examples each item draws, as many as fit that many text tokens (``tasks.load_items``);
    ``exclude_items`` is a JSON file of item ids per task to drop (``salad-train decontam``).
    ``divergences`` measures forgetting F and misalignment M on ``divergence_docs`` documents of
    ``divergence_corpus`` (default: the embedded held-out prose) with spans spoken in
    ``divergence_voice`` (``salad_eval.corpus_divergence``), and the per-item answer KL
    diagnostic. Every input is checked before a model loads (``SaladError``).
    """
    from salad_eval import corpus_divergence
    from salad_eval.gap.records import METRICS
    from salad_eval.models.cascade import Cascade
    from salad_eval.models.load import default_text_model, load_speech_model
    from salad_eval.models.text_lm import TextLM, default_dtype
    from salad_eval.run.runner import Models, check_exclusions, default_run_dir, run_gap
    from salad_eval.run.spec import GapSetup
    from salad_eval.tasks import include_paths

    include_paths(list(include_path))
    task_spec = tasks if isinstance(tasks, str) else ",".join(tasks)
    voice_spec = voices if isinstance(voices, str) else ",".join(voices)
    names = checks.task_names(task_spec)
    divergence_docs = corpus_divergence.DEFAULT_DOCS if divergence_docs is None else divergence_docs
    divergence_voice = divergence_voice or corpus_divergence.DEFAULT_VOICE
    _check_numbers(
        limit=limit,
        shots=shots,
        batch_size=1 if batch_size == "auto" else batch_size,
        workers=workers,
        n_boot=n_boot,
        seed=seed,
        synth_seed=synth_seed,
        divergence_docs=divergence_docs,
    )
    if divergences:
        divergence_corpus = None if divergence_corpus is None else str(divergence_corpus)
        checks.divergence_inputs(divergence_corpus, divergence_voice)
    if metric not in METRICS:
        raise SaladError(f"--metric {metric!r}: use one of {', '.join(METRICS)}")
    _check_numbers(shot_budget=shot_budget)
    if shot_budget is not None and not shots:
        raise SaladError("--shot-budget needs --shots N, the most examples per item (paper: 5)")
    exclude_items = None if exclude_items is None else str(exclude_items)
    if exclude_items is not None:
        check_exclusions(exclude_items, names, data_dir)
    out = None if out is None else str(out)
    checks.inputs(
        tasks=names,
        shots=shots,
        data_dir=data_dir,
        voices=voice_spec,
        speech_model=model,
        text_model=text_model,
        asr=asr,
        device=device,
        dtype=dtype,
        out_dir=out,
        model_type=model_type,
    )
    training = _training_record(Path(model))
    dtype = dtype or default_dtype(device)
    speech = load_speech_model(
        model, device=device, dtype=dtype, model_type=model_type, chat_template=chat_template
    )
    text_name = default_text_model(speech, text_model)
    text = TextLM(text_name, dtype=dtype, device=device, chat_template=chat_template)
    setup = GapSetup(
        tasks=names,
        voices=voice_spec,
        limit=limit,
        shots=shots,
        shot_budget=shot_budget,
        seed=seed,
        synth_seed=synth_seed,
        batch_size=batch_size,
        workers=workers,
        n_boot=n_boot,
        metric=metric,
        data_dir=data_dir,
        exclude_items=exclude_items,
        controls=controls,
        dtype=dtype,
        log_samples=log_samples,
        prompt_format="chat" if chat_template else "raw",
        divergences=divergences,
        divergence_corpus=divergence_corpus,
        divergence_docs=divergence_docs,
        divergence_voice=divergence_voice,
        names={"speech": model, "text": text_name, "asr": asr},
    )
    cascade = Cascade(asr=asr, text_model=text, device=device)
    run_dir = Path(out) if out else default_run_dir(model, names)
    return run_gap(setup, Models(speech=speech, text=text, cascade=cascade), run_dir, training)


def _check_numbers(**values: int | None) -> None:
    """The ranges the command line's options declare, for callers of the API."""
    lowest = {
        "limit": 2,
        "shots": 0,
        "batch_size": 1,
        "workers": 1,
        "n_boot": 1,
        "seed": 0,
        "synth_seed": 0,
        "shot_budget": 1,
        "divergence_docs": 1,
    }
    for name, value in values.items():
        if value is None and name in ("limit", "shot_budget"):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < lowest[name]:
            option = "--" + name.replace("_", "-")
            if name == "limit" and value == 1:
                raise SaladError(
                    "--limit 1: a gap needs at least 2 items (paired statistics, "
                    "shuffled audio); raise --limit"
                )
            raise SaladError(f"{option} {value!r}: an integer of at least {lowest[name]}")


def _training_record(model: Path) -> dict | None:
    """``training.json``, written by salad-train beside the checkpoint (None without one)."""
    path = model / "training.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SaladError(f"{path} is not valid JSON; delete it or retrain the checkpoint") from None
