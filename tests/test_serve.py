"""``salad-eval serve``: real models behind the server, called with the official ``openai`` client.

The embedded text LLM (SmolLM2) and a tiny random SALAD checkpoint (Whisper tiny.en + SmolLM2)
are served in this process (uvicorn in a thread, as ``serve`` runs it); the same model objects
answer in process, and the server must agree with them: greedy replies identical, the
``prompt_logprobs`` of a continuation summing to ``Model.score`` within 1e-4 with the same greedy
flag, for text and for audio. Bad requests get OpenAI's error object with a 4xx and the server
answers the next one; a token is required when one is set. The last test runs the command itself
and stops it with SIGTERM.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import numpy as np
import openai
import pytest
import soundfile as sf
from servers import serving

from salad_eval.models.load import load_speech_model
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, Decoding, GenerationRequest, ScoringRequest, Text
from salad_eval.serve.app import make_app

pytestmark = pytest.mark.integration

TEXT_NAME = "smollm2-135m"
SALAD_NAME = "tiny-salad"
PROMPTS = [
    "The sky is",
    "Once upon a time",
    "Question: How many legs does a spider have?\nA. six\nB. eight\nAnswer:",
    "Hello",
    "The capital of France is",
    "My favourite food is",
]
# (context, choice) pairs: context without trailing space, choice with its delimiter
PAIRS = [
    ("Question: What is the capital of France?\nAnswer:", " Paris"),
    ("Question: What is the capital of France?\nAnswer:", " the city of Berlin"),
    ("The quick brown fox jumps over the lazy", " dog"),
]


@pytest.fixture(scope="module")
def text_model() -> TextLM:
    return TextLM(TEXT_NAME)


@pytest.fixture(scope="module")
def text_app(text_model):
    return make_app(text_model, TEXT_NAME, accepts_audio=False, batch_size=4)


@pytest.fixture(scope="module")
def text_url(text_app) -> Iterator[str]:
    with serving(text_app) as url:
        yield url


@pytest.fixture(scope="module")
def salad_model(random_checkpoint: Path):
    return load_speech_model(str(random_checkpoint))


@pytest.fixture(scope="module")
def salad_url(salad_model) -> Iterator[str]:
    app = make_app(salad_model, SALAD_NAME, max_request_mb=1, max_audio_seconds=5)
    with serving(app) as url:
        yield url


def client(url: str, key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def audio_part(data: bytes) -> dict:
    """An ``input_audio`` content part holding a wav file's bytes."""
    return {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(data).decode(), "format": "wav"},
    }


def scored_continuation(entries: list, continuation: str) -> tuple[float, bool]:
    """What a vLLM client reads from ``prompt_logprobs``: the trailing entries whose decoded
    tokens spell ``continuation`` (each entry's first key is the prompt's own token): their
    log-probs summed, and whether every one has rank 1."""
    spelled, total, greedy = "", 0.0, True
    for entry in reversed(entries):
        if spelled == continuation:
            break
        assert entry is not None, f"no value for a token of {continuation!r}"
        token = next(iter(entry.values()))
        spelled = token["decoded_token"] + spelled
        total += token["logprob"]
        greedy = greedy and token["rank"] == 1
    assert spelled == continuation
    return total, greedy


def continuation_request(context: list, continuation: str, top_k: int = 0) -> dict:
    """A chat request scoring ``continuation`` after ``context`` (content parts), as salad's
    endpoint adapter asks vLLM."""
    return {
        "messages": [
            {"role": "user", "content": context},
            {"role": "assistant", "content": continuation},
        ],
        "max_tokens": 1,
        "temperature": 0,
        "extra_body": {
            "prompt_logprobs": top_k,
            "continue_final_message": True,
            "add_generation_prompt": False,
        },
    }


def test_models_lists_the_served_name(text_url: str) -> None:
    (listed,) = client(text_url).models.list().data
    assert (listed.id, listed.owned_by) == (TEXT_NAME, "salad")
    assert httpx.get(text_url.removesuffix("/v1") + "/health").status_code == 200


