"""Many requests to OpenAI-compatible servers, concurrently, each retried until it answers.

The requests go through the official ``openai`` client (``AsyncOpenAI``), with its own retries
off: salad retries here so that every kind of transient fault is covered the same way (429 with
``Retry-After``, 5xx, timeouts, dropped connections, and a 200 whose body is not JSON), and a
request that still fails comes back as ``Failed`` with the reason, never as a guess. Requests are
spread round-robin over the ``--base-url``s, at most ``concurrency`` in flight in all.

The API key is read from the environment variable the user names (``--api-key-env``) when a
request is made; it is never stored on an object that is logged, hashed or written.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import httpx2
import openai

from salad_eval.errors import SaladError
from salad_eval.prompt import Failed

log = logging.getLogger(__name__)

RETRIED_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}  # transient, as openai's own client
MAX_RETRY_AFTER = 300.0  # seconds: a server asking for longer is treated as failing


@dataclass(frozen=True)
class Connection:
    """Where the endpoint is and how requests to it behave (none of it changes a result)."""

    base_urls: tuple[str, ...]
    api_key_env: str | None = None
    concurrency: int = 8
    timeout: float = 120.0  # seconds per request
    max_retries: int = 6
    backoff: float = 1.0  # seconds before the first retry; doubled each time, with jitter
    prices: tuple[float, float] | None = None  # per million tokens in and out: a cost estimate

    def api_key(self) -> str:
        """The key from ``api_key_env``; a server without auth accepts any (``EMPTY``)."""
        if self.api_key_env is None:
            return "EMPTY"
        key = os.environ.get(self.api_key_env)
        if not key:
            raise SaladError(
                f"--api-key-env {self.api_key_env}: that environment variable is not set; "
                "export the key in it (a key is never passed on the command line)"
            )
        return key


@dataclass
class Usage:
    """What a run asked of the endpoint: requests, retries, failures, tokens in and out."""

    requests: int = 0
    retries: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    server: dict = field(default_factory=dict)  # system_fingerprint and version headers seen

    def add(self, reply: dict, headers: httpx2.Headers) -> None:
        usage = reply.get("usage") or {}
        self.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        self.completion_tokens += int(usage.get("completion_tokens") or 0)
        if reply.get("system_fingerprint"):
            self.server.setdefault("system_fingerprint", set()).add(reply["system_fingerprint"])
        for name, value in headers.items():
            if "version" in name.lower() or name.lower() == "server":
                self.server.setdefault(name.lower(), set()).add(value)

    def to_dict(self) -> dict:
        out = {k: v for k, v in vars(self).items() if k != "server"}
        out["server"] = {k: sorted(v) for k, v in sorted(self.server.items())}
        return out


class Unreachable(SaladError):
    """No server answers at the base URL."""


class _Retry(Exception):
    def __init__(self, reason: str, wait: float | None = None):
        super().__init__(reason)
        self.wait = wait


class Client:
    """POSTs JSON bodies to ``<base_url><path>`` and returns each reply's JSON, or ``Failed``."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.urls = connection.base_urls
        self.usage = Usage()

    def post_all(self, path: str, bodies: Sequence[dict]) -> list[dict | Failed]:
        """Every body's reply, in order, at most ``concurrency`` in flight."""
        if not bodies:
            return []
        return asyncio.run(self._post_all(path, list(bodies)))

    def models(self) -> dict[str, list[dict] | None]:
        """Per base URL, the models its ``/models`` lists, or None where no server answers;
        any other trouble (401, not JSON) is a one-line error: the probe."""
        return asyncio.run(self._models())

    def route(self, urls: Sequence[str]) -> None:
        """Send this client's requests to ``urls`` only (the servers that serve its model)."""
        self.urls = tuple(urls)

    def _clients(self, urls: Sequence[str]) -> list[openai.AsyncOpenAI]:
        key = self.connection.api_key()
        return [
            openai.AsyncOpenAI(
                base_url=url, api_key=key, max_retries=0, timeout=self.connection.timeout
            )
            for url in urls
        ]

    async def _models(self) -> dict[str, list[dict] | None]:
        clients = self._clients(self.connection.base_urls)
        try:
            return {
                url: await _listed(client)
                for url, client in zip(self.connection.base_urls, clients, strict=True)
            }
        finally:
            for client in clients:
                await client.close()

    async def _post_all(self, path: str, bodies: list[dict]) -> list[dict | Failed]:
        clients = self._clients(self.urls)
        slots = asyncio.Semaphore(self.connection.concurrency)

        async def one(n: int, body: dict) -> dict | Failed:
            async with slots:
                return await self._post(clients[n % len(clients)], path, body)

        try:
            return list(await asyncio.gather(*(one(n, b) for n, b in enumerate(bodies))))
        finally:
            for client in clients:
                await client.close()

    async def _post(self, client: openai.AsyncOpenAI, path: str, body: dict) -> dict | Failed:
        self.usage.requests += 1
        for attempt in range(self.connection.max_retries + 1):
            try:
                return await self._attempt(client, path, body)
            except _Retry as retry:
                if attempt == self.connection.max_retries:
                    self.usage.failed += 1
                    return Failed(f"{retry} (after {attempt + 1} tries)")
                self.usage.retries += 1
                delay = self.connection.backoff * 2**attempt * random.uniform(0.5, 1.0)
                log.debug("retrying %s: %s", path, retry)
                await asyncio.sleep(max(delay, retry.wait or 0.0))
            except _Refused as refused:
                self.usage.failed += 1
                return Failed(str(refused))
        raise AssertionError("unreachable")

    async def _attempt(self, client: openai.AsyncOpenAI, path: str, body: dict) -> dict:
        try:
            response = await client.post(path, body=body, cast_to=httpx2.Response)
        except openai.AuthenticationError:
            raise SaladError(
                f"{client.base_url}: 401 unauthorized during the run; check --api-key-env"
            ) from None
        except openai.APIStatusError as err:
            reason = f"HTTP {err.status_code}"
            if err.status_code in RETRIED_STATUS:
                raise _Retry(reason, retry_after(err.response.headers)) from None
            raise _Refused(f"{reason}: {_message(err.response)}") from None
        except openai.APITimeoutError:
            raise _Retry(f"no reply within {self.connection.timeout:g} s") from None
        except openai.APIConnectionError:
            raise _Retry("connection failed") from None
        try:
            reply = json.loads(response.text)
        except ValueError:
            raise _Retry("the reply is not valid JSON") from None
        if not isinstance(reply, dict) or not isinstance(reply.get("choices"), list):
            raise _Retry("the reply has no choices")
        self.usage.add(reply, response.headers)
        return reply


