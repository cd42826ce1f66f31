"""`salad-train run --seeds`: the report across seeds on constructed loops with known answers,
and two seeds of the toy loop end to end with the real models (as in test_pipeline.py)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import scipy.stats
from test_paired_comparison import A_SPEECH, binom_two_sided, task_records, write_run
from test_pipeline import ENV, _command

from salad_eval.errors import SaladError
from salad_train.config import load_config
from salad_train.loop.loop import parse_seeds, seed_overrides
from salad_train.loop.report import write_loop_report
from salad_train.loop.seeds import write_seeds_report

# Stage II against Stage I (right on items 0-9 of 20): seed 0 right on 1-15 (6 gained, 1 lost),
# seed 1 right on 0-13 (4 gained, none lost)
# seed 2 right on 0-14 (5 gained, none lost)
STAGE2 = {
    0: [1 <= i < 16 for i in range(20)],
    1: [i < 14 for i in range(20)],
    2: [i < 15 for i in range(20)],
}


def _loop(root, seed: int):
    training = {"stage": "I", "steps": 1, "speech_hours": 0.5}
    dirs = {
        "stage I": write_run(root / "s1", task_records("demo", A_SPEECH), training=training),
        "stage II": write_run(
            root / "s2", task_records("demo", STAGE2[seed]), training={**training, "stage": "II"}
        ),
        "stage II random": write_run(
            root / "r",
            task_records("demo", [i < 12 for i in range(20)]),
            training={**training, "stage": "II"},
        ),
    }
    write_loop_report(dirs, root)
    return root


def test_report_across_seeds_has_known_spread_and_pooled_tests(tmp_path):
    roots = {seed: _loop(tmp_path / f"seed-{seed}", seed) for seed in (0, 1)}
    report = write_seeds_report(roots, tmp_path, n_boot=50)
    assert json.loads((tmp_path / "seeds.json").read_text())["seeds"] == report["seeds"] == [0, 1]
    speech = report["tables"]["demo"]["stage II"]["speech@speech acc"]
    assert speech["per_seed"] == {0: 0.75, 1: 0.70}
    assert speech["mean"] == pytest.approx(0.725)
    assert speech["sd"] == pytest.approx(np.std([0.75, 0.70], ddof=1))
    assert (speech["min"], speech["max"]) == (0.70, 0.75)
    assert report["tables"]["demo"]["stage I"]["speech@speech acc"]["sd"] == 0
    per_seed = {
        (r["a"], r["b"], r["condition"]): r
        for r in report["paired_per_seed"]
        if r["task"] == "demo"
    }
    vs_stage1 = per_seed["stage I", "stage II", "speech@speech"]
    assert {s: r["diff"]["value"] for s, r in vs_stage1["per_seed"].items()} == {0: 0.25, 1: 0.2}
    assert vs_stage1["per_seed"][0]["p_value"] == pytest.approx(binom_two_sided(1, 7))
    assert vs_stage1["diff"]["mean"] == pytest.approx(0.225)
    pooled = {
        (r["a"], r["b"], r["condition"]): r for r in report["paired_pooled"] if r["task"] == "demo"
    }
    both = pooled["stage I", "stage II", "speech@speech"]
    assert both["n_items"] == 20 and both["n_pairs"] == 40  # items shared; McNemar: (seed, item)
    assert (both["b_right_a_wrong"], both["a_right_b_wrong"]) == (10, 1)
    assert both["p_value"] == pytest.approx(binom_two_sided(1, 11), rel=1e-12)
    assert both["diff"]["value"] == pytest.approx(9 / 40)  # the mean of the seeds' +25 and +20
    # the sign-flip p flips items: items 10-13 gained in both seeds weigh as one item each
    assert both["p_items"] > both["p_value"]
    vs_random = pooled["stage II random", "stage II", "speech@speech"]
    assert vs_random["diff"]["value"] == pytest.approx((15 + 14 - 24) / 40)
    assert report["voices_unseen_in_training"] == []  # the constructed runs record no voices
    md = (tmp_path / "seeds.md").read_text()
    assert "| speech@speech acc | stage II | 75.0 | 70.0 | 72.5 | 3.5 | 70.0 to 75.0 |" in md
    assert "| stage I | stage II | speech@speech | +25.0 [" in md
    assert "pooled sign-flip p" in md
    assert "not available: 2 seeds, a claim about the procedure needs at least 3" in md
    assert vs_stage1["seed_level"]["p"] is None and both["claim"] == "these trained instances"
    assert (tmp_path / "seeds.png").stat().st_size > 0


def test_three_seeds_give_the_seed_level_paired_t(tmp_path):
    roots = {seed: _loop(tmp_path / f"seed-{seed}", seed) for seed in (0, 1, 2)}
    report = write_seeds_report(roots, tmp_path, n_boot=20)
    row = next(
        r
        for r in report["paired_per_seed"]
        if (r["a"], r["b"], r["task"], r["condition"])
        == ("stage I", "stage II", "demo", "speech@speech")
    )
    diffs = np.array([0.25, 0.20, 0.25])  # per seed: +5, +4 and +5 items of 20
    t = diffs.mean() / (diffs.std(ddof=1) / np.sqrt(3))
    level = row["seed_level"]
    assert level["mean"] == pytest.approx(diffs.mean()) and level["t"] == pytest.approx(t)
    assert level["p"] == pytest.approx(2 * scipy.stats.t.sf(t, 2))
    assert level["claim"] == "the procedure"
    assert f"| {level['p']:.3g} |" in (tmp_path / "seeds.md").read_text()


def test_seeds_are_validated_and_name_their_dirs_as_make_demo_does(tmp_path):
    assert parse_seeds("0,1, 2") == [0, 1, 2]
    for bad in ("", "0,0", "-1", "a,b", "1.5"):
        with pytest.raises(SaladError, match="--seeds"):
            parse_seeds(bad)
    config = load_config("tiny")
    zero, one = (dict(o.split("=", 1) for o in seed_overrides(config, s)) for s in (0, 1))
    assert zero["train.out_dir"] == "runs/tiny" and one["train.out_dir"] == "runs/tiny-seed1"
    assert one["train.seed"] == one["select.seed"] == "1"
    assert one["run.out_dir"] == "runs/tiny-loop/seed-1"
    with pytest.raises(SaladError, match="missing"):
        write_seeds_report({0: tmp_path / "nowhere"}, tmp_path)


@pytest.mark.integration
def test_two_seeds_of_the_toy_loop_train_apart_and_are_reported_together(tmp_path):
    command = [c for c in _command(tmp_path) if c != "--ablate-random"] + ["--seeds", "0,1"]
    first = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    loop = tmp_path / "loop"
    assert "== seed 1 (2/2) ==" in first.stderr and str(loop / "seeds.md") in first.stdout
    for seed, stage1 in ((0, tmp_path / "stage1"), (1, tmp_path / "stage1-seed1")):
        assert json.loads((stage1 / "config.json").read_text())["train"]["seed"] == seed
        assert (loop / f"seed-{seed}" / "report.json").is_file()
    weights = [
        (tmp_path / d / "model" / "adapter.safetensors").read_bytes()
        for d in ("stage1", "stage1-seed1")
    ]
    assert weights[0] != weights[1]  # the seed reaches the initialisation and the data
    report = json.loads((loop / "seeds.json").read_text())
    speech = report["tables"]["demo"]["stage II"]["speech@speech acc"]
    values = [
        json.loads((loop / f"seed-{s}" / "report.json").read_text())["tables"]["demo"]["stage II"][
            "speech@speech acc"
        ]["value"]
        for s in (0, 1)
    ]
    assert list(speech["per_seed"].values()) == values
    assert speech["mean"] == pytest.approx(np.mean(values))
    assert any(
        r["a"] == "stage I" and r["b"] == "stage II" and r["task"] == "all tasks"
        for r in report["paired_pooled"]
    )
    again = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count("skipped (current)") == 2 * 6  # both loops, every step and report
