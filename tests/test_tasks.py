"""Spoken tasks: parity with lm-eval's own rendering, few-shot construction, limits, errors."""

from __future__ import annotations

import dataclasses
import json
import re
from collections import Counter

import pytest
from lm_eval_local import lm_eval_task

from salad_eval.errors import SaladError
from salad_eval.prompt import Speak, Text
from salad_eval.tasks import TASKS_DIR, count_items, get_task, list_tasks, load_items

PARITY = {  # salad task -> (lm-eval task, items compared)
    "arc_easy": ("arc_easy", 40),
    "arc_challenge": ("arc_challenge", 40),
    "hellaswag": ("hellaswag", 40),
    "mmlu_abstract_algebra": ("mmlu_abstract_algebra", 20),
    "mmlu_anatomy": ("mmlu_anatomy", 20),
    "mmlu_high_school_us_history": ("mmlu_high_school_us_history", 10),
    "demo": ("salad_demo", None),
}


def _lm_eval_rendering(task, doc, shots: int = 0) -> tuple[str, tuple[str, ...], int]:
    """What lm-eval scores for one document: the context, each continuation, the target."""
    ctx = task.fewshot_context(doc, shots)
    requests = task.construct_requests(doc=doc, ctx=ctx, metadata=(task.config.task, 0, 1))
    assert {req.arguments[0] for req in requests} == {ctx}
    return ctx, tuple(req.arguments[1] for req in requests), task.doc_to_target(doc)


@pytest.mark.slow
@pytest.mark.parametrize("name", PARITY)
def test_prompts_choices_targets_equal_lm_eval(name, benchmarks_dir):
    lm_name, limit = PARITY[name]
    items = load_items(name, limit=limit, data_dir=str(benchmarks_dir))
    task = lm_eval_task(lm_name, benchmarks_dir)
    docs = list(task.eval_docs)[: limit or None]
    assert len(items) == len(docs)
    for item, doc in zip(items, docs, strict=True):
        assert (item.text_context, item.choices, item.target) == _lm_eval_rendering(task, doc)


def test_mmlu_few_shot_equals_lm_eval(benchmarks_dir):
    """MMLU's canonical shots (the first N of dev) render exactly as lm-eval's."""
    items = load_items("mmlu_anatomy", limit=3, shots=5, data_dir=str(benchmarks_dir))
    task = lm_eval_task("mmlu_anatomy", benchmarks_dir)
    for item, doc in zip(items, list(task.eval_docs), strict=False):
        assert item.text_context == task.fewshot_context(doc, 5)
    speak = [part for part in items[0].context if isinstance(part, Speak)]
    assert len(speak) == 6  # five solved examples and the question, all read aloud


def test_few_shot_examples_are_spoken_answers_stay_text(benchmarks_dir):
    item = load_items("arc_easy", limit=1, shots=3, data_dir=str(benchmarks_dir))[0]
    lines = (benchmarks_dir / "allenai/ai2_arc/ARC-Easy/train.jsonl").read_text().splitlines()
    train = [json.loads(line) for line in lines]
    answers = {
        row["question"]: row["choices"]["text"][row["choices"]["label"].index(row["answerKey"])]
        for row in train
    }
    parts = item.context
    assert [type(part) for part in parts] == [Text, Speak] * 4 + [Text]
    for speak, after in zip(parts[1:-2:2], parts[2:-1:2], strict=True):
        assert speak.text in answers  # each example question is spoken ...
        assert after.text == f"\nAnswer: {answers[speak.text]}\n\nQuestion: "  # ... its answer not
    alone = load_items("arc_easy", limit=1, data_dir=str(benchmarks_dir))[0]
    assert parts[-2] == alone.context[1]
    assert parts[-1] == Text("\nAnswer:")


def test_few_shot_sampling_is_seeded_per_item(benchmarks_dir):
    def contexts(limit, seed):
        data_dir = str(benchmarks_dir)
        items = load_items("arc_easy", limit=limit, shots=2, seed=seed, data_dir=data_dir)
        return [item.context for item in items]

    assert contexts(3, 1234) == contexts(3, 1234)
    assert contexts(5, 1234)[:3] == contexts(3, 1234)  # an item's shots do not depend on --limit
    assert contexts(3, 1234) != contexts(3, 7)
    first = contexts(3, 1234)
    assert first[0][:-2] != first[1][:-2]  # each item draws its own examples


def test_demo_few_shot_never_shows_the_item_itself():
    items = load_items("demo", shots=4)
    for item in items:
        spoken = item.spoken_texts
        assert len(spoken) == 5 and spoken[-1] not in spoken[:-1]


