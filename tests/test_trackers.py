"""Training metrics through accelerate's trackers: off by default; `train.report_to=tensorboard`
makes a real (toy-scale) Stage I run write TensorBoard events holding exactly the rows of its
metrics.jsonl; an unknown tracker is a one-line config error before any work.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from numerics import assert_float32_close

from salad_eval.errors import SaladError
from salad_train.config import load_config
from salad_train.recipe.metrics import read_metrics

pytestmark = pytest.mark.integration

CORPUS = [
    "The cat sat on the warm mat near the door and watched the rain fall.",
    "Bread is baked in a hot oven until the crust turns brown and crisp.",
]


@pytest.fixture(scope="module")
def config_file(tmp_path_factory) -> Path:
    """A toy Stage I: a tiny random Llama with SmolLM2's tokenizer, Whisper tiny.en, eSpeak."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from salad_eval.assets import llm_path

    root = tmp_path_factory.mktemp("toy")
    tokenizer = AutoTokenizer.from_pretrained(llm_path())
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    LlamaForCausalLM(config).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    spec = {
        "model": {
            "encoder": "whisper-tiny.en",
            "stack": 4,
            "adapter_layers": 1,
            "adapter_width": 32,
            "adapter_heads": 2,
            "llm": str(root / "llm"),
        },
        "data": {
            "corpus": "corpus.txt",
            "voices": ["espeak/en-us"],
            "replay_prob": 0.0,
            "text_span_words": [3, 5],
            "speech_span_words": [2, 4],
            "max_tokens": 64,
        },
        "loss": {"chunk_size": 16},
        "optim": {"warmup_steps": 1},
        "train": {
            "steps": 3,
            "batch_size": 2,
            "save_every": 3,
            "mixed_precision": "no",
            "align_steps": 2,
            "align_batch_size": 2,
        },
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_trackers_are_off_by_default_and_checked(config_file):
    assert load_config(str(config_file)).train.report_to == []
    assert load_config(str(config_file), ["train.report_to=tensorboard"]).train.report_to == [
        "tensorboard"
    ]
    with pytest.raises(SaladError, match="'tensorbord' is not a tracker; use one of tensorboard"):
        load_config(str(config_file), ["train.report_to=tensorbord"])


def test_stage1_logs_its_metrics_to_tensorboard(config_file, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "salad_train.cli",
            "stage1",
            "--config",
            str(config_file),
            f"train.out_dir={out}",
            "train.report_to=tensorboard",
        ],
        env=env,
        check=True,
    )
    rows = read_metrics(out / "metrics.jsonl")
    (events,) = {
        p.parent
        for p in (out / "trackers").rglob("events.out.tfevents.*")
        if p.parent.name == out.name
    }
    board = EventAccumulator(str(events))
    board.Reload()
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    logged = board.Scalars("loss")
    assert [e.step for e in logged] == [1, 2, 3]
    # the event file stores each loss as one float32: a single rounding, no sum
    assert_float32_close([e.value for e in logged], [r["loss"] for r in steps], terms=1)
    warmup = [r for r in rows if "align_step" in r]
    assert [e.step for e in board.Scalars("align/ctc_per_token")] == [
        r["align_step"] for r in warmup
    ]
