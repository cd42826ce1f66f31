"""``--device-map`` / ``--max-memory``: a model spread by accelerate's big-model loading scores
and generates as the same model whole (issue 29: "a tiny model with --max-memory forcing a split
scores within 1e-5 of the unsplit model").

This machine has no GPU, so the split is the one a model larger than its GPUs gets at its end: a
``--max-memory`` for the CPU below the model's size keeps its first modules in memory and offloads
the rest to disk (``meta`` placeholders that accelerate's hooks fill from the checkpoint for each
forward). That is the real path (transformers' ``from_pretrained(device_map=...)``, the hooks,
inputs on the embeddings' execution device, offloaded weights read back for the fingerprint).
Scores are compared within the acceptance's 1e-5 and within the float32 tolerance
(``tests/numerics.py``; an offloaded weight is read into another allocation, so no bit identity
is promised); greedy replies must be identical, and so must the fingerprints (placement is no
part of them, so a split model hits the whole model's caches).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import family_checks as checks
import pytest
import test_bad_input as bad_input
from numerics import assert_float32_close, longest_reduction
from test_family_qwen2_audio import save_tiny_qwen2_audio

from salad_eval import launch
from salad_eval.errors import SaladError
from salad_eval.models.load import load_speech_model
from salad_eval.models.qwen2_audio import Qwen2Audio
from salad_eval.models.speech_lm import CHECKPOINT_FORMAT, CHECKPOINT_KEY, SpeechLM, SpeechLMConfig
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Decoding, GenerationRequest, ScoringRequest, Text
from salad_eval.run.provenance import manifest
from salad_eval.run.spec import CallOptions, RunSpec

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across placements

ACCEPTANCE = 1e-5  # the bound on |split - whole| of every log-prob
TEXT_REQUESTS = [
    ScoringRequest((Text("The capital of France is"),), (" Paris", " London", " a big city")),
    ScoringRequest((Text("Question: what is two plus two? Answer:"),), (" four", " five")),
    ScoringRequest((Text("The quick brown"),), (" fox", " dog", " lazy dog")),
]


def size_of(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def all_but_one_layer(model, layer) -> dict[str, int]:
    """A ``max_memory`` that holds all of ``model`` on the CPU but about one decoder ``layer``:
    accelerate keeps the modules that fit (the input embeddings first) in memory and offloads
    the decoder layers from the first that does not fit to disk."""
    return {"cpu": size_of(model) - size_of(layer)}


NOTHING_IN_MEMORY = {"cpu": 1}  # every module offloaded, the input embeddings included


def places(device_map: dict[str, str] | None) -> set[str]:
    return set((device_map or {}).values())


def assert_same_scores(split, whole, requests, terms: int) -> None:
    """Every choice's log-prob within 1e-5 and the float32 tolerance; greedy flags equal."""
    got, want = split.score(requests), whole.score(requests)
    a = [s.logprob for row in got for s in row]
    b = [s.logprob for row in want for s in row]
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= ACCEPTANCE, (a, b)
    assert_float32_close(a, b, terms=terms)
    assert [[s.is_greedy for s in row] for row in got] == [
        [s.is_greedy for s in row] for row in want
    ]


def assert_no_stale_tied_pointers(model) -> None:
    """accelerate finds tied weights by address while it onloads a layer from disk, so each key
    of its tied-weights map must be the address of a tensor that is still alive: a freed one can
    be reused by a weight read later and hand it the tied matrix (a layer norm given the
    embeddings, in a run whose earlier tests happened to map files at those addresses)."""
    hooked = [m._hf_hook for m in model.modules() if hasattr(m, "_hf_hook")]
    hooks = [h for hook in hooked for h in getattr(hook, "hooks", [hook])]
    keys = {p for h in hooks for p in (getattr(h, "tied_params_map", None) or {})}
    live = {t.data_ptr() for t in [*model.parameters(), *model.buffers()] if not t.is_meta}
    for hook in hooks:
        source = getattr(getattr(hook, "weights_map", None), "dataset", None)
        live |= {t.data_ptr() for t in getattr(source, "state_dict", {}).values()}
    assert keys <= live, f"tied-weight keys at freed addresses: {sorted(map(hex, keys - live))}"


def assert_same_replies(split, whole, requests) -> None:
    asked = [GenerationRequest(r.prompt) for r in requests]
    decoding = Decoding(max_new_tokens=6)
    assert split.generate(asked, decoding) == whole.generate(asked, decoding)


def test_the_text_llm_split_over_cpu_and_disk_scores_as_whole(tiny_qwen2):
    """A tiny Qwen2 (stored in bf16, loaded in float32: the offloaded weights are cast as they
    are read): the same scores, replies and fingerprint with its layers offloaded to disk."""
    whole = TextLM(str(tiny_qwen2))
    budget = all_but_one_layer(whole.llm, whole.llm.model.layers[-1])
    split = TextLM(str(tiny_qwen2), device_map="auto", max_memory=budget)
    assert places(split.device_map) == {"cpu", "disk"}, split.device_map
    assert whole.device_map is None
    assert_no_stale_tied_pointers(split.llm)
    assert split.fingerprint == whole.fingerprint
    assert_same_scores(split, whole, TEXT_REQUESTS, longest_reduction(whole.llm))
    assert_same_replies(split, whole, TEXT_REQUESTS)


