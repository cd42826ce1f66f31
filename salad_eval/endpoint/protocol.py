"""salad's requests as OpenAI-compatible request bodies, and the replies back as salad's answers.

Two APIs, as lm-eval's ``local-chat-completions`` and ``local-completions``:

- **chat** (``/chat/completions``): the prompt is one user message whose content parts keep the
  prompt's order, text as ``{"type": "text"}`` and each clip as ``{"type": "input_audio",
  "input_audio": {"data": <base64 wav>, "format": "wav"}}`` (OpenAI's audio input). A generation
  asks for the assistant's reply; a log-likelihood puts the choice in a final assistant message
  and asks vLLM to continue it, not to open a new turn (``continue_final_message: true``,
  ``add_generation_prompt: false``; vLLM ``ChatCompletionRequest``).
- **completions** (``/completions``): the prompt is the text itself, raw; audio cannot go there.

A choice's log-likelihood is read from one of two fields:

- ``prompt_logprobs`` (vLLM's extra parameter, chat and completions): the reply's top-level
  ``prompt_logprobs`` is a list with one entry per prompt token, ``None`` for the first, else a
  dict ``{token_id: {"logprob", "rank", "decoded_token"}}`` holding the prompt's own token
  (vLLM ``protocol.py``: ``prompt_logprobs: list[dict[int, Logprob] | None]``). The choice is
  the trailing tokens whose ``decoded_token``s spell it.
- ``echo`` + ``logprobs`` on completions (OpenAI's legacy API, also vLLM's): ``choices[0].logprobs``
  has ``tokens``, ``token_logprobs``, ``top_logprobs`` and ``text_offset`` over the whole prompt;
  the choice is the tokens at or after the context's length.

As lm-eval's ``encode_pair``, whitespace that ends the context is scored with the choice (a
chat template's generation prompt ends in a newline): the whitespace-only tokens just before the
choice count as its own.

A choice is greedy when each of its tokens is the most likely one (rank 1, or the top of
``top_logprobs``), as lm-eval's ``is_greedy``.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import soundfile as sf

from salad_eval.errors import SaladError
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Decoding,
    Failed,
    GenerationRequest,
    Prompt,
    Reply,
    Text,
)

APIS = {"openai-chat": "chat", "openai-completions": "completions"}
PATHS = {"chat": "/chat/completions", "completions": "/completions"}
LOGLIK_STYLES = ("prompt_logprobs", "echo")


def endpoint_name(name: str) -> tuple[str, str] | None:
    """``(api, model id)`` of ``openai-chat:<id>`` / ``openai-completions:<id>``; None for any
    other model name (a path, a hub id, an asset)."""
    prefix, sep, model_id = name.partition(":")
    if not sep or prefix not in APIS:
        return None
    if not model_id:
        raise SaladError(f"{name!r}: name the model after the colon, e.g. {prefix}:gpt-4o")
    return APIS[prefix], model_id


def wav_bytes(path: str) -> bytes:
    """A clip as the bytes of a 16-bit PCM wav: the store's FLAC clips decode to the very same
    samples (both lossless, 16-bit), and wav is what every chat API takes (OpenAI: wav, mp3)."""
    if Path(path).suffix.lower() == ".wav":
        return Path(path).read_bytes()
    samples, rate = sf.read(path, dtype="int16")
    out = io.BytesIO()
    sf.write(out, samples, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


def content_parts(prompt: Prompt) -> list[dict]:
    """The prompt as chat content parts, in its order (audio as base64 wav bytes)."""
    parts: list[dict] = []
    for seg in prompt:
        if isinstance(seg, Audio):
            data = base64.b64encode(wav_bytes(seg.path)).decode("ascii")
            parts.append({"type": "input_audio", "input_audio": {"data": data, "format": "wav"}})
        elif seg.text:
            parts.append({"type": "text", "text": seg.text})
    return parts


def prompt_text(prompt: Prompt, api: str) -> str:
    if any(isinstance(seg, Audio) for seg in prompt):
        raise ValueError(f"the {api} API reads text only; an audio prompt needs openai-chat")
    return "".join(seg.text for seg in prompt if isinstance(seg, Text))


def generation_body(
    api: str, model_id: str, request: GenerationRequest, decoding: Decoding, sample: int
) -> dict:
    """One sampled (or the greedy) reply to ``request``; sample ``s`` is seeded by (seed, s)."""
    body: dict = {
        "model": model_id,
        "max_tokens": decoding.max_new_tokens,
        "temperature": decoding.temperature,
        "top_p": decoding.top_p,
        "n": 1,
        "seed": (request.seed + sample) % 2**31,
    }
    if request.until:
        body["stop"] = list(request.until)
    if api == "chat":
        body["messages"] = [{"role": "user", "content": content_parts(request.prompt)}]
    else:
        body["prompt"] = prompt_text(request.prompt, api)
    return body


def loglik_body(api: str, model_id: str, prompt: Prompt, choice: str, style: str) -> dict:
    """Ask for the log-probs of ``prompt + choice``'s tokens (nothing generated but 1 token)."""
    body: dict = {"model": model_id, "temperature": 0.0}
    if style == "echo":
        body.update(prompt=prompt_text(prompt, api) + choice, echo=True, logprobs=1, max_tokens=0)
        return body
    body.update(max_tokens=1, prompt_logprobs=0)  # 0: the prompt's own token only, with its rank
    if api == "chat":
        body["messages"] = [
            {"role": "user", "content": content_parts(prompt)},
            {"role": "assistant", "content": choice},
        ]
        body.update(add_generation_prompt=False, continue_final_message=True)
    else:
        body["prompt"] = prompt_text(prompt, api) + choice
    return body


