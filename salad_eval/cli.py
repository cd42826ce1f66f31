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


def main() -> None:
    try:
        app()
    except SaladError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
