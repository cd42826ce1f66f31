"""The text pool that Stage II selects from: local text files, JSONL, or an HF dataset.

- ``*.txt``: one document per line (``#`` lines are comments); when most blank-line separated
  blocks span several lines, each block is one document (its lines joined).
- ``*.jsonl``: one row per document, text in ``select.pool_column``.
- a directory written by ``datasets``' ``save_to_disk``, or ``hf:NAME`` (``hf:NAME:CONFIG``) for a
  hub dataset, split ``select.pool_split``, column ``select.pool_column``.

Documents are whitespace-normalized, deduplicated in order, and kept only with ``min_words`` words
or more, so every kept document has room for a spoken span and a continuation.
"""

from __future__ import annotations

import json
from pathlib import Path

from salad_eval.errors import SaladError
from salad_train.config import HUB_PREFIX, SelectConfig


def _text_file(path: Path) -> list[str]:
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if not ln.startswith("#")]
    blocks = [b.split("\n") for b in "\n".join(lines).split("\n\n") if b.strip()]
    if sum(len(b) > 1 for b in blocks) * 2 > len(blocks) > 1:
        return [" ".join(block) for block in blocks]
    return lines


def _jsonl(path: Path, column: str) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if column not in row:
            raise SaladError(f"{path}:{number} has no {column!r} field; set select.pool_column")
        texts.append(str(row[column]))
    return texts


def _hf_dataset(source: str, column: str, split: str) -> list[str]:
    import datasets  # noqa: PLC0415 - deferred: heavy datasets, loaded on this path only

    try:
        if source.startswith(HUB_PREFIX):
            name, _, subset = source[len(HUB_PREFIX) :].partition(":")
            data = datasets.load_dataset(name, subset or None, split=split)
        else:
            data = datasets.load_from_disk(source)
            if isinstance(data, datasets.DatasetDict):
                data = data[split]
    except (OSError, ValueError, KeyError) as err:
        raise SaladError(f"cannot load pool dataset {source}: {err}".splitlines()[0]) from None
    if column not in data.column_names:
        raise SaladError(
            f"pool dataset {source} has no column {column!r} (it has {data.column_names}); "
            "set select.pool_column"
        )
    return [str(text) for text in data[column]]


def read_source(source: str, column: str = "text", split: str = "train") -> list[str]:
    """The raw documents of one pool source."""
    path = Path(source)
    if source.startswith(HUB_PREFIX) or path.is_dir():
        return _hf_dataset(source, column, split)
    if not path.is_file():
        raise SaladError(f"select.pool {source} does not exist; fix the path or use hf:NAME")
    try:
        return _jsonl(path, column) if path.suffix == ".jsonl" else _text_file(path)
    except (UnicodeDecodeError, ValueError, TypeError):  # binary, or lines that are not JSON rows
        kind = "JSON lines" if path.suffix == ".jsonl" else "UTF-8 text"
        raise SaladError(f"select.pool {source} is not {kind}; fix or replace it") from None


def read_pool(config: SelectConfig) -> list[str]:
    """Every source's documents, normalized, deduplicated in order, long enough to probe."""
    if not config.pool:
        raise SaladError("select.pool is empty; name text files, JSONL files or hf:NAME datasets")
    seen: dict[str, None] = {}
    for source in config.pool:
        for text in read_source(source, config.pool_column, config.pool_split):
            text = " ".join(text.split())
            if len(text.split()) >= config.min_words:
                seen.setdefault(text)
    texts = list(seen)[: config.max_pool]
    if len(texts) < config.clusters:
        raise SaladError(
            f"the pool has {len(texts)} documents of {config.min_words}+ words, fewer than "
            f"select.clusters={config.clusters}; add text or lower select.clusters"
        )
    return texts
