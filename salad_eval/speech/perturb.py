"""Acoustic conditions: a clean clip heard through noise, a room, a rate change, a phone line, a
codec, clipping or packet loss (``voice+noise=babble:snr=5+reverb:rt60=0.6``, see ``voices.py``).

A perturbation applies to a finished clean clip, whatever made it (a TTS voice or a recording),
so every perturbation composes with every voice. Each perturbed clip is a pure function of its
clean clip's bytes, the perturbations with all their settings and the synthesis seed; it is stored
in the same verified audio store as synthesized clips, under the hash of exactly those fields
(its sidecar records them: the manifest of the acoustic condition). The text it speaks is the
clean clip's: a perturbation never changes what the text conditions read.

Seeds: a condition's room (its impulse response) derives from the synthesis seed and the voice
name, so every item of a condition is heard in the same room; noise, babble offsets and lost
packets derive from the clip's own key too, so no two clips share noise.

Babble is other items' clean clips of the same task and voice, never the item's own (nor any clip
that speaks one of the item's own texts): several talkers, each looped from a seeded offset,
mixed at equal loudness, then scaled to the SNR like any other noise.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import io
import json
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, fftconvolve, resample_poly, sosfiltfilt

from salad_eval.speech import store
from salad_eval.speech.manifest import ManifestRow
from salad_eval.speech.store import SAMPLE_RATE, StoredClip
from salad_eval.speech.voices import Perturbation, Voice

log = logging.getLogger(__name__)

VERSION = 1  # how perturbations are made; part of every perturbed clip's key
_PEAK = 0.99  # a mixture louder than this is scaled down whole (its SNR unchanged), not clipped


def _seed(*parts: object) -> int:
    payload = json.dumps(parts, ensure_ascii=False, default=str).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "little")


def _rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


# -- noise -------------------------------------------------------------------------------------


def coloured_noise(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white (flat), pink (power ~ 1/f) or brown (power ~ 1/f^2) noise of ``n`` samples."""
    white = rng.standard_normal(n)
    if kind != "white":
        spectrum = np.fft.rfft(white)
        f = np.fft.rfftfreq(n)
        f[0] = f[1]  # no infinite DC
        spectrum /= f ** (0.5 if kind == "pink" else 1.0)  # amplitude ~ f^-1/2 or f^-1
        white = np.fft.irfft(spectrum, n)
    return white / (_rms(white) or 1.0)


