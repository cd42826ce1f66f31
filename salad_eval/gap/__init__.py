"""The gap: its decomposition, statistics, controls and reports, from per-item records."""

from salad_eval.gap.compare import compare_runs
from salad_eval.gap.report import analyse, write_report

__all__ = ["analyse", "compare_runs", "write_report"]
