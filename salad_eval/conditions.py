"""The conditions of the gap, and the controls that check a model listens to its audio.

| condition                | model                  | input                                  |
|--------------------------|------------------------|----------------------------------------|
| ``text@base``            | the original text LLM  | the item as text                       |
| ``text@speech``          | the speech LLM         | the same text                          |
| ``speech@speech``        | the speech LLM         | the spoken version                     |
| ``speech@cascade``       | ASR, then the text LLM | the spoken version, transcribed        |
| ``speech@speech:silent`` | the speech LLM         | silence of the same length             |
| ``speech@speech:shuffled``| the speech LLM        | another item's clips                   |

All conditions score the identical items with identical choices, so every comparison is paired.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.home import BadEntry, cached_entry, home
from salad_eval.prompt import Audio, Prompt

TEXT_CONDITIONS = ("text@base", "text@speech")
SPEECH_CONDITIONS = ("speech@speech", "speech@cascade")
CONTROLS = ("speech@speech:silent", "speech@speech:shuffled")
CONDITIONS = TEXT_CONDITIONS + SPEECH_CONDITIONS
SAMPLE_RATE = 16_000


def _flac(samples: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, SAMPLE_RATE, format="FLAC")
    return buffer.getvalue()


def _silence_length(data: bytes, n_samples: int) -> int:
    """A valid silence clip decodes to exactly ``n_samples`` zeros (the file is read as it is)."""
    try:
        samples, rate = sf.read(io.BytesIO(data), dtype="float32")
    except sf.SoundFileError as err:
        raise BadEntry(str(err)) from None
    if rate != SAMPLE_RATE or samples.shape != (n_samples,) or np.any(samples):
        raise BadEntry(f"not {n_samples} samples of silence")
    return n_samples


_CHECKED: set[Path] = set()  # clips this process has verified


def silence_clip(n_samples: int) -> Path:
    """A cached all-zero 16 kHz clip of exactly ``n_samples`` samples (verified once a process)."""
    path = home() / "audio" / "silence" / f"{n_samples}.flac"
    if path not in _CHECKED:
        cached_entry(
            path,
            "silence clip",
            lambda: n_samples,
            lambda n: _flac(np.zeros(n, dtype=np.float32)),
            lambda data: _silence_length(data, n_samples),
            sealed=False,
        )
        _CHECKED.add(path)
    return path


def silent_prompt(prompt: Prompt) -> Prompt:
    """Every audio segment replaced by silence of the same duration (the model hears nothing)."""
    return tuple(
        Audio(str(silence_clip(sf.info(seg.path).frames)), transcript="")
        if isinstance(seg, Audio)
        else seg
        for seg in prompt
    )


def derangement(n: int, seed: int) -> list[int]:
    """A seeded permutation with no fixed point (each item hears another item's clip)."""
    if n < 2:
        raise ValueError("the shuffled-audio control needs at least two items")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    # each item takes the clip of its successor in a random cycle: never its own
    donor = [0] * n
    for pos, item in enumerate(order):
        donor[item] = order[(pos + 1) % n]
    return donor


def shuffled_prompts(prompts: Sequence[Prompt], seed: int) -> list[Prompt]:
    """Each prompt's audio replaced, position by position, by the audio of another item."""
    donors = derangement(len(prompts), seed)
    shuffled = []
    for prompt, donor in zip(prompts, donors, strict=True):
        clips = [seg for seg in prompts[donor] if isinstance(seg, Audio)]
        k = 0
        new: list = []
        for seg in prompt:
            if isinstance(seg, Audio) and clips:
                new.append(clips[k % len(clips)])
                k += 1
            else:
                new.append(seg)
        shuffled.append(tuple(new))
    return shuffled
