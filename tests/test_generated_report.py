"""Generated answers through the analysis: records from replies, acc_gen, no answers, agreement.

Records are built by the runner's own function from replies written here, so what the report
makes of them is checked without a model (the models' replies: tests/test_generation.py).
"""

from __future__ import annotations

import random

import pytest

from salad_eval.errors import SaladError
from salad_eval.gap.records import ALL_CONDITIONS as CONDITIONS
from salad_eval.gap.report import analyse
from salad_eval.prompt import Decoding, Item, Reply, Text
from salad_eval.run.runner import _generated

MANIFEST = {"setup": {}, "tasks": {}}


def _items(n: int = 20) -> list[Item]:
    return [
        Item(
            task="demo",
            id=f"q{i}",
            domain="d",
            context=(Text(f"Question {i}?"),),
            choices=("A", "B", "C", "D"),
            target=i % 4,
            options=("red", "green", "blue", "pink"),
        )
        for i in range(n)
    ]


def _records(reply_of, samples: int = 1, both: bool = False) -> list[dict]:
    """One record per item and condition, its replies from ``reply_of(item, condition, s)``."""
    records = []
    decoding = Decoding(samples=samples, temperature=0.5 if samples > 1 else 0.0)
    for condition in CONDITIONS:
        for item in _items():
            replies = [Reply(reply_of(item, condition, s), 3, False) for s in range(samples)]
            row = {
                "task": item.task,
                "item": item.id,
                "domain": item.domain,
                "condition": condition,
                "voice": None if condition.startswith("text") else "v",
                "target": item.target,
                **_generated(item, replies, decoding),
            }
            if both:  # the log-likelihood argmax: always A
                row |= {"correct": item.target == 0, "correct_norm": False, "pred": 0}
                row["agrees"] = sum(letter == "A" for letter in row["letters"])
            records.append(row)
    return records


def test_a_model_replying_gibberish_answers_nothing_and_scores_zero() -> None:
    """Never about 1/K: a reply with no letter is wrong, and counted as no answer."""
    rng = random.Random(0)
    words = ["blorp", "quix", "zanth", "mople", "trell", "vusk", "ee", "oo"]
    records = _records(lambda item, c, s: " ".join(rng.choice(words) for _ in range(6)))
    results = analyse(records, MANIFEST, metric="acc_gen", n_boot=50)
    overall = results["metrics"]["acc_gen"]["overall"]
    for condition in CONDITIONS:
        assert overall["accuracy"][condition]["value"] == 0.0
        assert overall["no_answer"][condition]["value"] == 1.0
        assert overall["no_answer"][condition]["den"] == 20
    assert overall["gap"]["num"] == 0


def test_sampled_accuracy_is_the_mean_over_samples_with_an_exact_identity() -> None:
    """3 samples per item: the speech condition is right on 1 of 3, text on all 3."""

    def reply(item, condition, s):
        right = "ABCD"[item.target]
        if condition.startswith("text") or s == 0:
            return f"The answer is {right}."
        return "I am not sure." if s == 1 else f"Answer: {'ABCD'[(item.target + 1) % 4]}"

    results = analyse(_records(reply, samples=3), MANIFEST, metric="acc_gen", n_boot=50)
    overall = results["metrics"]["acc_gen"]["overall"]
    assert overall["accuracy"]["text@base"]["value"] == 1.0
    assert (
        overall["accuracy"]["speech@speech"]["num"] * 3
        == overall["accuracy"]["speech@speech"]["den"]
    )
    assert (
        overall["no_answer"]["speech@speech"]["num"] * 3
        == overall["no_answer"]["speech@speech"]["den"]
    )
    gap, forgetting, misalignment = (overall[k] for k in ("gap", "forgetting", "misalignment"))
    assert gap["num"] == forgetting["num"] + misalignment["num"]
    assert gap["value"] == pytest.approx(2 / 3)


def test_both_answers_report_agreement_and_where_they_differ() -> None:
    def reply(item, condition, s):
        return "A" if item.target == 0 else ("B or C" if item.target == 1 else "C")

    results = analyse(_records(reply, both=True), MANIFEST, metric="acc", n_boot=50)
    assert set(results["metrics"]) == {"acc", "acc_norm", "acc_gen"}
    agreement = results["metrics"]["acc_gen"]["overall"]["agreement"]["text@base"]
    assert agreement["num"] * 4 == agreement["den"]  # targets 0 of 0..3: a quarter agree
    differ = results["generation"]["disagreements"]["text@base"]
    assert differ == {"replies": 20, "no_answer": 5, "other_letter": 10}


def test_a_headline_metric_the_records_lack_is_refused() -> None:
    records = _records(lambda item, c, s: "A")
    with pytest.raises(SaladError, match="acc is not in these records"):
        analyse(records, MANIFEST, metric="acc", n_boot=10)


def test_runs_answered_by_generation_compare_paired() -> None:
    """`salad-eval report` pairs generated runs on acc_gen; a run without the baseline's
    headline metric is left out with a note, not a crash."""
    from salad_eval.gap.paired import paired_comparison

    right = _records(lambda item, c, s: "ABCD"[item.target])
    always_a = _records(lambda item, c, s: "A")
    scored = [{**r, "correct": True, "correct_norm": True, "logprobs": [0.0] * 4} for r in right]
    runs = {
        name: (analyse(records, MANIFEST, metric, n_boot=20), records)
        for name, records, metric in (
            ("right", right, "acc_gen"),
            ("always_a", always_a, "acc_gen"),
            ("scored", scored, "acc"),
        )
    }
    rows, notes = paired_comparison(runs, [("right", "always_a"), ("scored", "right")], 50, 0)
    assert {row["metric"] for row in rows} == {"acc_gen"}
    base = next(r for r in rows if r["task"] == "all tasks" and r["condition"] == "text@base")
    assert (base["a_value"], base["b_value"]) == (1.0, 0.25)
    assert base["a_right_b_wrong"] == 15 and base["b_right_a_wrong"] == 0
    assert notes == ["right has no acc (scored's headline): no paired comparison of them."]