def test_concurrent_greedy_replies_equal_in_process_ones(text_url, text_app, text_model) -> None:
    """Chat (raw: the message text is the prompt) and completions, sent at once: batched on
    the server, each reply is the in-process greedy reply, its usage counted."""
    api = client(text_url)

    def chat(prompt: str):
        return api.chat.completions.create(
            model=TEXT_NAME,
            messages=[{"role": "user", "content": [{"type": "text", "text": prompt}]}],
            max_tokens=10,
            temperature=0,
            stop=["\n\n"],
        )

    def complete(prompt: str):
        return api.completions.create(
            model=TEXT_NAME, prompt=prompt, max_tokens=10, temperature=0, stop="\n\n"
        )

    calls_before = text_app.state.batcher.calls
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        chats = list(pool.map(chat, PROMPTS))
    calls = text_app.state.batcher.calls - calls_before
    with ThreadPoolExecutor(len(PROMPTS)) as pool:
        completions = list(pool.map(complete, PROMPTS))
    asked = [GenerationRequest((Text(p),), ("\n\n",)) for p in PROMPTS]
    expected = [r for (r,) in text_model.generate(asked, Decoding(max_new_tokens=10), 4)]
    assert [c.choices[0].message.content for c in chats] == [r.text for r in expected]
    assert [c.choices[0].text for c in completions] == [r.text for r in expected]
    assert sum(bool(r.text.strip()) for r in expected) >= 3
    for prompt, response, reply in zip(PROMPTS, chats, expected, strict=True):
        assert response.choices[0].finish_reason == ("length" if reply.truncated else "stop")
        assert response.usage.completion_tokens == reply.n_tokens
        assert response.usage.prompt_tokens == len(text_model.encoder.encode(prompt))
        assert response.system_fingerprint == text_model.fingerprint
    assert calls < len(PROMPTS), "concurrent requests did not share model calls"


def test_text_prompt_logprobs_sum_to_in_process_scores(text_url, text_model) -> None:
    """Every way a client asks for a text continuation's log-likelihood (chat continuing the
    final message, completions' prompt_logprobs, legacy echo) gives the in-process score."""
    api = client(text_url)
    context = "The sky is"
    ((greedy,),) = text_model.generate([GenerationRequest((Text(context),))], Decoding(3))
    pairs = [*PAIRS, (context, greedy.text)]
    expected = text_model.score([ScoringRequest((Text(c),), (choice,)) for c, choice in pairs])
    flags = []
    for (ctx, choice), (score,) in zip(pairs, expected, strict=True):
        flags.append(score.is_greedy)
        for top_k in (0, 2):
            asked = continuation_request([{"type": "text", "text": ctx}], choice, top_k)
            chat = api.chat.completions.create(model=TEXT_NAME, **asked)
            entries = chat.model_extra["prompt_logprobs"]
            logprob, is_greedy = scored_continuation(entries, choice)
            assert logprob == pytest.approx(score.logprob, abs=1e-4)
            assert is_greedy == score.is_greedy
            assert chat.usage.prompt_tokens == len(entries)
            assert all(len(e) >= 1 + min(top_k, 1) for e in entries if e is not None)
        completion = api.completions.create(
            model=TEXT_NAME, prompt=ctx + choice, max_tokens=0, extra_body={"prompt_logprobs": 0}
        )
        entries = completion.choices[0].model_extra["prompt_logprobs"]
        assert entries[0] is None and all(e is not None for e in entries[1:])
        logprob, is_greedy = scored_continuation(entries, choice)
        assert logprob == pytest.approx(score.logprob, abs=1e-4)
        assert is_greedy == score.is_greedy
        assert completion.choices[0].finish_reason == "length"
        echo = api.completions.create(
            model=TEXT_NAME, prompt=ctx + choice, max_tokens=0, echo=True, logprobs=1
        )
        assert echo.choices[0].text == ctx + choice
        legacy = echo.choices[0].logprobs
        tail = [i for i, at in enumerate(legacy.text_offset) if at >= len(ctx)]
        assert "".join(legacy.tokens[i] for i in tail) == choice
        assert sum(legacy.token_logprobs[i] for i in tail) == pytest.approx(score.logprob, abs=1e-4)
        best = [legacy.token_logprobs[i] >= max(legacy.top_logprobs[i].values()) for i in tail]
        assert all(best) == score.is_greedy
    assert True in flags and False in flags  # both kinds of choice were checked


