"""`salad-eval report`'s paired comparison of two runs on their common items, with known answers."""

from __future__ import annotations

import json
from math import comb
from pathlib import Path

import pytest
from typer.testing import CliRunner

from salad_eval.cli import app
from salad_eval.errors import SaladError
from salad_eval.gap import compare_runs, write_report
from salad_eval.gap.paired import load_items, paired_rows
from salad_train.loop.report import write_loop_report

JOE, HEART, AMY = "piper/joe", "kokoro/af_heart", "piper/amy"


def record(
    task: str,
    item: str,
    cond: str,
    voice: str | None,
    correct: bool,
    norm: bool | None = None,
    target: int = 1,
) -> dict:
    """One items.jsonl row, with every field `salad-eval gap` writes."""
    norm = correct if norm is None else norm
    return {
        "task": task,
        "item": item,
        "domain": "general",
        "condition": cond,
        "voice": voice,
        "target": target,
        "logprobs": [-2.0, -1.0],
        "n_chars": [4, 6],
        "n_tokens": [1, 2],
        "greedy": [False, correct],
        "pred": int(correct) if target else 1 - int(correct),
        "pred_norm": int(norm),
        "correct": correct,
        "correct_norm": norm,
    }


def task_records(task: str, speech: list[bool], voices=(JOE,), text=None, norm=None) -> list[dict]:
    """One task: text@base right on even items, text@speech as given (default: as text@base),
    speech@speech right as given, the same in every voice; ``norm`` overrides correct_norm."""
    rows = []
    for i, right in enumerate(speech):
        item = f"{task}/{i}"
        rows.append(record(task, item, "text@base", None, i % 2 == 0))
        rows.append(
            record(task, item, "text@speech", None, (i % 2 == 0) if text is None else text[i])
        )
        for voice in voices:
            rows.append(
                record(task, item, "speech@speech", voice, right, None if norm is None else norm[i])
            )
    return rows


