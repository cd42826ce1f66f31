"""Bring your own task, and the Python API: a spoken task written in a folder outside the
repository runs through `salad-eval gap --include-path` to a complete report (with lm-eval style
results and per-sample logs); `salad_eval.evaluate` on the same run gives the same figures; a
malformed spec is refused in one line naming its file and field.

A tiny random SALAD checkpoint (as in test_gap_run) is scored on 5 items spoken by eSpeak.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from homes import scoreless_home

import salad_eval
from salad_eval import launch, tasks
from salad_eval.cli import app
from salad_eval.gap.records import ALL_CONDITIONS
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig

BIN = Path(sys.executable).parent
LIMIT = 5
CONDITIONS = {
    "text@base",
    "text@speech",
    "speech@speech",
    "speech@cascade",
    "speech@speech:silent",
    "speech@speech:shuffled",
}

# A new spoken task in a few lines: its own data schema, a shared base spec through `include`.
BASE_SPEC = """\
# shared by the spoken tasks of this folder (a leading _ : not a task itself)
version: 1
test_split: test
prompt:
  - text: "Question: "
  - speak: "{{question}}"
  - text: "\\nAnswer:"
choices: options
target: label
"""
TASK_SPEC = """\
include: _base.yaml
task: capitals
text_task: capitals
data_files:
  test: capitals.jsonl