def test_chat_template_renders_as_the_in_process_template(text_model) -> None:
    """--chat-template: a user message scores and generates as ``TextLM(chat_template=True)``
    reads the same prompt (choices without their delimiter, the context's trailing newline
    moved into them)."""
    from salad_eval.serve.server import load_served

    served, chat, audio, fingerprint = load_served(TEXT_NAME, chat_template=True)
    reference = TextLM(TEXT_NAME, chat_template=True)
    assert (served.chat, audio, fingerprint) == (None, False, reference.fingerprint)
    app = make_app(served, TEXT_NAME, chat=chat, accepts_audio=False, fingerprint=fingerprint)
    context, choices = PAIRS[0][0], (" Paris", " Berlin")
    expected = reference.score([ScoringRequest((Text(context),), choices)])[0]
    ((reply,),) = reference.generate([GenerationRequest((Text(context),))], Decoding(8))
    with serving(app) as url:
        api = client(url)
        for choice, score in zip(choices, expected, strict=True):
            asked = continuation_request([{"type": "text", "text": context}], choice)
            response = api.chat.completions.create(model=TEXT_NAME, **asked)
            entries = response.model_extra["prompt_logprobs"]
            # the template's generation prompt ends in a newline, which salad (as lm-eval)
            # scores with the choice: the non-null entries are exactly the tokens it scores
            logprob, is_greedy = scored_continuation(entries, "\n" + choice.lstrip())
            assert sum(e is not None for e in entries) == score.n_tokens
            assert logprob == pytest.approx(score.logprob, abs=1e-4)
            assert is_greedy == score.is_greedy
        generated = api.chat.completions.create(
            model=TEXT_NAME,
            messages=[{"role": "user", "content": context}],
            max_tokens=8,
            temperature=0,
        )
    assert generated.choices[0].message.content == reply.text
    assert reply.text.strip()


def test_speech_prompts_score_and_generate_as_in_process(salad_url, salad_model, clips) -> None:
    """A SALAD checkpoint behind the server: a clip between text parts scores each choice as
    ``Model.score`` scores the same prompt from the same wav file, the context's positions
    (audio frames included) null; the greedy reply is the in-process one; text works too."""
    api = client(salad_url)
    parts = [
        {"type": "text", "text": "Question: "},
        audio_part(clips["short"].read_bytes()),
        {"type": "text", "text": " Answer:"},
    ]
    prompt = (Text("Question: "), Audio(str(clips["short"]), ""), Text(" Answer:"))
    ((reply,),) = salad_model.generate([GenerationRequest(prompt)], Decoding(6))
    generated = api.chat.completions.create(
        model=SALAD_NAME, messages=[{"role": "user", "content": parts}], max_tokens=6, temperature=0
    )
    assert generated.choices[0].message.content == reply.text
    assert generated.usage.prompt_tokens == salad_model.embed_prompt(prompt).shape[0]
    choices = tuple(c for c in (" yes", " the quick brown fox", reply.text) if c)
    expected = salad_model.score([ScoringRequest(prompt, choices)])[0]
    for choice, score in zip(choices, expected, strict=True):
        response = api.chat.completions.create(
            model=SALAD_NAME, **continuation_request(parts, choice, top_k=1)
        )
        entries = response.model_extra["prompt_logprobs"]
        logprob, is_greedy = scored_continuation(entries, choice)
        assert logprob == pytest.approx(score.logprob, abs=1e-4)
        assert is_greedy == score.is_greedy
        nulls = len(entries) - score.n_tokens
        assert (
            entries[:nulls] == [None] * nulls == [None] * salad_model.embed_prompt(prompt).shape[0]
        )
    assert any(score.is_greedy for score in expected) and not all(s.is_greedy for s in expected)
    text_only = continuation_request([{"type": "text", "text": PAIRS[0][0]}], PAIRS[0][1])
    response = api.chat.completions.create(model=SALAD_NAME, **text_only)
    (score,) = salad_model.score([ScoringRequest((Text(PAIRS[0][0]),), (PAIRS[0][1],))])[0]
    logprob, _ = scored_continuation(response.model_extra["prompt_logprobs"], PAIRS[0][1])
    assert logprob == pytest.approx(score.logprob, abs=1e-4)


