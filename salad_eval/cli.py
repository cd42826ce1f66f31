"""``salad-eval``: measure the text-speech understanding gap of a speech LLM.

Each command is a thin wrapper; the work lives in the module that owns the idea.
"""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path
from typing import Any

import typer

from salad_eval import checks
from salad_eval.errors import SaladError
from salad_eval.options import declared, default_of, option_fields, rule
from salad_eval.run.spec import CallOptions, RunSpec

INCLUDE_PATH = typer.Option(
    None, metavar="DIR", help="Add a folder of task YAMLs (repeatable; also $SALAD_INCLUDE_PATH)."
)

app = typer.Typer(
    help="Measure the text-speech understanding gap of speech-adapted LLMs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.command()
def report(
    run_dirs: list[str] = typer.Argument(..., help="Run directories holding results.json."),
    out: str = typer.Option("reports/comparison", help="Where to write the comparison."),
    n_boot: int = typer.Option(1000, min=1, help="Bootstrap resamples of the paired comparison."),
    seed: int = typer.Option(0, min=0, help="Seed of the paired comparison's bootstrap."),
    embed_audio: bool = typer.Option(
        False, help="Put the clips inside report.html (one file) instead of audio/ beside it."
    ),
) -> None:
    """Compare gap runs in one table, each other run paired against the first on their common
    items (difference with 95% CI, exact McNemar), and draw gap vs speech hours and accuracy vs
    log M; report.html shows the runs side by side, item by item, with the items that flipped."""
    from salad_eval.gap.compare import compare_runs
    from salad_eval.page import write_comparison_page

    checks.inputs(out_dir=out)
    result = compare_runs(list(run_dirs), out, n_boot=n_boot, seed=seed)
    page = write_comparison_page(list(run_dirs), result["runs"], out, result, embed_audio)
    print(result["table"])
    if result["paired_table"]:
        print("\nPaired comparison (b - a on the common items):\n" + result["paired_table"])
    for note in result["paired_notes"]:
        print(note)
    print(f"wrote comparison.md, comparison.json and {len(result['plots'])} plot(s) to {out}")
    print(f"page: {page} (open it: salad-eval view {out})")


@app.command()
def view(
    run: str = typer.Argument(..., help="A run folder (or a comparison's) holding report.html."),
    rebuild: bool = typer.Option(
        False, help="Write the run's report.html again first (its clips as the store has them)."
    ),
    embed_audio: bool = typer.Option(
        False, help="With --rebuild: the clips inside report.html instead of audio/ beside it."
    ),
) -> None:
    """Open a run's report.html in the browser, or print its path where there is no display."""
    from salad_eval.page import find_page, open_page, rebuild_run_page

    if embed_audio and not rebuild:
        raise SaladError("--embed-audio writes the page again: add --rebuild")
    if rebuild:
        rebuild_run_page(Path(run), embed_audio)
    page = find_page(Path(run))
    if open_page(page):
        print(f"opened {page}")
    else:
        print(page.resolve())


assets_app = typer.Typer(
    help="Embedded models and voices: list them (no subcommand) or prepare them.",
    add_completion=False,
)
app.add_typer(assets_app, name="assets")


@assets_app.callback(invoke_without_command=True)
def assets_list(
    ctx: typer.Context,
    voices: str = typer.Option(
        None, help="Instead, the speakers and languages of these voices' models (coqui/<model>)."
    ),
) -> None:
    """List the embedded assets: kind, prepared?, path, licence."""
    if ctx.invoked_subcommand is None and voices:
        from salad_eval.speech.coqui import show_models
        from salad_eval.speech.voices import resolve_voices

        show_models([v.name for v in resolve_voices(voices) if v.engine == "coqui"])
    elif ctx.invoked_subcommand is None:
        from salad_eval.assets.table import show_assets

        show_assets()


@assets_app.command("prepare")
def assets_prepare(
    names: list[str] = typer.Argument(
        None, help="Asset names, hub ids or paths (default: every default asset)."
    ),
) -> None:
    """Prepare assets into the cache home (converting them once); a second run does nothing."""
    from salad_eval.assets.table import prepare_assets

    prepare_assets(names)


audio_app = typer.Typer(
    help="Exchange audio: export the clips a run scored, import them into another store.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(audio_app, name="audio")


@audio_app.command("export")
def audio_export(
    out: str = typer.Argument(..., help="Directory to write (clips/*.flac and metadata.jsonl)."),
    run: str = typer.Option(None, help="A gap run directory: export the clips it scored."),
    tasks: str = typer.Option(None, help="Or: comma-separated tasks, synthesized if missing."),
    voices: str = typer.Option("default", help="With --tasks: voice sets and/or voices."),
    limit: int = typer.Option(None, min=1, help="With --tasks: the first N items of each task."),
    shots: int = typer.Option(0, min=0, help="With --tasks: spoken few-shot examples per item."),
    seed: int = typer.Option(1234, help="With --tasks: the few-shot sampling seed of the run."),
    synth_seed: int = typer.Option(0, help="With --tasks: the synthesis seed."),
    data_dir: str = typer.Option(None, help="Local benchmark mirror (default $SALAD_BENCHMARKS)."),
    include_path: list[str] = INCLUDE_PATH,
) -> None:
    """Copy clips from the audio store into a portable directory (a Hugging Face audiofolder)."""
    from salad_eval.speech import exchange
    from salad_eval.tasks import include_paths

    include_paths(include_path or [])
    if (run is None) == (tasks is None):
        raise SaladError("pass either --run <gap run directory> or --tasks <names>")
    checks.inputs(out_dir=out)
    if run is not None:
        clips = exchange.run_clips(Path(run))
    else:
        names = checks.task_names(tasks)
        checks.inputs(tasks=names, shots=shots, data_dir=data_dir, voices=voices)
        clips = exchange.task_clips(names, voices, limit, shots, seed, data_dir, synth_seed)
    done = exchange.export_clips(clips, Path(out))
    print(f"exported {done.clips} clips ({done.seconds / 60:.1f} min of audio) to {out}")


@audio_app.command("import")
def audio_import(
    directory: str = typer.Argument(..., help="A directory written by salad-eval audio export."),
) -> None:
    """Verify an export's clips and put them into the audio store: later runs score those bytes."""
    from salad_eval.speech import exchange

    done = exchange.import_clips(Path(directory))
    print(
        f"imported {done.clips} clips ({done.seconds / 60:.1f} min of audio), "
        f"{done.replaced} replacing other bytes in the store"
    )
    if done.foreign:
        print(
            f"{done.foreign} clips are of TTS versions not installed here: runs here will not "
            "find them (install the exporting machine's versions)"
        )


@app.command("tasks")
def tasks_list(
    data_dir: str = typer.Option(None, help="Local benchmark mirror (default $SALAD_BENCHMARKS)."),
    include_path: list[str] = INCLUDE_PATH,
) -> None:
    """List the spoken tasks: version, fingerprint, domains, items (where the data is local)."""
    from rich.console import Console
    from rich.table import Table

    from salad_eval.tasks import check_data, count_items, get_task, include_paths, list_tasks

    include_paths(include_path or [])
    checks.inputs(data_dir=data_dir)
    table = Table("task", "version", "fingerprint", "split", "domains", "items")
    for name in list_tasks():
        spec = get_task(name)
        if spec.data_files:  # a task's own data: every row checked (mirrors: when run)
            check_data(name, data_dir)
        more = len(spec.domains) - 3
        domains = ", ".join(spec.domains[:3]) + (f" +{more}" if more > 0 else "")
        items = count_items(name, data_dir)
        table.add_row(
            name,
            str(spec.version),
            spec.fingerprint,
            spec.test_split,
            domains,
            "-" if items is None else str(items),
        )
    Console().print(table)


@app.command("models")
def models_list() -> None:
    """List the speech LLM families: model types, text backbones, tested?, adapter."""
    from salad_eval.models.registry import show_families

    show_families()


@app.command()
def synth(
    tasks: str = typer.Option("demo", help="Comma-separated task names."),
    voices: str = typer.Option("default", help="Voice sets and/or voices, comma-separated."),
    limit: int = typer.Option(None, min=1, help="Only the first N items of each task."),
    workers: int = typer.Option(1, min=1, help="Parallel worker processes."),
    shots: int = typer.Option(0, min=0, help="Spoken few-shot examples per item."),
    data_dir: str = typer.Option(None, help="Local benchmark mirror (default $SALAD_BENCHMARKS)."),
    wer_threshold: float = typer.Option(0.3, min=0, help="Flag clips whose ASR WER is above this."),
    synth_seed: int = typer.Option(0, min=0, help="Synthesis seed: the same seed, the same audio."),
    include_path: list[str] = INCLUDE_PATH,
) -> None:
    """Synthesize the spoken segments of tasks into the audio store, with ASR-checked manifests."""
    from salad_eval.speech.synth import synthesize_tasks
    from salad_eval.tasks import include_paths

    include_paths(include_path or [])
    names = checks.task_names(tasks)
    checks.inputs(tasks=names, shots=shots, data_dir=data_dir, voices=voices)
    synthesize_tasks(names, voices, limit, shots, workers, data_dir, wer_threshold, synth_seed)


def gap(**options: Any) -> None:
    """Measure the gap: text@base, text@speech, speech@speech, speech@cascade and controls."""
    from salad_eval.api import evaluate
    from salad_eval.run.runner import default_run_dir

    fields = {f.name: f for f in GAP_OPTIONS}
    values = {name: _from_command_line(fields[name], value) for name, value in options.items()}
    results = evaluate(**values)
    if results:  # the main process (under accelerate launch, the others return {})
        out, model = values["out"], values["model"]
        run_dir = Path(out) if out else default_run_dir(model, checks.task_names(values["tasks"]))
        print((run_dir / "summary.md").read_text())
        print(f"report: {run_dir}")
        print(f"page: {run_dir / 'report.html'} (open it: salad-eval view {run_dir})")


# the command's options, in this order: its call's, then the run's (salad_eval/run/spec.py)
GAP_OPTIONS = [*option_fields(CallOptions), *option_fields(RunSpec)]
_CLI_TYPES = {"int": int, "str": str, "bool": bool, "float": float}


def _typer_parameter(field: dataclasses.Field) -> inspect.Parameter:
    """One declared option as a typer option: its default, help (with its range) and type; a
    list is comma-separated text (``--tasks a,b``) unless it repeats (``--include-path``)."""
    meta = declared(field)
    kind = field.type.removesuffix(" | None")
    default = default_of(field)
    if meta["repeat"]:
        annotation = list[_CLI_TYPES[kind.removeprefix("list[").removesuffix("]")]]
    elif kind.startswith("list["):
        annotation = str
        default = None if default is None else ",".join(map(str, default))
    else:
        annotation = _CLI_TYPES.get(kind, str)  # ``int | str``: text, read by _from_command_line
    allowed = rule(meta)
    help_text = meta["help"] + (f" [{allowed}]" if allowed else "")
    info = typer.Option(
        ... if default is dataclasses.MISSING else default,
        help=help_text,
        metavar=meta["metavar"],
    )
    return inspect.Parameter(
        field.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation
    )


def _from_command_line(field: dataclasses.Field, value: Any) -> Any:
    """The text of a list or ``int | str`` option as the value RunSpec checks."""
    if field.type == "list[int]":
        return [_number(v) for v in value.split(",")]
    if field.type == "list[float] | None":
        return None if value is None else value.split(",")  # typed by CallOptions.checked
    if field.type == "int | str":
        return _number(value)
    return value


def _number(text: str) -> int | str:
    try:
        return int(text)
    except ValueError:
        return text  # refused by RunSpec.checked, naming the option


gap.__signature__ = inspect.Signature([_typer_parameter(f) for f in GAP_OPTIONS])
gap.__annotations__ = {p.name: p.annotation for p in gap.__signature__.parameters.values()}
app.command()(gap)


@app.command()
def divergence(
    model: str = typer.Option(..., help="A SALAD checkpoint directory."),
    corpus: str = typer.Option(
        None,
        help="Text file, one document per line (default: salad's "
        "embedded held-out prose, which no preset trains on).",
    ),
    limit: int = typer.Option(32, min=1, help="Only the first N documents."),
    voice: str = typer.Option("espeak/en-us", help="The one TTS voice of the spoken spans."),
    text_words: int = typer.Option(10, min=1, help="Words per written span."),
    speech_words: int = typer.Option(10, min=1, help="Words per spoken span."),
    text_model: str = typer.Option(None, help="Base LLM for F (default: the checkpoint's base)."),
    out: str = typer.Option(None, help="Write the figures and per-document sums here (JSON)."),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option(
        None,
        help="Weights of every model: float32 (default on CPU), "
        "bfloat16 (default on CUDA) or float16.",
    ),
) -> None:
    """Forgetting F and misalignment M per token on a corpus with spoken spans, as the gap report
    measures them (``salad_eval.corpus_divergence``)."""
    import json

    from salad_eval import corpus_divergence as cd
    from salad_eval.models.load import default_text_model, load_speech_model, speech_model_kind
    from salad_eval.models.text_lm import TextLM, default_dtype

    if corpus is not None:
        checks.text_lines(corpus, "--corpus")
    checks.divergence_inputs(None, voice, "--voice")
    checks.inputs(text_model=text_model, device=device, dtype=dtype, out_file=out)
    if speech_model_kind(model) != "salad":
        raise SaladError("divergences need a SALAD checkpoint (they read the LLM's distributions)")
    dtype = dtype or default_dtype(device)
    speech = load_speech_model(model, device=device, dtype=dtype)
    base = TextLM(default_text_model(speech, text_model), dtype=dtype, device=device)
    span_words = (text_words, speech_words)
    docs = cd.speak_documents(cd.read_documents(corpus, limit), voice, span_words)
    rows = cd.measure(speech, docs, base)
    figures = cd.summarize(rows)
    for name, fig in figures.items():
        print(
            f"{name}: {fig['value']:.4g} [{fig['ci_low']:.4g}, {fig['ci_high']:.4g}] nats per "
            f"token over {fig['n']} documents ({fig['tokens']} tokens)"
        )
    if out:
        setup = {
            "corpus": corpus or str(cd.DEFAULT_CORPUS),
            "documents": len(docs),
            "voice": voice,
            "span_words": list(span_words),
        }
        payload = {
            "model": model,
            "text_model": base.name,
            "setup": setup,
            "figures": figures,
            "documents": [row.to_dict() for row in rows],
        }
        Path(out).write_text(json.dumps(payload, indent=1))
        print(f"wrote {out}")


@app.command()
def serve(
    model: str = typer.Option(
        ..., help="A SALAD checkpoint, a speech LLM (hub id or path) or a text LLM to serve."
    ),
    model_type: str = typer.Option(
        None, help="Force the kind: a family's model_type, or 'text' for a plain causal LM."
    ),
    device: str = typer.Option("cpu", help="torch device, e.g. cuda."),
    dtype: str = typer.Option(
        None, help="Weights: float32 (default on CPU), bfloat16 (default on CUDA) or float16."
    ),
    chat_template: bool = typer.Option(
        False, help="Render chats with the model's chat template (default: raw, salad's)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    api_key_env: str = typer.Option(
        None, metavar="NAME", help="Require 'Authorization: Bearer $NAME' on every /v1 request."
    ),
    max_request_mb: float = typer.Option(64.0, min=0.001, help="Largest request body, in MB."),
    max_audio_seconds: float = typer.Option(120.0, min=0.1, help="Longest clip, in seconds."),
    batch_size: int = typer.Option(8, min=1, help="Requests per model batch."),
    served_model_name: str = typer.Option(
        None, help="The model id /v1/models lists and requests name (default: --model)."
    ),
) -> None:
    """Serve a model over an OpenAI-compatible API (vLLM's dialect: prompt_logprobs,
    continue_final_message), text and input_audio, batching concurrent requests."""
    from salad_eval.serve.server import serve as run_server

    run_server(
        model,
        model_type=model_type,
        device=device,
        dtype=dtype,
        chat_template=chat_template,
        host=host,
        port=port,
        api_key_env=api_key_env,
        max_request_mb=max_request_mb,
        max_audio_seconds=max_audio_seconds,
        batch_size=batch_size,
        served_model_name=served_model_name,
    )


def main() -> None:
    from salad_eval.launch import run_cli

    run_cli(app)


if __name__ == "__main__":  # `python -m salad_eval.cli` (e.g. under `accelerate launch -m`)
    main()
