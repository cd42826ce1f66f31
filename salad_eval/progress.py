"""What a person reads while salad works: its own progress, without third-party chatter.

``quiet_third_party()`` runs at the start of both CLIs: transformers' and the hub's progress bars
("Loading weights", "Writing model shards") and info logs are silenced, and so are the warnings
that say nothing a salad user can act on. ``progress_bar()`` is a rich ``Progress`` on a terminal;
anywhere else (a file, a CI log), where rich draws nothing until the end, it prints one plain line
per task every ``$SALAD_PROGRESS_SECONDS`` (default 30) and one when the task ends.
"""

from __future__ import annotations

import os
import sys
import time
import warnings

from rich.console import Console
from rich.progress import Progress, ProgressColumn, TaskID

# warnings raised inside the libraries on calls salad makes as documented
_NOISE = (
    r".*generation[_ ]config.*",  # Whisper's generate, on the embedded checkpoints' old configs
    r".*TRANSFORMERS_CACHE.*",
)


def quiet_third_party() -> None:
    """Silence third-party progress bars, info logs and known noise (workers inherit it)."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when transformers imports
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    if "transformers" in sys.modules:  # imported already: tell it directly
        from transformers.utils import logging  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        logging.set_verbosity_error()
        logging.disable_progress_bar()


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def _field(value: object) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class PlainProgress(Progress):
    """A ``Progress`` that prints plain lines instead of redrawing a bar (for logs and files)."""

    def __init__(self, *columns: str | ProgressColumn, console: Console, interval: float) -> None:
        super().__init__(*columns, console=console, disable=True)
        self.interval = interval
        self._last: dict[TaskID, float] = {}
        self._ended: set[TaskID] = set()

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._last[task_id] = time.monotonic()
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._report(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._report(task_id)

    def stop(self) -> None:
        for task_id in list(self._last):
            self._report(task_id, end=True)
        super().stop()

    def _report(self, task_id: TaskID, end: bool = False) -> None:
        task = self._tasks[task_id]
        now = time.monotonic()
        done = task.finished or end
        if task_id in self._ended or not (done or now - self._last[task_id] >= self.interval):
            return
        if done and not task.completed:
            return  # a task that never started is no news
        self._last[task_id] = now
        if done:
            self._ended.add(task_id)
        total = f"/{task.total:.0f}" if task.total else ""
        share = f" ({task.percentage:.0f}%)" if task.total else ""
        eta = "" if done else f", ETA {_duration(task.time_remaining)}"
        extra = "".join(f", {k} {_field(v)}" for k, v in task.fields.items() if v != "")
        self.console.print(
            f"{task.description}: {task.completed:.0f}{total}{share}, "
            f"{_duration(task.elapsed)} elapsed{eta}{extra}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


def progress_bar(
    *columns: str | ProgressColumn,
    console: Console | None = None,
    disable: bool = False,
    transient: bool = False,
) -> Progress:
    """A rich bar on a terminal, plain periodic lines elsewhere, nothing when ``disable``."""
    console = console or Console(stderr=True)
    if disable or console.is_terminal:
        return Progress(*columns, console=console, disable=disable, transient=transient)
    interval = float(os.environ.get("SALAD_PROGRESS_SECONDS", "30"))
    return PlainProgress(*columns, console=console, interval=interval)
