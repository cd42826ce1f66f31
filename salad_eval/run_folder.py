"""A run folder while it is written: marked, so that no reader takes a half-written run (a full
disk, a kill between two files) for a complete one. The marker goes when the last file is in."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.home import DISK_FULL, atomic_write_text, disk_error

MARKER = ".incomplete"


@contextlib.contextmanager
def writing(run_dir: Path) -> Iterator[Path]:
    """Mark ``run_dir`` incomplete while the block writes it; unmark it when the block ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / MARKER, "salad-eval gap is writing this run, or was stopped\n")
    try:
        yield run_dir
    except OSError as err:  # a plot's write names no file: name the run
        if err.errno in DISK_FULL:
            raise disk_error(err, err.filename or run_dir) from None
        raise
    (run_dir / MARKER).unlink()


def check_complete(run_dir: Path) -> None:
    """Refuse a run folder whose writing did not finish."""
    if (Path(run_dir) / MARKER).exists():
        raise SaladError(
            f"{run_dir} was not written to the end (a full disk or a stop); rerun the gap "
            "command that wrote it (scores are cached: it completes the run)"
        )
