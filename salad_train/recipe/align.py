"""Alignment warm-up: before distillation, the adapter alone learns to put each clip's frames on
the LLM's input embeddings of the words the clip speaks (``loss.alignment_ctc_loss``).

The phase needs no LLM forward pass, so it buys far more speech per second than distillation,
and afterwards the frozen LLM reads the adapter's output almost as it reads text; distillation
then starts from an adapter that already carries the words. The paper's recipe has no such phase
(``train.align_steps: 0``); the ``tiny`` preset uses it because a 2-core CPU cannot afford the
distillation steps that would teach the same thing.

Batches are a pure function of (seed, step), so the phase is deterministic; Stage I saves its
result as checkpoint 0, which a resumed run starts from.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import torch

from salad_eval.progress import progress_bar
from salad_train.recipe.loss import alignment_ctc_loss
from salad_train.recipe.optim import wsd_factor


def masked(features: torch.Tensor, share: float, rng: random.Random) -> torch.Tensor:
    """SpecAugment on encoder features: two time masks and two feature masks, each up to
    ``share`` of its axis, set to zero. The warm-up sees each clip many times; masking makes it
    read the words from context and every feature instead of memorising the clips."""
    if not share:
        return features
    features = features.clone()
    frames, dims = features.shape
    for _ in range(2):
        width = rng.randint(0, int(share * frames))
        start = rng.randint(0, frames - width)
        features[start : start + width] = 0
        width = rng.randint(0, int(share * dims))
        start = rng.randint(0, dims - width)
        features[:, start : start + width] = 0
    return features


def align_adapter(
    module,
    clips: list[str],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    log: Callable[[dict], None] = lambda row: None,
    masking: float = 0.0,
) -> None:
    """Train ``module.speech_lm.adapter`` for ``steps`` CTC steps of ``batch_size`` clips.

    ``module`` is a ``Stage1Module`` (its ``features``, ``clip_tokens``, ``ctc_vocab``).
    """
    adapter = module.speech_lm.adapter
    params = [p for p in adapter.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    warmup = max(1, steps // 20)
    table = module.speech_lm.llm.get_input_embeddings().weight
    scale = module.loss_config.ctc_scale
    with progress_bar(transient=True) as progress:
        bar = progress.add_task("aligning adapter (CTC)", total=steps)
        for step in range(steps):
            rng = random.Random(f"{seed}:align:{step}")
            batch = rng.sample(clips, min(batch_size, len(clips)))
            targets = [module.clip_tokens[clip] for clip in batch]
            frames = [
                module.speech_lm.directions(masked(module.features[clip], masking, rng))
                for clip in batch
            ]
            loss = alignment_ctc_loss(frames, targets, table, module.blank, scale, module.ctc_vocab)
            n_tokens = sum(len(t) for t in targets)
            for group in optimizer.param_groups:
                group["lr"] = lr * wsd_factor(step, warmup, steps, 0.2)
            optimizer.zero_grad(set_to_none=True)
            (loss / n_tokens).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            per_token = loss.item() / n_tokens
            progress.update(bar, advance=1, description=f"aligning adapter (CTC {per_token:.2f})")
            log({"step": 0, "align_step": step + 1, "ctc_per_token": per_token})
    optimizer.zero_grad(set_to_none=True)  # no warm-up gradient may leak into step 1
