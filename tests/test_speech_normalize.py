"""Text normalization for speech: pure functions, every rule of the documented policy."""

from __future__ import annotations

import pytest

from salad_eval.speech.normalize import (
    normalize,
    number_words,
    ordinal_words,
    speakable,
    year_words,
)


@pytest.mark.parametrize(
    ("text", "spoken"),
    [
        ("What is 25% of 80?", "What is twenty five percent of eighty?"),
        ("$12.50 in 1995", "twelve dollars and fifty cents in nineteen ninety five"),
        ("$5 million", "five million dollars"),
        ("The 3rd and 21st runners", "The third and twenty first runners"),
        ("x^2 + 3x - 4 = 0", "x squared plus three x minus four equals zero"),
        ("Solve 2 x 3 = ___.", "Solve two times three equals blank."),
        ("Water boils at 100°C.", "Water boils at one hundred degrees Celsius."),
        ("3/4 of 1,200,000", "three quarters of one million two hundred thousand"),
        ("e.g. 3.14 & -5 < 7", "for example three point one four and minus five less than seven"),
        ("Which?\nA. cats\nB) dogs\n(C) mice", "Which? A, cats. B, dogs. C, mice"),
        ("at 3:30 or 5:00", "at three thirty or five o'clock"),
        ("in 2005, 2010, 1990s", "in two thousand five, twenty ten, nineteen nineties"),
        ("5 - 3 * 2 ≥ 1", "five minus three times two greater than or equal to one"),
        ("a well-known fact", "a well-known fact"),
        ("H2O weighs 3.5 kg", "H two O weighs three point five kilograms"),
        ("  lots \n\n of   space ", "lots. of space"),
    ],
)
def test_normalize(text: str, spoken: str) -> None:
    assert normalize(text) == spoken


def test_number_words() -> None:
    assert number_words(0) == "zero"
    assert number_words(1_000_017) == "one million seventeen"
    assert number_words(-42) == "minus forty two"
    assert ordinal_words(12) == "twelfth"
    assert ordinal_words(40) == "fortieth"
    assert year_words(1905) == "nineteen oh five"
    assert year_words(1900) == "nineteen hundred"


def test_speakable() -> None:
    assert not speakable(normalize("*** ___ ..."[:3]))
    assert not speakable(normalize("?!"))
    assert speakable(normalize("___"))  # a blank is read as "blank"
