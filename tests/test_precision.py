"""Precision: one dtype for every model of a run, and float32 master weights in training.

The LLM is a tiny random Qwen2 saved in bf16 as Qwen2.5 checkpoints are (``tiny_qwen2`` in
conftest); the encoder (Whisper tiny.en) and everything else are the real ones.
"""

from __future__ import annotations

import pytest
import torch
import yaml

from salad_eval.models.cascade import Cascade
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig, load_speech_lm
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import ScoringRequest, Text
from salad_train.config import PRESETS, load_config
from salad_train.recipe.batch import plan_batch
from salad_train.recipe.data import Span
from salad_train.recipe.optim import build_optimizer
from salad_train.recipe.stage1 import Stage1Module, student_lm

pytestmark = pytest.mark.integration

pytestmark = (
    pytest.mark.numerics
)  # the identity text@speech == text@base and float32 master weights

REQUESTS = [
    ScoringRequest((Text("Question: What color is the sky? Answer:"),), (" blue", " green")),
    ScoringRequest((Text("The capital of France is "),), ("Paris", "a potato", "")),
]
REPLAY = [
    "The cat sat on the warm mat near the door and watched the rain fall.",
    "Bread is baked in a hot oven until the crust turns brown and crisp.",
]


def _logprobs(model, requests=REQUESTS) -> list[list[float]]:
    return [[s.logprob for s in row] for row in model.score(requests)]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("mode", ["frozen", "full", "lora"])
def test_an_untouched_llm_reads_text_exactly_as_its_base(tiny_qwen2, tmp_path, dtype, mode):
    """text@speech == text@base bit for bit, in each dtype, also after a checkpoint round trip;
    before, a bf16 checkpoint stayed bf16 in the speech LLM while TextLM forced float32."""
    config = SpeechLMConfig(
        encoder="whisper-tiny.en",
        adapter_layers=1,
        adapter_width=32,
        adapter_heads=2,
        llm=str(tiny_qwen2),
        llm_mode=mode,
    )
    base = TextLM(str(tiny_qwen2), dtype=dtype)
    speech = SpeechLM.from_config(config, seed=0, dtype=dtype)
    assert base.dtype == speech.dtype == dtype
    expected = _logprobs(base)
    trainable = [n for n, p in speech.llm.named_parameters() if p.requires_grad]
    assert bool(trainable) == (mode != "frozen")
    # identity by construction: scoring freezes the weights (lm_scoring.frozen), so both copies
    # run the same kernels on the same shapes; a trainable one used to fold lm_head's matmul
    assert _logprobs(speech) == expected
    assert [n for n, p in speech.llm.named_parameters() if p.requires_grad] == trainable
    loaded = load_speech_lm(speech.save(tmp_path / "ckpt"), dtype=dtype)
    assert loaded.dtype == dtype and _logprobs(loaded) == expected
    cascade = Cascade(asr="whisper-tiny.en", text_model=str(tiny_qwen2), dtype=dtype)
    assert cascade.dtype == dtype and _logprobs(cascade) == expected


def _norm_weights(speech_lm: SpeechLM) -> dict[str, torch.Tensor]:
    """The LLM's RMSNorm weights: all exactly 1.0 at initialisation."""
    return {
        n: p.detach().float().clone() for n, p in speech_lm.llm.named_parameters() if "norm" in n
    }


def _one_step(speech_lm: SpeechLM, config) -> dict[str, torch.Tensor]:
    """One Stage I optimizer step on text replay, under bf16 autocast as the trainer takes it;
    returns the norm weights before it."""
    from accelerate import Accelerator

    module = Stage1Module(speech_lm, features={}, config=config, clip_texts={})
    o = config.optim
    optimizer = build_optimizer(
        speech_lm.adapter, speech_lm.llm, o.adapter_lr, o.llm_lr, o.weight_decay, tuple(o.betas)
    )
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    module, optimizer = accelerator.prepare(module, optimizer)
    plan = plan_batch(
        [(Span(text),) for text in REPLAY],
        speech_lm.tokenizer,
        lambda clip: (0, 0.0),
        max_tokens=64,
    )
    before = _norm_weights(speech_lm)
    loss = module(plan)[0]
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    accelerator.backward(loss / plan.n_text_positions)
    optimizer.step()
    return before


def test_a_full_llm_step_at_the_7b_rate_moves_the_weights(tiny_qwen2, fresh_accelerator_state):
    """At the 7B preset's LLM rate (5e-6) one AdamW step moves every weight of size 1 (the
    update is about lr); on bf16 weights, spaced 2^-7 near 1, the same step rounds away."""
    preset = yaml.safe_load((PRESETS / "paper-7b.yaml").read_text())
    assert preset["model"]["llm_mode"] == "full"
    config = load_config(
        "tiny",
        [
            f"model.llm={tiny_qwen2}",
            "model.llm_mode=full",
            "model.adapter_layers=1",
            "model.adapter_width=32",
            "model.adapter_heads=2",
            "model.adapter_output=embedding",
            f"optim.llm_lr={preset['optim']['llm_lr']}",
            f"optim.adapter_lr={preset['optim']['adapter_lr']}",
            "loss.alpha=0.0",  # the next-token loss: KL to a teacher equal to the student is ~0
        ],
    )
    assert config.optim.llm_lr == 5e-6
    speech_lm = student_lm(config, "cpu").train()  # the trainer's own load
    assert {p.dtype for p in speech_lm.parameters()} == {torch.float32}  # checkpoint is bf16
    before = _one_step(speech_lm, config)
    after = _norm_weights(speech_lm)
    assert before and all(torch.equal(w, torch.ones_like(w)) for w in before.values())
    moved = [n for n in before if not torch.equal(before[n], after[n])]
    assert moved == list(before)
    step = max((before[n] - after[n]).abs().max().item() for n in before)
    assert 1e-6 < step < 2e-5  # about lr: no bf16 rounding anywhere on the way

    naive = SpeechLM.from_config(config.model, seed=0, dtype="bfloat16").train()
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    before = _one_step(naive, config)
    after = _norm_weights(naive)
    assert all(torch.equal(before[n], after[n]) for n in before)  # the defect this guards
