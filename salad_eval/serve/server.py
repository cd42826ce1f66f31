"""``salad-eval serve``'s process: check the inputs, bind the port, load the model ``--model``
names, and run uvicorn until SIGTERM or Ctrl-C.

The model is picked as ``load.py`` picks it (``model_kind``): a SALAD checkpoint, a speech-LLM
family by its config, else a text LLM. Under ``--chat-template`` the adapter is loaded with its
template (so its fingerprint, the ``system_fingerprint`` served, names the template) and the
server renders whole conversations with that template itself; the adapter then reads the
rendered prompts raw (a single user message comes out exactly as the adapter would render it).

The port is bound before the model loads, so a port in use fails in one line before any work.
On SIGTERM uvicorn finishes the requests in flight, the app removes its clip folder, and the
process exits with 143 (salad's commands exit 128 + signal).
"""

from __future__ import annotations

import logging
import os
import socket

import uvicorn

from salad_eval import checks
from salad_eval.errors import SaladError
from salad_eval.models.load import TEXT, load_speech_model, model_kind
from salad_eval.models.text_lm import TextLM, default_dtype
from salad_eval.serve.app import make_app

log = logging.getLogger(__name__)


def api_key_from(env: str | None) -> str | None:
    """The bearer token, from the environment variable ``--api-key-env`` names (never argv)."""
    if env is None:
        return None
    key = os.environ.get(env, "")
    if not key:
        raise SaladError(f"--api-key-env {env}: ${env} is not set; export the key there")
    return key


def load_served(
    name: str,
    model_type: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    chat_template: bool = False,
):
    """(model, its chat format or None, whether it reads audio, its fingerprint)."""
    kind = model_kind(name, model_type)
    dtype = dtype or default_dtype(device)
    if kind == TEXT:
        model = TextLM(name, dtype=dtype, device=device, chat_template=chat_template)
    else:
        model = load_speech_model(
            name, device=device, dtype=dtype, model_type=model_type, chat_template=chat_template
        )
    fingerprint = model.fingerprint
    chat = None
    if chat_template:  # the server renders conversations; the adapter reads them raw
        chat, model.chat = model.chat, None
    return model, chat, kind != TEXT, fingerprint


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use is a one-line error before any work."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise SaladError(f"cannot listen on {host}:{port} ({err.strerror}); pick --port") from None
    sock.set_inheritable(True)
    return sock


def serve(
    model: str,
    *,
    model_type: str | None = None,
    device: str = "cpu",
    dtype: str | None = None,
    chat_template: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key_env: str | None = None,
    max_request_mb: float = 64.0,
    max_audio_seconds: float = 120.0,
    batch_size: int = 8,
    served_model_name: str | None = None,
) -> None:
    """Serve ``model`` until stopped."""
    api_key = api_key_from(api_key_env)
    checks.inputs(device=device, dtype=dtype)
    kind = model_kind(model, model_type)  # a wrong name fails before the port and the model
    if chat_template and kind == "salad":
        raise SaladError(
            "--chat-template applies to external speech LLMs and text LLMs; a SALAD checkpoint "
            "is served in the raw format it was trained on"
        )
    sock = bind(host, port)
    try:
        loaded, chat, audio, fingerprint = load_served(
            model, model_type, device, dtype, chat_template
        )
        name = served_model_name or model
        app = make_app(
            loaded,
            name,
            chat=chat,
            accepts_audio=audio,
            fingerprint=fingerprint,
            api_key=api_key,
            max_request_mb=max_request_mb,
            max_audio_seconds=max_audio_seconds,
            batch_size=batch_size,
        )
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "serving %s as %r at http://%s:%d/v1 (%s)",
            model,
            name,
            shown,
            sock.getsockname()[1],
            "bearer token required" if api_key else "no token",
        )
        config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
