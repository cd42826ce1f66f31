"""``salad-train decontam``: evaluation items whose words a training config's texts contain.

An item is *flagged* when one of its word n-grams (default 8 words) also occurs in a training
text. Words are lowercased runs of letters and digits (punctuation and spacing are dropped), so
``"What is the capital city of France?"`` and ``what is the capital-city of france`` agree.
n = 13 is the convention of GPT-3 and lm-eval's decontamination for long documents; GPT-3 took
n down to 8 for benchmarks of short items, and spoken questions are short (the demo task's are 3
to 17 words), so 8 is the default. An item shorter than n words cannot be flagged; the report
counts those.

The training texts are what a config trains on: Stage I's synthetic documents (``data.corpus``
lines and ``data.tasks`` solved items, the seeded sample of ``data.max_documents`` that Stage I
speaks and replays), ``data.replay`` when set, and the whole Stage II pool ``select.pool``
(any of it can be selected). Natural speech transcripts are not read. An item's side is its
spoken text (the question, without the prompt's template words such as ``Question:``, which
every ARC-style document shares) and each choice, each on its own: an n-gram never spans two.

The report (JSON) lists each flagged item with the first n-gram found and its source, and
``exclude``: the flagged ids per task, the file ``salad-eval gap --exclude-items`` reads.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from salad_eval.home import atomic_write_text
from salad_eval.prompt import Item
from salad_eval.tasks import load_items
from salad_train.config import Config
from salad_train.recipe.data import read_corpus, synthetic_texts
from salad_train.selection.pool import read_source

N = 8
_WORD = re.compile(r"[^\W_]+")


def words(text: str) -> list[str]:
    """Lowercased words without punctuation: the units of the n-grams."""
    return _WORD.findall(text.lower())


def ngrams(text: str, n: int = N) -> list[str]:
    """Every run of ``n`` consecutive words of ``text``, joined by single spaces."""
    found = words(text)
    return [" ".join(found[i : i + n]) for i in range(len(found) - n + 1)]


def index(texts: dict[str, Iterable[str]], n: int = N) -> dict[int, str]:
    """Hash of every training n-gram -> the source it was first seen in (64-bit hashes: a false
    match is about one in 10^19 per n-gram)."""
    seen: dict[int, str] = {}
    for source, documents in texts.items():
        for document in documents:
            for gram in ngrams(document, n):
                seen.setdefault(hash(gram), source)
    return seen


def segments(item: Item) -> list[str]:
    """What of an item is checked: its spoken text and each choice, separately."""
    return [*item.spoken_texts, *(choice.strip() for choice in item.choices)]


def overlap(seen: dict[int, str], item: Item, n: int = N) -> dict | None:
    """The first n-gram of ``item`` seen in training, with its source; None if there is none."""
    for segment in segments(item):
        for gram in ngrams(segment, n):
            if hash(gram) in seen:
                return {"id": item.id, "ngram": gram, "source": seen[hash(gram)]}
    return None


def check_items(seen: dict[int, str], items: Sequence[Item], n: int = N) -> dict:
    """One task's counts: items, those too short to hold an n-gram, and the flagged ones."""
    flagged = [found for item in items if (found := overlap(seen, item, n))]
    short = sum(1 for item in items if not any(ngrams(s, n) for s in segments(item)))
    return {
        "items": len(items),
        "too_short": short,
        "flagged": len(flagged),
        "flagged_items": flagged,
    }


def training_texts(config: Config) -> dict[str, list[str]]:
    """The config's training texts by source (see the module docstring)."""
    data = config.data
    corpus = set(read_corpus(data.corpus)) if data.corpus else set()
    sample = synthetic_texts(data, config.train.seed) if data.corpus or data.tasks else []
    texts = {
        "data.corpus": [t for t in sample if t in corpus],
        "data.tasks": [t for t in sample if t not in corpus],
    }
    if data.replay:
        texts["data.replay"] = read_corpus(data.replay)
    texts["select.pool"] = [
        text
        for source in config.select.pool
        for text in read_source(source, config.select.pool_column, config.select.pool_split)
    ]
    return texts


def decontaminate(
    config: Config,
    tasks: Sequence[str],
    limit: int | None = None,
    n: int = N,
    data_dir: str | None = None,
) -> dict:
    """The report: per task, the items of its evaluation split checked against the training
    texts (``limit``: the first N of each, as a gap run's ``--limit``)."""
    items = {task: load_items(task, limit, data_dir=data_dir) for task in tasks}  # fails early
    texts = training_texts(config)
    seen = index(texts, n)
    report = {task: check_items(seen, found, n) for task, found in items.items()}
    return {
        "n": n,
        "sources": {source: len(docs) for source, docs in texts.items()},
        "tasks": report,
        "exclude": {task: [f["id"] for f in r["flagged_items"]] for task, r in report.items()},
    }


def write_report(report: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=1) + "\n")


def report_lines(report: dict) -> list[str]:
    """One line per task, as ``salad-train decontam`` prints them."""
    n = report["n"]
    sources = ", ".join(f"{source} {count}" for source, count in report["sources"].items())
    lines = [f"training texts: {sources}"]
    for task, r in report["tasks"].items():
        lines.append(
            f"{task}: {r['items']} items checked, {r['too_short']} shorter than {n} "
            f"words, {r['flagged']} sharing {n} consecutive words with training"
        )
    return lines