def babble(n: int, donors: Sequence[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS babble of ``n`` samples: each donor clip looped from a seeded offset, all
    equally loud."""
    mix = np.zeros(n)
    for clip in donors:
        start = int(rng.integers(len(clip)))
        talker = np.resize(np.roll(clip.astype(np.float64), -start), n)
        mix += talker / (_rms(talker) or 1.0)
    return mix / (_rms(mix) or 1.0)


def add_noise(audio: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``audio`` plus ``noise`` scaled so that power(audio) / power(noise) is ``snr_db``."""
    gain = _rms(audio) / (_rms(noise) or 1.0) * 10 ** (-snr_db / 20)
    return audio + gain * noise


def measured_snr(clean: np.ndarray, noisy: np.ndarray) -> float:
    """SNR in dB of ``noisy`` against its clean reference, allowing for an overall gain (a loud
    mixture is scaled down whole): the clean part is the projection onto ``clean``."""
    clean, noisy = clean.astype(np.float64), noisy.astype(np.float64)
    gain = float(noisy @ clean / (clean @ clean))
    residual = noisy - gain * clean
    return 10 * np.log10(np.sum((gain * clean) ** 2) / np.sum(residual**2))


# -- rooms -------------------------------------------------------------------------------------


@functools.cache
def impulse_response(rt60: float, room: float, seed: int) -> np.ndarray:
    """A room's impulse response (pyroomacoustics image sources in a shoebox of length ``room``
    m, seeded source and microphone positions) whose measured RT60 is ``rt60`` s.

    Sabine's formula overestimates the absorption an image-source room needs, so the target is
    corrected once by the RT60 the first response measures (T30, extrapolated to 60 dB)."""
    import pyroomacoustics as pra  # noqa: PLC0415 - deferred: optional pyroomacoustics, loaded on this path only

    rng = np.random.default_rng(seed)
    dims = np.array([room, 0.75 * room, 3.0])
    source = dims * rng.uniform([0.2, 0.2, 0.45], [0.4, 0.8, 0.6])
    mic = dims * rng.uniform([0.6, 0.2, 0.35], [0.8, 0.8, 0.45])

    def build(target: float) -> np.ndarray:
        absorption, order = pra.inverse_sabine(target, dims)
        shoebox = pra.ShoeBox(
            dims,
            fs=SAMPLE_RATE,
            materials=pra.Material(absorption),
            max_order=order,
            air_absorption=False,
        )
        shoebox.add_source(source)
        shoebox.add_microphone(mic)
        shoebox.compute_rir()
        return np.asarray(shoebox.rir[0][0], dtype=np.float64)

    first = build(rt60)
    return build(rt60 * rt60 / measured_rt60(first))


def measured_rt60(ir: np.ndarray) -> float:
    """RT60 in s of an impulse response (Schroeder decay, T30 extrapolated: pyroomacoustics)."""
    import pyroomacoustics as pra  # noqa: PLC0415 - deferred: optional pyroomacoustics, loaded on this path only

    return float(pra.experimental.measure_rt60(ir, fs=SAMPLE_RATE, decay_db=30))


def reverberate(audio: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``audio`` in the room of ``ir``, as loud as before, with its reverberant tail."""

    ir = ir[int(np.argmax(np.abs(ir))) :]  # from the direct path: no delay before the speech
    wet = fftconvolve(audio.astype(np.float64), ir)
    return wet * (_rms(audio) / (_rms(wet) or 1.0))


# -- rate, channel, distortion, loss -----------------------------------------------------------


def speed(audio: np.ndarray, rate: float) -> np.ndarray:
    """Played ``rate`` times faster: tempo and pitch together (polyphase resampling)."""
    up = 100
    return resample_poly(audio, up, round(up * rate))


def tempo(audio: np.ndarray, rate: float) -> np.ndarray:
    """``rate`` times faster at the same pitch (librosa's phase-vocoder time stretch)."""
    import librosa  # noqa: PLC0415 - deferred: optional librosa, loaded on this path only

    return librosa.effects.time_stretch(audio.astype(np.float32), rate=rate).astype(np.float64)


def telephone(audio: np.ndarray, kind: str, low: float, high: float) -> np.ndarray:
    """A narrow-band phone line: band-pass ``low``-``high`` Hz, 8 kHz, G.711 mu-law or A-law."""
    sos = butter(6, [low, high], btype="bandpass", fs=SAMPLE_RATE, output="sos")
    narrow = resample_poly(sosfiltfilt(sos, audio), 1, 2)
    scale = np.max(np.abs(narrow)) or 1.0
    x = np.clip(narrow / scale, -1, 1)
    if kind == "mulaw":
        mu = 255.0
        coded = np.round(np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu) * 127) / 127
        x = np.sign(coded) * np.expm1(np.abs(coded) * np.log1p(mu)) / mu
    else:  # A-law
        a, ax = 87.6, np.abs(x)
        y = np.where(ax < 1 / a, a * ax, 1 + np.log(np.maximum(a * ax, 1e-12))) / (1 + np.log(a))
        y = np.round(np.sign(x) * y * 127) / 127
        ay = np.abs(y) * (1 + np.log(a))
        x = np.sign(y) * np.where(ay < 1, ay / a, np.exp(ay - 1) / a)
    return resample_poly(x * scale, 2, 1)


def codec(audio: np.ndarray, kind: str, level: float, bits: float) -> np.ndarray:
    """Lossy coding: MP3 through libsndfile at compression ``level`` (higher: fewer bits), or
    linear PCM with ``bits`` bits a sample."""
    if kind == "pcm":
        steps = 2 ** (int(bits) - 1)
        scale = np.max(np.abs(audio)) or 1.0
        return np.round(audio / scale * steps) / steps * scale
    buffer = io.BytesIO()
    sf.write(
        buffer,
        np.clip(audio, -1, 1),
        SAMPLE_RATE,
        format="MP3",
        subtype="MPEG_LAYER_III",
        compression_level=level,
        bitrate_mode="CONSTANT",
    )
    buffer.seek(0)
    decoded, _ = sf.read(buffer, dtype="float64")
    return decoded[: len(audio)]


def clip(audio: np.ndarray, percent: float) -> np.ndarray:
    """Hard clipping of the loudest ``percent`` % of the samples (at that level)."""
    level = np.percentile(np.abs(audio), 100 - percent)
    return np.clip(audio, -level, level)


def packet_loss(audio: np.ndarray, rate: float, ms: float, rng: np.random.Generator) -> np.ndarray:
    """Each packet of ``ms`` milliseconds lost (silence, no concealment) with probability
    ``rate``."""
    size = max(1, round(SAMPLE_RATE * ms / 1000))
    lost = rng.random(-(-len(audio) // size)) < rate
    return audio * ~np.repeat(lost, size)[: len(audio)]


# -- a voice's chain ---------------------------------------------------------------------------


def room_seed(voice: Voice, step: int, seed: int) -> int:
    """The room of one condition: every item of the condition is heard in it."""
    return _seed("room", str(voice), step, seed)


def apply(
    audio: np.ndarray, voice: Voice, seed: int, clip_key: str, donors: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """The clean 16 kHz clip ``audio`` (key ``clip_key``) through ``voice``'s perturbations in
    order; ``donors`` are the babble talkers. A pure function of its arguments."""
    x = audio.astype(np.float64)
    for step, p in enumerate(voice.acoustics):
        rng = np.random.default_rng(_seed("clip", str(voice), step, seed, clip_key))
        x = _one(x, p, rng, room_seed(voice, step, seed), donors)
    peak = np.max(np.abs(x)) if x.size else 0.0
    return (x * (_PEAK / peak if peak > _PEAK else 1.0)).astype(np.float32)


def _one(x: np.ndarray, p: Perturbation, rng, room: int, donors) -> np.ndarray:
    s = p.settings
    if p.name == "noise":
        if p.kind == "babble":
            noise = babble(len(x), donors, rng)
        else:
            noise = coloured_noise(p.kind, len(x), rng)
        return add_noise(x, noise, s["snr"])
    if p.name == "reverb":
        return reverberate(x, impulse_response(s["rt60"], s["room"], room))
    if p.name == "speed":
        return speed(x, s["rate"])
    if p.name == "tempo":
        return tempo(x, s["rate"])
    if p.name == "telephone":
        return telephone(x, p.kind, s["low"], s["high"])
    if p.name == "codec":
        return codec(x, p.kind, s["level"], s["bits"])
    if p.name == "clip":
        return clip(x, s["percent"])
    if p.name == "packetloss":
        return packet_loss(x, s["rate"], s["ms"], rng)
    raise AssertionError(p.name)  # voices.PERTURBATIONS and this dispatch name the same set


def talkers(voice: Voice) -> int:
    """How many babble talkers ``voice`` needs (0: no babble)."""
    return max(
        (int(p.settings["talkers"]) for p in voice.acoustics if p.kind == "babble"), default=0
    )


@functools.cache
def _libraries() -> dict[str, str]:
    found = {}
    for package in ("pyroomacoustics", "librosa", "scipy", "soundfile", "numpy"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def clip_fields(
    base: dict, base_key: str, base_sha256: str, voice: Voice, seed: int, donors: Sequence[str]
) -> dict:
    """What a perturbed clip is made from: its key is the hash of exactly this, and its sidecar
    records it (every setting, defaults included, and the babble donors' keys)."""
    return {
        "text": base["text"],
        "base": base_key,
        "base_sha256": base_sha256,
        "voice": str(voice),
        "acoustics": [{"name": p.name, "kind": p.kind, **p.settings} for p in voice.acoustics],
        "donors": list(donors),
        "seed": seed,
        "perturbation": VERSION,
        "libraries": _libraries(),
    }


def choose_donors(
    own_texts: set[str], pool: Sequence[tuple[str, str, str]], item_id: str, n: int, seed: int
) -> list[str]:
    """Keys of ``n`` babble talkers for one item: clips of *other* items (``pool`` holds
    (item id, normalized text, key)) that speak none of the item's own texts."""
    others = sorted({k for owner, text, k in pool if owner != item_id and text not in own_texts})
    rng = np.random.default_rng(_seed("donors", item_id, seed))
    if len(others) <= n:
        return others
    return [others[i] for i in sorted(rng.choice(len(others), n, replace=False))]


def perturbed_clip(fields: dict, voice: Voice, problems: list[str]) -> tuple[StoredClip, bool]:
    """The verified perturbed clip of ``fields``, made from its clean clip unless stored."""
    key = store.key_of(fields)
    stored = store.stored_clip(key, problems)
    if stored is not None:
        return stored, False
    donors = [store.read_clip(k) for k in fields["donors"]]
    audio = apply(store.read_clip(fields["base"]), voice, fields["seed"], fields["base"], donors)
    return store.write_clip(fields, audio), True


def perturb_rows(items, clean_rows: dict, voices: Sequence[Voice], seed: int):
    """Manifest rows of every item in every perturbed voice, from the clean rows (keyed by
    (task, item id, clean voice)); returns (rows, {voice: (made, cached, failed clips)}).

    A row keeps its clean row's clip check (did the voice say the words?): how well the words
    survive the acoustics is what the cascade's WER measures, on these very clips."""
    rows, counts, problems = [], {}, []
    for voice in voices:
        made = cached = failed = 0
        need = talkers(voice)
        pools: dict[str, list[tuple[str, str, str]]] = {}
        for item in items:
            row = clean_rows[(item.task, item.id, str(voice.clean))]
            if row.status == "ok" and need:
                pools.setdefault(item.task, []).extend(
                    (item.id, c.normalized, _key_of(c)) for c in row.clips
                )
        for item in items:
            row = replace(clean_rows[(item.task, item.id, str(voice.clean))], voice=str(voice))
            if row.status != "ok":
                rows.append(row)
                continue
            own = {c.normalized for c in row.clips}
            donors = choose_donors(own, pools.get(item.task, []), item.id, need, seed)
            if need and not donors:
                reason = "babble needs other items' clips of this task and voice (raise --limit)"
                rows.append(
                    ManifestRow(
                        row.task, row.item_id, row.voice, "failed", row.clips, reason=reason
                    )
                )
                continue
            clips = []
            for c in row.clips:
                key = _key_of(c)
                fields = clip_fields({"text": c.normalized}, key, c.sha256, voice, seed, donors)
                try:
                    stored, new = perturbed_clip(fields, voice, problems)
                except (ValueError, RuntimeError) as err:
                    failed += 1
                    reason = f"perturbation failed: {type(err).__name__}: {err}".splitlines()[0]
                    break
                made, cached = made + new, cached + (not new)
                path = str(store.clip_path(store.key_of(fields)))
                clips.append(replace(c, path=path, sha256=stored.sha256, seconds=stored.seconds))
            else:
                seconds = round(sum(c.seconds for c in clips), 4)
                rows.append(replace(row, clips=tuple(clips), seconds=seconds))
                continue
            rows.append(
                ManifestRow(row.task, row.item_id, row.voice, "failed", row.clips, reason=reason)
            )
        counts[str(voice)] = (made, cached, failed)
    for problem in problems[:1]:
        more = f"; and {len(problems) - 1} more" if len(problems) > 1 else ""
        log.info("audio store: made again: %s%s", problem, more)
    return rows, counts


def _key_of(clip) -> str:
    """A manifest clip's store key (its file is ``<key>.flac``)."""

    return Path(clip.path).stem