async def _listed(client: openai.AsyncOpenAI, tries: int = 6) -> list[dict] | None:
    where = str(client.base_url).rstrip("/")
    try:
        for attempt in range(tries):  # a server still loading its model answers 503 (llama.cpp)
            try:
                response = await client.get("/models", cast_to=httpx2.Response)
                break
            except openai.APIStatusError as err:
                if err.status_code != 503 or attempt == tries - 1:
                    raise
                await asyncio.sleep(2**attempt)
        listed = json.loads(response.text).get("data")
        if not isinstance(listed, list):
            raise ValueError
        return [m for m in listed if isinstance(m, dict)]
    except openai.AuthenticationError:
        raise SaladError(
            f"{where}: 401 unauthorized; put the key in the environment variable that "
            "--api-key-env names"
        ) from None
    except openai.APIStatusError as err:
        raise SaladError(f"{where}/models: HTTP {err.status_code}") from None
    except (openai.APIConnectionError, openai.APITimeoutError):
        return None
    except (ValueError, AttributeError):
        raise SaladError(f"{where}/models: the reply is not an OpenAI model list") from None


class _Refused(Exception):
    """A 4xx other than 401/429: the server will not answer this request however often asked."""


def _message(response: httpx2.Response) -> str:
    try:
        error = response.json().get("error")
        message = error.get("message") if isinstance(error, dict) else error
        return str(message or response.text)[:200]
    except (ValueError, AttributeError):
        return response.text[:200]


def retry_after(headers: httpx2.Headers) -> float | None:
    """``Retry-After`` in seconds (a number or an HTTP date), capped; None when absent."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):  # neither seconds nor an HTTP date: back off as usual
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
