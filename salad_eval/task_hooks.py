"""Per-document hooks for the rare task that a template cannot express.

A task YAML names a hook with ``process_docs: <function name>``; the hook maps one raw document to
the document the templates read. Each hook reproduces lm-eval 0.4.13's own, so prompts stay equal.
"""

from __future__ import annotations

import re


def _hellaswag_clean(text: str) -> str:
    """lm-eval's HellaSwag ``preprocess``: strip WikiHow bracket artifacts."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_process_docs(doc: dict) -> dict:
    """lm-eval's HellaSwag ``process_docs``: activity label + context as the query."""
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {
        **doc,
        "query": _hellaswag_clean(doc["activity_label"] + ": " + ctx),
        "choices": [_hellaswag_clean(ending) for ending in doc["endings"]],
        "gold": int(doc["label"]),
    }


HOOKS = {"hellaswag_process_docs": hellaswag_process_docs}
