"""Per-document hooks for the rare task that a template cannot express.

A task YAML names a hook with ``process_docs: <function name>``; the hook maps one raw document to
the document the templates read. Each hook reproduces lm-eval 0.4.13's own, so prompts stay equal
(MMSU's is salad's own: lm-eval has no such task).
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


def mmsu_process_docs(doc: dict) -> dict:
    """MMSU rows (salad's own hook: lm-eval has no MMSU) -> ``spoken``, ``letters``, ``gold``.

    Rows in the MMSU schema (``question``, ``choices``, ``answer`` as index or letter, ``subject``,
    ``audio``) speak the question and its lettered options, as MMLU does. VoiceBench's own rows
    carry ``prompt``, the transcript of their recording (question and options as read), and
    ``reference``, the answer letter: their prompt is what is spoken.
    """
    letters = "ABCDEFGHIJ"
    if "prompt" in doc:
        spoken, count = doc["prompt"].strip(), 4  # VoiceBench's MCQ answers are A-D
        answer = doc["reference"] if "reference" in doc else doc["answer"]
    else:
        choices = [str(choice) for choice in doc["choices"]]
        options = "".join(f"\n{letters[i]}. {choice}" for i, choice in enumerate(choices))
        spoken, count, answer = doc["question"].strip() + options, len(choices), doc["answer"]
    gold = letters.index(answer.strip().upper()) if isinstance(answer, str) else int(answer)
    subject = doc.get("subject") or doc.get("category") or "mmsu"
    return {
        **doc,
        "spoken": spoken,
        "letters": list(letters[:count]),
        "gold": gold,
        "subject": subject,
    }


HOOKS = {"hellaswag_process_docs": hellaswag_process_docs, "mmsu_process_docs": mmsu_process_docs}
