"""`salad-train run` end to end at toy scale with the real models (SmolLM2 with LoRA, Whisper
tiny.en, Piper, MiniLM): the --ablate-random loop is killed with SIGKILL inside Stage II, rerun to
the end without redoing finished steps, and a third run skips everything."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from salad_eval.errors import SaladError
from salad_train.config import load_config
from salad_train.loop.loop import (
    Step,
    _gap_step,
    check_stage1_dir,
    check_tasks,
    gap_setup,
    run_step,
    step_key,
)

CORPUS = [
    "The cat sat on the warm mat near the door and watched the rain fall.",
    "Bread is baked in a hot oven until the crust turns brown and crisp.",
]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
STEPS = [
    "stage I",
    "gap (stage I)",
    "select (gamma=5)",
    "stage II",
    "gap (stage II)",
    "select (gamma=0)",
    "stage II random",
    "gap (stage II random)",
    "report",
]


def test_run_step_skips_current_and_restarts_stale(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="salad_train")
    calls = []
    step = Step("toy", tmp_path / "toy" / "done.json", step_key("a"), lambda: calls.append(1))
    assert run_step(step, 1, 2) and not run_step(step, 1, 2)
    assert calls == [1] and "[1/2] toy ... skipped (current)" in caplog.messages
    (tmp_path / "toy" / "partial").write_text("old work")
    changed = Step("toy", step.done, step_key("b"), lambda: calls.append(2))
    assert run_step(changed, 1, 2) and calls == [1, 2]
    assert not (tmp_path / "toy" / "partial").exists()  # another key's work was cleared


def test_stage1_dir_of_another_config_is_refused(tmp_path):
    config = load_config("tiny", [f"train.out_dir={tmp_path}"])
    check_stage1_dir(config)  # empty: fine
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict(), default=str))
    check_stage1_dir(config)  # the same config: it resumes
    other = load_config("tiny", [f"train.out_dir={tmp_path}", "train.steps=7"])
    with pytest.raises(SaladError, match="another config"):
        check_stage1_dir(other)


def test_missing_benchmark_mirror_fails_fast(monkeypatch):
    monkeypatch.delenv("SALAD_BENCHMARKS", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    config = load_config("tiny", ["run.tasks=[arc_easy]"])
    with pytest.raises(SaladError, match="SALAD_BENCHMARKS"):
        check_tasks(config.run)


def test_loop_gap_reports_take_the_paper_protocol_and_key_on_it(tmp_path):
    exclusions = tmp_path / "decontam.json"
    exclusions.write_text(json.dumps({"exclude": {"demo": ["0"]}}))
    config = load_config(
        "tiny",
        [
            "run.metric=acc_norm",
            "run.shots=5",
            "run.shot_budget=900",
            f"run.exclude_items={exclusions}",
        ],
    )
    setup = gap_setup(config.run, {"speech": "m"}, "float32")
    assert (setup.metric, setup.shots, setup.shot_budget) == ("acc_norm", 5, 900)
    assert setup.exclude_items == str(exclusions) and setup.voices == config.run.voices

    def key(cfg):
        return _gap_step("stage I", tmp_path, "model", cfg, tmp_path).key

    assert key(config) != key(load_config("tiny", ["run.metric=acc_norm", "run.shots=5"]))
    before = key(config)
    exclusions.write_text(json.dumps({"exclude": {"demo": ["1"]}}))  # same file, other ids
    assert key(config) != before
    for bad, match in (
        ("run.metric=f1", "run.metric"),
        ("run.shot_budget=0", "run.shot_budget"),
        (f"run.exclude_items={tmp_path / 'none.json'}", "does not exist"),
    ):
        with pytest.raises(SaladError, match=match):
            load_config("tiny", [bad])


def test_loop_report_warns_when_an_evaluation_voice_was_trained_on(tmp_path):
    from test_gap_report import MANIFEST, run_records

    from salad_eval.gap import write_report
    from salad_train.loop.report import write_loop_report

    runs = {}  # both evaluate on kokoro/af_heart and piper/joe; stage I trained on piper/joe
    for name, voices in (("stage I", ["piper/joe", "espeak/en-us"]), ("stage II", ["espeak/en"])):
        runs[name] = tmp_path / name
        training = {"speech_hours": 1.0, "voices": voices, "stage": name.split()[-1], "steps": 1}
        write_report(
            runs[name], run_records(0, 0.5, 1.0), {**MANIFEST, "training": training}, n_boot=20
        )
    report = write_loop_report(runs, tmp_path)
    assert report["voices_heard_in_training"] == {"piper/joe": "seen"}
    assert (
        "**Warning: evaluation voices heard in training**: `piper/joe` (seen in training)"
        in (tmp_path / "report.md").read_text()
    )
    assert report["voices_unseen_in_training"] == []
    report = write_loop_report({"stage II": runs["stage II"]}, tmp_path)
    assert report["voices_heard_in_training"] == {}
    assert report["voices_unseen_in_training"] == ["kokoro/af_heart", "piper/joe"]
    text = (tmp_path / "report.md").read_text()
    assert "Warning" not in text
    assert "Evaluation voices: `kokoro/af_heart`, `piper/joe`, unseen in training" in text


def _command(root: Path) -> list[str]:
    pool = Path(__file__).parents[1] / "salad_train" / "corpus" / "pool.txt"
    texts = [ln for ln in pool.read_text().splitlines() if ln and not ln.startswith("#")]
    (root / "pool.txt").write_text("\n".join(texts[::12]) + "\n")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    return [
        sys.executable,
        "-m",
        "salad_train.cli",
        "run",
        "--config",
        "tiny",
        "--ablate-random",
        f"data.corpus={root / 'corpus.txt'}",
        "data.tasks=[]",
        "data.voices=[piper/joe]",
        "train.align_steps=2",
        "train.align_batch_size=4",
        "model.adapter_layers=1",
        "model.adapter_width=32",
        "model.adapter_heads=2",
        "optim.warmup_steps=1",
        "train.steps=4",
        "train.batch_size=2",
        "train.save_every=1",
        f"train.out_dir={root / 'stage1'}",
        f"select.pool=[{root / 'pool.txt'}]",
        "select.clusters=2",
        "select.probe_texts=1",
        "select.budget_hours=0.003",
        "select.max_cer=0.5",
        "stage2.steps=2",
        "run.tasks=[demo]",
        "run.limit=4",
        "run.voices=piper/joe",
        "run.asr=whisper-tiny.en",
        "run.n_boot=100",
        "run.divergences=false",  # corpus F and M: tested with the gap runs, not read here
        f"run.out_dir={root / 'loop'}",
    ]


def _lines(output: str) -> dict[str, str]:
    """{step label: what its final line says} from the run's log lines (stderr)."""
    found = {}
    step = r"^\d\d:\d\d:\d\d INFO \[\d+/(\d+)\] (.+?) \.\.\.(.*)$"
    for match in re.finditer(step, output, re.MULTILINE):
        assert match[1] == str(len(STEPS))
        found[match[2]] = match[3].strip()
    return found


