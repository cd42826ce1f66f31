"""The metrics JSONL: one row per logged step (and one per probe), appended as training goes.

A resumed run first drops rows past its checkpoint's step, so the file reads as if the run had
never stopped.
"""

from __future__ import annotations

import json
from pathlib import Path

from salad_eval.home import atomic_write_text
from salad_train.trackers import tracker_row


class MetricsLog:
    """``tracker`` (an ``Accelerator`` with trackers started) also receives every row written."""

    def __init__(self, path: Path, resume_step: int, enabled: bool = True, tracker=None):
        self.path, self.enabled, self.tracker = path, enabled, tracker
        if enabled and path.is_file():
            rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
            kept = [r for r in rows if r.get("step", 0) <= resume_step]
            atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in kept))

    def write(self, row: dict, every: int = 1) -> None:
        if self.enabled and row.get("step", 0) % max(every, 1) == 0:
            with open(self.path, "a") as handle:
                handle.write(json.dumps(row) + "\n")
            if self.tracker is not None:
                values, step = tracker_row(row)
                self.tracker.log(values, step=step)


def read_metrics(path: str | Path) -> list[dict]:
    return [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