def write_run(run_dir: Path, records: list[dict], metric: str = "acc", training=None) -> Path:
    """A run directory as `salad-eval gap` writes it: items.jsonl, results.json, summary.md."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "items.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    )
    manifest = {"command": "salad-eval gap --tasks demo", "training": training}
    write_report(run_dir, records, manifest, metric=metric, n_boot=20)
    return run_dir


# 20 items: a right on 0-9; b right on 1-15: right on 6 items a gets wrong (10-15), wrong on one
# item a gets right (0): b - a = (6 - 1) / 20 = +25 points
A_SPEECH = [i < 10 for i in range(20)]
B_SPEECH = [1 <= i < 16 for i in range(20)]


def binom_two_sided(k: int, n: int) -> float:
    """The exact two-sided binomial p at 1/2, computed apart from salad's code."""
    try:
        from scipy.stats import binomtest
    except ImportError:
        return min(1.0, 2 * sum(comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n)
    return binomtest(k, n, 0.5, alternative="two-sided").pvalue


def rows_of(result: dict, task: str) -> dict[str, dict]:
    return {r["condition"]: r for r in result["paired"] if r["task"] == task}


@pytest.fixture()
def pair(tmp_path) -> tuple[Path, Path]:
    a = write_run(tmp_path / "a", task_records("demo", A_SPEECH))
    b = write_run(tmp_path / "b", task_records("demo", B_SPEECH))
    return a, b


def test_known_difference_ci_and_mcnemar(pair, tmp_path):
    result = compare_runs(list(pair), tmp_path / "cmp")
    rows = rows_of(result, "demo")
    speech = rows["speech@speech"]
    assert (speech["a"], speech["b"]) == ("a", "b")
    assert speech["n_items"] == 20 and speech["n_pairs"] == 20
    assert speech["a_value"] == 0.5 and speech["b_value"] == 0.75
    assert speech["diff"]["value"] == 0.25
    assert (speech["diff"]["num"], speech["diff"]["den"]) == (5, 20)
    assert speech["diff"]["ci_low"] <= 0.25 <= speech["diff"]["ci_high"]
    assert speech["diff"]["ci_low"] < speech["diff"]["ci_high"]
    assert (speech["b_right_a_wrong"], speech["a_right_b_wrong"]) == (6, 1)
    assert speech["p_value"] == pytest.approx(binom_two_sided(1, 7), rel=1e-12)
    assert speech["p_value"] == pytest.approx(0.125, rel=1e-12)  # 2 * (1 + 7) / 2^7
    # the text conditions agree item for item: no difference, no discordant pair
    for cond in ("text@base", "text@speech"):
        assert rows[cond]["diff"]["value"] == 0 and rows[cond]["p_value"] == 1.0
        assert rows[cond]["diff"]["ci_low"] == rows[cond]["diff"]["ci_high"] == 0
    # the gap: text@base is the same, so b's gap is 25 points smaller; no McNemar for a gap
    gap = rows["gap"]
    assert gap["diff"]["value"] == -0.25 and gap["p_value"] is None
    assert gap["a_value"] == 0.0 and gap["b_value"] == -0.25
    assert gap["diff"]["ci_low"] <= -0.25 <= gap["diff"]["ci_high"]
    # one task: the overall rows repeat it
    assert {
        k: v for k, v in rows_of(result, "all tasks")["speech@speech"].items() if k != "task"
    } == {k: v for k, v in speech.items() if k != "task"}
    # the same rows in comparison.json and in comparison.md
    assert (
        json.loads((tmp_path / "cmp" / "comparison.json").read_text())["paired"] == result["paired"]
    )
    md = (tmp_path / "cmp" / "comparison.md").read_text()
    assert "## Paired comparison" in md
    assert "| a | b | demo | speech@speech | 20 | 50.0 | 75.0 | +25.0 [" in md
    assert "| 6 | 1 | 0.125 |" in md


def test_sign_flip_over_items_is_mcnemar_for_one_voice_and_ignores_duplicated_voices():
    # one voice: 6 items gained, 1 lost; the sign-flip p draws McNemar's exact distribution
    def demo_rows(voices):
        rows = paired_rows(
            "a",
            task_records("demo", A_SPEECH, voices=voices),
            "b",
            task_records("demo", B_SPEECH, voices=voices),
        )
        return {r["condition"]: r for r in rows if r["task"] == "demo"}

    one = demo_rows((JOE,))
    speech = one["speech@speech"]
    assert speech["p_value"] == pytest.approx(0.125)
    assert abs(speech["p_items"] - 0.125) < 0.02  # 10,000 flips: sd of the draw 0.0033
    assert one["text@base"]["p_items"] == 1.0  # no item differs
    assert one["gap"]["p_items"] == speech["p_items"]  # the gap moved exactly as speech@speech
    # the same answers in a second voice: McNemar now counts 12 against 2 and claims more; the
    # items are the same, so the sign-flip p is the same, draw for draw
    twice = demo_rows((JOE, HEART))
    assert (
        twice["speech@speech"]["b_right_a_wrong"],
        twice["speech@speech"]["a_right_b_wrong"],
    ) == (12, 2)
    assert twice["speech@speech"]["p_value"] == pytest.approx(binom_two_sided(2, 14))
    assert twice["speech@speech"]["p_value"] < 0.02 < speech["p_value"]
    assert twice["speech@speech"]["p_items"] == speech["p_items"]
    # a clear difference resolves to the floor of 1 / (1 + flips)
    clear = paired_rows(
        "a", task_records("demo", [False] * 40), "b", task_records("demo", [True] * 40)
    )
    assert min(r["p_items"] for r in clear) == pytest.approx(1 / 10_001)


def test_bootstrap_is_seeded(pair, tmp_path):
    def ci(seed: int, out: str) -> tuple[float, float]:
        row = rows_of(compare_runs(list(pair), tmp_path / out, seed=seed), "demo")
        return row["speech@speech"]["diff"]["ci_low"], row["speech@speech"]["diff"]["ci_high"]

    assert ci(0, "one") == ci(0, "two")
    assert any(ci(0, "one") != ci(s, f"s{s}") for s in (1, 2, 3))


def test_per_task_rows_and_overall(tmp_path):
    # a second task of 10 items: b right on 3 items a gets wrong, none the other way: +30 points
    a_arc = [i < 4 for i in range(10)]
    b_arc = [i < 7 for i in range(10)]
    a = write_run(tmp_path / "a", task_records("demo", A_SPEECH) + task_records("arc", a_arc))
    b = write_run(tmp_path / "b", task_records("demo", B_SPEECH) + task_records("arc", b_arc))
    result = compare_runs([a, b], tmp_path / "cmp")
    assert [r["task"] for r in result["paired"] if r["condition"] == "speech@speech"] == [
        "arc",
        "demo",
        "all tasks",
    ]
    arc, demo = rows_of(result, "arc")["speech@speech"], rows_of(result, "demo")["speech@speech"]
    overall = rows_of(result, "all tasks")["speech@speech"]
    assert arc["diff"]["value"] == pytest.approx(0.3) and arc["n_items"] == 10
    assert (arc["b_right_a_wrong"], arc["a_right_b_wrong"]) == (3, 0)
    assert arc["p_value"] == pytest.approx(binom_two_sided(0, 3))
    assert demo["diff"]["value"] == 0.25
    # over all tasks: each task weighs the same (as the gap report); McNemar pools the pairs
    assert overall["diff"]["value"] == pytest.approx((0.3 + 0.25) / 2)
    assert overall["n_items"] == 30
    assert (overall["b_right_a_wrong"], overall["a_right_b_wrong"]) == (9, 1)
    assert overall["p_value"] == pytest.approx(binom_two_sided(1, 10))
    assert overall["diff"]["ci_low"] <= overall["diff"]["value"] <= overall["diff"]["ci_high"]


def test_voices_in_common_only(tmp_path):
    """Speech pairs per (item, voice) on the common voices; an item scores their mean."""
    a_rows = task_records("demo", A_SPEECH, voices=(JOE, HEART))
    b_rows = task_records("demo", B_SPEECH, voices=(JOE, HEART, AMY))
    for row in b_rows:  # b is wrong everywhere in the voice a never heard: it must not count
        if row["voice"] == AMY:
            row["correct"] = row["correct_norm"] = False
    for row in a_rows:  # and a is right on item 19 in one voice only: a half there
        if row["item"] == "demo/19" and row["voice"] == HEART:
            row["correct"] = row["correct_norm"] = True
    a = write_run(tmp_path / "a", a_rows)
    b = write_run(tmp_path / "b", b_rows)
    speech = rows_of(compare_runs([a, b], tmp_path / "cmp"), "demo")["speech@speech"]
    assert speech["n_items"] == 20 and speech["n_pairs"] == 40
    assert speech["a_value"] == pytest.approx(10.5 / 20) and speech["b_value"] == 0.75
    assert speech["diff"]["value"] == pytest.approx(0.225)
    assert (speech["diff"]["num"], speech["diff"]["den"]) == (9, 40)  # exact on half-items
    assert (speech["b_right_a_wrong"], speech["a_right_b_wrong"]) == (12, 3)
    assert speech["p_value"] == pytest.approx(binom_two_sided(3, 15))


def test_headline_metric_of_the_baseline(tmp_path):
    """A run that leads with acc_norm is paired on correct_norm, not correct."""
    norm_a = [i < 4 for i in range(20)]
    a = write_run(tmp_path / "a", task_records("demo", A_SPEECH, norm=norm_a), metric="acc_norm")
    b = write_run(tmp_path / "b", task_records("demo", A_SPEECH), metric="acc_norm")
    speech = rows_of(compare_runs([a, b], tmp_path / "cmp"), "demo")["speech@speech"]
    assert speech["metric"] == "acc_norm"
    assert speech["diff"]["value"] == pytest.approx(0.3)  # 10/20 against 4/20
    assert (speech["b_right_a_wrong"], speech["a_right_b_wrong"]) == (6, 0)


def test_errors_and_omissions(pair, tmp_path):
    a, b = pair
    # one run: no paired part at all
    single = compare_runs([a], tmp_path / "one")
    assert single["paired"] == [] and single["paired_notes"] == []
    assert "Paired comparison" not in (tmp_path / "one" / "comparison.md").read_text()
    # no item in common
    other = write_run(tmp_path / "other", task_records("arc", A_SPEECH))
    apart = compare_runs([a, other], tmp_path / "none")  # side by side, without pairs
    assert apart["paired"] == [] and "share no item" in " ".join(apart["paired_notes"])
    # the same item id with another target (a different item): refused
    changed = task_records("demo", B_SPEECH)
    for row in changed:
        if row["item"] == "demo/3":
            row["target"] = 0
    moved = write_run(tmp_path / "moved", changed)
    with pytest.raises(SaladError, match="item 'demo/3' of task demo differs between runs a and"):
        compare_runs([a, moved], tmp_path / "moved-cmp")
    # a run without items.jsonl: the side-by-side table still, the paired part says why not
    (b / "items.jsonl").unlink()
    result = compare_runs([a, b], tmp_path / "noitems")
    assert result["paired"] == [] and "No `items.jsonl` in b" in result["paired_notes"][0]
    assert result["rows"]
    # a broken items.jsonl: one line that names it
    (b / "items.jsonl").write_text("{not json\n")
    with pytest.raises(SaladError, match="items.jsonl is not JSON lines"):
        load_items(b)
    with pytest.raises(SaladError, match="share no item"):
        paired_rows("x", task_records("demo", A_SPEECH), "y", task_records("arc", A_SPEECH))


def test_report_command_prints_the_paired_table(pair, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["report", str(pair[0]), str(pair[1]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "Paired comparison" in res.output
    assert "| a | b | demo | speech@speech | 20 | 50.0 | 75.0 | +25.0 [" in res.output
    saved = json.loads((out / "comparison.json").read_text())["paired"]
    assert [r["condition"] for r in saved if r["task"] == "demo"] == [
        "text@base",
        "text@speech",
        "speech@speech",
        "gap",
    ]
    res = CliRunner().invoke(app, ["report", str(pair[0]), str(tmp_path / "other")])
    assert res.exit_code != 0


def test_loop_report_pairs_stage2_against_stage1_and_random(tmp_path):
    training = {"stage": "I", "steps": 1, "speech_hours": 0.5}
    dirs = {
        "stage I": write_run(tmp_path / "s1", task_records("demo", A_SPEECH), training=training),
        "stage II": write_run(
            tmp_path / "s2", task_records("demo", B_SPEECH), training={**training, "stage": "II"}
        ),
        "stage II random": write_run(
            tmp_path / "r", task_records("demo", [True] * 20), training={**training, "stage": "II"}
        ),
    }
    out = tmp_path / "loop"
    out.mkdir()
    report = write_loop_report(dirs, out)
    speech = {
        (r["a"], r["b"]): r
        for r in report["paired"]
        if r["task"] == "demo" and r["condition"] == "speech@speech"
    }
    assert set(speech) == {("stage I", "stage II"), ("stage II random", "stage II")}
    assert speech["stage I", "stage II"]["diff"]["value"] == 0.25
    assert speech["stage I", "stage II"]["p_value"] == pytest.approx(0.125)
    assert speech["stage II random", "stage II"]["diff"]["value"] == -0.25  # 15/20 vs 20/20
    assert speech["stage II random", "stage II"]["a_right_b_wrong"] == 5
    assert json.loads((out / "report.json").read_text())["paired"] == report["paired"]
    md = (out / "report.md").read_text()
    assert "## Paired comparison" in md and "| stage I | stage II | demo | speech@speech |" in md
    assert "these trained instances, not about the procedure" in md
    assert report["paired_divergences"] == []  # no answer KL nor corpus documents here
