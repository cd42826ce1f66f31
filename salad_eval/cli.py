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


def main() -> None:
    try:
        app()
    except SaladError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
