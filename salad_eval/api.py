"""The Python API: ``salad_eval.evaluate(...)`` runs a gap measurement and returns its results.

It is what ``salad-eval gap`` runs (the command only parses options and prints the summary), so
a call and a command line with the same arguments give the same run directory and figures::

    import salad_eval

    results = salad_eval.evaluate(model="runs/tiny/model", tasks=["demo"], voices="heldout",
                                  limit=20, out="reports/api-demo")
    print(results["metrics"]["acc"]["overall"]["gap"]["value"])

``evaluate()`` logs through ``logging`` under the ``salad_eval`` logger and adds no handler (the
CLIs add theirs, ``salad_eval.logs``): a caller sees its messages once it configures logging
(``logging.basicConfig(level=logging.INFO)``), and
``logging.getLogger("salad_eval").setLevel(logging.WARNING)`` silences them. Progress bars are
not log messages: they are drawn on stderr as for the command.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

from salad_eval import checks
from salad_eval.errors import SaladError
from salad_eval.options import default_of, option_fields
from salad_eval.run.spec import CallOptions, RunSpec, cli_name


def evaluate(
    model: str,
    tasks: str | Sequence[str] | None = None,
    voices: str | Sequence[str] | None = None,
    **options: Any,
) -> dict:
    """Score text@base, text@speech, speech@speech, speech@cascade (and the controls) on the same
    items, write the run directory (``results.json``, ``summary.md``, ``items.jsonl``, plots, an
    lm-eval style ``results_<date>.json``, ``samples_<task>_<date>.jsonl`` with ``log_samples``,
    and ``report.html`` with its clips in ``audio/``) and return what ``results.json`` holds.

    The keywords are ``salad-eval gap``'s options, with the same defaults and ranges: the fields
    of ``salad_eval.run.spec.RunSpec`` (the measurement) and ``CallOptions`` (the model and where
    to write); ``help(salad_eval.evaluate)`` lists them. ``model`` is a SALAD checkpoint directory
    or any supported speech LLM's hub id/path (``salad-eval models``; ``model_type`` forces a
    family); ``tasks`` and ``voices`` take lists or the comma-separated strings of the command
    line; ``batch_size`` is rows per forward pass, or ``"auto"`` (the largest that fits the GPU).
    Every input is checked before a model loads (``SaladError``).
    """
    from salad_eval.endpoint.model import connect, load_endpoint
    from salad_eval.endpoint.protocol import endpoint_name
    from salad_eval.models.cascade import Cascade
    from salad_eval.models.load import default_text_model, load_speech_model
    from salad_eval.models.text_lm import TextLM, default_dtype
    from salad_eval.run.runner import Models, check_exclusions, default_run_dir, run_gap
    from salad_eval.tasks import include_paths

    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise SaladError(
            f"unknown option {cli_name(unknown[0])}; see `salad-eval gap --help` for the options"
        )
    options = {k: str(v) if isinstance(v, PurePath) else v for k, v in options.items()}
    call = CallOptions(
        str(model), **{f.name: options.pop(f.name) for f in _CALL if f.name in options}
    ).checked()
    include_paths(list(call.include_path))
    if tasks is not None:
        options["tasks"] = checks.task_names(tasks if isinstance(tasks, str) else ",".join(tasks))
    if voices is not None:
        options["voices"] = voices if isinstance(voices, str) else ",".join(voices)
    spec = RunSpec(**options).checked()
    if spec.divergences:
        checks.divergence_inputs(spec.divergence_corpus, spec.divergence_voice)
    if spec.exclude_items is not None:
        check_exclusions(spec.exclude_items, spec.tasks, spec.data_dir)
    checks.inputs(
        tasks=spec.tasks,
        shots=spec.shots,
        data_dir=spec.data_dir,
        voices=spec.voices,
        speech_model=call.model,
        text_model=spec.text_model,
        asr=spec.asr,
        device=call.device,
        dtype=spec.dtype,
        out_dir=call.out,
        model_type=call.model_type,
    )
    checks.placement_inputs(call.device_map, call.max_memory_bytes)
    if spec.answer != "loglik":
        checks.generation_inputs(spec.tasks, spec.data_dir, call.model, call.model_type)
    connection = connect(call, [call.model, spec.text_model])
    training = _training_record(Path(call.model))
    dtype = spec.dtype or default_dtype(call.device)
    if endpoint_name(call.model):
        speech = load_endpoint(call.model, connection, spec.chat_template, spec.answers, "speech")
    else:
        speech = load_speech_model(
            call.model,
            device=call.device,
            dtype=dtype,
            model_type=call.model_type,
            chat_template=spec.chat_template,
            device_map=call.device_map,
            max_memory=call.max_memory_bytes,
        )
    text_name = default_text_model(speech, spec.text_model)
    if endpoint_name(text_name):
        text = load_endpoint(text_name, connection, spec.chat_template, spec.answers, "text")
    else:
        text = TextLM(
            text_name,
            dtype=dtype,
            device=call.device,
            chat_template=spec.chat_template,
            device_map=call.device_map,
            max_memory=call.max_memory_bytes,
        )
    names = {"speech": call.model, "text": text_name, "asr": spec.asr}
    spec = dataclasses.replace(spec, dtype=dtype, names=names)
    cascade = Cascade(asr=spec.asr, text_model=text, device=call.device)
    run_dir = Path(call.out) if call.out else default_run_dir(call.model, spec.tasks)
    models = Models(speech=speech, text=text, cascade=cascade)
    return run_gap(spec, models, run_dir, training, embed_audio=call.embed_audio)


_CALL = option_fields(CallOptions)
_OPTIONS = {f.name: f for f in [*_CALL[1:], *option_fields(RunSpec)]}  # all but ``model``


def _signature() -> inspect.Signature:
    """``evaluate(model, tasks, voices, *, <every other option>)`` with the declared defaults, for
    ``help()`` and editors (the function itself takes ``**options``)."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("model", positional, annotation="str")]
    params += [
        inspect.Parameter(
            f.name,
            positional if f.name in ("tasks", "voices") else keyword,
            default=default_of(f),
            annotation=f.type,
        )
        for f in sorted(_OPTIONS.values(), key=lambda f: f.name not in ("tasks", "voices"))
    ]
    return inspect.Signature(params, return_annotation="dict")


evaluate.__signature__ = _signature()


def _training_record(model: Path) -> dict | None:
    """``training.json``, written by salad-train beside the checkpoint (None without one)."""
    path = model / "training.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        raise SaladError(f"{path} is not valid JSON; delete it or retrain the checkpoint") from None