@pytest.mark.slow  # two loads of a 135M model and its disk-offloaded layers read per forward
def test_the_embedded_smollm2_splits_too():
    """The embedded SmolLM2 (the asset converted once from its GGUF into a plain checkpoint,
    which a device map reads as any other): its last layers on disk, the same scores."""
    whole = TextLM("smollm2-135m")
    budget = all_but_one_layer(whole.llm, whole.llm.model.layers[-1])
    split = TextLM("smollm2-135m", device_map="auto", max_memory=budget)
    assert places(split.device_map) == {"cpu", "disk"}, split.device_map
    assert_same_scores(split, whole, TEXT_REQUESTS[:1], longest_reduction(whole.llm))


@pytest.fixture(scope="module")
def qwen2_audio(tmp_path_factory) -> Path:
    return save_tiny_qwen2_audio(tmp_path_factory.mktemp("qwen2-audio") / "tiny")


@pytest.mark.parametrize("budget", ["all but one layer", "nothing in memory"])
def test_an_hf_family_split_scores_as_whole(budget, qwen2_audio, clips):
    """A tiny Qwen2-Audio, spoken and written prompts alike; with nothing in memory its audio
    tower is offloaded too (and reads its positions' weights without calling their module)."""
    whole = Qwen2Audio(str(qwen2_audio))
    memory = (
        all_but_one_layer(whole.model, whole.model.model.language_model.layers[-1])
        if budget == "all but one layer"
        else NOTHING_IN_MEMORY
    )
    split = load_speech_model(str(qwen2_audio), device_map="auto", max_memory=memory)
    assert isinstance(split, Qwen2Audio)
    expected = {"cpu", "disk"} if budget == "all but one layer" else {"disk"}
    assert places(split.device_map) == expected, split.device_map
    assert split.fingerprint == whole.fingerprint
    requests = checks.mixed_requests(clips)
    assert_same_scores(split, whole, requests, checks.terms_of(whole))
    assert_same_replies(split, whole, requests)


@pytest.fixture(scope="module")
def salad_checkpoint(tiny_qwen2, tmp_path_factory) -> Path:
    """A random SALAD checkpoint over the tiny Qwen2, its LLM saved in full (trainable weights:
    ``frozen()`` must hold when offloaded), its audio read as expected token embeddings (the
    adapter reads the LLM's embedding table, offloaded or not)."""
    config = SpeechLMConfig(
        adapter_layers=1,
        adapter_width=32,
        adapter_heads=2,
        llm=str(tiny_qwen2),
        llm_mode="full",
        adapter_output="vocabulary",
    )
    return SpeechLM.from_config(config, seed=0).save(tmp_path_factory.mktemp("ckpt") / "full")


@pytest.mark.parametrize("budget", ["all but one layer", "nothing in memory"])
def test_a_salad_checkpoints_llm_split_scores_as_whole(budget, salad_checkpoint, clips):
    """The LLM of a SALAD checkpoint spread, its encoder and adapter on ``device``: audio
    embeddings reach the LLM's input device (offloaded or not), and the manifest records where
    the LLM went."""
    whole = load_speech_model(str(salad_checkpoint))
    memory = (
        all_but_one_layer(whole.llm, whole.llm.model.layers[-1])
        if budget == "all but one layer"
        else NOTHING_IN_MEMORY
    )
    split = load_speech_model(str(salad_checkpoint), device_map="auto", max_memory=memory)
    expected = {"cpu", "disk"} if budget == "all but one layer" else {"disk"}
    assert places(split.device_map) == expected, split.device_map
    assert split.fingerprint == whole.fingerprint
    assert_no_stale_tied_pointers(split.llm)
    requests = checks.mixed_requests(clips)
    terms = longest_reduction(whole.llm, whole.adapter)
    assert_same_scores(split, whole, requests, terms)
    assert_same_replies(split, whole, requests)

    models = SimpleNamespace(speech=split, text=whole, cascade=None)
    recorded = manifest(RunSpec(), models, {}, {}, {}, {}, None)["models"]
    assert recorded["speech"]["device_map"] == split.device_map
    assert "device_map" not in recorded["text"]  # loaded whole: nothing to record
    json.dumps(recorded)  # as the manifest file holds it


