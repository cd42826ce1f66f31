"""The gap's arithmetic and statistics on constructed records (no model involved)."""

from __future__ import annotations

import json
import random
from fractions import Fraction
from pathlib import Path

import pytest
from scipy.stats import binomtest

from salad_eval.errors import SaladError
from salad_eval.gap import analyse
from salad_eval.gap.records import CORE
from salad_eval.stats import mcnemar_exact

SPEECH = ("speech@speech", "speech@cascade", "speech@speech:silent", "speech@speech:shuffled")


def record(task, item, cond, voice, correct, domain="d", norm=None, **extra) -> dict:
    """One items.jsonl row in the runner's schema."""
    return {
        "task": task,
        "item": item,
        "domain": domain,
        "condition": cond,
        "voice": voice,
        "target": 0,
        "logprobs": [-1.0, -2.0],
        "n_chars": [4, 5],
        "n_tokens": [1, 2],
        "greedy": [bool(correct), False],
        "pred": 0 if correct else 1,
        "pred_norm": 0 if (correct if norm is None else norm) else 1,
        "correct": bool(correct),
        "correct_norm": bool(correct if norm is None else norm),
        **extra,
    }


def random_records(rng: random.Random, drop: float = 0.0) -> list[dict]:
    """A random run: 1-3 tasks, uneven items, 1-3 voices, random accuracies, rows dropped."""
    voices = [f"engine/v{k}" for k in range(rng.randint(1, 3))]
    p = {c: rng.random() for c in ("text@base", "text@speech", *SPEECH)}
    recs = []
    for t in range(rng.randint(1, 3)):
        for i in range(rng.randint(1, 25)):
            domain = rng.choice(["x", "y", "z"])
            for cond, pc in p.items():
                for voice in [None] if cond.startswith("text@") else voices:
                    if rng.random() >= drop:
                        recs.append(
                            record(
                                f"t{t}",
                                f"i{i}",
                                cond,
                                voice,
                                rng.random() < pc,
                                domain,
                                norm=rng.random() < pc,
                                kl=rng.random(),
                            )
                        )
    return recs


def naive_acc(records: list[dict], cond: str, field: str = "correct") -> Fraction:
    """Mean over tasks of the mean over core items of the fraction of voices correct."""
    rows: dict = {}
    for r in records:
        rows.setdefault((r["task"], r["item"]), {}).setdefault(r["condition"], []).append(r[field])
    per_task: dict = {}
    for (task, _), conds in rows.items():
        if all(c in conds for c in CORE) and cond in conds:
            per_task.setdefault(task, []).append(Fraction(sum(conds[cond]), len(conds[cond])))
    return sum(Fraction(sum(v), len(v)) for v in per_task.values()) / len(per_task)


def exact(fig: dict) -> Fraction:
    return Fraction(fig["num"], fig["den"])


def all_tables(results: dict):
    for metric in results["metrics"].values():
        yield metric["overall"]
        for key in ("tasks", "domains", "voices"):
            yield from metric[key].values()


@pytest.mark.parametrize("seed", range(40))
def test_identity_holds_exactly_on_random_record_sets(seed):
    rng = random.Random(seed)
    records = random_records(rng, drop=rng.choice([0.0, 0.1, 0.3]))
    has_core = {(r["task"], r["item"], r["condition"]) for r in records}
    if not any(all((t, i, c) in has_core for c in CORE) for t, i, _ in has_core):
        with pytest.raises(SaladError):
            analyse(records, {}, n_boot=5)
        return
    results = analyse(records, {}, n_boot=20, seed=seed)
    for table in all_tables(results):
        gap, f, m = table["gap"], table["forgetting"], table["misalignment"]
        assert gap["den"] == f["den"] == m["den"]
        assert gap["num"] == f["num"] + m["num"]
        assert gap["value"] == f["value"] + m["value"]  # float equality, not approximate
        for fig in (gap, f, m, *table["accuracy"].values()):
            assert fig["value"] == pytest.approx(fig["num"] / fig["den"], abs=1e-12)
        acc = table["accuracy"]
        assert exact(f) == exact(acc["text@base"]) - exact(acc["text@speech"])
        assert exact(m) == exact(acc["text@speech"]) - exact(acc["speech@speech"])
    overall = results["metrics"]["acc"]["overall"]
    for cond in ("text@base", "text@speech", "speech@speech"):
        assert exact(overall["accuracy"][cond]) == naive_acc(records, cond)
    norm = results["metrics"]["acc_norm"]["overall"]["accuracy"]["speech@speech"]
    assert exact(norm) == naive_acc(records, "speech@speech", "correct_norm")


