"""Chat messages and completion prompts -> the salad prompts a served model reads.

Raw (salad's protocol, the default): the prompt is every message's content parts in order, a
text part as ``Text``, an ``input_audio`` part as ``Audio``, with no role markers: a client that
sends a salad prompt's segments as parts gets exactly what salad scores in process.

``--chat-template``: the messages, roles and all, rendered by the model's template
(``ChatFormat.render_turns``), each clip where its marker lands. One user message renders exactly
as an in-process adapter renders a prompt under ``--chat-template``. ``/v1/completions`` prompts
stay raw, as vLLM's do.

``continue_final_message``: the final assistant message's text is the *continuation* (the choice
to score, or the text a reply continues) and everything before it the context: raw, the earlier
messages' parts; with a template, the earlier messages rendered with the generation prompt and
the continuation without its leading whitespace, as salad's chat format scores a choice after its
context (lm-eval drops the target delimiter there).

A clip arrives as base64 wav. It is checked (wav, not empty, at most ``max_seconds``), downmixed
and resampled to 16 kHz mono, and written as a float wav into the server's clip folder (removed
when the request is answered; the folder when the server stops). Its transcript is unknown: "".
"""

from __future__ import annotations

import base64
import binascii
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.chat import ChatFormat
from salad_eval.errors import SaladError
from salad_eval.prompt import Audio, Prompt, Segment, Text
from salad_eval.serve.protocol import AudioPart, ChatRequest, Message, RequestError
from salad_eval.speech.tts import SAMPLE_RATE, to_16k


@dataclass(frozen=True)
class Rendered:
    """A request as salad reads it: the context, and the continuation when one was marked."""

    prompt: Prompt
    continuation: str | None = None

    @property
    def has_audio(self) -> bool:
        return any(isinstance(seg, Audio) for seg in self.prompt)


class ClipFolder:
    """Where decoded clips live while their request runs (salad's models read clips by path)."""

    def __init__(self, root: Path, max_seconds: float) -> None:
        self.root = root
        self.max_seconds = max_seconds

    @contextmanager
    def request(self) -> Iterator[list[Path]]:
        """The files one request writes (``decode`` appends to the list), removed after it."""
        written: list[Path] = []
        try:
            yield written
        finally:
            for path in written:
                path.unlink(missing_ok=True)

    def decode(self, part: AudioPart, written: list[Path]) -> Audio:
        wave = decode_wav(part.input_audio.data, part.input_audio.format, self.max_seconds)
        path = self.root / f"{uuid.uuid4().hex}.wav"
        written.append(path)
        sf.write(path, wave, SAMPLE_RATE, subtype="FLOAT")
        return Audio(str(path), "")


def decode_wav(data: str, format: str, max_seconds: float) -> np.ndarray:
    """A base64 wav -> float32 mono at 16 kHz; a RequestError says what is wrong with it."""
    if format != "wav":
        raise RequestError(
            f"input_audio format {format!r} is not served; send wav", param="input_audio.format"
        )
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("input_audio data is not base64", param="input_audio.data") from None
    if raw[:4] != b"RIFF" or raw[8:12] != b"WAVE":
        raise RequestError("input_audio data is not a wav file", param="input_audio.data")
    try:
        info = sf.info(io.BytesIO(raw))
        if info.frames == 0:
            raise RequestError("input_audio holds no samples", param="input_audio.data")
        if info.frames / info.samplerate > max_seconds:
            raise RequestError(
                f"input_audio is {info.frames / info.samplerate:.1f} s long; this server takes "
                f"clips of at most {max_seconds:g} s",
                param="input_audio.data",
            )
        wave, rate = sf.read(io.BytesIO(raw), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise RequestError(f"input_audio is not a readable wav ({err})") from None
    return to_16k(wave.mean(axis=1), rate)


def render_chat(
    request: ChatRequest, chat: ChatFormat | None, clips: ClipFolder, written: list[Path]
) -> Rendered:
    """The request's messages as a salad context and, under ``continue_final_message``, the
    continuation (its final assistant message)."""
    messages = list(request.messages)
    continuation = None
    if request.continue_final_message:
        if request.add_generation_prompt:
            raise RequestError(
                "continue_final_message and add_generation_prompt cannot both be true (vLLM)",
                param="add_generation_prompt",
            )
        final = messages.pop()
        if final.role != "assistant":
            raise RequestError(
                "continue_final_message needs a final assistant message to continue",
                param="messages",
            )
        continuation = _text_only(final)
        if chat is not None:
            continuation = continuation.lstrip()
    turns = [(m.role, _segments(m, clips, written)) for m in messages]
    if chat is None:
        prompt: Prompt = tuple(seg for _, segments in turns for seg in segments)
    else:
        generation_prompt = request.add_generation_prompt or continuation is not None
        try:
            prompt = chat.render_turns(turns, add_generation_prompt=generation_prompt)
        except SaladError as err:
            raise RequestError(str(err), param="messages") from None
        except Exception as err:  # a template that raises on these messages (jinja's raise)
            raise RequestError(f"the chat template refused these messages: {err}") from None
    return Rendered(prompt, continuation)


def render_completion(prompt: str) -> Rendered:
    return Rendered((Text(prompt),))


def _segments(message: Message, clips: ClipFolder, written: list[Path]) -> tuple[Segment, ...]:
    if isinstance(message.content, str):
        return (Text(message.content),)
    return tuple(
        Text(part.text) if part.type == "text" else clips.decode(part, written)
        for part in message.content
    )


def _text_only(message: Message) -> str:
    if isinstance(message.content, str):
        return message.content
    if any(part.type != "text" for part in message.content):
        raise RequestError("the final assistant message continued must be text", param="messages")
    return "".join(part.text for part in message.content)
