"""Text normalization for speech: what a careful human reader would say aloud.

TTS front ends read digits and symbols inconsistently (or skip them), so every engine gets the same
normalized text, and the normalized text is part of each clip's key. Policy, applied in order:

1. Abbreviations: ``e.g.`` -> "for example", ``i.e.`` -> "that is", ``etc.`` -> "et cetera",
   ``vs.`` -> "versus", ``Mr./Mrs./Dr.`` -> "mister/missus/doctor".
2. Blanks: a run of two or more underscores (``___``) -> "blank".
3. Lines: each line break ends a phrase (a period is added unless the line already ends in
   punctuation); a list marker at the start of a line (``A.``, ``A)``, ``(A)``) is read as the
   letter followed by a pause ("A, ...").
4. Money: ``$12.50`` -> "twelve dollars and fifty cents" (also ``£`` pounds, ``€`` euros).
5. Percent and degrees: ``25%`` -> "twenty five percent", ``30°C`` -> "thirty degrees Celsius".
6. Ordinals ``1st 2nd 23rd`` -> "first second twenty third"; fractions ``3/4`` -> "three quarters"
   (denominators up to 12 as ordinals, larger ones "a over b"); times ``3:30`` -> "three thirty".
7. Formulas: ``x^2`` -> "x squared", ``^3`` -> "cubed", ``^n`` -> "to the power of n";
   ``+ = < > ≤ ≥ ≠ ≈ × ÷ * √ π`` -> words; a ``-`` between operands (numbers, single letters,
   brackets) with spaces or directly before a number is "minus"; ``2 x 3`` -> "two times three";
   a number glued to a letter is split (``3x`` -> "three x"); units after a number are spelled out
   (``km kg cm mm ml mg mph km/h m/s``).
8. Numbers: thousands separators dropped; a standalone 4-digit integer 1100-2099 is read as a year
   ("nineteen ninety five", "two thousand five"), ``1990s`` -> "nineteen nineties"; decimals
   digit by digit after "point"; other integers in words ("one million two hundred thousand").
9. Other symbols: ``&`` -> "and", ``@`` -> "at", ``#`` -> "number"; remaining characters that no
   engine reads (``_ * | ~ ^ { } [ ]`` and the like) become spaces; whitespace is collapsed.

Number words use no hyphens ("twenty five"), so they compare word by word with ASR output that
went through the same function.
"""

from __future__ import annotations

import re

VERSION = "1"

_ONES = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
_ABBREVIATIONS = {
    r"\be\.g\.": "for example",
    r"\bi\.e\.": "that is",
    r"\betc\.": "et cetera",
    r"\bvs\.": "versus",
    r"\bMr\.": "mister",
    r"\bMrs\.": "missus",
    r"\bDr\.": "doctor",
}
_CURRENCIES = {"$": ("dollar", "cent"), "£": ("pound", "penny"), "€": ("euro", "cent")}
_SYMBOLS = {
    "≤": " less than or equal to ",
    "≥": " greater than or equal to ",
    "≠": " not equal to ",
    "≈": " approximately ",
    "×": " times ",
    "÷": " divided by ",
    "√": " square root of ",
    "π": " pi ",
    "+": " plus ",
    "=": " equals ",
    "<": " less than ",
    ">": " greater than ",
    "&": " and ",
    "@": " at ",
    "#": " number ",
    "−": " minus ",
    "°": " degrees ",
}
_UNITS = {
    "km/h": "kilometers per hour",
    "m/s": "meters per second",
    "mph": "miles per hour",
    "km": "kilometers",
    "kg": "kilograms",
    "cm": "centimeters",
    "mm": "millimeters",
    "ml": "milliliters",
    "mg": "milligrams",
}
_OPERAND = r"(?:\d|\b[A-Za-z]\b|[)\]])"