def test_shot_budget_keeps_as_many_drawn_shots_as_fit():
    """--shot-budget: of the 5 examples an item draws, the first k that let its context fit the
    budget. The length here counts words (no tokenizer); `gap` counts the text LLM's tokens."""

    def words(text: str) -> int:
        return len(text.split())

    full = load_items("demo", limit=6, shots=5)
    fitted = load_items("demo", limit=6, shots=5, shot_budget=40, length=words)
    assert [item.shots for item in fitted] == [2, 2, 2, 3, 2, 2]
    for i, (whole, item) in enumerate(zip(full, fitted, strict=True)):
        k = item.shots
        assert item.spoken_texts == (*whole.spoken_texts[:k], whole.spoken_texts[-1])
        assert words(item.text_context) <= 40  # demo's parts meet at spaces: words add up
        longer = load_items("demo", limit=6, shots=k + 1)[i]  # lm-eval's order: a prefix
        assert longer.spoken_texts[:k] == item.spoken_texts[:k]
        assert words(longer.text_context) > 40
    assert {i.shots for i in load_items("demo", limit=6, shots=5, shot_budget=1, length=words)} == {
        0
    }
    assert load_items("demo", limit=6, shots=5, shot_budget=10**6, length=words) == full
    with pytest.raises(SaladError, match="--shots"):
        load_items("demo", limit=6, shot_budget=40, length=words)


def test_limit_takes_first_n_of_each_mmlu_subject(benchmarks_dir):
    spec = get_task("mmlu")
    items = load_items("mmlu", limit=2, data_dir=str(benchmarks_dir))
    assert len(spec.domains) == 57 and len(items) == 2 * 57
    assert [item.domain for item in items[::2]] == list(spec.domains)
    anatomy = load_items("mmlu_anatomy", limit=2, data_dir=str(benchmarks_dir))
    assert [i for i in items if i.domain == "anatomy"] == [
        dataclasses.replace(i, task="mmlu") for i in anatomy
    ]
    assert len({item.id for item in items}) == len(items)


def test_every_task_resolves_with_version_and_fingerprint():
    names = list_tasks()
    assert {
        "mmlu",
        "arc_easy",
        "arc_challenge",
        "hellaswag",
        "openbookqa",
        "piqa",
        "storycloze",
        "demo",
    } <= set(names)
    assert sum(name.startswith("mmlu_") for name in names) == 57
    specs = [get_task(name) for name in names]
    assert all(isinstance(spec.version, int) and spec.version >= 1 for spec in specs)
    assert len({spec.fingerprint for spec in specs}) == len(specs)
    assert get_task("arc_challenge").prompt == get_task("arc_easy").prompt  # via include


def test_unknown_task_names_closest_matches():
    with pytest.raises(SaladError, match="arc_easy"):
        get_task("arc_esay")


def test_missing_mirror_file_says_how_to_fix(tmp_path):
    with pytest.raises(SaladError, match="SALAD_BENCHMARKS.*hub") as err:
        load_items("arc_easy", limit=1, data_dir=str(tmp_path))
    assert "\n" not in str(err.value)
    with pytest.raises(SaladError, match="rocstories"):
        load_items("storycloze", data_dir=str(tmp_path))


def test_unreachable_hub_says_how_to_use_a_local_copy(monkeypatch):
    monkeypatch.delenv("SALAD_BENCHMARKS", raising=False)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(SaladError, match="--data-dir"):
        load_items("piqa", limit=1)


def test_empty_item_set_is_an_error():
    with pytest.raises(SaladError, match="no items"):
        load_items("demo", limit=0)


def test_demo_items_are_many_varied_and_balanced():
    items = load_items("demo")
    spec = get_task("demo")
    domains = Counter(item.domain for item in items)
    assert len(items) >= 320 and len(domains) >= 8 and set(domains) == set(spec.domains)
    assert min(domains.values()) >= 30
    assert all(len(item.choices) == 4 for item in items)
    positions = Counter(item.target for item in items)
    assert max(positions.values()) - min(positions.values()) <= 1
    questions = [item.spoken_texts[0] for item in items]
    assert len(set(questions)) == len(questions) and len({i.id for i in items}) == len(items)
    assert not any(re.search(r"[0-9%$&=+<>_/\\]", q) for q in questions)  # speakable as written
    assert "salad project wrote" in (TASKS_DIR / "demo" / "README.md").read_text()


def test_tasks_command_lists_versions_and_local_counts(benchmarks_dir):
    from typer.testing import CliRunner

    from salad_eval.cli import app

    assert count_items("demo") == 330
    assert count_items("openbookqa", data_dir=str(benchmarks_dir)) is None  # not mirrored
    args = ["tasks", "--data-dir", str(benchmarks_dir)]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0
    rows = {line.split("│")[1].strip(): line for line in result.output.splitlines() if "│" in line}
    assert "14042" in rows["mmlu"] and "330" in rows["demo"] and "2376" in rows["arc_easy"]


@pytest.mark.slow
def test_training_split_documents_are_solved_items_never_the_evaluation_split(benchmarks_dir):
    from salad_train.recipe.data import task_documents

    docs = task_documents(["arc_easy:train"], data_dir=str(benchmarks_dir))
    train = load_items("arc_easy", split="train", data_dir=str(benchmarks_dir))
    assert len(docs) == len(train) == 2251
    first = train[0]
    prompt = "".join(part.text for part in first.context)
    assert docs[0] == " ".join((prompt + first.choices[first.target]).split())
    assert docs[0].startswith("Question: ") and " Answer: " in docs[0]
    with pytest.raises(SaladError, match="evaluation split"):
        task_documents(["arc_easy:test"], data_dir=str(benchmarks_dir))
    with pytest.raises(SaladError, match="evaluation split"):
        task_documents(["arc_easy"], data_dir=str(benchmarks_dir))
