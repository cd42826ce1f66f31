"""`salad-eval gap --answer generate` end to end, with the real embedded models at small scale.

A tiny randomly initialised SALAD checkpoint answers the demo items by generated replies in
every condition and control; a run killed by SIGKILL while generating resumes to a byte-identical
items.jsonl (bad generation options and tasks: tests/test_bad_input.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from homes import scoreless_home

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
LIMIT = 3
CONDITIONS = ("text@base", "text@speech", "speech@speech", "speech@cascade")
CONTROLS = ("speech@speech:silent", "speech@speech:shuffled")


def _args(checkpoint: Path, out: Path, *more: str) -> list[str]:
    return [
        str(BIN / "salad-eval"),
        "gap",
        "--model",
        str(checkpoint),
        "--tasks",
        "demo",
        "--voices",
        "piper/joe",
        "--limit",
        str(LIMIT),
        "--asr",
        "whisper-tiny.en",
        "--answer",
        "generate",
        "--max-new-tokens",
        "8",
        "--n-boot",
        "100",
        "--no-divergences",
        "--out",
        str(out),
        *more,
    ]


def _env(salad_home: Path) -> dict:
    return {
        **os.environ,
        "SALAD_HOME": str(salad_home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }


@pytest.fixture(scope="module")
def reference(random_checkpoint, tmp_path_factory) -> Path:
    """An uninterrupted run from an empty reply cache."""
    root = tmp_path_factory.mktemp("generate")
    out = root / "run"
    subprocess.run(
        _args(random_checkpoint, out), env=_env(scoreless_home(root / "home")), check=True
    )
    return out


def test_generated_answers_make_a_complete_report(reference):
    results = json.loads((reference / "results.json").read_text())
    assert results["metric"] == "acc_gen" and list(results["metrics"]) == ["acc_gen"]
    overall = results["metrics"]["acc_gen"]["overall"]
    assert set(overall["accuracy"]) == {*CONDITIONS, *CONTROLS}
    assert set(overall["no_answer"]) == {*CONDITIONS, *CONTROLS}
    gap, forgetting, misalignment = (overall[k] for k in ("gap", "forgetting", "misalignment"))
    assert gap["num"] == forgetting["num"] + misalignment["num"] and gap["den"] == LIMIT
    assert "piper/joe" in results["metrics"]["acc_gen"]["voices"]
    assert "no_answer" in results["metrics"]["acc_gen"]["voices"]["piper/joe"]
    assert results["controls"]["sentence"]
    assert results["generation"]["rule"] == "letter-v1"
    assert results["generation"]["decoding"]["max_new_tokens"] == 8
    assert results["manifest"]["tasks"]["demo"]["generate"]["rule"] == "letter-v1"
    assert results["manifest"]["setup"]["answer"] == "generate"
    rows = [json.loads(line) for line in (reference / "items.jsonl").read_text().splitlines()]
    assert len(rows) == LIMIT * 6
    for row in rows:
        assert row["rule"] == "letter-v1" and row["samples"] == 1
        assert len(row["replies"]) == len(row["letters"]) == len(row["read"]) == 1
        letter = row["letters"][0]
        assert row["no_answer"] == (letter is None)
        assert row["correct_gen"] == (letter == "ABCD"[row["target"]])
        assert "logprobs" not in row  # generation only: nothing was scored
    for row in rows:  # no answer counts as wrong: the denominator never moves
        if row["no_answer"]:
            assert row["correct_gen"] == 0
    summary = (reference / "summary.md").read_text()
    assert "## Answers by generation" in summary and "no answer" in summary
    lm_eval = json.loads(next(reference.glob("results_*.json")).read_text())
    assert "no_answer,none" in lm_eval["results"]["demo:speech@speech"]


def test_killed_while_generating_resumes_to_identical_items(random_checkpoint, reference, tmp_path):
    salad_home = scoreless_home(tmp_path / "home")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        _args(random_checkpoint, out), env=_env(salad_home), start_new_session=True
    )
    while proc.poll() is None:  # wait for the event itself: some replies cached
        if len(list((salad_home / "replies").rglob("*.json"))) >= LIMIT + 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    subprocess.run(_args(random_checkpoint, out), env=_env(salad_home), check=True)
    assert (out / "items.jsonl").read_bytes() == (reference / "items.jsonl").read_bytes()


def test_a_model_that_only_scores_is_refused_before_any_audio(tmp_path):
    """run_gap's own check (evaluate() and the CLI refuse a plugin family's adapter earlier)."""
    from salad_eval.errors import SaladError
    from salad_eval.models.text_lm import TextLM
    from salad_eval.run.runner import Models, run_gap
    from salad_eval.run.spec import RunSpec

    class ScoreOnly:
        def __init__(self, text):
            self.text = text
            self.fingerprint, self.dtype = "score-only", text.dtype

        def score(self, requests, batch_size=8):
            return self.text.score(requests, batch_size)

    text = TextLM("smollm2-135m")
    setup = RunSpec(tasks=["demo"], voices="piper/joe", limit=LIMIT, answer="generate")
    with pytest.raises(SaladError, match="speech model .*cannot generate"):
        run_gap(setup, Models(speech=ScoreOnly(text), text=text), tmp_path / "run")
    assert not (tmp_path / "run").exists()
