"""Named voices (``engine/name[:param=value,...][+perturbation...]``) and voice sets.

A voice name is all a user types and all a manifest records: engine, speaker, prosody parameters
and the acoustic condition the clip is heard in, e.g.
``piper/joe+noise=babble:snr=5+reverb:rt60=0.6`` (perturbations apply in the order written;
``perturb.py`` makes them). Parsing validates the engine, the speaker, the perturbations and
every parameter name and range, so a typo fails before any synthesis starts, with the closest
valid names (or all known ones) in the message.

``recorded`` is the voice of a task's own recordings (``recorded.py``): no engine speaks it;
it takes perturbations like any voice (``recorded+noise=white:snr=5``).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from salad_eval.errors import SaladError
from salad_eval.speech import coqui

KOKORO_VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
# Kokoro-82M v1.0's English voices (the SALAD paper's TTS; ``af_heart`` is its best). No wheel
# ships them: they work where their voice file is found (``tts.kokoro_style``), else one-line error.
KOKORO_ENGLISH = (
    "af_heart",
    "af_alloy",
    "af_aoede",
    "af_bella",
    "af_jessica",
    "af_kore",
    "af_nicole",
    "af_nova",
    "af_river",
    "af_sarah",
    "af_sky",
    "am_adam",
    "am_echo",
    "am_eric",
    "am_fenrir",
    "am_liam",
    "am_michael",
    "am_onyx",
    "am_puck",
    "am_santa",
    "bf_alice",
    "bf_emma",
    "bf_isabella",
    "bf_lily",
    "bm_daniel",
    "bm_fable",
    "bm_george",
    "bm_lewis",
)
PIPER_VOICES = ("joe",)
ESPEAK_LANGUAGES = ("en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc")
RECORDED = "recorded"  # the data's own recordings: a voice with no engine, name or parameters
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3", "f4", "klatt", "klatt2")

# engine -> (speaker names, prosody parameters with their allowed ranges; None: a name, a string)
ENGINES: dict[str, tuple[tuple[str, ...], dict[str, tuple[float, float] | None]]] = {
    "kokoro": (KOKORO_VOICES + KOKORO_ENGLISH, {"speed": (0.5, 2.0)}),
    "piper": (
        PIPER_VOICES,
        {"length_scale": (0.5, 2.0), "noise_scale": (0.0, 1.5), "noise_w": (0.0, 1.5)},
    ),
    "espeak": (
        ESPEAK_LANGUAGES + tuple(f"{lg}+{v}" for lg in ESPEAK_LANGUAGES for v in ESPEAK_VARIANTS),
        {"rate": (80.0, 450.0), "pitch": (0.0, 99.0)},
    ),
    # any Coqui zoo model or local model folder; its speakers and languages are its own (coqui.py)
    "coqui": ((), {"speaker": None, "language": None, "speed": (0.5, 2.0)}),
}

SNR_LADDER = (20, 10, 5, 0)
# noise of every colour, rooms, rate, channel, distortion and loss, and two compositions
ROBUSTNESS_GRID = (
    "noise=white:snr=5",
    "noise=pink:snr=5",
    "noise=brown:snr=5",
    "noise=babble:snr=5",
    "reverb:rt60=0.3",
    "reverb:rt60=0.6",
    "reverb:rt60=1.2",
    "speed:rate=0.8",
    "speed:rate=1.25",
    "tempo:rate=1.25",
    "telephone",
    "codec=mp3:level=0.9",
    "clip:percent=10",
    "packetloss:rate=0.1",
    "reverb:rt60=0.6+noise=babble:snr=5",
    "telephone+packetloss:rate=0.05",
)

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
    # an SNR ladder on the clearest held-out voice: where does listening break down?
    "noise": ("kokoro/jm_kumo", *(f"kokoro/jm_kumo+noise=white:snr={snr}" for snr in SNR_LADDER)),
    # one voice in each acoustic condition (and two compositions)
    "robustness": ("kokoro/jm_kumo", *(f"kokoro/jm_kumo+{p}" for p in ROBUSTNESS_GRID)),
    # the paper's Kokoro voices (English; their voice files come from the hub or a local path)
    "kokoro-en": tuple(
        f"kokoro/{name}" for name in ("af_heart", "af_bella", "am_michael", "bf_emma", "bm_george")
    ),
}

# perturbation -> (kinds, the first the default; parameters with (low, high, default))
PERTURBATIONS: dict[str, tuple[tuple[str, ...], dict[str, tuple[float, float, float]]]] = {
    "noise": (
        ("white", "pink", "brown", "babble"),
        {"snr": (-20.0, 60.0, 10.0), "talkers": (1.0, 8.0, 4.0)},
    ),
    "reverb": ((), {"rt60": (0.1, 1.5, 0.5), "room": (3.0, 12.0, 5.0)}),  # room: length, m
    "speed": ((), {"rate": (0.5, 2.0, 1.0)}),  # resampled: tempo and pitch together
    "tempo": ((), {"rate": (0.5, 2.0, 1.0)}),  # time-stretched: the pitch stays
    "telephone": (
        ("mulaw", "alaw"),
        {"low": (50.0, 1000.0, 300.0), "high": (1000.0, 3900.0, 3400.0)},
    ),
    # mp3: libsndfile's compression level (0.9 ~ 24 kbit/s at 16 kHz); pcm: fewer bits a sample
    "codec": (("mp3", "pcm"), {"level": (0.0, 0.95, 0.75), "bits": (2.0, 16.0, 8.0)}),
    "clip": ((), {"percent": (0.1, 50.0, 5.0)}),  # of the samples, clipped at their level
    "packetloss": ((), {"rate": (0.0, 0.9, 0.1), "ms": (5.0, 200.0, 20.0)}),
}


def perturbation_help() -> str:
    """All perturbations and parameters on one line (what a typo's error message lists)."""
    parts = []
    for name, (kinds, params) in PERTURBATIONS.items():
        kind = "=" + "|".join(kinds) if kinds else ""
        ranges = ",".join(f"{k}=<{lo:g}..{hi:g}>" for k, (lo, hi, _) in params.items())
        parts.append(f"{name}{kind}:{ranges}")
    return "; ".join(parts)


@dataclass(frozen=True)
class Perturbation:
    """One acoustic perturbation as written (parameters sorted; the kind made explicit)."""

    name: str
    kind: str = ""
    params: tuple[tuple[str, float], ...] = ()

    def __str__(self) -> str:
        head = f"{self.name}={self.kind}" if self.kind else self.name
        return head + (":" + ",".join(f"{k}={v:g}" for k, v in self.params) if self.params else "")

    @property
    def settings(self) -> dict[str, float]:
        """Every parameter, defaults included: what the clip's sidecar records."""
        _, allowed = PERTURBATIONS[self.name]
        return {k: default for k, (_, _, default) in allowed.items()} | dict(self.params)


def parse_perturbation(spec: str, voice: str) -> Perturbation:
    """``name[=kind][:param=value,...]`` -> Perturbation; one-line SaladError listing them all."""
    head, _, tail = spec.strip().partition(":")
    name, _, kind = head.partition("=")
    if name not in PERTURBATIONS:
        close = difflib.get_close_matches(name, list(PERTURBATIONS), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise SaladError(
            f"unknown perturbation {name!r} in voice {voice!r}{hint}; known: " + perturbation_help()
        )
    kinds, allowed = PERTURBATIONS[name]
    listing = f"{name} takes " + perturbation_help().split("; ")[list(PERTURBATIONS).index(name)]
    if kind and kind not in kinds or not kinds and kind:
        raise SaladError(f"bad kind {kind!r} of {name} in voice {voice!r}; {listing}")
    params = {}
    for pair in filter(None, tail.split(",")):
        key, eq, value = pair.partition("=")
        if key.strip() not in allowed or not eq:
            raise SaladError(f"bad parameter {pair!r} of {name} in voice {voice!r}; {listing}")
        try:
            number = float(value)
        except ValueError:
            raise SaladError(
                f"parameter {key} of {name} in voice {voice!r} must be a number; " + listing
            ) from None
        lo, hi, _ = allowed[key.strip()]
        if not lo <= number <= hi:
            raise SaladError(
                f"parameter {key}={value} of {name} in voice {voice!r} is outside {lo:g}..{hi:g}"
            )
        params[key.strip()] = number
    return Perturbation(name, kind or (kinds[0] if kinds else ""), tuple(sorted(params.items())))


@dataclass(frozen=True)
class Voice:
    """One engine, speaker and set of prosody parameters (sorted, so equal voices name alike)."""

    engine: str
    name: str
    params: tuple[tuple[str, float | str], ...] = ()
    acoustics: tuple[Perturbation, ...] = ()  # applied to the clean clip, in this order

    def __str__(self) -> str:
        voice = RECORDED if self.engine == RECORDED else f"{self.engine}/{self.name}"
        if self.params:
            voice += ":" + ",".join(f"{k}={_value(v)}" for k, v in self.params)
        return voice + "".join(f"+{p}" for p in self.acoustics)

    @property
    def clean(self) -> Voice:
        """The voice that speaks (what a TTS engine, or a recording, makes): no acoustics."""
        return Voice(self.engine, self.name, self.params)


def _value(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _closest(word: str, options: list[str]) -> str:
    matches = difflib.get_close_matches(word, options, n=3, cutoff=0.4)
    return ", ".join(matches or options[:5])


def all_voice_names() -> list[str]:
    names = [f"{engine}/{name}" for engine, (names, _) in ENGINES.items() for name in names]
    return [*names, RECORDED]


def _split_acoustics(spec: str) -> tuple[str, list[str]]:
    """The speaking voice and the perturbations of a spec (``+`` also joins espeak variants)."""
    speaker, *rest = spec.strip().split("+")
    acoustics: list[str] = []
    for piece in rest:
        variant = piece.partition(":")[0] in ESPEAK_VARIANTS and speaker.startswith("espeak/")
        if variant and not acoustics:
            speaker += "+" + piece
        else:
            acoustics.append(piece)
    return speaker, acoustics


def parse_voice(spec: str) -> Voice:
    """``engine/name[:param=value,...][+perturbation...]`` -> Voice; SaladError naming the closest
    valid voices, or listing every perturbation and its parameters."""
    speaker, acoustics = _split_acoustics(spec)
    perturbations = tuple(parse_perturbation(p, spec) for p in acoustics)
    return _parse_speaker(speaker, spec, perturbations)


def _parse_speaker(speaker: str, spec: str, acoustics: tuple[Perturbation, ...]) -> Voice:
    head, _, tail = speaker.partition(":")
    if head == RECORDED:
        if tail:
            raise SaladError(f"voice {spec!r}: the recorded voice takes no parameters")
        return Voice(RECORDED, "", (), acoustics)
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
                + ", ".join(
                    f"{k}=<name>" if span is None else f"{k}=<{span[0]:g}..{span[1]:g}>"
                    for k, span in allowed.items()
                )
            )
        if allowed[key] is None:
            params[key] = value.strip()
            continue
        try:
            number = float(value)
        except ValueError:
            raise SaladError(f"parameter {key} in voice {spec!r} must be a number") from None
        lo, hi = allowed[key]
        if not lo <= number <= hi:
            raise SaladError(f"parameter {key}={value} in voice {spec!r} is outside {lo:g}..{hi:g}")
        params[key] = number
    if engine == "coqui":  # its model's own speakers and languages, read before any model loads
        coqui.check_voice(name, params.get("speaker"), params.get("language"), spec)
    return Voice(engine, name, tuple(sorted(params.items())), acoustics)


def exposure(voice: str, trained: list[str]) -> str:
    """Whether training heard ``voice``: ``seen`` (this very voice), ``speaker seen`` (its
    speaker with other prosody) or ``unseen``; a listening result means most on unseen ones."""
    heard = {parse_voice(v).clean for v in trained}
    v = parse_voice(voice).clean  # the speaker and prosody, whatever room or line it is heard in
    if v in heard:
        return "seen"
    if any((h.engine, h.name) == (v.engine, v.name) for h in heard):
        return "speaker seen"
    return "unseen"


def resolve_voices(spec: str) -> tuple[Voice, ...]:
    """A comma-separated list of voice sets and voices -> distinct voices, in order.

    ``default``, ``kokoro/jf_alpha,piper/joe:length_scale=1.2,noise_w=0.5``: a comma-separated
    piece that is a bare ``key=value`` is one more parameter of the voice (or perturbation) before
    it. A set followed by perturbations (``heldout+reverb:rt60=0.6``) puts each of its voices there.
    """
    pieces: list[str] = []
    for piece in (p.strip() for p in spec.split(",")):
        if re.fullmatch(r"\w+=[^/+:=]*", piece.partition("+")[0]) and pieces:
            pieces[-1] += "," + piece
        elif piece:
            pieces.append(piece)
    voices: list[Voice] = []
    for piece in pieces:
        head, plus, acoustics = piece.partition("+")
        if head in VOICE_SETS:
            found = [parse_voice(v + plus + acoustics) for v in VOICE_SETS[head]]
        elif "/" not in piece and piece.partition(":")[0].partition("+")[0] != RECORDED:
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
