"""Named voices (``engine/name[:param=value,...]``) and voice sets.

A voice name is all a user types and all a manifest records: engine, speaker and prosody
parameters. Parsing validates the engine, the speaker and the parameter names, so a typo fails
before any synthesis starts, with the closest valid names in the message.

``recorded`` is the voice of a task's own recordings (``recorded.py``): no engine speaks it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from salad_eval.errors import SaladError

KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
PIPER_VOICES = ("joe",)
ESPEAK_LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
RECORDED = "recorded"  # the data's own recordings: a voice with no engine, name or parameters
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2")

# engine -> (speaker names, prosody parameters with their allowed ranges)
ENGINES: dict[str, tuple[tuple[str, ...], dict[str, tuple[float, float]]]] = {
    "kokoro": (KOKORO_VOICES, {"speed": (0.5, 2.0)}),
    "piper": (
        PIPER_VOICES,
        {"length_scale": (0.5, 2.0), "noise_scale": (0.0, 1.5), "noise_w": (0.0, 1.5)},
    ),
    "espeak": (
        ESPEAK_LANGUAGES + tuple(f"{lg}+{v}" for lg in ESPEAK_LANGUAGES for v in ESPEAK_VARIANTS),
        {"rate": (80.0, 450.0), "pitch": (0.0, 99.0)},
    ),
    "coqui": ((), {"speed": (0.5, 2.0)}),  # any Coqui model name or local model directory
}

VOICE_SETS: dict[str, tuple[str, ...]] = {
    # the clearest Kokoro voice (Whisper WER 0.6% vs 5.7% for jf_alpha on 40 demo items) and Piper
    "default": ("kokoro/jm_kumo", "piper/joe"),
    # every engine, several speakers and prosodies: for robustness of the gap to the voice
    "diverse": (
        "kokoro/jf_alpha",
        "kokoro/jm_kumo",
        "kokoro/jf_nezumi:speed=1.15",
        "piper/joe",
        "piper/joe:length_scale=1.25,noise_scale=0.8",
        "espeak/en-us",
        "espeak/en+f3:rate=150",
    ),
    "kokoro": tuple(f"kokoro/{name}" for name in KOKORO_VOICES),
    # speakers the tiny preset never trains on (it trains on Piper and eSpeak): `make demo`
    "heldout": ("kokoro/jm_kumo", "kokoro/jf_alpha"),
}


@dataclass(frozen=True)
class Voice:
    """One engine, speaker and set of prosody parameters (sorted, so equal voices name alike)."""

    engine: str
    name: str
    params: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        if self.engine == RECORDED:
            return RECORDED
        if not self.params:
            return f"{self.engine}/{self.name}"
        return f"{self.engine}/{self.name}:" + ",".join(f"{k}={v:g}" for k, v in self.params)


def _closest(word: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(word, options, n=3, cutoff=0.4)
    return ", ".join(matches or options[:5])


def all_voice_names() -> list[str]:
    names = [f"{engine}/{name}" for engine, (names, _) in ENGINES.items() for name in names]
    return [*names, RECORDED]


def parse_voice(spec: str) -> Voice:
    """``engine/name[:param=value,...]`` -> Voice; SaladError naming the closest valid voices."""
    head, _, tail = spec.strip().partition(":")
    if head == RECORDED:
        if tail:
            raise SaladError(f"voice {spec!r}: the recorded voice takes no parameters")
        return Voice(RECORDED, "")
    engine, slash, name = head.partition("/")
    if not slash or engine not in ENGINES or not name:
        options = all_voice_names() + list(VOICE_SETS)
        raise SaladError(f"unknown voice {spec!r}; closest: {_closest(head, options)}")
    names, allowed = ENGINES[engine]
    if names and name not in names:
        options = [f"{engine}/{n}" for n in names]
        raise SaladError(f"unknown voice {spec!r}; closest: {_closest(head, options)}")
    params = {}
    for pair in filter(None, tail.split(",")):
        key, eq, value = pair.partition("=")
        key = key.strip()
        if key not in allowed or not eq:
            raise SaladError(
                f"bad parameter {pair!r} in voice {spec!r}; {engine} takes "
                + ", ".join(f"{k}=<{lo:g}..{hi:g}>" for k, (lo, hi) in allowed.items())
            )
        try:
            number = float(value)
        except ValueError:
            raise SaladError(f"parameter {key} in voice {spec!r} must be a number") from None
        lo, hi = allowed[key]
        if not lo <= number <= hi:
            raise SaladError(f"parameter {key}={value} in voice {spec!r} is outside {lo:g}..{hi:g}")
        params[key] = number
    return Voice(engine, name, tuple(sorted(params.items())))


def exposure(voice: str, trained: list[str]) -> str:
    """Whether training heard ``voice``: ``seen`` (this very voice), ``speaker seen`` (its
    speaker with other prosody) or ``unseen``; a listening result means most on unseen ones."""
    heard = {parse_voice(v) for v in trained}
    v = parse_voice(voice)
    if v in heard:
        return "seen"
    if any((h.engine, h.name) == (v.engine, v.name) for h in heard):
        return "speaker seen"
    return "unseen"


def resolve_voices(spec: str) -> tuple[Voice, ...]:
    """A comma-separated list of voice sets and voices -> distinct voices, in order.

    ``default``, ``kokoro/jf_alpha,piper/joe:length_scale=1.2,noise_w=0.5``: a comma-separated
    piece with ``=`` but no ``/`` is one more parameter of the voice before it.
    """
    pieces: list[str] = []
    for piece in (p.strip() for p in spec.split(",")):
        if "=" in piece and "/" not in piece and pieces:
            pieces[-1] += "," + piece
        elif piece:
            pieces.append(piece)
    voices: list[Voice] = []
    for piece in pieces:
        if piece in VOICE_SETS:
            found = [parse_voice(v) for v in VOICE_SETS[piece]]
        elif "/" not in piece and piece.partition(":")[0] != RECORDED:
            raise SaladError(
                f"unknown voice set {piece!r}; closest: "
                f"{_closest(piece, list(VOICE_SETS) + all_voice_names())}"
            )
        else:
            found = [parse_voice(piece)]
        voices.extend(v for v in found if v not in voices)
    if not voices:
        raise SaladError(f"no voices in {spec!r}; try --voices default")
    return tuple(voices)
