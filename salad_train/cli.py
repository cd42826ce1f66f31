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
    from salad_train.stage1 import run_stage1

    final = run_stage1(load_config(config, overrides or []))
    print(f"model: {final}")


@app.command()
def select(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. select.gamma=0"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
) -> None:
    """Stage II selection: cluster a text pool, weight clusters by misalignment, synthesize."""
    from salad_train.config import load_config
    from salad_train.select import run_select

    out = run_select(load_config(config, overrides or []))
    print(f"selection: {out / 'selected.jsonl'}\nreport: {out / 'report.md'}")


@app.command()
def stage2(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. stage2.steps=50"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
) -> None:
    """Stage II: from Stage I's pre-decay checkpoint, train on natural, selected, replay data."""
    from salad_train.config import load_config
    from salad_train.stage2 import run_stage2

    final = run_stage2(load_config(config, overrides or []))
    print(f"model: {final}")


@app.command("run")
def run_loop(
    overrides: list[str] = typer.Argument(None, help="dotted overrides, e.g. run.limit=20"),
    config: str = typer.Option("tiny", "--config", "-c", help="preset name or YAML path"),
    ablate_random: bool = typer.Option(False, help="Also a gamma=0 (random selection) Stage II."),
) -> None:
    """The loop: Stage I -> gap -> select -> Stage II -> gap -> report (current steps skipped)."""
    from salad_train.config import load_config
    from salad_train.pipeline import run_loop as loop

    out = loop(load_config(config, overrides or []), ablate_random)
    print(f"report: {out / 'report.md'}")


if __name__ == "__main__":
    main()
