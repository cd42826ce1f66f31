"""The wire format of ``salad-eval serve``: OpenAI's chat and legacy completions, with vLLM's
extras (``prompt_logprobs``, ``add_generation_prompt``, ``continue_final_message``).

Requests are pydantic models, as in vLLM's ``entrypoints/openai/protocol.py``: fields a client
may send that salad does not use (``frequency_penalty``, ``user``, ``stream_options`` ...) are
ignored, as OpenAI-compatible servers do, but a field salad reads must have its type (strict: no
``"5"`` for 5) and range, else the request is a 400. A feature salad does not serve (streaming,
tools, log-probs of generated tokens) is refused in one line rather than silently dropped.

Responses are plain dicts in OpenAI's shapes; ``prompt_logprobs`` sits where vLLM puts it: at the
top level of a chat completion, in each choice of a completion (and, for a client that reads it
as chat has it, at the top level of a completion too).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_TOP_LOGPROBS = 20  # vLLM's default --max-logprobs
MAX_TOKENS_LIMIT = 8192  # a reply longer than this is a mistake or an attack, not a question
DEFAULT_CHAT_MAX_TOKENS = 256  # vLLM fills the context; a served salad model stops here
DEFAULT_COMPLETION_MAX_TOKENS = 16  # OpenAI's legacy completions default


class RequestError(Exception):
    """A request the server refuses: its HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.type, self.param = message, status, type, param
        self.code = code or {400: "invalid_request", 401: "invalid_api_key", 404: "not_found"}.get(
            status, str(status)
        )


def error_body(
    message: str, type: str, code: str | None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object: what every refusal of this server looks like."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class _Strict(BaseModel):
    """Unknown fields ignored; known ones checked strictly (a JSON number for a number)."""

    model_config = ConfigDict(extra="ignore", strict=True)


class TextPart(_Strict):
    type: Literal["text"]
    text: str


class InputAudio(_Strict):
    data: str  # base64 of the file's bytes
    format: str = "wav"


class AudioPart(_Strict):
    type: Literal["input_audio"]
    input_audio: InputAudio


Part = Annotated[TextPart | AudioPart, Field(discriminator="type")]


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]


class _Sampling(_Strict):
    """Fields chat and completions share: how to generate, and vLLM's prompt log-probs."""

    model: str
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int | None = Field(None, ge=1, le=64)
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = None
    prompt_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def stop_sequences(self) -> tuple[str, ...]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        if any(not s for s in stops):
            raise RequestError("stop sequences must not be empty", param="stop")
        return tuple(stops)


class ChatRequest(_Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_LIMIT)
    logprobs: bool | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False

    def max_new_tokens(self) -> int:
        given = self.max_completion_tokens
        given = self.max_tokens if given is None else given
        return DEFAULT_CHAT_MAX_TOKENS if given is None else given


class CompletionRequest(_Sampling):
    """``POST /v1/completions`` (one prompt, as text)."""

    prompt: str
    max_tokens: int | None = Field(None, ge=0, le=MAX_TOKENS_LIMIT)
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    def max_new_tokens(self) -> int:
        return DEFAULT_COMPLETION_MAX_TOKENS if self.max_tokens is None else self.max_tokens


def models_body(name: str) -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "created": 0, "owned_by": "salad"}],
    }


def usage(prompt_tokens: int | None, completion_tokens: int) -> dict[str, Any]:
    """OpenAI's usage; ``prompt_tokens`` counts the prompt's input positions (audio frames
    included), None where the model did not say."""
    total = None if prompt_tokens is None else prompt_tokens + completion_tokens
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": total,
    }


def chat_body(
    model: str,
    fingerprint: str,
    choices: list[tuple[str, str]],
    usage_: dict[str, Any],
    prompt_logprobs: list | None,
) -> dict[str, Any]:
    """A chat completion: ``choices`` as (content, finish_reason)."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": i,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            for i, (text, finish) in enumerate(choices)
        ],
        "usage": usage_,
        "prompt_logprobs": prompt_logprobs,
    }


def completion_body(
    model: str,
    fingerprint: str,
    choices: list[tuple[str, str, dict | None]],
    usage_: dict[str, Any],
    prompt_logprobs: list | None,
) -> dict[str, Any]:
    """A legacy completion: ``choices`` as (text, finish_reason, logprobs)."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": fingerprint,
        "choices": [
            {
                "index": i,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
                "prompt_logprobs": prompt_logprobs,
            }
            for i, (text, finish, logprobs) in enumerate(choices)
        ],
        "usage": usage_,
        "prompt_logprobs": prompt_logprobs,
    }