def reply_of(api: str, reply: dict, max_new_tokens: int) -> Reply | Failed:
    """A chat or completion reply as a salad ``Reply`` (truncated: stopped by the token limit)."""
    try:
        choice = reply["choices"][0]
        text = choice["message"]["content"] if api == "chat" else choice["text"]
        n_tokens = int((reply.get("usage") or {}).get("completion_tokens") or 0)
    except (KeyError, IndexError, TypeError, ValueError):
        return Failed("the reply has no text")
    return Reply(
        text=text or "",
        n_tokens=min(n_tokens, max_new_tokens),
        truncated=choice.get("finish_reason") == "length",
    )


def choice_score(reply: dict, context: str | None, choice: str, style: str) -> ChoiceScore | Failed:
    """The choice's log-likelihood from a reply to ``loglik_body``; ``context`` is the prompt's
    text (the echo style needs it to find where the choice starts)."""
    try:
        if style == "echo":
            return _from_echo(reply["choices"][0]["logprobs"], context or "", choice)
        return _from_prompt_logprobs(reply["prompt_logprobs"], choice)
    except (KeyError, IndexError, TypeError, ValueError) as err:
        return Failed(f"the reply has no usable prompt log-probs ({type(err).__name__})")


def _from_prompt_logprobs(entries: list, choice: str) -> ChoiceScore | Failed:
    """The trailing tokens that spell the choice, and the whitespace-only tokens just before
    it: lm-eval (and salad) score a context's trailing whitespace as part of the choice."""
    taken: list[dict] = []
    spelled = ""
    for entry in reversed(entries):
        if entry is None:  # the first token (vLLM), or a context position (salad-eval serve)
            break
        token = _own_token(entry)
        text = str(token["decoded_token"])
        if len(spelled) >= len(choice) and not text.isspace():
            break
        spelled = text + spelled
        taken.append(token)
    if not spelled.endswith(choice) or spelled[: len(spelled) - len(choice)].strip():
        return Failed(f"the server's last tokens spell {spelled!r}, not the choice {choice!r}")
    return ChoiceScore(
        logprob=sum(float(t["logprob"]) for t in taken),
        n_tokens=len(taken),
        n_chars=len(choice),
        is_greedy=all(int(t["rank"]) == 1 for t in taken),
    )


def _own_token(entry: dict) -> dict:
    """The prompt's own token of a ``prompt_logprobs`` entry: with ``prompt_logprobs: 0`` the
    only one; where a server adds the top token too, the one that is not rank 1 (if any)."""
    tokens = list(entry.values())
    if len(tokens) == 1:
        return tokens[0]
    others = [t for t in tokens if int(t["rank"]) != 1]
    return others[0] if others else tokens[0]


def _from_echo(logprobs: dict, context: str, choice: str) -> ChoiceScore | Failed:
    """The tokens from the end of the context's text, its trailing whitespace counted with the
    choice (as lm-eval and salad score it)."""
    start = len(context.rstrip())
    offsets = logprobs["text_offset"]
    picked = [i for i, offset in enumerate(offsets) if offset >= start]
    if not picked or offsets[picked[0]] != start:
        return Failed("a server token spans the end of the context and the start of the choice")
    spelled = "".join(logprobs["tokens"][i] for i in picked)
    if spelled != context[start:] + choice:
        return Failed(f"the server's last tokens spell {spelled!r}, not {choice!r}")
    values = [float(logprobs["token_logprobs"][i]) for i in picked]
    tops = logprobs.get("top_logprobs") or [None] * len(offsets)
    greedy = all(
        top is not None and max(top, key=top.get) == logprobs["tokens"][i]
        for i, top in ((i, tops[i]) for i in picked)
    )
    return ChoiceScore(
        logprob=sum(values), n_tokens=len(picked), n_chars=len(choice), is_greedy=greedy
    )
