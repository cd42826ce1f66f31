"""salad's own progress stays visible off a terminal: plain lines, periodic and at the end."""

from __future__ import annotations

import io

from rich.console import Console
from rich.progress import Progress

from salad_eval.progress import PlainProgress, progress_bar


def test_off_a_terminal_progress_is_plain_lines(monkeypatch):
    monkeypatch.setenv("SALAD_PROGRESS_SECONDS", "0")
    out = io.StringIO()
    with progress_bar(console=Console(file=out, force_terminal=False)) as bar:
        assert isinstance(bar, PlainProgress)
        task = bar.add_task("synthesizing", total=4, audio=0.0)
        for step in range(4):
            bar.update(task, advance=1, audio=1.5 * (step + 1))
        bar.add_task("never started", total=3)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("synthesizing: 1/4 (25%)") and "audio 1.5" in lines[0]
    assert lines[-1].startswith("synthesizing: 4/4 (100%)") and "ETA" not in lines[-1]
    assert len(lines) == 4 and "\x1b" not in out.getvalue()  # one line per update, no escapes


def test_lines_are_periodic_and_a_disabled_bar_is_silent(monkeypatch):
    monkeypatch.setenv("SALAD_PROGRESS_SECONDS", "3600")
    out = io.StringIO()
    with progress_bar(console=Console(file=out, force_terminal=False)) as bar:
        task = bar.add_task("scoring", total=100)
        for _ in range(60):
            bar.advance(task)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scoring: 60/100 (60%)")  # where it stopped
    quiet = io.StringIO()
    with progress_bar(console=Console(file=quiet, force_terminal=False), disable=True) as bar:
        bar.advance(bar.add_task("hidden", total=2), 2)
    assert quiet.getvalue() == ""
    terminal = Console(file=io.StringIO(), force_terminal=True)
    assert type(progress_bar(console=terminal)) is Progress
