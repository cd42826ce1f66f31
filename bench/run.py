"""Run every ``bench/*.py`` script in turn and print its report (``make bench``).

Each script runs in its own process, so one's imports and caches never flatter another's timings.
The exit status is non-zero when any script failed; the others still run.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
BY_HAND = {"gpu.py": "needs a GPU, --tokenizer and --clips: run it by hand on the device"}


def main() -> int:
    failed = []
    for script in sorted(BENCH.glob("*.py")):
        if script.name == Path(__file__).name:
            continue
        if script.name in BY_HAND:
            print(f"== {script.name}: skipped ({BY_HAND[script.name]})\n", flush=True)
            continue
        print(f"== {script.name}", flush=True)
        started = time.perf_counter()
        result = subprocess.run([sys.executable, str(script)], cwd=BENCH.parent)
        print(f"== {script.name}: {time.perf_counter() - started:.1f} s\n", flush=True)
        if result.returncode:
            failed.append(script.name)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