def test_results_do_not_depend_on_record_order():
    """A resumed or sharded run writes its records in another order: same results."""
    records = random_records(random.Random(3))
    shuffled = records[:]
    random.Random(4).shuffle(shuffled)
    assert analyse(shuffled, {}, n_boot=50) == analyse(records, {}, n_boot=50)


def test_per_voice_decomposition():
    rng = random.Random(7)
    voices = ["a/one", "b/two", "c/three"]
    recs = [
        record("t", f"i{i}", cond, v, rng.random() < 0.6)
        for i in range(40)
        for cond in ("text@base", "text@speech", "speech@speech")
        for v in ([None] if cond.startswith("text@") else voices)
    ]
    results = analyse(recs, {}, n_boot=50)["metrics"]["acc"]
    tables = results["voices"]
    assert sorted(tables) == sorted(voices)
    for t in tables.values():
        assert t["gap"]["num"] == t["forgetting"]["num"] + t["misalignment"]["num"]
        assert t["gap"]["value"] == t["forgetting"]["value"] + t["misalignment"]["value"]
        text, overall_text = t["accuracy"]["text@base"], results["overall"]["accuracy"]["text@base"]
        assert exact(text) == exact(overall_text)
        assert (text["value"], text["ci_low"], text["ci_high"]) == (
            overall_text["value"],
            overall_text["ci_low"],
            overall_text["ci_high"],
        )
    speech = [exact(t["accuracy"]["speech@speech"]) for t in tables.values()]
    assert exact(results["overall"]["accuracy"]["speech@speech"]) == sum(speech) / 3


