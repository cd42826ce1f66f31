"""``salad-train``: train a speech LLM with the SALAD recipe."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Train a speech LLM with SALAD: cross-modal distillation and active selection.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _commands() -> None:
    """Train a speech LLM with SALAD: cross-modal distillation and active selection."""


def main() -> None:
    from salad_eval.launch import run_cli

    run_cli(app)


@app.command()
def stage1(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. train.steps=20"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
) -> None:
    """Stage I: distil the text LLM into the speech LLM on interleaved speech/text (resumable)."""
    from salad_train.config import load_config
    from salad_train.recipe.stage1 import run_stage1

    final = run_stage1(load_config(config, overrides or []))
    print(f"model: {final}")


@app.command()
def select(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. select.gamma=0"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
) -> None:
    """Stage II selection: cluster a text pool, weight clusters by misalignment, synthesize."""
    from salad_train.config import load_config
    from salad_train.selection.select import run_select

    out = run_select(load_config(config, overrides or []))
    print(f"selection: {out / 'selected.jsonl'}\nreport: {out / 'report.md'}")


@app.command()
def stage2(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. stage2.steps=50"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
) -> None:
    """Stage II: from Stage I's pre-decay checkpoint, train on natural, selected, replay data."""
    from salad_train.config import load_config
    from salad_train.recipe.stage2 import run_stage2

    final = run_stage2(load_config(config, overrides or []))
    print(f"model: {final}")


@app.command("run")
def run_loop(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. run.limit=20"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
    ablate_random: bool = typer.Option(False, help="Also a gamma=0 (random selection) Stage II."),
    seeds: str = typer.Option(
        None,
        help="Comma-separated seeds: the loop once per seed "
        "(train.seed, select.seed) into <run.out_dir>/seed-<s>, then "
        "seeds.md across them.",
    ),
) -> None:
    """The loop: Stage I -> gap -> select -> Stage II -> gap -> report (current steps skipped)."""
    from salad_train.config import load_config
    from salad_train.loop.loop import parse_seeds, run_seeds
    from salad_train.loop.loop import run_loop as loop

    if seeds is not None:
        out = run_seeds(config, overrides or [], parse_seeds(seeds), ablate_random)
        print(f"report: {out / 'seeds.md'}")
        return
    out = loop(load_config(config, overrides or []), ablate_random)
    print(f"report: {out / 'report.md'}")


@app.command()
def sweep(
    overrides: list[str] = typer.Argument(None, help="dotted overrides for every run"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
    alphas: str = typer.Option(None, help="Comma-separated loss.alpha grid (sweep.alphas)."),
    steps: int = typer.Option(None, min=1, help="train.steps of every run."),
    variant: list[str] = typer.Option(
        None,
        "--variant",
        help="Data variant name:key=value,key=value (repeatable): each alpha "
        "runs once per variant, into alpha-<a>-<name>/.",
    ),
) -> None:
    """Stage I per alpha (x variant), then Fig. 3 / Fig. 4 fits from the probes (resumable)."""
    from salad_train.sweep.sweep import parse_variant, run_sweep

    extra = list(overrides or [])
    if alphas is not None:
        extra.append(f"sweep.alphas=[{alphas}]")
    if steps is not None:
        extra.append(f"train.steps={steps}")
    out = run_sweep(config, extra, [parse_variant(v) for v in variant or []])
    print(f"sweep: {out / 'sweep.json'}\nreport: {out / 'sweep.md'}")


@app.command()
def decontam(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. data.tasks=[]"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
    tasks: str = typer.Option(None, help="Comma-separated evaluation tasks (default run.tasks)."),
    limit: int = typer.Option(None, min=1, help="Only the first N items of each task."),
    n: int = typer.Option(8, "--n", min=1, help="Words per n-gram (13: lm-eval, long texts)."),
    out: str = typer.Option(None, help="Report JSON (default <run.out_dir>/decontam.json)."),
) -> None:
    """Evaluation items sharing a word n-gram with the config's training texts, per task."""
    from pathlib import Path

    from salad_eval import checks
    from salad_train.config import load_config
    from salad_train.decontam import decontaminate, report_lines, write_report

    loaded = load_config(config, overrides or [])
    names = checks.task_names(tasks) if tasks else list(loaded.run.tasks)
    path = Path(out) if out else Path(loaded.run.out_dir) / "decontam.json"
    checks.inputs(tasks=names, out_file=str(path))
    report = decontaminate(loaded, names, limit, n)
    write_report(report, path)
    print("\n".join(report_lines(report)))
    print(f"flagged item ids: {path} (salad-eval gap --exclude-items {path} drops them)")


if __name__ == "__main__":
    main()