def test_an_hf_family_behind_the_server_agrees_with_it_in_process(tmp_path, clips) -> None:
    """A tiny random Audio Flamingo 3, picked by its config as ``--model`` picks it: greedy
    reply and the log-likelihood of a choice after a spoken prompt as in process."""
    from salad_eval.models.tiny_audio_llms import save_tiny_audio_flamingo3
    from salad_eval.serve.server import load_served

    path = str(save_tiny_audio_flamingo3(tmp_path / "af3"))
    model, chat, audio, fingerprint = load_served(path)
    assert (type(model).__name__, chat, audio) == ("AudioFlamingo3", None, True)
    parts = [
        {"type": "text", "text": "Listen: "},
        audio_part(clips["long"].read_bytes()),
        {"type": "text", "text": " Answer:"},
    ]
    prompt = (Text("Listen: "), Audio(str(clips["long"]), ""), Text(" Answer:"))
    ((reply,),) = model.generate([GenerationRequest(prompt)], Decoding(4))
    choices = (" yes", " the quick brown fox")
    expected = model.score([ScoringRequest(prompt, choices)])[0]
    with serving(make_app(model, "af3", fingerprint=fingerprint)) as url:
        api = client(url)
        generated = api.chat.completions.create(
            model="af3", messages=[{"role": "user", "content": parts}], max_tokens=4, temperature=0
        )
        for choice, score in zip(choices, expected, strict=True):
            response = api.chat.completions.create(
                model="af3", **continuation_request(parts, choice)
            )
            logprob, is_greedy = scored_continuation(
                response.model_extra["prompt_logprobs"], choice
            )
            assert logprob == pytest.approx(score.logprob, abs=1e-4)
            assert is_greedy == score.is_greedy
    assert generated.choices[0].message.content == reply.text
    assert generated.system_fingerprint == model.fingerprint


def _wav(seconds: float) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.zeros(int(16_000 * seconds), dtype=np.float32), 16_000, format="WAV")
    return buffer.getvalue()


def _flac(path: Path) -> bytes:
    buffer = io.BytesIO()
    wave, rate = sf.read(path)
    sf.write(buffer, wave, rate, format="FLAC")
    return buffer.getvalue()