id: "{{name}}"
domain: geography
"""
ITEMS = [
    ("france", "What is the capital of France?", ["Paris", "Rome", "Madrid", "Oslo"], 0),
    ("japan", "What is the capital of Japan?", ["Seoul", "Tokyo", "Beijing", "Hanoi"], 1),
    ("italy", "What is the capital of Italy?", ["Athens", "Vienna", "Rome", "Lisbon"], 2),
    ("egypt", "What is the capital of Egypt?", ["Tunis", "Rabat", "Amman", "Cairo"], 3),
    ("canada", "What is the capital of Canada?", ["Ottawa", "Toronto", "Dublin", "Quito"], 0),
    ("kenya", "What is the capital of Kenya?", ["Lagos", "Nairobi", "Accra", "Dakar"], 1),
]


def write_task(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_base.yaml").write_text(BASE_SPEC)
    (folder / "capitals.yaml").write_text(TASK_SPEC)
    rows = [{"name": n, "question": q, "options": o, "label": a} for n, q, o, a in ITEMS]
    (folder / "capitals.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return write_task(tmp_path_factory.mktemp("my-tasks"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    config = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)
    return SpeechLM.from_config(config, seed=0).save(tmp_path_factory.mktemp("ckpt") / "random")


@pytest.fixture(scope="module")
def salad_home(tmp_path_factory) -> Path:
    """A cache home sharing the prepared assets, audio and encoder features, with no scores."""
    return scoreless_home(tmp_path_factory.mktemp("salad") / "home")


def _options(checkpoint: Path) -> dict:
    return {
        "model": str(checkpoint),
        "tasks": ["capitals"],
        "voices": "espeak/en-us",
        "limit": LIMIT,
        "asr": "whisper-tiny.en",
        "n_boot": 200,
    }


@pytest.fixture(scope="module")
def cli_run(checkpoint, task_dir, salad_home, tmp_path_factory) -> Path:
    """`salad-eval gap` on the folder's task, run from a folder outside the repository."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    out = cwd / "run"
    o = _options(checkpoint)
    args = [
        BIN / "salad-eval",
        "gap",
        "--model",
        o["model"],
        "--tasks",
        "capitals",
        "--include-path",
        str(task_dir),
        "--voices",
        o["voices"],
        "--limit",
        str(LIMIT),
        "--asr",
        o["asr"],
        "--n-boot",
        str(o["n_boot"]),
        "--log-samples",
        "--out",
        str(out),
    ]
    # the API runs in this process: the same thread count, so CPU kernels round alike
    env = {
        **os.environ,
        "SALAD_HOME": str(salad_home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    }
    subprocess.run(args, cwd=cwd, env=env, check=True)
    return out


def _figures(results: dict) -> dict:
    """results.json without what differs between two runs of the same setup."""
    results = json.loads(json.dumps(results))
    for volatile in ("created", "seconds", "command"):
        results["manifest"].pop(volatile)
    return results


@pytest.mark.integration
def test_own_task_runs_to_a_complete_report(cli_run):
    results = json.loads((cli_run / "results.json").read_text())
    assert results["tasks"] == ["capitals"] and results["voices"] == ["espeak/en-us"]
    overall = results["metrics"]["acc"]["overall"]
    assert set(overall["accuracy"]) == CONDITIONS
    assert all(figure["n"] == LIMIT for figure in overall["accuracy"].values())
    assert overall["gap"]["num"] == overall["forgetting"]["num"] + overall["misalignment"]["num"]
    assert (cli_run / "summary.md").read_text().strip()
    rows = [json.loads(line) for line in (cli_run / "items.jsonl").read_text().splitlines()]
    assert len(rows) == LIMIT * len(CONDITIONS)
    assert {r["item"] for r in rows} == {name for name, *_ in ITEMS[:LIMIT]}


@pytest.mark.integration
def test_lm_eval_style_results_and_samples(cli_run):
    results = json.loads((cli_run / "results.json").read_text())
    table = results["metrics"]["acc"]["tasks"]["capitals"]
    table_norm = results["metrics"]["acc_norm"]["tasks"]["capitals"]
    (path,) = cli_run.glob("results_*.json")
    lm = json.loads(path.read_text())
    assert lm["group_subtasks"]["capitals"] == [f"capitals:{c}" for c in ALL_CONDITIONS]
    for condition in CONDITIONS:
        row = lm["results"][f"capitals:{condition}"]
        assert row["acc,none"] == pytest.approx(table["accuracy"][condition]["value"], abs=1e-12)
        assert row["acc_norm,none"] == pytest.approx(
            table_norm["accuracy"][condition]["value"], abs=1e-12
        )
        assert 0 <= row["acc_stderr,none"] <= 0.5
        assert lm["n-samples"][f"capitals:{condition}"] == {"original": LIMIT, "effective": LIMIT}
    for name in ("gap", "forgetting", "misalignment"):
        assert lm["results"]["capitals"][f"{name},none"] == table[name]["value"]
    (samples,) = cli_run.glob("samples_capitals_*.jsonl")
    lines = [json.loads(line) for line in samples.read_text().splitlines()]
    records = [json.loads(line) for line in (cli_run / "items.jsonl").read_text().splitlines()]
    assert len(lines) == len(records) == LIMIT * len(CONDITIONS)
    for sample, record in zip(lines, records, strict=True):
        assert sample["condition"] == record["condition"] and sample["voice"] == record["voice"]
        assert [r[0][0] for r in sample["resps"]] == record["logprobs"]
        assert sample["acc"] == float(record["correct"])
        assert sample["doc"]["id"] == record["item"] and len(sample["arguments"]) == 4
    assert all(s["clips"] for s in lines if s["condition"] == "speech@speech")
    assert {s["doc_id"] for s in lines} == set(range(LIMIT))


@pytest.mark.integration
def test_evaluate_returns_the_cli_figures(
    cli_run, checkpoint, task_dir, salad_home, tmp_path, monkeypatch
):
    monkeypatch.setenv("SALAD_HOME", str(salad_home))
    results = salad_eval.evaluate(
        **_options(checkpoint), include_path=[str(task_dir)], log_samples=True, out=tmp_path / "api"
    )
    on_disk = json.loads((tmp_path / "api" / "results.json").read_text())
    assert results == on_disk
    assert _figures(results) == _figures(json.loads((cli_run / "results.json").read_text()))


def test_include_path_from_the_environment(task_dir, monkeypatch):
    assert "capitals" not in tasks.list_tasks()
    monkeypatch.setenv(tasks.INCLUDE_ENV, str(task_dir))
    assert "capitals" in tasks.list_tasks() and "demo" in tasks.list_tasks()
    assert tasks.spec_file("capitals") == task_dir / "capitals.yaml"
    items = tasks.load_items("capitals")
    assert [i.choices[i.target] for i in items[:2]] == [" Paris", " Tokyo"]
    assert items[0].text_context == "Question: What is the capital of France?\nAnswer:"


def _refused(argv: list[str], capsys, monkeypatch) -> str:
    monkeypatch.setattr(launch, "stop_on_signals", lambda: None)
    monkeypatch.setattr(launch, "quiet_third_party", lambda: None)
    monkeypatch.setattr(sys, "argv", ["salad-eval", *argv])
    with pytest.raises(SystemExit) as stop:
        launch.run_cli(app)
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    return err


TYPOS = [  # (edit of capitals.yaml, words the one-line error must hold)
    (("prompt", "promt"), ("_base.yaml", "unknown field 'promt'", "did you mean prompt")),
    (("task: capitals", "tsk: capitals"), ("capitals.yaml", "'tsk'", "did you mean task")),
    (('id: "{{name}}"', 'id: "{{name}"'), ("capitals.yaml", "field id", "bad template")),
    (("domain: geography", "domain: [geography"), ("capitals.yaml", "not valid YAML", "line")),
    (("include: _base.yaml", "include: _bse.yaml"), ("capitals.yaml", "field include")),
    (("test: capitals.jsonl", "test: capital.jsonl"), ("capitals.yaml", "data_files.test")),
]


@pytest.mark.parametrize(("edit", "words"), TYPOS)
def test_a_typo_in_a_spec_is_one_line_naming_file_and_field(
    edit, words, task_dir, checkpoint, tmp_path, capsys, monkeypatch
):
    broken = tmp_path / "broken"
    shutil.copytree(task_dir, broken)
    old, new = edit
    target = broken / ("_base.yaml" if old == "prompt" else "capitals.yaml")
    target.write_text(target.read_text().replace(old, new, 1))
    err = _refused(
        [
            "gap",
            "--model",
            str(checkpoint),
            "--tasks",
            "capitals",
            "--include-path",
            str(broken),
            "--limit",
            "5",
        ],
        capsys,
        monkeypatch,
    )
    assert str(broken) in err
    for word in words:
        assert word in err, err


def test_a_missing_include_folder_is_refused(capsys, monkeypatch, tmp_path):
    err = _refused(["tasks", "--include-path", str(tmp_path / "nowhere")], capsys, monkeypatch)
    assert "--include-path" in err and "nowhere" in err