@pytest.mark.integration
def test_run_is_resumable_and_skips_current_steps(tmp_path):
    command, loop = _command(tmp_path), tmp_path / "loop"
    dones = {
        "stage I": tmp_path / "stage1" / "done.json",
        "select (gamma=5)": loop / "select" / "done.json",
        "stage II": loop / "stage2" / "done.json",
    }
    process = subprocess.Popen(
        command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    # wait for the event itself, however fast the machine: Stage II's first checkpoint, or the
    # run's end (then the assertion below says the kill came too late)
    while not (loop / "stage2" / "latest").is_file() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)  # inside Stage II, after its first checkpoint
    assert process.wait() == -signal.SIGKILL, "the run ended before Stage II's first checkpoint"
    finished = {label: path.stat().st_mtime_ns for label, path in dones.items() if path.is_file()}
    assert {"stage I", "select (gamma=5)"} <= set(finished)

    second = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    lines = _lines(second.stderr)
    assert list(lines) == STEPS
    for label, mtime in finished.items():  # completed steps were not redone
        assert lines[label] == "skipped (current)"
        assert dones[label].stat().st_mtime_ns == mtime
    assert lines["stage II random"].startswith("done in")
    stage2 = [json.loads(ln) for ln in (loop / "stage2" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in stage2 if "loss" in row] == [1, 2]  # resumed, not restarted

    report = json.loads((loop / "report.json").read_text())
    assert report["models"] == ["stage I", "stage II", "stage II random"]
    demo = report["tables"]["demo"]
    for model in report["models"]:
        assert demo[model]["n_items"] == 4
        acc = demo[model]["speech@speech acc"]
        assert acc["ci_low"] <= acc["value"] <= acc["ci_high"]
    assert report["training"]["stage II"]["stage"] == "II"
    text = (loop / "report.md").read_text()
    assert "| figure | stage I | stage II | stage II random |" in text
    assert (loop / "report.png").stat().st_size > 0

    stamps = {p: p.stat().st_mtime_ns for p in (*loop.rglob("done.json"), loop / "report.json")}
    third = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-2000:]
    assert set(_lines(third.stderr).values()) == {"skipped (current)"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
