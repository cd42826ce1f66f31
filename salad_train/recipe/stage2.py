"""Stage II recipe: branch off Stage I before its decay and train on the selected speech.

The Stage I trainer does the work (same module, loss, batch plans, checkpoints and resume);
Stage II changes three things through its hooks:

- a fresh run starts from ``<stage1>/pre_decay`` (the checkpoint taken right before the learning
  rate decays): its trainable weights bit for bit and its optimizer moments;
- the data is a mix, by default equal parts, of natural speech (``data.natural``; when none is
  configured, Stage I's own speech documents stand in), the selected synthetic speech
  (``<selection>/selected.jsonl``, rows not dropped) and text replay (Stage I's: ``data.replay``,
  else the text of its synthetic documents), drawn as a pure function of (seed, global index)
  so a resume is exact;
- the learning rate goes linearly from the plateau (Stage I's rates, or ``stage2.adapter_lr`` /
  ``stage2.llm_lr``: Stage II's rates change without retraining Stage I) to zero over
  ``stage2.steps`` (its first step is already below the plateau, its last at zero;
  ``salad_train/recipe/optim.py``).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from salad_eval.errors import SaladError
from salad_train.config import Config, check_replay
from salad_train.recipe.checkpoint import load_state
from salad_train.recipe.data import Document, MixedData, Span, build_data, natural_documents
from salad_train.recipe.stage1 import Stage1Trainer

SOURCES = ("natural", "selected", "replay")


def selected_documents(selection: Path) -> list[Document]:
    """The kept rows of ``selected.jsonl`` as documents: speech spans carry their clips."""
    manifest = selection / "selected.jsonl"
    if not manifest.is_file():
        raise SaladError(f"no selection at {manifest}; run `salad-train select` first")
    docs = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if not row["dropped"]:
            docs.append(
                tuple(
                    Span(text, audio if speech else None)
                    for (text, speech), audio in zip(row["spans"], row["audio"], strict=True)
                )
            )
    if not docs:
        raise SaladError(f"{manifest} keeps no text (all dropped or empty); raise the budget")
    return docs


def stage2_paths(config: Config) -> tuple[Path, Path, Path]:
    """(Stage I run dir, its pre_decay checkpoint, selection dir), checked."""
    stage1 = Path(config.stage2.stage1 or config.train.out_dir)
    pointer = stage1 / "pre_decay"
    if not pointer.is_file():
        raise SaladError(
            f"{stage1} has no pre_decay checkpoint; run `salad-train stage1` to the "
            "end first (or set stage2.stage1)"
        )
    checkpoint = stage1 / "checkpoints" / pointer.read_text().strip()
    if not (checkpoint / "state.pt").is_file():
        raise SaladError(f"{checkpoint} is incomplete; rerun `salad-train stage1`")
    return stage1, checkpoint, Path(config.stage2.selection or config.select.out_dir)


def stage2_config(config: Config, checkpoint: Path) -> Config:
    """The Stage I config that trains Stage II: own dir, steps and (if set) plateau rates, no
    warmup, all decay."""
    s = config.stage2
    train = dataclasses.replace(
        config.train, out_dir=s.out_dir, steps=s.steps, init_from=str(checkpoint / "model")
    )
    optim = dataclasses.replace(
        config.optim,
        adapter_lr=config.optim.adapter_lr if s.adapter_lr is None else s.adapter_lr,
        llm_lr=config.optim.llm_lr if s.llm_lr is None else s.llm_lr,
        warmup_steps=0,
        decay_fraction=1.0,
    )
    return dataclasses.replace(config, train=train, optim=optim)


class Stage2Trainer(Stage1Trainer):
    """Stage I's trainer with Stage II's start, data and record (see the module docstring)."""

    stage = "II"

    def __init__(self, config: Config, accelerator=None):
        check_replay(config, stage2=True)
        self.stage1, self.pre_decay, self.selection = stage2_paths(config)
        super().__init__(stage2_config(config, self.pre_decay), accelerator)

    def make_data(self) -> MixedData:
        cfg = self.config
        seed = cfg.train.seed
        stage1 = build_data(cfg.data, seed).sources
        sources = {
            "natural": natural_documents(cfg.data) if cfg.data.natural else stage1["speech"],
            "selected": selected_documents(self.selection),
            "replay": stage1["replay"],
        }
        s = cfg.stage2
        shares = {
            "natural": s.natural_share,
            "selected": s.selected_share,
            "replay": s.replay_share,
        }
        return MixedData(sources, shares, seed)

    def begin(self) -> None:
        """Weights and optimizer moments of pre_decay; speech hours and tokens count on from it."""
        state = load_state(self.pre_decay)
        with torch.no_grad():
            for name, param in self._trainable().items():
                param.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        for group, lr in zip(
            self.optimizer.param_groups, self.scheduler.get_last_lr(), strict=True
        ):
            group["lr"] = lr  # this schedule's first step
        self.tokens_seen, self.speech_seconds = state["tokens_seen"], state["speech_seconds"]

    def training_record(self) -> dict:
        selected = [
            json.loads(ln) for ln in (self.selection / "selected.jsonl").read_text().splitlines()
        ]
        kept = [row for row in selected if not row["dropped"]]
        return {
            **super().training_record(),
            "stage1": str(self.stage1),
            "stage1_checkpoint": str(self.pre_decay),
            "selection": str(self.selection),
            "adapter_lr": self.config.optim.adapter_lr,  # the plateau it decays from
            "llm_lr": self.config.optim.llm_lr,
            "selected_texts": len(kept),
            "selected_speech_hours": sum(row["seconds"] for row in kept) / 3600,
            "natural": "data.natural"
            if self.config.data.natural
            else "Stage I speech documents (no data.natural configured)",
        }


def run_stage2(config: Config) -> Path:
    """Load, set up, train, save; returns the Stage II model directory."""
    trainer = Stage2Trainer(config)
    return trainer.fit(
        f"stage II: from {trainer.pre_decay}, selection {trainer.selection}; "
        f"{trainer.config.train.steps} steps -> {trainer.out}"
    )
