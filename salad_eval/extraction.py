"""The rule that reads an option letter out of a generated reply (``--answer generate``).

A reply that does not name exactly one option is a no answer, never a guess. ``extract`` applies:

1. Strip reasoning: ``<think>``, ``<thinking>``, ``<reasoning>``, ``<reflection>`` segments (any
   case, nesting counted), an unclosed opening tag (the rest is reasoning) and an orphan closing
   tag (all before it is reasoning: templates that open ``<think>`` in the prompt). Their texts
   are kept in ``Extraction.reasoning``; letters in them never count.
2. A reply cut off by the token limit is no answer ("truncated"), nor is an empty one ("empty").
3. The first shape that matches decides, for the given letters only (markdown, LaTeX ``$`` and
   full-width characters read through; lowercase only where no English word: "the answer is a
   city" is not A):
   a. "bare": the whole reply is one letter: ``B``, ``**B**``, ``(b)``, ``B.``, ``Option B``.
   b. "paren", "letter_dot", "first_line": it opens with ``(B) Paris``, ``B. Paris``, ``B) Paris``,
      ``B: Paris``, ``B - Paris`` or a line holding one letter; not when several lines open with
      different letters (the options listed); "ambiguous" if another letter is joined to it
      ("(A) and (B)") or an answer phrase (c) names another letter.
   c. answer phrases: "answer_is" ("The correct answer is (B)", "I choose B", "La respuesta es
      B"), "answer_colon" ("Answer: b", "**Final answer:** B", "Réponse : B", "答案是B", "Ответ:
      B", an "Answer" heading), "boxed" (``\\boxed{B}``), "revised" ("wait, actually C"). Two
      different letters ("The answer is A... wait, actually C", "Answer: B or C") are "ambiguous",
      a letter outside the options ("Answer: E" for A-D) "unparsed".
   d. "option_text": the normalised reply (casefolded, punctuation dropped, spaces collapsed, a
      leading "the answer is" dropped) equals exactly one option's normalised text.
   e. "single_mention": exactly one option letter stands alone, uppercase or as ``(b)``, leaving
      out negated mentions ("not C", "A and B are wrong"), letters inside an option's text
      ("Vitamin C"), the article "A" and the pronoun "I" (see ``_AS_NAME``).
4. Otherwise no answer: "ambiguous" (several letters), "negated" (only negated mentions) or
   "unparsed" (none: "I don't know", gibberish, a letter outside the options).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

RULE = "letter-v1"  # recorded beside every extracted answer: bump it when the rule changes


@dataclass(frozen=True)
class Extraction:
    letter: str | None  # the extracted option letter, or None: no answer
    reply: str  # the reply the rule read: reasoning segments stripped, whitespace-trimmed
    reasoning: tuple[str, ...]  # the stripped reasoning segments' inner texts, in order
    shape: str  # the rule that decided, or the no-answer reason


_REASONING_TAG = re.compile(r"<(/?)(?:think|thinking|reasoning|reflection)\s*>", re.I)

_MARKDOWN = (
    re.compile(r"```(?:[a-z][\w+-]*[ \t]*\n)?"),  # code fences and their language tag
    re.compile(r"[*`~$]|__"),  # emphasis, inline code, LaTeX math delimiters
    re.compile(r"^[ \t]*(?:#{1,6}|>|[-+•]|\d+[.)])[ \t]+", re.M),  # headings, quotes, list marks
)

# Characters that continue a word: a letter touching one is part of it ("B12", "Aún", "X-ray")
_WORDISH = "A-Za-z0-9_\u00c0-\u024f"
# A letter standing alone: not inside a word, not an initial ("D.C."), not "A's" nor "B-cell"
_ALONE_BEFORE = rf"(?<![{_WORDISH}'’\-])(?<![{_WORDISH}]\.)"
_ALONE_AFTER = rf"(?![{_WORDISH}'’]|[-.][{_WORDISH}])"
_MENTION = re.compile(rf"{_ALONE_BEFORE}(?P<letter>[A-Za-z]){_ALONE_AFTER}")

# The letter an answer phrase names: "B", "(B)", "option B", "either A"
_NAMED = rf"(?:(?:option|choice|letter|either|both)\s+)?[(\[]?(?P<letter>[A-Za-z]){_ALONE_AFTER}"
_PHRASES = tuple(
    (shape, re.compile(pattern + _NAMED, re.I | re.M))
    for shape, pattern in (
        ("answer_is", r"\b(?:answer|option|choice|pick)\s+(?:is|would\s+be|should\s+be|will\s+be"
         r"|must\s+be)\b\s*(?::\s*)?(?:(?:\w+ly|therefore|thus)\s+)?"),
        ("answer_is", r"\bI(?:'d|'ll|\s+would|\s+will)?\s+(?:choose|pick|select|go\s+with)\s+"),
        ("answer_is", r"\b(?:respuesta|réponse|antwort|risposta|resposta)(?:\s+\w+)?"
         r"\s+(?:es|est|ist|è|é)\s*(?::\s*)?"),
        ("answer_colon", r"\b(?:answer|antwort|réponse|respuesta|risposta|resposta|ответ"
         r"|odpowiedź|antwoord|svar|cevap|jawaban)\s*:\s*"),
        ("answer_colon", r"(?:答案|回答|解答|正解|答え|정답)\s*(?:(?::|是|为|為|は|은|는)\s*)?"),
        ("answer_colon", r"^[ \t]*(?:final\s+|correct\s+)?answer[ \t]*\n\s*"),  # a heading
        ("boxed", r"\\boxed\{\s*(?:\\text(?:bf)?\{\s*)?"),
        ("revised", r"\b(?:actually|wait|i\s+mean|on\s+second\s+thought|correction)\s*(?:[,:]\s*)?"
         r"(?:it'?s\s+|it\s+is\s+)?"),
    )
)  # fmt: skip
# A second letter joined to a phrase's letter: "Answer: B or C", "either A or C", "B, D"
_OR_ANOTHER = re.compile(
    r"(?i)[ \t]*(?:[)\]][ \t]*)?(?:,|/|&|\bor\b|\band\b)[ \t]*(?:(?:option|choice)\s+)?[(\[]?"
    rf"(?P<letter>[A-Za-z]){_ALONE_AFTER}"
)

# "A" (the article) and "I" (the pronoun) are English words, written uppercase at a sentence
# start: "A cat is...", "I think...". There they are followed by a word, while an option letter
# used as a name is followed by punctuation, the end, or a verb or conjunction that never
# follows the article "a" nor the pronoun "I" ("A is right", "A or B", "I seems", "A because").
# So A or I followed by any other word is the English word, unless a label precedes it
# ("option A"). A lone letter after them ("A B") is no word: "A" is then a letter too.
_WORD_FOLLOWS = re.compile(r"[ \t]+[A-Za-z][A-Za-z'’]")
_AS_NAME = re.compile(r"(?i)[ \t]+(?:is|seems|looks|has|or|and|nor|but|because|since|as|which)\b")
_LABEL_BEFORE = re.compile(r"\b(?:option|choice|letter)[ \t]*[(\[]?$", re.I)

# Negation before a mention ("not C", "isn't B", "neither A nor B") or after it ("A is wrong",
# "A and B are incorrect", "C can be ruled out"): such a mention is no answer.
_NEGATED_BEFORE = re.compile(
    r"(?i)(?:\bnot|n't|\bnever|\bneither|\bnor|\bexcept)\s+(?:(?:option|choice)\s+)?"
    r"(?:[(\[]?[A-Z][)\]]?\s*(?:,|\bor\b|\bnor\b|\band\b)\s*)*[(\[]?\Z"
)
_NEGATED_AFTER = re.compile(
    r"(?i)(?:[)\]]?\s*(?:,|\bor\b|\band\b)\s*[(\[]?[A-Z]\b){0,9}[)\]]?\s*"
    r"(?:(?:is|are|was|were)\s*n't|(?:is|are|was|were)\s+(?:not|wrong|incorrect)\b"
    r"|(?:can\s+be\s+)?(?:ruled\s+out|eliminated))"
)

# A line that is one letter, or opens with one: "(B) Paris"; "B. Paris", "B) Paris", "B - Paris"
_BARE = re.compile(r"[\W_]*(?:(?:option|choice|letter)\s+[\W_]*)?(?P<letter>[A-Za-z])[\W_]*", re.I)
_PAREN = re.compile(r"[ \t]*[(\[](?P<letter>[A-Za-z])[)\]][ \t]*\S")
_LETTER_DOT = re.compile(r"[ \t]*(?P<letter>[A-Z]|[a-z](?=\)))(?:[.:)]|[ \t]+[-–—])[ \t]+\S")

_ANSWER_LEAD = re.compile(r"^(?:the\s+)?(?:correct\s+|final\s+)?answer(?:\s+is)?\s+")


def extract(
    reply: str, letters: Sequence[str], options: Sequence[str] = (), truncated: bool = False
) -> Extraction:
    """The option letter ``reply`` gives among ``letters`` (options' texts in the same order)."""
    if any(len(x) != 1 or not x.isascii() or not x.isalpha() for x in letters):
        raise ValueError(f"option letters must be single ASCII letters, got {list(letters)}")
    text, reasoning = _strip_reasoning(reply)
    if truncated or not text:
        return Extraction(None, text, reasoning, "truncated" if truncated else "empty")
    own = {x.upper(): x for x in letters}
    letter, shape = _read(_plain(text), own, options)
    return Extraction(own.get(letter or ""), text, reasoning, shape)


def _strip_reasoning(text: str) -> tuple[str, tuple[str, ...]]:
    outside: list[str] = []  # the reply's pieces
    segments: list[str] = []
    depth = pos = 0  # pos: where the current outside text or reasoning segment starts
    for tag in _REASONING_TAG.finditer(text):
        if not tag.group(1):
            if depth == 0:
                outside.append(text[pos : tag.start()])
                pos = tag.end()
            depth += 1
        elif depth:
            depth -= 1
            if depth == 0:
                segments.append(text[pos : tag.start()])
                pos = tag.end()
        else:  # an orphan closing tag: the prompt opened the reasoning, so all before it is
            segments.append("".join(outside) + text[pos : tag.start()])
            outside, pos = [], tag.end()
    (segments if depth else outside).append(text[pos:])
    return "".join(outside).strip(), tuple(s.strip() for s in segments)


def _plain(text: str) -> str:
    text = unicodedata.normalize("NFKC", text)  # full-width "Ｂ" and "：" read as "B" and ":"
    for pattern in _MARKDOWN:
        text = pattern.sub("", text)
    return text.strip()


def _letter(text: str, m: re.Match[str], in_prose: bool = False) -> str | None:
    """The uppercase letter ``m`` names, or None where it is an English word."""
    char, start, end = m["letter"], m.start("letter"), m.end("letter")
    if text[start - 1 : start] + text[end : end + 1] == "()":
        return char.upper()
    if char.islower() and in_prose:
        return None  # in prose a lowercase letter is a word ("a", "e", "y") unless bracketed
    word = _WORD_FOLLOWS.match(text, end) and not _AS_NAME.match(text, end)
    if word and (
        char in "aiI" or (char == "A" and not _LABEL_BEFORE.search(text, max(0, start - 12), start))
    ):
        return None
    return char.upper()


def _answer_phrases(text: str) -> tuple[list[tuple[str, str]], bool]:
    """(letter, shape) of each answer phrase, and whether one of them named two letters."""
    found, two = [], False
    for shape, pattern in _PHRASES:
        for m in pattern.finditer(text):
            if (letter := _letter(text, m)) is None:
                continue
            found.append((letter, shape))
            more = _OR_ANOTHER.match(text, m.end())
            two = two or bool(more and _letter(text, more) not in (None, letter))
    return found, two


def _label(line: str) -> tuple[str, str, bool] | None:
    """A line's opening letter, its shape, and whether another letter is joined to it."""
    m = _BARE.fullmatch(line) or _PAREN.match(line) or _LETTER_DOT.match(line)
    if m is None:
        return None
    shape = {_BARE: "first_line", _PAREN: "paren", _LETTER_DOT: "letter_dot"}[m.re]
    more = _OR_ANOTHER.match(line, m.end("letter"))
    letter = m["letter"].upper()
    return letter, shape, bool(more and _letter(line, more) not in (None, letter))


def _norm(text: str) -> str:
    text = "".join(" " if unicodedata.category(c)[0] == "P" else c for c in _plain(text).casefold())
    return _ANSWER_LEAD.sub("", " ".join(text.split()))


def _read(text: str, letters: dict[str, str], options: Sequence[str]) -> tuple[str | None, str]:
    phrases, two = _answer_phrases(text)
    said = {letter for letter, _ in phrases}
    lines = text.splitlines()
    lead = _label(lines[0])
    if lead and len(lines) == 1 and lead[1] == "first_line":  # the whole reply is one letter
        return (lead[0], "bare") if lead[0] in letters else (None, "unparsed")
    if lead and lead[0] in letters:
        labels = {label[0] for line in lines if (label := _label(line))}
        if len(labels) == 1:  # lines opening with different letters list the options
            ambiguous = lead[2] or two or said - {lead[0]}
            return (None, "ambiguous") if ambiguous else lead[:2]

    if two or len(said) > 1:
        return None, "ambiguous"
    if phrases:
        letter, shape = phrases[0]
        return (letter, shape) if letter in letters else (None, "unparsed")

    target = _norm(text)
    hits = [x for x, option in zip(letters, options, strict=False) if _norm(option) == target]
    if target and len(hits) == 1:
        return hits[0], "option_text"

    for option in map(_plain, options):  # "Vitamin C" names an option by its text, not C
        if len(option) > 1 and _MENTION.search(option):
            text = re.sub(re.escape(option), " ", text, flags=re.I)
    kept, negated = set(), set()
    for m in _MENTION.finditer(text):
        letter = _letter(text, m, in_prose=True)
        if letter in letters:
            before = text[max(0, m.start() - 80) : m.start()]
            denied = _NEGATED_BEFORE.search(before) or _NEGATED_AFTER.match(text, m.end())
            (negated if denied else kept).add(letter)
    if len(kept) == 1:
        return kept.pop(), "single_mention"
    return None, "ambiguous" if kept else "negated" if negated else "unparsed"
