"""A model behind an OpenAI-compatible endpoint, as a salad ``Model``: ``openai-chat:<model id>``
or ``openai-completions:<model id>`` wherever a model is named (``--model``, ``--text-model``;
the cascade's LLM is the text model).

It answers the same requests as an in-process adapter: ``generate`` through the API's
completions, ``score`` through the server's prompt log-probs where it gives them (vLLM's
``prompt_logprobs``, or legacy ``echo`` + ``logprobs``; ``probe`` finds which, before any work).
A request that fails after its retries comes back as ``Failed``: the engines never cache it, so
a rerun asks only for what failed. Its fingerprint is the API, the model id and the prompt
format, not the URL: the same model on another server or behind several shares its cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import soundfile as sf

from salad_eval.endpoint.client import Client, Connection, Unreachable
from salad_eval.endpoint.protocol import (
    LOGLIK_STYLES,
    PATHS,
    choice_score,
    endpoint_name,
    generation_body,
    loglik_body,
    prompt_text,
    reply_of,
)
from salad_eval.errors import SaladError
from salad_eval.home import home, json_bytes, read_entry, write_entry
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Decoding,
    Failed,
    GenerationRequest,
    Prompt,
    Reply,
    ScoringRequest,
    Text,
)

log = logging.getLogger(__name__)

FORMAT = 1  # of the requests this adapter sends: in the fingerprint


def connect(call, names: Sequence[str | None]) -> Connection | None:
    """The connection of a call's endpoint models (``CallOptions``), or None when it names
    none; ``--base-url`` goes with an endpoint model, and one never comes without the other."""
    used = [name for name in names if name and endpoint_name(name)]
    if not used:
        if call.base_url:
            raise SaladError(
                "--base-url is for models behind an endpoint (--model or --text-model "
                "openai-chat:<id> or openai-completions:<id>), and this run names none"
            )
        return None
    if not call.base_url:
        raise SaladError(
            f"{used[0]} is a model behind an endpoint: pass --base-url, the server's /v1 URL "
            "(e.g. http://127.0.0.1:8000/v1)"
        )
    return Connection(
        tuple(url.rstrip("/") for url in call.base_url),
        call.api_key_env,
        call.concurrency,
        call.request_timeout,
        call.max_retries,
        prices=None if call.prices is None else tuple(call.prices),
    )


def load_endpoint(
    name: str,
    connection: Connection,
    chat_template: bool,
    answers: Sequence[str],
    role: str,
) -> EndpointModel:
    """An endpoint model, probed (reachable, the key taken, the model listed, and prompt
    log-probs if ``answers`` has ``loglik``) before any work."""
    model = EndpointModel(name, connection, chat_template)
    if role == "speech" and model.api != "chat":
        raise SaladError(
            f"--model {name}: spoken prompts go to a server as chat audio parts; use "
            f"openai-chat:{model.model_id}"
        )
    model.probe(loglik="loglik" in answers)
    return model


class EndpointModel:
    """The ``Model`` interface over HTTP (see the module docstring)."""

    dtype = None  # the server's business: a run's dtype check covers in-process models only

    def __init__(self, name: str, connection: Connection, chat_template: bool = False):
        parsed = endpoint_name(name)
        if parsed is None:
            raise SaladError(f"{name!r} is not an endpoint model (openai-chat:<id>, ...)")
        self.name = name
        self.api, self.model_id = parsed
        if not connection.base_urls:
            raise SaladError(f"{name}: an endpoint model needs --base-url (the server's /v1 URL)")
        self.connection = connection
        self.chat_template = chat_template
        self.client = Client(connection)
        self.loglik_style: str | None = None  # found by ``probe``
        self.offline: str | None = None  # why the server is not reachable, if it is not
        self.audio_seconds = 0.0

    @property
    def fingerprint(self) -> str:
        prompt_format = "chat" if self.chat_template else "raw"
        key = f"{FORMAT}|{self.api}|{self.model_id}|{prompt_format}"
        return f"endpoint-{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    def probe(self, loglik: bool) -> None:
        """Before any work, in one line each: the server answers, takes the key, lists the
        model; with ``loglik``, it returns prompt log-probs in one of the two styles.

        A server that is down is no error for a model this cache holds answers from (its
        ``seen`` record): the run reads them, and stops at the first request it must ask."""
        listings = self.client.models()
        down = [url for url, listed in listings.items() if listed is None]
        if len(down) == len(listings):
            seen = read_entry(self._seen(), "endpoint record", json.loads)
            reason = f"no server answers at --base-url {down[0]}"
            if seen is None or (loglik and seen.get("loglik") is None):
                raise Unreachable(f"{reason}; start the server or fix the URL")
            log.warning("%s: %s; answering from the cache only", self.name, reason)
            self.offline, self.loglik_style = reason, seen.get("loglik")
            return
        if down:
            raise Unreachable(f"no server answers at --base-url {down[0]}; start it or drop it")
        serving = [url for url, listed in listings.items() if self.model_id in _ids(listed)]
        if not serving:
            shown = ", ".join(sorted(set().union(*map(_ids, listings.values())))[:5]) or "none"
            raise SaladError(
                f"{self.name}: no server at --base-url lists model {self.model_id!r} (they "
                f"list: {shown})"
            )
        self.client.route(serving)  # several servers, several models: each to its own
        # a server may list its models to anyone: one token checks the key and the model
        request = GenerationRequest((Text("The sky is"),))
        (reply,) = self.client.post_all(
            PATHS[self.api], [generation_body(self.api, self.model_id, request, Decoding(1), 0)]
        )
        if isinstance(reply, Failed):
            raise SaladError(f"{self.name}: the server does not answer a request ({reply.reason})")
        if loglik:
            self.loglik_style = self._loglik_style()
        write_entry(self._seen(), json_bytes({"model": self.name, "loglik": self.loglik_style}))

    def _loglik_style(self) -> str:
        for style in LOGLIK_STYLES:
            if style == "echo" and self.api == "chat":
                continue  # echo is a completions parameter only
            body = loglik_body(self.api, self.model_id, (Text("The sky is"),), " blue", style)
            (reply,) = self.client.post_all(PATHS[self.api], [body])
            if not isinstance(reply, Failed) and not isinstance(
                choice_score(reply, "The sky is", " blue", style), Failed
            ):
                return style
        raise SaladError(
            f"{self.name}: the server returns no prompt log-probs (neither vLLM's "
            "prompt_logprobs nor echo + logprobs), so it cannot score choices; use "
            "--answer generate"
        )

    def _seen(self) -> Path:
        return home() / "endpoints" / f"{self.fingerprint}.json"

    def _post_all(self, bodies: list[dict]) -> list[dict | Failed]:
        if self.offline is not None:
            raise SaladError(
                f"{self.name}: a request is not in the cache, and the server is down "
                f"({self.offline})"
            )
        return self.client.post_all(PATHS[self.api], bodies)

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore] | Failed]:
        """One request per choice; a request fails whole if any of its choices fails."""
        if self.loglik_style is None:
            self.probe(loglik=True)
        style = self.loglik_style
        asked = [
            (n, self._choice(choice), request.prompt)
            for n, request in enumerate(requests)
            for choice in request.choices
        ]
        bodies = [loglik_body(self.api, self.model_id, p, c, style) for _, c, p in asked]
        self._count_audio(r.prompt for r in requests)
        replies = self._post_all(bodies)
        results: list[list] = [[] for _ in requests]
        for (n, choice, prompt), reply in zip(asked, replies, strict=True):
            context = None if self.api == "chat" else prompt_text(prompt, self.api)
            results[n].append(
                reply if isinstance(reply, Failed) else choice_score(reply, context, choice, style)
            )
        return [_whole(scores) for scores in results]

    def generate(
        self, requests: Sequence[GenerationRequest], decoding: Decoding, batch_size: int = 8
    ) -> list[list[Reply] | Failed]:
        """``decoding.samples`` replies per request, one HTTP request each."""
        asked = [(n, s) for n in range(len(requests)) for s in range(decoding.samples)]
        bodies = [
            generation_body(self.api, self.model_id, requests[n], decoding, s) for n, s in asked
        ]
        self._count_audio(r.prompt for r in requests)
        replies = self._post_all(bodies)
        results: list[list] = [[] for _ in requests]
        for (n, _), reply in zip(asked, replies, strict=True):
            results[n].append(
                reply
                if isinstance(reply, Failed)
                else reply_of(self.api, reply, decoding.max_new_tokens)
            )
        return [_whole(replies) for replies in results]

    def report(self) -> dict:
        """The manifest's record of this endpoint: never the key, only where and what."""
        usage, prices = self.client.usage.to_dict(), self.connection.prices
        return {
            "api": self.api,
            "model_id": self.model_id,
            "base_urls": list(self.client.urls),
            "loglik": self.loglik_style,
            "concurrency": self.connection.concurrency,
            "audio_seconds": round(self.audio_seconds, 2),
            **usage,
            "cost": None
            if prices is None
            else (usage["prompt_tokens"] * prices[0] + usage["completion_tokens"] * prices[1])
            / 1e6,
        }

    def _choice(self, choice: str) -> str:
        # a chat turn has no target delimiter, as in-process chat scoring (salad_eval.chat)
        return choice.removeprefix(" ") if self.chat_template else choice

    def _count_audio(self, prompts: Sequence[Prompt]) -> None:
        for prompt in prompts:
            for seg in prompt:
                if isinstance(seg, Audio):
                    self.audio_seconds += sf.info(seg.path).duration


def _ids(listed: list[dict]) -> set[str]:
    """A model list's ids and aliases (llama.cpp lists its ``--alias`` names as aliases)."""
    return {str(m.get("id")) for m in listed} | {
        str(a) for m in listed for a in m.get("aliases") or ()
    }


def _whole(answers: list) -> list | Failed:
    failed = [a for a in answers if isinstance(a, Failed)]
    return failed[0] if failed else answers
