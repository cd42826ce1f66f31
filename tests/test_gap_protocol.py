"""The paper's protocol options of a gap run: the headline metric, the few-shot token budget and
an exclusion list (decontamination), with a test double for the models (real synthesis)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from homes import scoreless_home

from salad_eval.errors import SaladError
from salad_eval.prompt import ChoiceScore
from salad_eval.run.runner import Models, read_exclusions, run_gap
from salad_eval.run.spec import RunSpec
from salad_eval.tasks import load_items

pytestmark = pytest.mark.integration


class _Words:
    """The part of a tokenizer that --shot-budget reads: here a token is a word."""

    @staticmethod
    def encode(text: str, add_special_tokens: bool = False) -> list[str]:
        return text.split()


class OracleLM:
    """Test double of every model: the right choice has log-prob -1, the others -1.1, so acc
    is 1 while acc_norm (per character) prefers a longer wrong choice: on the demo's first four
    items minus the second, acc 3/3 and acc_norm 1/3 (Berlin beats Paris, three beats two)."""

    fingerprint = "test-double-oracle"
    dtype = "float32"
    tokenizer = _Words()

    def __init__(self, items):
        self.targets = {item.choices: item.target for item in items}

    def score(self, requests, batch_size=8):
        return [
            [
                ChoiceScore(-1.0 if i == self.targets[r.choices] else -1.1, 1, len(c), False)
                for i, c in enumerate(r.choices)
            ]
            for r in requests
        ]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("protocol")
    scoreless_home(root / "home")
    items = load_items("demo", limit=4)
    exclude = root / "exclude.json"
    exclude.write_text(json.dumps({"exclude": {"demo": [items[1].id], "arc_easy": ["x"]}}))
    model = OracleLM(items)
    setup = RunSpec(
        tasks=["demo"],
        voices="piper/joe",
        limit=4,
        shots=5,
        shot_budget=40,
        metric="acc_norm",
        exclude_items=str(exclude),
        n_boot=50,
        divergences=False,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALAD_HOME", str(root / "home"))
        results = run_gap(setup, Models(speech=model, text=model), root / "run")
    return root / "run", results


def test_the_headline_metric_leads_and_both_are_kept(run):
    run_dir, results = run
    assert results["metric"] == "acc_norm" and set(results["metrics"]) == {"acc", "acc_norm"}
    acc, norm = (
        results["metrics"][m]["overall"]["accuracy"]["text@base"]["value"]
        for m in ("acc", "acc_norm")
    )
    assert (acc, norm) == (1.0, pytest.approx(1 / 3))
    assert results["controls"] == results["metrics"]["acc_norm"]["controls"]
    assert results["manifest"]["setup"]["metric"] == "acc_norm"
    summary = (run_dir / "summary.md").read_text()
    assert f"{100 * norm:.1f} [" in summary.split("## Conditions")[1].splitlines()[4]
    assert "(metric `acc_norm`)" in summary and "## The same decomposition with `acc`" in summary
    lm_eval = json.loads(next(run_dir.glob("results_*.json")).read_text())
    gap = results["metrics"]["acc_norm"]["tasks"]["demo"]["gap"]["value"]
    assert lm_eval["results"]["demo"]["gap,none"] == gap
    assert lm_eval["config"]["metric"] == "acc_norm"


def test_shot_budget_and_the_shots_each_item_kept_are_recorded(run):
    manifest = run[1]["manifest"]
    assert manifest["setup"]["shots"] == 5 and manifest["setup"]["shot_budget"] == 40
    # the demo's first 4 items keep 2, 2, 2, 3 shots in 40 words (test_tasks); the 2nd is excluded
    assert manifest["tasks"]["demo"]["shots"] == {"mean": 2.333, "min": 2, "max": 3}


def test_listed_items_are_dropped_and_recorded(run):
    run_dir, results = run
    dropped = load_items("demo", limit=4)[1].id
    assert results["n_items"] == 3
    assert results["manifest"]["setup"]["exclude_items"].endswith("exclude.json")
    assert [
        (e["item"], e["reason"].split(" ")[:2]) for e in results["manifest"]["excluded_items"]
    ] == [(dropped, ["listed", "in"])]
    items = {json.loads(line)["item"] for line in (run_dir / "items.jsonl").open()}
    assert dropped not in items and len(items) == 3


def test_a_malformed_exclusion_list_is_one_error(tmp_path):
    for content in ("[1, 2]", '{"exclude": {"demo": "x"}}', "not json"):
        (tmp_path / "bad.json").write_text(content)
        with pytest.raises(SaladError, match="--exclude-items"):
            read_exclusions(str(tmp_path / "bad.json"))
    with pytest.raises(SaladError, match="--exclude-items"):
        read_exclusions(str(tmp_path / "missing.json"))