def test_malformed_requests_get_a_4xx_json_error_and_the_server_goes_on(salad_url, clips) -> None:
    def user(*parts) -> dict:
        return {"model": SALAD_NAME, "messages": [{"role": "user", "content": list(parts)}]}

    def audio(data: bytes | str) -> dict:
        data = data if isinstance(data, str) else base64.b64encode(data).decode()
        return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}

    text = {"type": "text", "text": "Hello"}
    continued = {
        **user(text),
        "continue_final_message": True,
        "add_generation_prompt": False,
    }
    cases = {
        "bad json": ({"content": b'{"model": "x", "messages": ['}, 400),
        "a string for a number": ({"json": {**user(text), "max_tokens": "3"}}, 400),
        "a number for text": ({"json": user({"type": "text", "text": 5})}, 400),
        "no messages": ({"json": {"model": SALAD_NAME, "messages": []}}, 400),
        "a tool message": (
            {"json": {"model": SALAD_NAME, "messages": [{"role": "tool", "content": "x"}]}},
            400,
        ),
        "bad base64": ({"json": user(text, audio("!!not base64!!"))}, 400),
        "not a wav": ({"json": user(audio(_flac(clips["short"])))}, 400),
        "mp3 format": (
            {
                "json": user(
                    {"type": "input_audio", "input_audio": {"data": "AA==", "format": "mp3"}}
                )
            },
            400,
        ),
        "clip too long": ({"json": user(audio(_wav(6.0)))}, 400),
        "empty clip": ({"json": user(audio(_wav(0.0)))}, 400),
        "body too large": ({"json": user({"type": "text", "text": "x" * 1_200_000})}, 413),
        "continue without an assistant message": ({"json": continued}, 400),
        "continue with the generation prompt": (
            {
                "json": {
                    **user(text),
                    "messages": [
                        {"role": "user", "content": "Hi"},
                        {"role": "assistant", "content": "Yes"},
                    ],
                    "continue_final_message": True,
                }
            },
            400,
        ),
        "prompt_logprobs of audio with no continuation": (
            {"json": {**user(audio(clips["short"].read_bytes())), "prompt_logprobs": 0}},
            400,
        ),
        "another model": ({"json": {**user(text), "model": "gpt-4o"}}, 404),
        "streaming": ({"json": {**user(text), "stream": True}}, 400),
    }
    with httpx.Client(timeout=120) as http:
        for name, (request, status) in cases.items():
            if "content" in request:
                request = {**request, "headers": {"content-type": "application/json"}}
            response = http.post(f"{salad_url}/chat/completions", **request)
            assert response.status_code == status, (name, response.text)
            error = response.json()["error"]
            assert error["message"] and error["type"] and error["code"], name
        missing = http.get(f"{salad_url}/nowhere")
        assert missing.status_code == 404 and missing.json()["error"]["message"]
        good = http.post(
            f"{salad_url}/chat/completions",
            json={**user(text, audio(clips["short"].read_bytes())), "max_tokens": 2},
        )
    assert good.status_code == 200, good.text
    assert good.json()["choices"][0]["message"]["role"] == "assistant"


def test_a_bearer_token_is_required_when_set(text_model) -> None:
    app = make_app(text_model, TEXT_NAME, accepts_audio=False, api_key="salad-test-token")
    with serving(app) as url:
        with pytest.raises(openai.AuthenticationError):
            client(url, "wrong-token").models.list()
        bare = httpx.post(f"{url}/chat/completions", json={"model": TEXT_NAME})
        assert bare.status_code == 401 and bare.json()["error"]["type"] == "authentication_error"
        assert httpx.get(url.removesuffix("/v1") + "/health").status_code == 200
        api = client(url, "salad-test-token")
        assert [m.id for m in api.models.list().data] == [TEXT_NAME]
        reply = api.completions.create(model=TEXT_NAME, prompt="Hello", max_tokens=2, temperature=0)
    assert reply.usage.completion_tokens >= 1


@pytest.mark.slow
def test_the_command_serves_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """``salad-eval serve`` as a process: its token from the environment (never printed), an
    audio part refused for a text LLM, and on SIGTERM exit 143 with its clip folder gone."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    temp = tmp_path / "tmp"
    temp.mkdir()
    key = "sk-salad-serve-test-7f3a"
    env = {**os.environ, "TMPDIR": str(temp), "SALAD_SERVE_KEY": key, "HF_HUB_OFFLINE": "1"}
    log = tmp_path / "serve.log"
    command = [
        Path(sys.executable).parent / "salad-eval",
        "serve",
        "--model",
        TEXT_NAME,
        "--port",
        str(port),
        "--api-key-env",
        "SALAD_SERVE_KEY",
        "--served-model-name",
        "smol",
    ]
    with open(log, "w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(f"{url}/health").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        (folder,) = temp.iterdir()
        api = client(f"{url}/v1", key)
        reply = api.chat.completions.create(
            model="smol", messages=[{"role": "user", "content": "Hello"}], max_tokens=2
        )
        assert reply.model == "smol"
        with pytest.raises(openai.BadRequestError):
            api.chat.completions.create(
                model="smol",
                messages=[{"role": "user", "content": [audio_part(_wav(1.0))]}],
            )
        assert not any(folder.iterdir())  # the refused request's clip is gone already
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            process.kill()
    assert not any(temp.iterdir())
    text = log.read_text()
    assert key not in text and "Traceback" not in text, text
    assert f"127.0.0.1:{port}" in text
