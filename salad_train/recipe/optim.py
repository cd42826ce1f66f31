"""AdamW with separate adapter / LLM learning rates and a warmup-stable-decay (WSD) schedule.

WSD keeps the learning rate flat after warmup and decays it linearly to zero over the last
fraction of training, so the checkpoint taken right before the decay is a good point to branch
from (Stage II continues from it and does its own decay). Over a decay of ``n`` steps the factors
are ``(n-1)/n, ..., 1/n, 0``: the line from the plateau (the pre-decay checkpoint) to zero, with
the first decay step already below the plateau and the last one at zero.
"""

from __future__ import annotations

import torch
from torch import nn


def decay_start(total_steps: int, decay_fraction: float) -> int:
    """The first optimizer step whose learning rate is below the plateau."""
    return total_steps - round(decay_fraction * total_steps)


def wsd_factor(step: int, warmup_steps: int, total_steps: int, decay_fraction: float) -> float:
    """Learning-rate multiplier at ``step`` (0-based count of optimizer steps already taken)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    start = decay_start(total_steps, decay_fraction)
    if step < start:
        return 1.0
    return max(0.0, (total_steps - 1 - step) / max(1, total_steps - start))


def build_optimizer(
    adapter: nn.Module,
    llm: nn.Module,
    adapter_lr: float,
    llm_lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, one group per component (the LLM's may be empty)."""
    groups = [
        {
            "params": [p for p in adapter.parameters() if p.requires_grad],
            "lr": adapter_lr,
            "name": "adapter",
        }
    ]
    llm_params = [p for p in llm.parameters() if p.requires_grad]
    if llm_params:
        groups.append({"params": llm_params, "lr": llm_lr, "name": "llm"})
    return torch.optim.AdamW(groups, weight_decay=weight_decay, betas=betas)


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, decay_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: wsd_factor(step, warmup_steps, total_steps, decay_fraction)
    )