@pytest.mark.slow  # two gap runs (synthesis, ASR, every condition)
def test_a_gap_run_with_a_device_map_records_it_and_keeps_the_caches(
    salad_checkpoint, tiny_qwen2, fresh_home, tmp_path
):
    """``evaluate(device_map=, max_memory=)`` (``--device-map``, ``--max-memory``) reaches the
    speech LLM and the text LLM; the manifest says where each went; a rerun of the same run on
    one device answers every score from the split run's cache (placement is no part of the
    fingerprints that key it) and gives the same figures."""
    import salad_eval

    options = {
        "model": str(salad_checkpoint),
        "tasks": ["demo"],
        "voices": "espeak/en-us",
        "limit": 2,
        "asr": "whisper-tiny.en",
        "n_boot": 50,
        "divergences": False,
    }
    llm = TextLM(str(tiny_qwen2)).llm  # the checkpoint's LLM and the text LLM: its size
    (memory,) = all_but_one_layer(llm, llm.model.layers[-1]).values()
    split = salad_eval.evaluate(
        **options, device_map="auto", max_memory=f"cpu={memory}", out=tmp_path / "split"
    )
    models = split["manifest"]["models"]
    for role in ("speech", "text"):
        assert places(models[role]["device_map"]) == {"cpu", "disk"}, models[role]
    scores = sorted((fresh_home / "scores").rglob("*.json"))
    assert scores
    whole = salad_eval.evaluate(**options, out=tmp_path / "whole")
    assert sorted((fresh_home / "scores").rglob("*.json")) == scores  # all cached
    models = whole["manifest"]["models"]
    assert "device_map" not in models["speech"] and "device_map" not in models["text"]
    assert whole["metrics"] == split["metrics"]


def test_a_lora_over_offloaded_layers_is_refused_in_one_line(tiny_qwen2, tmp_path):
    """peft would move a LoRA onto the ``meta`` device of the layers it adapts (its weights
    lost): such a checkpoint is refused, naming what to do."""
    config = SpeechLMConfig(
        adapter_layers=1, adapter_width=32, adapter_heads=2, llm=str(tiny_qwen2), llm_mode="lora"
    )
    checkpoint = SpeechLM.from_config(config, seed=0).save(tmp_path / "lora")
    with pytest.raises(SaladError, match="LoRA cannot adapt layers that --device-map offloads"):
        load_speech_model(str(checkpoint), device_map="auto", max_memory=NOTHING_IN_MEMORY)


def test_max_memory_reads_as_accelerate_takes_it():
    assert CallOptions("m", device_map="auto", max_memory="0=20GiB, cuda:1=1.5GB,cpu=100").checked()
    memory = CallOptions("m", max_memory="0=20GiB, cuda:1=1.5GB,cpu=100").max_memory_bytes
    assert memory == {0: 20 * 2**30, 1: 1_500_000_000, "cpu": 100}
    assert CallOptions("m").max_memory_bytes is None


@pytest.fixture
def no_model_loads(monkeypatch):
    """test_bad_input's model-load hook, here for the refusals only (the tests above load)."""
    import transformers

    monkeypatch.setattr(
        transformers.PreTrainedModel, "from_pretrained", classmethod(bad_input._forbid)
    )
    monkeypatch.setattr(launch, "stop_on_signals", lambda: None)
    monkeypatch.setattr(launch, "quiet_third_party", lambda: None)


@pytest.mark.parametrize(
    ("options", "reason"),
    [
        (
            ["--device-map", "auto", "--max-memory", "0=20GG"],
            "--max-memory '0=20GG': '20GG' is not a size such as 20GiB, 500MB or 1000000 (bytes)",
        ),
        (
            ["--device-map", "auto", "--max-memory", "0:20GiB"],
            "--max-memory '0:20GiB': '0:20GiB' is not DEVICE=SIZE; write e.g. "
            "0=20GiB,1=20GiB,cpu=60GiB",
        ),
        (
            ["--device-map", "auto", "--max-memory", "gpu0=20GiB"],
            "--max-memory 'gpu0=20GiB': device 'gpu0' is not a GPU index (0, 1, ...), cpu, mps "
            "or disk; write e.g. 0=20GiB,1=20GiB,cpu=60GiB",
        ),
        (
            ["--max-memory", "cpu=1GiB"],
            "--max-memory bounds the devices of a device map; add --device-map auto",
        ),
        (
            ["--device-map", "auto", "--max-memory", "3=1GiB,cpu=2GiB"],
            "--max-memory names GPU 3 but no GPU is visible; name cpu or disk",
        ),
        (
            ["--device-map", "everywhere"],
            "--device-map 'everywhere' must be one of auto, balanced, balanced_low_0, sequential",
        ),
    ],
    ids=["size", "pair", "device", "no device map", "no such GPU", "strategy"],
)
def test_bad_placement_options_are_one_line_before_any_model_loads(
    options, reason, tmp_path, capsys, no_model_loads
):
    from salad_eval.cli import main

    (tmp_path / "config.json").write_text(
        json.dumps({CHECKPOINT_KEY: {"format": CHECKPOINT_FORMAT}})
    )  # a SALAD checkpoint as far as the checks read it (no weights)
    argv = ["salad-eval", "gap", "--model", str(tmp_path), *options]
    assert bad_input._refused(main, argv, capsys) == f"error: {reason}"