def number_words(n: int) -> str:
    """An integer in words, without hyphens: 1234 -> "one thousand two hundred thirty four"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    if n < 1000:
        rest = n % 100
        return _ONES[n // 100] + " hundred" + ("" if rest == 0 else " " + number_words(rest))
    for scale, word in _SCALES:
        if n >= scale:
            rest = n % scale
            head = number_words(n // scale) + " " + word
            return head + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def ordinal_words(n: int) -> str:
    """1 -> "first", 23 -> "twenty third", 100 -> "one hundredth"."""
    words = number_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def year_words(n: int) -> str:
    """1995 -> "nineteen ninety five", 2005 -> "two thousand five", 1900 -> "nineteen hundred"."""
    if 2000 <= n < 2010:
        return number_words(n)
    high, low = divmod(n, 100)
    if low == 0:
        return number_words(high) + " hundred"
    return number_words(high) + (" oh " + _ONES[low] if low < 10 else " " + number_words(low))


def _decade(year: int) -> str:
    """1990 -> "nineteen nineties", 1900 -> "nineteen hundreds"."""
    words = year_words(year)
    return words[:-1] + "ies" if words.endswith("y") else words + "s"


def _decimal_words(text: str) -> str:
    """ "3.14" -> "three point one four"; "12" -> "twelve"."""
    whole, _, frac = text.partition(".")
    words = number_words(int(whole)) if whole else "zero"
    if frac:
        words += " point " + " ".join(_ONES[int(d)] for d in frac)
    return words


def _money(match: re.Match) -> str:
    unit, sub = _CURRENCIES[match["cur"]]
    amount = match["amount"].replace(",", "")
    whole, _, frac = amount.partition(".")
    value = int(whole or 0)
    words = f"{number_words(value)} {unit}{'' if value == 1 else 's'}"
    if match["scale"]:
        return f"{_decimal_words(amount)} {match['scale']} {unit}s"
    if frac and len(frac) == 2 and int(frac):
        cents = int(frac)
        sub_word = sub if cents == 1 else ("pence" if sub == "penny" else sub + "s")
        words += f" and {number_words(cents)} {sub_word}"
    elif frac and len(frac) != 2:
        words = f"{_decimal_words(amount)} {unit}s"
    return words


def _fraction(match: re.Match) -> str:
    num, den = int(match[1]), int(match[2])
    if den == 0 or den > 12 or den == 1:
        return f"{number_words(num)} over {number_words(den)}"
    name = {2: "half", 4: "quarter"}.get(den) or ordinal_words(den)
    if num != 1:
        name = "halves" if name == "half" else name + "s"
    return f"{number_words(num)} {name}"


def _time(match: re.Match) -> str:
    hour, minute = int(match[1]), int(match[2])
    if minute == 0:
        return f"{number_words(hour)} o'clock"
    return f"{number_words(hour)} {'oh ' if minute < 10 else ''}{number_words(minute)}"


def _power(match: re.Match) -> str:
    exponent = match[1]
    return {"2": " squared", "3": " cubed"}.get(exponent, f" to the power of {exponent}")


def _number(match: re.Match) -> str:
    text = match[0].replace(",", "")
    if "." not in text and 1100 <= int(text) < 2100 and "," not in match[0]:
        return year_words(int(text))
    return _decimal_words(text)


def _lines(text: str) -> str:
    """One phrase per line; list markers ("A.", "A)", "(A)") read as a letter and a pause."""
    phrases = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        line = re.sub(r"^\(?([A-Ha-h])[.)]\s+", r"\1, ", line)
        line = re.sub(r"^\(([A-Ha-h])\)\s*", r"\1, ", line)
        phrases.append(line)
    joined = []
    for i, line in enumerate(phrases):
        last = i == len(phrases) - 1
        joined.append(line if last or line[-1] in ".,;:!?" else line + ".")
    return " ".join(joined)


def normalize(text: str) -> str:
    """The text as it is spoken (see the module docstring for the policy)."""
    for pattern, words in _ABBREVIATIONS.items():
        text = re.sub(pattern, words, text)
    text = re.sub(r"_{2,}", " blank ", text)
    text = _lines(text)
    text = re.sub(
        r"(?P<cur>[$£€])\s?(?P<amount>\d[\d,]*(?:\.\d+)?|\.\d+)(?:\s?(?P<scale>million|billion))?",
        _money,
        text,
    )
    text = re.sub(r"(\d[\d,]*(?:\.\d+)?)\s?%", r"\1 percent", text)
    text = re.sub(r"°\s?C\b", " degrees Celsius", text)
    text = re.sub(r"°\s?F\b", " degrees Fahrenheit", text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda m: ordinal_words(int(m[1])), text)
    text = re.sub(r"\b(\d+)\s?/\s?(\d+)\b", _fraction, text)
    text = re.sub(r"\b(\d{1,2}):(\d{2})\b", _time, text)
    text = re.sub(r"\b(1[1-9]\d0|20\d0)'?s\b", lambda m: _decade(int(m[1])), text)
    text = re.sub(r"(?<=\d)(?=[A-Za-z])|(?<=[A-Za-z])(?=\d)", " ", text)
    text = re.sub(rf"(?<=\d) ({'|'.join(_UNITS)})\b", lambda m: " " + _UNITS[m[1]], text)
    text = re.sub(r"\^\s?\(?(-?\w+)\)?", _power, text)
    text = re.sub(rf"(?<={_OPERAND})\s*\*\s*(?={_OPERAND})", " times ", text)
    text = re.sub(r"(?<=\d)\s+x\s+(?=\d)", " times ", text)
    text = re.sub(rf"(?<={_OPERAND})\s+-\s+(?={_OPERAND}|\()", " minus ", text)
    text = re.sub(r"(?<![\w)])-(?=\d)", "minus ", text)
    for symbol, words in _SYMBOLS.items():
        text = text.replace(symbol, words)
    text = re.sub(r"\d[\d,]*\d(?:\.\d+)?|\d(?:\.\d+)?|\.\d+", _number, text)
    text = re.sub(r"[_*|~^{}\[\]\\`]", " ", text)
    text = re.sub(r"\s+([.,;:!?])", r"\1", text)
    return re.sub(r"\s+", " ", text).strip()


def speakable(normalized: str) -> bool:
    """Whether there is anything for an engine to say (at least one letter or digit)."""
    return any(ch.isalnum() for ch in normalized)
