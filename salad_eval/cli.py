"""``salad-eval``: measure the text-speech understanding gap of a speech LLM.

Each command is a thin wrapper; the work lives in the module that owns the idea.
"""

from __future__ import annotations

import sys

import typer

from salad_eval.errors import SaladError

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
) -> None:
    """Compare gap runs in one table and draw gap vs speech hours and accuracy vs log M."""
    from salad_eval.gap.compare import compare_runs

    result = compare_runs(list(run_dirs), out)
    print(result["table"])
    print(f"wrote comparison.md, comparison.json and {len(result['plots'])} plot(s) to {out}")


assets_app = typer.Typer(
    help="Embedded models and voices: list them (no subcommand) or prepare them.",
    add_completion=False,
)
app.add_typer(assets_app, name="assets")


@assets_app.callback(invoke_without_command=True)
def assets_list(ctx: typer.Context) -> None:
    """List the embedded assets: kind, prepared?, path, licence."""
    if ctx.invoked_subcommand is None:
        from salad_eval.assets.table import show_assets

        show_assets()


@assets_app.command("prepare")
def assets_prepare(
    names: list[str] = typer.Argument(
        None, help="Asset names (default: every asset of the default install)."
    ),
) -> None:
    """Prepare assets into the cache home (converting them once); a second run does nothing."""
    from salad_eval.assets.table import prepare_assets

    prepare_assets(names)


def main() -> None:
    try:
        app()
    except SaladError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
