"""The answer-extraction rule of ``--answer generate``: its corpus of replies and its guarantees
(no guessing on cut-off replies or word salad, reasoning kept, the rule's recorded name)."""

from __future__ import annotations

import random
import signal
import string
from pathlib import Path

import pytest
import yaml

from salad_eval.extraction import RULE, Extraction, extract

CORPUS = yaml.safe_load(
    (Path(__file__).parent / "fixtures" / "extraction_corpus.yaml").read_text(encoding="utf-8")
)


@pytest.mark.parametrize("case", CORPUS, ids=[case["why"] for case in CORPUS])
def test_corpus(case):
    got = extract(
        case["reply"],
        tuple(case["letters"]),
        tuple(case.get("options", ())),
        truncated=case.get("truncated", False),
    )
    assert got.letter == case["letter"], f"{case['why']}: read {got.letter} by {got.shape}"
    if got.letter is None:
        assert got.shape in {"empty", "truncated", "ambiguous", "negated", "unparsed"}


def test_corpus_is_large_and_each_case_well_formed():
    assert len(CORPUS) >= 80
    assert len({case["why"] for case in CORPUS}) == len(CORPUS)  # ids name one case each
    for case in CORPUS:
        assert case["letter"] is None or case["letter"] in case["letters"], case["why"]


def test_rule_name():
    assert RULE == "letter-v1"


def test_cut_off_reply_is_no_answer_even_with_an_answer_in_it():
    got = extract("<think>B is Paris</think>Answer: B", "ABCD", truncated=True)
    assert got == Extraction(None, "Answer: B", ("B is Paris",), "truncated")


def test_reasoning_is_stripped_and_kept_in_order():
    got = extract(
        "<think> A? </think>Hmm.<Reasoning>no, C</Reasoning>\nAnswer: D <think>D!", "ABCD"
    )
    assert got.letter == "D"
    assert got.reply == "Hmm.\nAnswer: D"
    assert got.reasoning == ("A?", "no, C", "D!")


def test_unclosed_reasoning_with_nothing_after_it_is_empty():
    got = extract("<think>The answer is B", "ABCD")
    assert (got.letter, got.shape, got.reasoning) == (None, "empty", ("The answer is B",))


@pytest.mark.parametrize(
    ("reply", "shape"),
    [
        ("**B**", "bare"),
        ("(B) Paris", "paren"),
        ("B. Paris", "letter_dot"),
        ("B\n\nParis is in France.", "first_line"),
        ("The answer is B", "answer_is"),
        ("Answer: B", "answer_colon"),
        ("\\boxed{B}", "boxed"),
        ("Paris", "option_text"),
        ("Surely B.", "single_mention"),
        ("A or B", "ambiguous"),
        ("not B", "negated"),
        ("no idea", "unparsed"),
        ("", "empty"),
    ],
)
def test_shapes_name_the_rule_that_decided(reply, shape):
    assert extract(reply, "ABCD", ("London", "Paris", "Rome", "Berlin")).shape == shape


def test_letters_come_back_as_given():
    assert extract("Answer: B", ("a", "b")).letter == "b"


def test_letters_must_be_single_letters():
    with pytest.raises(ValueError, match="single ASCII letters"):
        extract("B", ("A", "BB"))


def test_lowercase_word_salad_is_never_an_answer():
    rng = random.Random(0)
    for _ in range(200):
        words = [
            "".join(rng.choices(string.ascii_lowercase, k=rng.randint(1, 8)))
            + rng.choice(("", "", "", ",", ".", "!", "?"))
            for _ in range(rng.randint(3, 40))  # one word "b" would be a bare answer
        ]
        reply = " ".join(words)
        got = extract(reply, "ABCDEFGHIJ", ("paris", "london"))
        assert got.letter is None, f"{reply!r} read as {got.letter} by {got.shape}"


@pytest.mark.parametrize(
    "reply",
    [
        "not " + "A, " * 5000,  # a long list of mentions, each checked for negation
        "(" * 50000,
        "the answer is" + " " * 50000 + "x",
        "Answer: B" + " " * 50000 + "x",
        "-" * 50000 + "B" + "." * 50000,
        "<think>" * 20000 + "B",
    ],
    ids=["mentions", "brackets", "answer-spaces", "joined-spaces", "punctuation", "tags"],
)
def test_long_adversarial_replies_are_read_in_linear_time(reply):
    # a safety limit, not a speed test: linear reading takes milliseconds, a quadratic regex
    # minutes to hours on these; 120 s is far from both on any machine
    def stuck(*_):
        raise TimeoutError("extract() still reading after 120 s: a regex backtracks on this reply")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(120)
    try:
        extract(reply, "ABCD", ("Vitamin C", "Paris"))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
