"""``salad-train``: train a speech LLM with the SALAD recipe."""

from __future__ import annotations

import sys

import typer

from salad_eval.errors import SaladError

app = typer.Typer(
    help="Train a speech LLM with SALAD: cross-modal distillation and active selection.",
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
