"""Models behind an endpoint, against real servers: llama.cpp's own server (``xllamacpp``)
serving the embedded SmolLM2 GGUF, and a proxy in front of it that injects faults.

``text@base`` and the cascade's LLM go through the server as ``openai-completions:smollm2-135m``
while a tiny SALAD checkpoint answers in process; replies are extracted and counted as any
others, cached per request, and a faulty network changes nothing in ``items.jsonl``.
"""

from __future__ import annotations

import json
import logging
import os

import pytest
from homes import scoreless_home
from servers import MODEL_ID, faulty_proxy, free_port, llama_cpp_server

import salad_eval
from salad_eval.endpoint.client import retry_after
from salad_eval.endpoint.protocol import choice_score, endpoint_name
from salad_eval.errors import SaladError
from salad_eval.prompt import ChoiceScore, Failed
from salad_eval.tasks import load_items

pytestmark = pytest.mark.integration

TEXT_MODEL = f"openai-completions:{MODEL_ID}"
LIMIT = 3  # 7 requests with the probe: the fault cycle meets each of its 5 faults
PRICES = [0.5, 1.5]  # per million tokens in and out


def _gap(checkpoint, out, salad_home, monkeypatch, **options) -> dict:
    monkeypatch.setenv("SALAD_HOME", str(salad_home))
    settings = {
        "text_model": TEXT_MODEL,
        "tasks": "demo",
        "voices": "espeak/en-us",
        "limit": LIMIT,
        "asr": "whisper-tiny.en",
        "answer": "generate",
        "max_new_tokens": 8,
        "controls": False,
        "divergences": False,
        "n_boot": 50,
        "out": out,
        **options,
    }
    return salad_eval.evaluate(str(checkpoint), **settings)


def _items(run) -> bytes:
    return (run / "items.jsonl").read_bytes()


@pytest.fixture(scope="module")
def server():
    with llama_cpp_server() as url:
        yield url


@pytest.fixture(scope="module")
def clean(random_checkpoint, tmp_path_factory, server):
    """A run straight to the server, from an empty reply cache (its home is kept)."""
    root = tmp_path_factory.mktemp("endpoint")
    home = scoreless_home(root / "home")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _gap(random_checkpoint, root / "run", home, monkeypatch, base_url=[server], prices=PRICES)
    return root / "run", home


def test_a_llama_cpp_server_answers_text_at_base_and_the_cascade(clean):
    run, _ = clean
    records = [json.loads(line) for line in _items(run).splitlines()]
    through = [r for r in records if r["condition"] in ("text@base", "speech@cascade")]
    assert len(through) == 2 * LIMIT
    assert all(len(r["replies"]) == 1 and r["rule"] for r in through)
    assert any(r["replies"][0].strip() for r in through)  # the server really answered
    results = json.loads((run / "results.json").read_text())
    rates = results["metrics"]["acc_gen"]["overall"]
    assert set(rates["accuracy"]) >= {"text@base", "speech@cascade"}
    manifest = results["manifest"]
    endpoint = manifest["endpoints"]["text"]
    assert endpoint["model_id"] == MODEL_ID and endpoint["failed"] == 0
    # one reply per item in each of the two conditions, and the probe's one-token request
    assert endpoint["requests"] == 2 * LIMIT + 1 and endpoint["completion_tokens"] > 0
    assert endpoint["server"]["server"] == ["llama.cpp"]
    assert manifest["models"]["text"]["dtype"] is None  # the server's own, not claimed
    tokens = (endpoint["prompt_tokens"], endpoint["completion_tokens"])
    assert endpoint["cost"] == pytest.approx((tokens[0] * 0.5 + tokens[1] * 1.5) / 1e6)
    summary = (run / "summary.md").read_text()
    assert "## Models behind an endpoint" in summary and f"`{MODEL_ID}`" in summary


def test_a_rerun_with_the_server_stopped_reads_every_reply_from_the_cache(
    clean, random_checkpoint, tmp_path, monkeypatch
):
    run, home = clean
    down = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    _gap(random_checkpoint, tmp_path / "again", home, monkeypatch, base_url=[down])
    assert _items(tmp_path / "again") == _items(run)


