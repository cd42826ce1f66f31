"""Generation prompts as task data: how ``--answer generate`` asks a question (issue 28).

With ``--answer generate`` a model is not scored on the log-likelihood of each choice: it replies
to the item rendered as a multiple-choice question, options lettered A, B, ... in choice order,
and a letter is read from its reply. How the question reads is a task's ``generate:`` block::

    generate:
      version: 1            # the template's own version (>= 1; 0 marks a derived one)
      options: written      # the lettered options as text (written) or read aloud (spoken)
      prompt:               # parts as the task's prompt: text:, speak: (+ audio:), and ...
        - text: "Question: "
        - speak: "{{question}}"
        - options: "\\n{{letter}}. {{option}}"   # ... once per option, joined
        - text: "\\nAnswer with the letter of the correct option.\\nAnswer:"
      option_texts: choices # optional: an expression of the option texts (default: the choices)
      until: ["\\n\\n"]       # optional: the reply ends at the first of these

An ``options:`` part sees the document's fields plus ``letter`` and ``option``; it is one spoken
part with ``options: spoken``, text with ``options: written``. A task whose spoken question
already reads its lettered options aloud (MMLU) speaks that text, declares ``options: spoken``
and has no ``options:`` part.

A task without a block (a user's task) gets one derived from its prompt (``derive``): its parts,
less a trailing answer cue, then the options written as lines and the default instruction. That
needs choices that can stand as option texts: a task whose choices are letters (MMLU's) cannot
be derived (``underivable``) and must write its block.

This module holds the schema (validation, resolution, derivation); ``tasks`` renders items with
it (``tasks.load_items(answer="generate")``, ``tasks.generation``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

import jinja2

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
OPTIONS = ("spoken", "written")
DEFAULT_UNTIL = ("\n\n",)  # the few-shot delimiter: a reply that goes on asks the next question
OPTION_LINE = "\n{{letter}}. {{option}}"
INSTRUCTION = "\nAnswer with the letter of the correct option.\nAnswer:"
ANSWER_CUE = re.compile(r"\s*Answer:\s*", re.IGNORECASE)  # a text part that is only the cue
KEYS = ("version", "options", "prompt", "option_texts", "until")
_PART_KEYS = ({"text"}, {"speak"}, {"speak", "audio"}, {"options"})


@dataclass(frozen=True)
class GenerateSpec:
    """A resolved generation template: part of the task fingerprint when the task writes it."""

    version: int  # 0: derived from the task's prompt (no generate: block)
    options: str  # "spoken" or "written": how the lettered options reach the model
    prompt: tuple[tuple[str, str], ...]  # (kind, template), kind "text", "speak" or "options"
    recordings: tuple[tuple[int, str], ...] = ()  # (prompt part, expression of its recording)
    option_texts: str | None = None  # expression; None: the task's choices, no delimiter
    until: tuple[str, ...] = DEFAULT_UNTIL

    @property
    def derived(self) -> bool:
        return self.version == 0


def block_problem(block: Any, env: jinja2.Environment) -> str | None:
    """Why a ``generate:`` block is malformed, as ``field generate...: ...``; None if it is not.
    ``env`` parses its templates (the tasks' Jinja environment)."""
    if not isinstance(block, dict):
        return "field generate: a mapping of version:, options:, prompt: (see tasks/demo.yaml)"
    for key in block:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(KEYS)}"
            return f"field generate: unknown field {key!r}; {hint}"
    for key in ("version", "prompt"):
        if key not in block:
            return f"field generate.{key} is missing; a generate: block sets version and prompt"
    version = block["version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        return f"field generate.version: an integer from 1 (0 marks a derived one), got {version!r}"
    if block.get("options", "written") not in OPTIONS:
        return f"field generate.options: spoken or written, got {block['options']!r}"
    prompt = block["prompt"]
    if not isinstance(prompt, list) or not prompt:
        return "field generate.prompt: a list of `- text:` / `- speak:` / `- options:` parts"
    for number, part in enumerate(prompt):
        field = f"generate.prompt[{number}]"
        if not (
            isinstance(part, dict)
            and set(part) in _PART_KEYS
            and all(isinstance(value, str) for value in part.values())
        ):
            return (
                f"field {field}: one `text:`, `speak:` or `options:` string (a `speak:` may add "
                f"`audio:`, the column of its recording); got {part!r}"
            )
        for key, value in part.items():
            try:
                if key == "audio":
                    env.compile_expression(value)
                else:
                    env.parse(value)
            except jinja2.TemplateSyntaxError as err:
                what = "expression" if key == "audio" else "template"
                where = f"{field}.audio" if key == "audio" else field
                return f"field {where}: bad {what} ({err.message})"
    if "option_texts" in block:
        if not isinstance(block["option_texts"], str):
            return "field generate.option_texts: an expression of the option texts (a string)"
        try:
            env.compile_expression(block["option_texts"])
        except jinja2.TemplateSyntaxError as err:
            return f"field generate.option_texts: bad expression ({err.message})"
    until = block.get("until", [])
    if not isinstance(until, list) or not all(isinstance(s, str) and s for s in until):
        return f"field generate.until: a list of stop strings, none empty; got {until!r}"
    return None


def resolve(block: dict) -> GenerateSpec:
    """The ``GenerateSpec`` of a validated block."""
    parts = block["prompt"]
    return GenerateSpec(
        version=block["version"],
        options=block.get("options", "written"),
        prompt=tuple(_part(part) for part in parts),
        recordings=tuple((i, part["audio"]) for i, part in enumerate(parts) if "audio" in part),
        option_texts=block.get("option_texts"),
        until=tuple(block.get("until", DEFAULT_UNTIL)),
    )


def _part(part: dict) -> tuple[str, str]:
    kind = next(key for key in ("text", "speak", "options") if key in part)
    return kind, part[kind]


def derive(
    prompt: tuple[tuple[str, str], ...], recordings: tuple[tuple[int, str], ...] = ()
) -> GenerateSpec:
    """The template of a task without a ``generate:`` block: its prompt parts, less a trailing
    answer cue (the instruction ends with its own), then written option lines and the default
    instruction. Version 0, so a manifest tells it from a written one."""
    parts = list(prompt)
    if parts and parts[-1][0] == "text" and ANSWER_CUE.fullmatch(parts[-1][1]):
        parts.pop()
    return GenerateSpec(
        version=0,
        options="written",
        prompt=(*parts, ("options", OPTION_LINE), ("text", INSTRUCTION)),
        recordings=tuple((i, expr) for i, expr in recordings if i < len(parts)),
    )


def are_labels(choices: list[str]) -> bool:
    """Whether choices are bare letters (MMLU's A-D), which cannot stand as option texts.
    Digits are not: "4" is a real answer to "how many legs has a dog"."""
    return bool(choices) and all(len(c.strip()) == 1 and c.strip().isalpha() for c in choices)


def underivable(task: str, choices: list[str]) -> str:
    """The one-line reason a task without a block gets no generation template."""
    shown = ", ".join(repr(choice) for choice in choices[:6])
    return (
        f"task {task} has no generate: block and its choices are letters ({shown}), so no "
        f"multiple-choice prompt can be derived; add a generate: block (see tasks/mmlu.yaml)"
    )
