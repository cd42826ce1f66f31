"""The FastAPI app of ``salad-eval serve``: OpenAI's routes in front of one salad model.

``make_app(model, ...)`` takes any ``Model`` built on salad's scorer and generator (a SALAD
checkpoint, an HF speech-LLM family, a text LLM) and serves:

- ``GET /v1/models``; ``GET /health`` (no token needed, as vLLM's);
- ``POST /v1/chat/completions``: messages with text and ``input_audio`` parts (``render``);
- ``POST /v1/completions``: one text prompt.

A request generates with ``Model.generate`` (``max_tokens`` 0: no reply, ``finish_reason``
"length"), and with ``prompt_logprobs`` (or the legacy ``echo`` + ``logprobs``) also scores its
continuation with ``Model.score`` (``logprobs``); a scoring request that asks for ``max_tokens``
>= 1 gets that reply as well, generated from the whole prompt with the request's own decoding,
as vLLM does. Both go through the ``Batcher``.

Every refusal is OpenAI's error object with a 4xx (401 without the bearer token, 413 past the
body bound, 400 for the rest); an unexpected failure is a 500 of the same shape, logged, and the
server goes on. The bearer token, when set, is compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import shutil
import tempfile
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from salad_eval.chat import ChatFormat
from salad_eval.errors import SaladError
from salad_eval.models.lm_scoring import TokenChoiceScore
from salad_eval.prompt import (
    ChoiceScore,
    Decoding,
    GenerationRequest,
    Reply,
    ScoringRequest,
    Text,
)
from salad_eval.serve import protocol
from salad_eval.serve.batcher import Batcher
from salad_eval.serve.logprobs import (
    echo_logprobs,
    prompt_logprobs,
    split_first_token,
)
from salad_eval.serve.protocol import ChatRequest, CompletionRequest, RequestError
from salad_eval.serve.render import ClipFolder, Rendered, render_chat, render_completion

log = logging.getLogger(__name__)

MAX_REQUEST_MB = 64.0
MAX_AUDIO_SECONDS = 120.0


def make_app(
    model,
    name: str,
    *,
    chat: ChatFormat | None = None,
    accepts_audio: bool = True,
    fingerprint: str | None = None,
    api_key: str | None = None,
    max_request_mb: float = MAX_REQUEST_MB,
    max_audio_seconds: float = MAX_AUDIO_SECONDS,
    batch_size: int = 8,
) -> FastAPI:
    """The app serving ``model`` as ``name``. ``chat``: render chats with this template (the
    model itself then reads prompts raw); ``accepts_audio`` False for a text LLM; ``api_key``:
    the bearer token every ``/v1`` request must carry (None: none needed)."""
    tokenizer = model.tokenizer
    fingerprint = fingerprint or model.fingerprint
    batcher = Batcher(model, batch_size)
    clips: ClipFolder | None = None

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        nonlocal clips
        root = Path(tempfile.mkdtemp(prefix="salad-serve-"))
        clips = ClipFolder(root, max_audio_seconds)
        batcher.start()
        try:
            yield
        finally:
            await batcher.stop()
            shutil.rmtree(root, ignore_errors=True)

    app = FastAPI(title="salad-eval serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.batcher = batcher
    _errors(app)
    app.add_middleware(Guard, api_key=api_key, max_bytes=int(max_request_mb * 2**20))

    def check(request: ChatRequest | CompletionRequest) -> None:
        if request.model != name:
            raise RequestError(
                f"the model {request.model!r} does not exist; this server serves {name!r}",
                status=404,
                type="not_found_error",
                param="model",
            )
        if request.stream:
            raise RequestError("streaming is not served; ask with stream false", param="stream")

    def gate(rendered: Rendered) -> Rendered:
        if rendered.has_audio and not accepts_audio:
            raise RequestError(
                f"{name} is a text LLM; it reads text only (serve a speech LLM for audio)",
                param="messages",
            )
        return rendered

    async def scored(rendered: Rendered, top_k: int):
        """The request's continuation scored per token: (its ChoiceScore, head, tail) where
        head/tail split a text prompt with no marked continuation."""
        head = tail = None
        if rendered.continuation is not None:
            request = ScoringRequest(rendered.prompt, (rendered.continuation,))
        elif rendered.has_audio:
            raise RequestError(
                "prompt_logprobs of a prompt with audio need its continuation marked: "
                "continue_final_message with a final assistant message",
                param="prompt_logprobs",
            )
        else:
            head, tail = split_first_token(tokenizer, "".join(s.text for s in rendered.prompt))
            request = ScoringRequest((Text(head),), (tail,))
        (score,) = await batcher.score(request, top_k)
        return score, head, tail

    async def generated(
        rendered: Rendered, request: ChatRequest | CompletionRequest, max_new_tokens: int
    ) -> tuple[list[Reply], int | None]:
        n = request.n or 1
        if max_new_tokens == 0:
            return [Reply("", 0, truncated=True)] * n, None
        temperature = 1.0 if request.temperature is None else request.temperature
        seed = request.seed
        if seed is None:
            seed = 0 if temperature == 0 else secrets.randbelow(2**31)
        decoding = Decoding(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=1.0 if request.top_p is None else request.top_p,
            samples=n,
            seed=0,  # the seed goes with the request, so differently seeded requests batch
        )
        prompt = rendered.prompt
        if rendered.continuation:  # a reply continues the final message's text
            last = prompt[-1] if prompt else None
            if isinstance(last, Text):
                prompt = (*prompt[:-1], replace(last, text=last.text + rendered.continuation))
            else:
                prompt = (*prompt, Text(rendered.continuation))
        asked = GenerationRequest(prompt, until=request.stop_sequences(), seed=seed)
        return await batcher.generate(asked, decoding)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return protocol.models_body(name)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest) -> dict[str, Any]:
        check(request)
        if request.logprobs:
            raise RequestError(
                "log-probs of generated tokens are not served; prompt_logprobs scores the "
                "prompt (continue_final_message marks the continuation)",
                param="logprobs",
            )
        assert clips is not None
        with clips.request() as written:
            rendered = gate(render_chat(request, chat, clips, written))
            entries = None
            if request.prompt_logprobs is not None:
                score, _, _ = await scored(rendered, request.prompt_logprobs)
                entries = prompt_logprobs(score, tokenizer)
            replies, positions = await generated(rendered, request, request.max_new_tokens())
        prompt_tokens = len(entries) if entries is not None else positions
        return protocol.chat_body(
            name,
            fingerprint,
            [(r.text, _finish(r)) for r in replies],
            protocol.usage(prompt_tokens, sum(r.n_tokens for r in replies)),
            entries,
        )

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest) -> dict[str, Any]:
        check(request)
        max_new_tokens = request.max_new_tokens()
        if request.logprobs is not None and (not request.echo or max_new_tokens > 0):
            raise RequestError(
                "logprobs are served for the echoed prompt only: ask with echo true and "
                "max_tokens 0, or use prompt_logprobs",
                param="logprobs",
            )
        rendered = render_completion(request.prompt)
        entries = legacy = None
        wanted = [k for k in (request.prompt_logprobs, request.logprobs) if k is not None]
        if wanted:
            score, head, tail = await scored(rendered, max(wanted))
            if request.prompt_logprobs is not None:
                entries = prompt_logprobs(_top(score, request.prompt_logprobs), tokenizer)
            if request.logprobs is not None:
                legacy = echo_logprobs(
                    _top(score, request.logprobs), tokenizer, head, tail, request.prompt
                )
        replies, positions = await generated(rendered, request, max_new_tokens)
        prompt_tokens = len(entries) if entries is not None else positions
        if prompt_tokens is None and legacy is not None:
            prompt_tokens = len(legacy["tokens"])
        echoed = request.prompt if request.echo else ""
        return protocol.completion_body(
            name,
            fingerprint,
            [(echoed + r.text, _finish(r), legacy) for r in replies],
            protocol.usage(prompt_tokens, sum(r.n_tokens for r in replies)),
            entries,
        )

    return app


def _finish(reply: Reply) -> str:
    return "length" if reply.truncated else "stop"


def _top(score: ChoiceScore, k: int) -> ChoiceScore:
    """``score`` with each token's alternatives cut to the best ``k``."""
    if not isinstance(score, TokenChoiceScore):
        return score  # refused by the logprobs builders, which say why
    return replace(score, tokens=tuple(replace(t, top=t.top[:k]) for t in score.tokens))