def test_faults_are_retried_and_change_nothing(
    clean, server, random_checkpoint, tmp_path, monkeypatch
):
    run, _ = clean
    with faulty_proxy(server, slow_s=3) as proxy:
        results = _gap(
            random_checkpoint,
            tmp_path / "faulty",
            scoreless_home(tmp_path / "home"),
            monkeypatch,
            base_url=[proxy],
            request_timeout=1.5,
        )
    assert _items(tmp_path / "faulty") == _items(run)
    endpoint = results["manifest"]["endpoints"]["text"]
    # every request's first try met one fault of the cycle (429, 500, drop, slow, truncated)
    # at least that many: on a busy machine a clean reply may also outlast the 1.5 s timeout
    assert endpoint["requests"] == 2 * LIMIT + 1 and endpoint["retries"] >= endpoint["requests"]
    assert endpoint["failed"] == 0


def test_a_request_that_keeps_failing_leaves_its_item_until_a_rerun(
    clean, server, random_checkpoint, tmp_path, monkeypatch
):
    run, _ = clean
    items = load_items("demo", limit=LIMIT, answer="generate")
    victim = items[1]
    marker = victim.text_context.splitlines()[0]  # its question line: no other item's
    assert sum(marker in i.text_context for i in items) == 1
    home = scoreless_home(tmp_path / "home")
    with faulty_proxy(server, slow_s=0, fail_marker=marker) as proxy:
        results = _gap(
            random_checkpoint,
            tmp_path / "failing",
            home,
            monkeypatch,
            base_url=[proxy],
            max_retries=1,
        )
    (excluded,) = results["manifest"]["excluded_items"]
    assert excluded["item"] == victim.id and "text@base" in excluded["reason"]
    assert "HTTP 500" in excluded["reason"]
    kept = [json.loads(line) for line in _items(tmp_path / "failing").splitlines()]
    assert kept and all(r["item"] != victim.id for r in kept)
    assert results["manifest"]["endpoints"]["text"]["failed"] == 1
    assert (
        f"`demo/{victim.id}`: request failed" in (tmp_path / "failing" / "summary.md").read_text()
    )
    # the fault clears: the rerun asks only for what failed, and the run is whole
    _gap(random_checkpoint, tmp_path / "whole", home, monkeypatch, base_url=[server])
    assert _items(tmp_path / "whole") == _items(run)


def test_the_api_key_never_leaves_the_environment(random_checkpoint, tmp_path, monkeypatch, caplog):
    key = "sk-salad-test-5f1d2c9e"
    monkeypatch.setenv("SALAD_TEST_KEY", key)
    home = scoreless_home(tmp_path / "home")
    with llama_cpp_server(api_key=key) as url, caplog.at_level(logging.DEBUG):
        _gap(
            random_checkpoint,
            tmp_path / "run",
            home,
            monkeypatch,
            base_url=[url],
            api_key_env="SALAD_TEST_KEY",
            limit=2,
        )
        monkeypatch.setenv("SALAD_TEST_KEY", "wrong")
        with pytest.raises(SaladError, match="401") as wrong:
            _gap(
                random_checkpoint,
                tmp_path / "denied",
                home,
                monkeypatch,
                base_url=[url],
                api_key_env="SALAD_TEST_KEY",
                limit=2,
            )
    assert key not in str(wrong.value) and "\n" not in str(wrong.value)
    assert key not in caplog.text
    for root in (tmp_path / "run", home):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert key.encode() not in path.read_bytes(), path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"concurrency": 0}, "--concurrency 0"),
        ({"prices": [1.0]}, "--prices .* must hold two values"),
        ({"base_url": []}, "pass --base-url"),
        ({"text_model": "openai-completions:no-such-model"}, "lists model 'no-such-model'"),
        ({"answer": "loglik"}, "--answer generate"),
        ({"base_url": ["unreachable"]}, "no server answers at --base-url"),
        ({"text_model": "smollm2-135m"}, "--base-url is for models behind an endpoint"),
    ],
)
def test_bad_endpoint_input_is_one_line_before_any_work(
    options, message, server, random_checkpoint, tmp_path, monkeypatch
):
    if options.get("base_url") == ["unreachable"]:
        options = {"base_url": [f"http://127.0.0.1:{free_port()}/v1"]}
    settings = {"base_url": [server], **options}
    home = scoreless_home(tmp_path / "home")
    with pytest.raises(SaladError, match=message) as err:
        _gap(random_checkpoint, tmp_path / "run", home, monkeypatch, **settings)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "run").exists() and not (home / "replies").exists()


