"""A whole gap run through the endpoint adapter against ``salad-eval serve``, equal to the same
run in process.

The speech LLM (the tiny SALAD checkpoint, then a tiny random HF family) and the embedded text
LLM are each served (uvicorn in a thread); the run names them ``openai-chat:<name>`` and
``openai-completions:smollm2-135m`` with both servers as ``--base-url`` (each model goes to the
server that lists it). Every condition and both controls must score as in process within 1e-4
with the same greedy flags, by ``prompt_logprobs``, and reply identically by greedy generation.
"""

from __future__ import annotations

import json

import pytest
from homes import scoreless_home
from servers import serving

import salad_eval
from salad_eval.endpoint.client import Connection
from salad_eval.endpoint.model import EndpointModel
from salad_eval.models.load import load_speech_model
from salad_eval.models.text_lm import TextLM
from salad_eval.models.tiny_audio_llms import save_tiny_granite_speech
from salad_eval.prompt import Audio, Decoding, GenerationRequest, ScoringRequest, Text
from salad_eval.serve.app import make_app

pytestmark = [pytest.mark.integration, pytest.mark.numerics]

LOGPROB_TOLERANCE = 1e-4  # the bound: batches differ between the server and a run
RUN = {
    "tasks": "demo",
    "voices": "espeak/en-us",
    "limit": 3,
    "asr": "whisper-tiny.en",
    "answer": "both",
    "max_new_tokens": 8,
    "divergences": False,
    "n_boot": 50,
}


@pytest.fixture(scope="module")
def text_url():
    with serving(make_app(TextLM("smollm2-135m"), "smollm2-135m", accepts_audio=False)) as url:
        yield url


@pytest.fixture(scope="module", params=["salad", "granite"])
def speech(request, random_checkpoint, tmp_path_factory):
    """(the model's path, its name behind the server, the server's URL): the tiny SALAD
    checkpoint, and a tiny random HF family (Granite Speech)."""
    if request.param == "salad":
        path = random_checkpoint
    else:
        path = save_tiny_granite_speech(tmp_path_factory.mktemp("granite") / "granite")
    with serving(make_app(load_speech_model(str(path)), request.param)) as url:
        yield path, request.param, url


def _records(run) -> dict:
    rows = [json.loads(line) for line in (run / "items.jsonl").read_text().splitlines()]
    return {(r["item"], r["condition"], r["voice"]): r for r in rows}


@pytest.mark.slow  # two whole gap runs: the capped tier keeps the adapter-level check below
def test_a_gap_run_through_the_server_equals_the_run_in_process(
    speech, text_url, tmp_path, monkeypatch
):
    path, name, speech_url = speech
    urls = [speech_url, text_url]
    monkeypatch.setenv("SALAD_HOME", str(scoreless_home(tmp_path / "home")))
    salad_eval.evaluate(str(path), text_model="smollm2-135m", out=tmp_path / "local", **RUN)
    monkeypatch.setenv("SALAD_HOME", str(scoreless_home(tmp_path / "home2")))
    results = salad_eval.evaluate(
        f"openai-chat:{name}",
        text_model="openai-completions:smollm2-135m",
        base_url=urls,
        out=tmp_path / "served",
        **RUN,
    )
    local, served = _records(tmp_path / "local"), _records(tmp_path / "served")
    assert served.keys() == local.keys()
    conditions = {condition for _, condition, _ in served}
    assert conditions == {
        "text@base",
        "text@speech",
        "speech@speech",
        "speech@cascade",
        "speech@speech:silent",
        "speech@speech:shuffled",
    }
    for key, row in served.items():
        mine = local[key]
        assert row["logprobs"] == pytest.approx(mine["logprobs"], abs=LOGPROB_TOLERANCE), key
        assert row["greedy"] == mine["greedy"], key
        assert row["replies"] == mine["replies"] and row["letters"] == mine["letters"], key
    endpoints = results["manifest"]["endpoints"]
    assert endpoints["speech"]["loglik"] == "prompt_logprobs"
    assert (
        endpoints["speech"]["base_urls"] == urls[:1] and endpoints["text"]["base_urls"] == urls[1:]
    )
    assert endpoints["speech"]["audio_seconds"] > 0 and endpoints["text"]["audio_seconds"] == 0


def test_an_hf_family_behind_the_server_answers_the_adapter_as_in_process(tmp_path, clips):
    model = load_speech_model(str(save_tiny_granite_speech(tmp_path / "granite")))
    spoken = (Text("Listen: "), Audio(str(clips["long"]), ""), Text("\nAnswer:"))
    written = (Text("Question: What is the capital of France?\nAnswer:"),)
    scoring = [ScoringRequest(p, (" yes", " the quick brown fox")) for p in (spoken, written)]
    asked = [GenerationRequest(p, ("\n",)) for p in (spoken, written)]
    with serving(make_app(model, "granite")) as url:
        remote = EndpointModel("openai-chat:granite", Connection((url,)))
        remote.probe(loglik=True)
        scores = remote.score(scoring)
        replies = remote.generate(asked, Decoding(max_new_tokens=6))
    for theirs, ours in zip(scores, model.score(scoring), strict=True):
        for a, b in zip(theirs, ours, strict=True):
            assert a.logprob == pytest.approx(b.logprob, abs=LOGPROB_TOLERANCE)
            assert (a.is_greedy, a.n_tokens) == (b.is_greedy, b.n_tokens)
    assert replies == model.generate(asked, Decoding(max_new_tokens=6))
