"""The WSD schedule's endpoints: warmup up to the plateau, then a decay whose first step is
already below the plateau and whose last step is at zero (Stage I and Stage II alike)."""

from __future__ import annotations

import pytest

from salad_eval.errors import SaladError
from salad_train.recipe.optim import decay_start, wsd_factor


@pytest.mark.parametrize(
    ("total", "warmup", "fraction"), [(100, 10, 0.2), (23000, 500, 0.2), (3, 0, 1.0)]
)
def test_wsd_endpoints(total, warmup, fraction):
    factors = [wsd_factor(s, warmup, total, fraction) for s in range(total)]
    start = decay_start(total, fraction)
    if warmup:
        assert factors[warmup - 1] == 1.0 and factors[0] == 1 / warmup
    assert all(f == 1.0 for f in factors[warmup:start])  # the plateau
    assert factors[start] < 1.0  # the decay's first step is below the plateau
    assert factors[-1] == 0.0  # ... and its last is at zero
    decay = factors[start:]
    steps = {round(a - b, 12) for a, b in zip(decay, decay[1:], strict=False)}
    assert steps == {round(1 / (total - start), 12)}  # linear
    assert wsd_factor(total, warmup, total, fraction) == 0.0  # after the run: still zero


def test_stage2_rates_replace_stage1s_from_the_branch_on(tmp_path):
    """stage2.adapter_lr / llm_lr set the plateau Stage II decays from, though the optimizer
    state it loads from pre_decay carries Stage I's rates; unset, Stage I's rates stay."""
    import torch
    from torch import nn

    from salad_train.config import load_config
    from salad_train.recipe.optim import build_optimizer, build_scheduler
    from salad_train.recipe.stage2 import Stage2Trainer, stage2_config

    model = nn.ModuleDict({"adapter": nn.Linear(2, 2), "llm": nn.Linear(2, 2)})
    stage1 = build_optimizer(model.adapter, model.llm, 1e-3, 5e-5, 0.1)
    build_scheduler(stage1, 0, 10, 0.2)
    model.adapter(torch.ones(2)).sum().add(model.llm(torch.ones(2)).sum()).backward()
    stage1.step()
    trainable = {n: p.detach().clone() for n, p in model.named_parameters()}
    state = {"trainable": trainable, "optimizer": stage1.state_dict()}
    torch.save({**state, "tokens_seen": 0, "speech_seconds": 0.0}, tmp_path / "state.pt")

    tiny = load_config("tiny")
    default = stage2_config(tiny, tmp_path).optim
    assert (default.adapter_lr, default.llm_lr) == (tiny.optim.adapter_lr, tiny.optim.llm_lr)
    rates = ["stage2.adapter_lr=2e-3", "stage2.llm_lr=1e-4", "stage2.steps=4"]
    optim = stage2_config(load_config("tiny", rates), tmp_path).optim
    assert (optim.adapter_lr, optim.llm_lr, optim.warmup_steps) == (2e-3, 1e-4, 0)
    trainer = Stage2Trainer.__new__(Stage2Trainer)  # begin() alone: no model or data built
    trainer.pre_decay, trainer.speech_lm = tmp_path, model
    trainer.optimizer = build_optimizer(model.adapter, model.llm, 2e-3, 1e-4, 0.1)
    trainer.scheduler = build_scheduler(trainer.optimizer, 0, 4, 1.0)
    trainer.begin()
    assert trainer.optimizer.state_dict()["state"]  # Stage I's moments came along
    for factor in (3 / 4, 2 / 4):
        lrs = [g["lr"] for g in trainer.optimizer.param_groups]
        assert lrs == pytest.approx([2e-3 * factor, 1e-4 * factor])
        trainer.optimizer.step()
        trainer.scheduler.step()
    with pytest.raises(SaladError, match=r"stage2.llm_lr") as error:
        load_config("tiny", ["stage2.llm_lr=-1"])
    assert "\n" not in str(error.value)