# --- the protocol's arithmetic, on replies shaped as vLLM and OpenAI document them ---------


def test_prompt_logprobs_sum_the_tokens_that_spell_the_choice():
    entries = [
        None,
        {"17": {"logprob": -2.0, "rank": 4, "decoded_token": "The"}},
        {"5": {"logprob": -1.0, "rank": 1, "decoded_token": " sky"}},
        {"9": {"logprob": -0.5, "rank": 1, "decoded_token": " bl"}},
        {
            "3": {"logprob": -0.25, "rank": 2, "decoded_token": "ue"},
            "4": {"logprob": -0.1, "rank": 1, "decoded_token": "e"},
        },
    ]
    score = choice_score({"prompt_logprobs": entries}, None, " blue", "prompt_logprobs")
    assert score == ChoiceScore(logprob=-0.75, n_tokens=2, n_chars=5, is_greedy=False)
    bad = choice_score({"prompt_logprobs": entries}, None, "ue blue", "prompt_logprobs")
    assert isinstance(bad, Failed)
    # a context's trailing whitespace counts with the choice, as lm-eval scores it
    spaced = [None, {"1": {"logprob": -3.0, "rank": 2, "decoded_token": "Answer:"}}]
    spaced += [{"2": {"logprob": -0.5, "rank": 1, "decoded_token": "\n"}}]
    spaced += [{"3": {"logprob": -0.25, "rank": 1, "decoded_token": "B"}}]
    score = choice_score({"prompt_logprobs": spaced}, None, "B", "prompt_logprobs")
    assert score == ChoiceScore(logprob=-0.75, n_tokens=2, n_chars=1, is_greedy=True)


def test_echo_logprobs_start_at_the_end_of_the_context():
    logprobs = {
        "tokens": ["The", " sky", " is", " blue"],
        "token_logprobs": [None, -1.0, -0.5, -0.25],
        "top_logprobs": [None, {" sky": -1.0}, {" is": -0.5}, {" blue": -0.25, " red": -2.0}],
        "text_offset": [0, 3, 7, 10],
    }
    reply = {"choices": [{"logprobs": logprobs}]}
    score = choice_score(reply, "The sky is", " blue", "echo")
    assert score == ChoiceScore(logprob=-0.25, n_tokens=1, n_chars=5, is_greedy=True)
    assert isinstance(choice_score(reply, "The sky i", "s blue", "echo"), Failed)
    moved = choice_score(reply, "The sky is ", "blue", "echo")  # its space scored with "blue"
    assert moved == ChoiceScore(logprob=-0.25, n_tokens=1, n_chars=4, is_greedy=True)


def test_retry_after_reads_seconds_and_dates():
    import httpx2

    assert retry_after(httpx2.Headers({"Retry-After": "2.5"})) == 2.5
    assert retry_after(httpx2.Headers({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert retry_after(httpx2.Headers({"Retry-After": "soon"})) is None
    assert retry_after(httpx2.Headers({})) is None


def test_endpoint_names():
    assert endpoint_name("openai-chat:gpt-4o-audio-preview") == ("chat", "gpt-4o-audio-preview")
    assert endpoint_name("openai-completions:org/model:v2") == ("completions", "org/model:v2")
    assert endpoint_name("runs/tiny/model") is None and endpoint_name("Qwen/Qwen2-Audio") is None
    with pytest.raises(SaladError, match="after the colon"):
        endpoint_name("openai-chat:")
    assert os.environ.get("SALAD_TEST_KEY") is None
