"""The core vocabulary shared by tasks, synthesis, models and scoring.

An *item* is one multiple-choice question of a task. Its context is a sequence of parts: plain
``Text`` that always stays text, and ``Speak`` parts that are read aloud in speech conditions. A
*condition* turns an item into a *prompt*: a sequence of ``Text`` and ``Audio`` segments. A
``ScoringRequest`` is a prompt plus the texts of the choices (continuations, delimiter included);
every model answers it with one ``ChoiceScore`` per choice.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Text:
    """Text that the model reads as text in every condition."""

    text: str


@dataclass(frozen=True)
class Speak:
    """Text that is spoken in speech conditions, read as text otherwise.

    ``recording`` is the data's own recording of ``text`` (a file), when the task has one: the
    voice ``recorded`` plays it; TTS voices speak ``text`` whether or not there is one.
    """

    text: str
    recording: str | None = None


@dataclass(frozen=True)
class Audio:
    """A spoken segment: a 16 kHz mono clip on disk, with the text it speaks."""

    path: str
    transcript: str


Part = Text | Speak
Segment = Text | Audio
Prompt = tuple[Segment, ...]


@dataclass(frozen=True)
class Item:
    """One multiple-choice item, paired across all conditions by (task, id)."""

    task: str
    id: str
    domain: str
    context: tuple[Part, ...]
    choices: tuple[str, ...]
    target: int
    shots: int = 0  # solved examples at the start of its context
    # a generation item (``tasks.load_items(answer="generate")``): its choices are the option
    # letters ("A", "B", ...) and these the option texts they stand for, in the same order
    options: tuple[str, ...] = ()

    @property
    def text_context(self) -> str:
        """The all-text context, exactly as the text benchmark renders it."""
        return "".join(part.text for part in self.context)

    @property
    def spoken_texts(self) -> tuple[str, ...]:
        return tuple(part.text for part in self.context if isinstance(part, Speak))


@dataclass(frozen=True)
class ScoringRequest:
    prompt: Prompt
    choices: tuple[str, ...]


@dataclass(frozen=True)
class ChoiceScore:
    """Log-probability of one choice as a continuation of the prompt."""

    logprob: float
    n_tokens: int
    n_chars: int
    is_greedy: bool


def text_prompt(item: Item) -> Prompt:
    """The item as all text (conditions ``text@base`` and ``text@speech``)."""
    return (Text(item.text_context),)


def prompt_text(prompt: Prompt) -> str:
    """The text a prompt stands for, audio replaced by what it speaks."""
    return "".join(seg.text if isinstance(seg, Text) else seg.transcript for seg in prompt)


@dataclass(frozen=True)
class Decoding:
    """How a model generates a reply: greedy (``temperature`` 0) unless sampled. A sampled
    reply is seeded by ``seed``, its request and its sample number, never by its batch."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    samples: int = 1
    seed: int = 1234

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class GenerationRequest:
    """A prompt to answer by generation; the reply ends at the first of ``until`` (the task's
    stop sequences) or at the model's end of sequence, else it is cut off by the token limit."""

    prompt: Prompt
    until: tuple[str, ...] = ()
    seed: int = 0  # a sampled reply s draws from a generator seeded by (seed, s)


@dataclass(frozen=True)
class Reply:
    """One generated reply: its text (stop sequence excluded), its length in tokens, and
    whether the token limit cut it off before it ended."""

    text: str
    n_tokens: int
    truncated: bool


@dataclass(frozen=True)
class Failed:
    """A request that an endpoint could not answer after its retries: it is never cached (a
    rerun asks again), and its item leaves every condition of the run, named with ``reason``."""

    reason: str


@runtime_checkable
class Model(Protocol):
    """Every model adapter (text LLM, SALAD speech LLM, cascade, external speech LLM)."""

    @property
    def fingerprint(self) -> str:
        """A content hash of everything that moves this model's scores."""
        ...

    @property
    def dtype(self) -> str:
        """Its LLM's weight dtype, e.g. ``"float32"``: one per gap run, in the manifest."""
        ...

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]: ...
