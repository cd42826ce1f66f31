"""Stage I end to end at toy scale: exact resume after SIGKILL, data parallel == one process,
and config errors that stop before any work.

The LLM is a tiny random Llama (SmolLM2's tokenizer) so steps take milliseconds; the encoder
(Whisper tiny.en), the TTS (Piper) and everything in salad_train are the real ones.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from numerics import assert_float32_close

from salad_eval.errors import SaladError
from salad_train.config import check_dimensions, load_config
from salad_train.recipe.metrics import read_metrics

pytestmark = pytest.mark.integration

CORPUS = [
    "The cat sat on the warm mat near the door and watched the rain fall.",
    "Bread is baked in a hot oven until the crust turns brown and crisp.",
    "A small boat crossed the quiet lake early in the morning light.",
]
VOCABULARY = 49_152  # SmolLM2's tokenizer: the tiny Llama's vocabulary
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def tiny_llm(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from salad_eval.assets import llm_path

    out = tmp_path_factory.mktemp("tiny-llm")
    tokenizer = AutoTokenizer.from_pretrained(llm_path())
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def config_file(tmp_path_factory, tiny_llm) -> Path:
    root = tmp_path_factory.mktemp("cfg")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    config = {
        "model": {
            "encoder": "whisper-tiny.en",
            "stack": 4,
            "adapter_layers": 1,
            "adapter_width": 32,
            "adapter_heads": 2,
            "llm": str(tiny_llm),
            "llm_mode": "lora",
            "lora_r": 4,
        },
        "data": {
            "corpus": "corpus.txt",
            "voices": ["piper/joe"],
            "replay_prob": 0.4,
            "text_span_words": [3, 5],
            "speech_span_words": [2, 4],
            "max_tokens": 96,
        },
        "loss": {"alpha": 0.7, "chunk_size": 16, "ctc_weight": 0.3},
        "optim": {"adapter_lr": 3e-3, "llm_lr": 1e-3, "warmup_steps": 2, "decay_fraction": 0.25},
        "train": {
            "steps": 12,
            "batch_size": 2,
            "grad_accum": 2,
            "save_every": 2,
            "seed": 3,
            "mixed_precision": "no",
            "align_steps": 3,
            "align_batch_size": 3,
        },
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _command(config: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "salad_train.cli",
        "stage1",
        "--config",
        str(config),
        f"train.out_dir={out}",
        *extra,
    ]


def _final_state(out: Path) -> dict:
    return torch.load(out / "checkpoints" / "step-000012" / "state.pt", weights_only=False)


def _losses(out: Path) -> dict[int, tuple[float, float, float]]:
    rows = read_metrics(out / "metrics.jsonl")
    return {r["step"]: (r["loss"], r["kl"], r["nll"], r["ctc"]) for r in rows if "loss" in r}


def _assert_same_run(a: Path, b: Path, terms: int | None) -> None:
    """The two runs' losses and trained weights: equal (``terms`` None: an identity) or within
    float32 rounding of sums of ``terms`` terms (``numerics``)."""
    losses_a, losses_b = _losses(a), _losses(b)
    assert sorted(losses_a) == sorted(losses_b) == list(range(1, 13))
    for step in losses_a:
        if terms is None:
            assert losses_a[step] == losses_b[step], step
        else:
            assert_float32_close(losses_a[step], losses_b[step], terms=terms)
    state_a, state_b = _final_state(a), _final_state(b)
    assert state_a["tokens_seen"] == state_b["tokens_seen"]
    assert set(state_a["trainable"]) == set(state_b["trainable"])
    assert any("lora" in name for name in state_a["trainable"])
    for name, tensor in state_a["trainable"].items():
        other = state_b["trainable"][name]
        if name.endswith("in_proj_bias"):
            # attention is invariant to the key bias: its true gradient is 0, so Adam turns
            # rounding noise into lr-sized steps there; compare the query and value biases only
            third = len(tensor) // 3
            tensor, other = (
                torch.cat([tensor[:third], tensor[2 * third :]]),
                torch.cat([other[:third], other[2 * third :]]),
            )
        if terms is None:
            assert torch.equal(tensor, other), name
        else:
            assert_float32_close(tensor, other, terms=terms)


@pytest.mark.parametrize("output", ["embedding", "vocabulary"])
def test_sigkill_and_resume_matches_an_uninterrupted_run(config_file, tmp_path, output):
    output = f"model.adapter_output={output}"  # vocabulary: clip lengths follow the adapter
    straight = tmp_path / "straight"
    subprocess.run(
        _command(config_file, straight, output), env=ENV, check=True, capture_output=True
    )
    rows = read_metrics(straight / "metrics.jsonl")
    losses = [r["loss"] for r in rows if "loss" in r]
    assert losses[-1] < losses[0]  # it learns
    assert [r["align_step"] for r in rows if "align_step" in r] == [1, 2, 3]  # the warm-up ran
    assert all(r["ctc"] > 0 for r in rows if "loss" in r)
    assert (straight / "model" / "config.json").is_file()
    assert (straight / "pre_decay").read_text() == "step-000009"  # kept for Stage II
    assert (straight / "checkpoints" / "step-000009" / "state.pt").is_file()

    killed = tmp_path / "killed"
    process = subprocess.Popen(
        _command(config_file, killed, output),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # wait for the event itself: the first checkpoint, or the process's end
    while not (killed / "latest").is_file() and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    stopped_at = int((killed / "latest").read_text().split("-")[1])
    assert stopped_at < 12
    subprocess.run(_command(config_file, killed, output), env=ENV, check=True, capture_output=True)
    # an identity: one process, one thread, the same batches on the same shapes; the resumed
    # run restores weights, optimizer and RNG states bit for bit
    _assert_same_run(straight, killed, terms=None)


def test_two_processes_match_one_with_the_same_global_batch(config_file, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    subprocess.run(_command(config_file, one), env=ENV, check=True, capture_output=True)
    # --multi_gpu starts torchrun; ACCELERATE_USE_CPU makes it a gloo process group on CPU
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "salad_train.cli",
        "stage1",
        "--config",
        str(config_file),
        f"train.out_dir={two}",
        "train.batch_size=1",
    ]
    result = subprocess.run(
        launch, env={**ENV, "ACCELERATE_USE_CPU": "1"}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert {r["processes"] for r in read_metrics(two / "metrics.jsonl") if "loss" in r} == {2}
    # two processes split each batch and sum gradients across them: every loss and gradient
    # sums in another order, the longest such sum the KL's over the vocabulary
    _assert_same_run(one, two, terms=VOCABULARY)


def _one_line_error(fn) -> str:
    with pytest.raises(SaladError) as err:
        fn()
    message = str(err.value)
    assert "\n" not in message
    return message


def test_config_errors_are_one_line_and_come_before_any_work(config_file, tmp_path):
    message = _one_line_error(lambda: load_config(str(config_file), ["train.stepz=3"]))
    assert "unknown config key train.'stepz'" in message and "steps" in message
    assert load_config(str(config_file), ["optim.llm_lr=5e-4"]).optim.llm_lr == 5e-4  # not a str
    message = _one_line_error(lambda: load_config(str(config_file), ["optim.llm_lr=fast"]))
    assert "optim.llm_lr must be a number" in message
    message = _one_line_error(lambda: load_config(str(config_file), ["modle.llm=x"]))
    assert "'modle'" in message
    message = _one_line_error(
        lambda: load_config(str(config_file), [f"data.corpus={tmp_path / 'missing.txt'}"])
    )
    assert "data.corpus" in message and "does not exist" in message
    message = _one_line_error(
        lambda: load_config(str(config_file), [f"data.natural=[{tmp_path / 'nowhere'}]"])
    )
    assert "data.natural" in message

    # a warm start whose adapter was built for another encoder/LLM width
    checkpoint = tmp_path / "other"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(
        json.dumps({"salad_checkpoint": {"adapter": {"in_dim": 2048, "out_dim": 576}}})
    )
    config = load_config(str(config_file), [f"train.init_from={checkpoint}"])
    message = _one_line_error(lambda: check_dimensions(config))
    assert "dimension mismatch" in message and "1536" in message and "32" in message

    # and the CLI prints it as one line with exit status 2
    result = subprocess.run(
        _command(config_file, tmp_path / "x", "loss.alpah=1"),
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error: ")


@pytest.mark.numerics
@pytest.mark.parametrize("output", ["embedding", "vocabulary"])
def test_a_batch_of_text_replay_under_a_frozen_llm_still_backpropagates(config_file, output):
    """The tiny loop's Stage II met a step whose documents were all text replay: with the LLM
    frozen nothing trainable was in the graph and backward failed; every rank must run it."""
    from salad_eval.models.speech_lm import SpeechLM
    from salad_train.recipe.batch import plan_batch
    from salad_train.recipe.data import Span
    from salad_train.recipe.stage1 import Stage1Module

    config = load_config(
        str(config_file), ["model.llm_mode=frozen", f"model.adapter_output={output}"]
    )
    speech_lm = SpeechLM.from_config(config.model, seed=0)
    module = Stage1Module(speech_lm, features={}, config=config, clip_texts={})
    replay = [(Span(line),) for line in CORPUS[:2]]
    plan = plan_batch(replay, speech_lm.tokenizer, lambda clip: (0, 0.0), max_tokens=64)
    loss, kl, nll, ctc = module(plan)
    assert torch.isfinite(loss) and kl >= 0 and nll > 0 and ctc == 0
    loss.backward()  # raised "element 0 of tensors does not require grad" before the fix
    grads = [p.grad for p in speech_lm.adapter.parameters() if p.grad is not None]
    assert grads and all(torch.count_nonzero(g) == 0 for g in grads)  # a step that moves nothing
