"""SIGTERM during synthesis stops every process of the run, and output stays readable in a log.

``salad-train stage1`` on the tiny preset's own corpus, in an empty cache home (assets shared),
synthesizes with two worker processes; stderr goes to a file, as in CI. Once its plain progress
lines show synthesis under way, the parent gets SIGTERM: it exits with 128 + 15, no process it
started is left, every clip in the store decodes, and the log holds no traceback and none of
transformers' progress bars.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import soundfile as sf

from salad_eval.home import home

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)


def test_sigterm_during_synthesis_leaves_no_process_and_a_consistent_store(tmp_path):
    cache = tmp_path / "home"
    cache.mkdir()
    (cache / "assets").symlink_to(home() / "assets")
    log = tmp_path / "stderr.log"
    env = {
        **os.environ,
        "SALAD_HOME": str(cache),
        "HF_HUB_OFFLINE": "1",
        "SALAD_PROGRESS_SECONDS": "1",
    }
    overrides = [
        "data.tasks=[]",
        "data.max_documents=null",
        "data.workers=2",
        "train.align_steps=0",
        f"train.out_dir={tmp_path / 'run'}",
    ]
    with open(log, "w") as stderr:
        parent = subprocess.Popen(
            [BIN / "salad-train", "stage1", *overrides],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        run = psutil.Process(parent.pid)
        started = lambda: "synthesizing speech spans:" in log.read_text()  # noqa: E731
        _wait_for(lambda: started() or parent.poll() is not None, 300, "synthesis progress lines")
        assert parent.poll() is None, log.read_text()
        processes = run.children(recursive=True)
        assert len(processes) >= 2, "the synthesis workers are not running"
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(timeout=30) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(processes, timeout=10)
        assert not alive, f"left running: {[p.pid for p in alive]}"
    finally:
        if parent.poll() is None:
            parent.kill()
    text = log.read_text()
    assert "Traceback" not in text and "Loading weights" not in text, text
    clips = [p for p in (cache / "audio").rglob("*.flac") if not p.name.startswith(".")]
    assert clips, "no clip was made before the signal"
    for clip in clips:  # atomic writes: whatever is in the store is whole
        assert sf.info(clip).frames > 0