def _errors(app: FastAPI) -> None:
    """Every failure as OpenAI's error object."""

    @app.exception_handler(RequestError)
    async def refused(_request: Request, err: RequestError) -> JSONResponse:
        return JSONResponse(
            protocol.error_body(err.message, err.type, err.code, err.param), err.status
        )

    @app.exception_handler(SaladError)
    async def salad_refused(_request: Request, err: SaladError) -> JSONResponse:
        body = protocol.error_body(str(err), "invalid_request_error", "invalid_request")
        return JSONResponse(body, 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p != 'body') or 'body'}: {e['msg']}"
            for e in err.errors()[:5]
        ]
        body = protocol.error_body("; ".join(problems), "invalid_request_error", "invalid_request")
        return JSONResponse(body, 400)

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        body = protocol.error_body(str(err.detail), kind, str(err.status_code))
        return JSONResponse(body, err.status_code, headers=getattr(err, "headers", None))

    @app.exception_handler(Exception)
    async def failed(_request: Request, err: Exception) -> JSONResponse:
        log.exception("a request failed")
        body = protocol.error_body(
            f"internal error: {type(err).__name__}: {err}", "internal_error", "internal_error"
        )
        return JSONResponse(body, 500)


class Guard:
    """ASGI middleware in front of everything: the bearer token on ``/v1`` routes (401), then
    the body bound (413), checked on the declared length and on the bytes that arrive."""

    def __init__(self, app, api_key: str | None, max_bytes: int) -> None:
        self.app = app
        self.api_key = api_key
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        if self.api_key is not None and scope["path"].startswith("/v1"):
            given = headers.get("authorization", b"").decode("latin-1")
            expected = f"Bearer {self.api_key}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                message = "a valid API key is needed: Authorization: Bearer <key>"
                await _send_error(send, 401, message, "authentication_error", "invalid_api_key")
                return
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _send_error(send, 413, self._too_large(), "invalid_request_error", "too_large")
            return
        body = bytearray()
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _send_error(
                    send, 413, self._too_large(), "invalid_request_error", "too_large"
                )
                return
            more = message.get("more_body", False)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"the request body is over this server's bound of {self.max_bytes / 2**20:g} MB"


async def _send_error(send, status: int, message: str, kind: str, code: str) -> None:
    body = json.dumps(protocol.error_body(message, kind, code)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