def binary_run(n: int, rates: dict[str, float], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [
        record("t", f"i{i}", cond, None if cond.startswith("text@") else "v/x", rng.random() < p)
        for i in range(n)
        for cond, p in rates.items()
    ]


RATES = {"text@base": 0.7, "text@speech": 0.6, "speech@speech": 0.5}


def test_bootstrap_interval_contains_point_and_shrinks_with_n():
    widths = {}
    for n in (40, 640):
        table = analyse(binary_run(n, RATES), {}, n_boot=300)["metrics"]["acc"]["overall"]
        parts = [table["gap"], table["forgetting"], table["misalignment"]]
        for fig in [*parts, *table["accuracy"].values()]:
            assert fig["ci_low"] <= fig["value"] <= fig["ci_high"]
            assert fig["n"] == n
        widths[n] = table["gap"]["ci_high"] - table["gap"]["ci_low"]
    assert 0 < widths[640] < 0.5 * widths[40]


def test_paired_bootstrap_resamples_the_same_items_for_every_condition():
    recs = binary_run(60, RATES)
    base = {r["item"]: r["correct"] for r in recs if r["condition"] == "text@base"}
    for r in recs:  # text@speech answers exactly as text@base, item by item
        if r["condition"] == "text@speech":
            r["correct"] = r["correct_norm"] = base[r["item"]]
    table = analyse(recs, {}, n_boot=200)["metrics"]["acc"]["overall"]
    forgetting = table["forgetting"]
    assert (forgetting["value"], forgetting["ci_low"], forgetting["ci_high"]) == (0, 0, 0)
    acc = table["accuracy"]["text@base"]
    assert acc["ci_high"] - acc["ci_low"] > 0.1  # the accuracies themselves do vary
    assert table["gap"]["ci_low"] == pytest.approx(table["misalignment"]["ci_low"])


@pytest.mark.parametrize("b01,b10", [(0, 0), (0, 5), (3, 9), (10, 10), (1, 30), (45, 70)])
def test_mcnemar_matches_a_binomial_test(b01, b10):
    expected = 1.0 if b01 + b10 == 0 else binomtest(b01, b01 + b10, 0.5).pvalue
    assert mcnemar_exact(b01, b10) == pytest.approx(expected, rel=1e-9)


def test_controls_flag_a_model_that_ignores_its_audio():
    deaf = binary_run(80, {**RATES, "speech@speech": 0.5})
    outcome = {r["item"]: r["correct"] for r in deaf if r["condition"] == "speech@speech"}
    for control in ("speech@speech:silent", "speech@speech:shuffled"):
        deaf += [record("t", i, control, "v/x", c) for i, c in outcome.items()]
    verdict = analyse(deaf, {}, n_boot=200)["controls"]
    assert verdict["ignores_audio"] is True
    assert "no evidence that the model's answers depend on its audio" in verdict["sentence"]

    listening = binary_run(
        80,
        {
            **RATES,
            "speech@speech": 0.9,
            "speech@speech:silent": 0.25,
            "speech@speech:shuffled": 0.25,
        },
    )
    verdict = analyse(listening, {}, n_boot=200)["controls"]
    assert verdict["ignores_audio"] is False
    assert all(c["significant"] for c in verdict["checks"])
    assert verdict["sentence"].startswith("The model listens to its audio")


def test_without_controls_the_verdict_says_it_was_not_checked():
    verdict = analyse(binary_run(10, RATES), {}, n_boot=10)["controls"]
    assert verdict["checked"] is False and verdict["ignores_audio"] is None


HAND_WRITTEN = Path(__file__).parent / "data" / "gap_items.jsonl"  # a by-hand items.jsonl


def test_hand_written_records():
    records = [json.loads(line) for line in HAND_WRITTEN.read_text().splitlines()]
    results = analyse(records, {"command": "by hand"}, n_boot=100)
    t = results["metrics"]["acc"]["overall"]
    # text@base 3/4, text@speech 2/4, speech@speech 2/4 (q3, q4), cascade 3/4
    assert [t["accuracy"][c]["num"] for c in ("text@base", "text@speech", "speech@speech")] == [
        3,
        2,
        2,
    ]
    assert (t["gap"]["num"], t["forgetting"]["num"], t["misalignment"]["num"], t["gap"]["den"]) == (
        1,
        1,
        0,
        4,
    )
    assert t["gap"]["value"] == 0.25 and t["cascade_gap"]["value"] == 0.0
    assert t["divergence"]["answer_F"]["value"] == pytest.approx((0.2 + 0.6 + 0.1 + 0.0) / 4)
    assert t["divergence"]["answer_M"]["value"] == pytest.approx((1.0 + 0.5 + 0.3 + 0.2) / 4)
    assert t["divergence"]["wer"]["value"] == pytest.approx(0.2)
    domains = results["metrics"]["acc"]["domains"]
    assert domains["geo"]["misalignment"]["value"] == 0.5  # q1 lost in speech
    assert domains["math"]["misalignment"]["value"] == -0.5  # q4 only right in speech
    test = next(
        x
        for x in results["metrics"]["acc"]["mcnemar"]
        if (x["scope"], x["a"], x["b"]) == ("all", "text@base", "speech@speech")
    )
    assert (test["n"], test["b10"], test["b01"], test["voice"]) == (4, 2, 1, "kokoro/af_heart")
    assert test["p_value"] == pytest.approx(binomtest(1, 3, 0.5).pvalue)


@pytest.mark.parametrize(
    "records",
    [
        [],
        [record("t", "i", "speech@speech:loud", "v/x", True)],
        [record("t", "i", "text@base", "v/x", True)],
        [record("t", "i", "text@base", None, True)] * 2,
        [record("t", "i", "text@base", None, True), record("t", "i", "text@speech", None, True)],
    ],
    ids=["empty", "unknown-condition", "text-with-voice", "duplicate", "no-speech"],
)
def test_bad_records_give_one_line_errors(records):
    with pytest.raises(SaladError) as err:
        analyse(records, {}, n_boot=10)
    assert "\n" not in str(err.value)
