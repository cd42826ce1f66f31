"""Stage I recipe: cross-modal distillation of the base LLM into the speech LLM.

Read top to bottom: load (config checks, nothing built yet), set up (model, teacher, data,
features, optimizer, schedule; resume if a checkpoint exists), train (gradient accumulation,
exact loss normalisation across micro-batches and ranks), save, clean up. The same code runs on
one CPU process or under ``accelerate launch`` (data parallel; FSDP through an accelerate config,
see ``salad_train/configs/accelerate_fsdp.yaml``).

Data parallelism splits one global sample order: optimizer step ``s``, micro-step ``m`` and rank
``r`` read samples ``(s * accum + m) * B * world + r * B + [0, B)``. Each rank's loss sum is divided
by the global count of text positions of the whole optimizer step (all micro-batches, all ranks),
so two processes with batch B compute the same gradient as one process with batch 2B.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path

import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn

from salad_eval.home import atomic_write_text
from salad_eval.models.speech_lm import SpeechLM, load_speech_lm, load_waveform
from salad_eval.models.text_lm import load_llm
from salad_eval.progress import progress_bar
from salad_train.config import Config, check_dimensions
from salad_train.recipe.align import align_adapter
from salad_train.recipe.batch import Plan, plan_batch, span_length, student_inputs
from salad_train.recipe.checkpoint import (
    latest_checkpoint,
    load_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from salad_train.recipe.data import MixedData, build_data
from salad_train.recipe.loss import alignment_ctc_loss, distillation_loss
from salad_train.recipe.metrics import MetricsLog
from salad_train.recipe.optim import build_optimizer, build_scheduler, decay_start
from salad_train.recipe.probe import demo_probe
from salad_train.trackers import flat_config


def decoder_and_head(llm: nn.Module) -> tuple[nn.Module, nn.Module]:
    """The decoder (hidden states) and LM head under the LLM, whatever wraps it (a LoRA)."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return base.model, base.get_output_embeddings()


def student_lm(config: Config, device: str) -> SpeechLM:
    """The speech LLM to train: a warm start (``train.init_from``) or a fresh adapter.

    Its weights are float32 masters whatever the checkpoint stores (Qwen2.5 ships bf16): AdamW
    steps at the LLM's rates (5e-6 at 7B) round away on bf16 weights, whose spacing near 1 is
    2^-7; ``train.mixed_precision`` (bf16 autocast on GPU) does the compute.
    """
    if config.train.init_from:
        return load_speech_lm(config.train.init_from, device=device, dtype="float32")
    return SpeechLM.from_config(
        config.model, seed=config.train.seed, device=device, dtype="float32"
    )


def base_teacher(speech_lm: SpeechLM) -> nn.Module:
    """The original text LLM the speech LLM was built on (``config.llm``), frozen, in float32.

    Loaded by name, never copied from the student: Stage II (and any warm start) begins from an
    LLM that training has already moved away from its base.
    """
    llm, _ = load_llm(speech_lm.config.llm, "float32")
    device = speech_lm.adapter.proj_in.weight.device
    return llm.to(device).eval().requires_grad_(False)


class Stage1Module(nn.Module):
    """Everything one forward pass touches: student (adapter + LLM) and teacher.

    ``forward(plan)`` returns summed (loss, kl, nll, ctc) over the plan's text positions (ctc:
    the auxiliary alignment loss over its clips, zero unless ``loss.ctc_weight``).
    """

    def __init__(
        self,
        speech_lm: SpeechLM,
        features: dict[str, torch.Tensor],
        config: Config,
        clip_texts: dict[str, str] | None = None,
    ):
        super().__init__()
        self.speech_lm = speech_lm
        # a separate frozen teacher only when the LLM's own weights train (a LoRA's base, with
        # the adapter disabled, and a frozen LLM are the base already)
        full = speech_lm.config.llm_mode == "full"
        self.teacher = base_teacher(speech_lm) if full else None
        self.features = features
        self.loss_config = config.loss
        tokenizer = speech_lm.tokenizer
        # what each clip says, as tokens: the targets of the auxiliary CTC loss
        self.clip_tokens = {
            clip: tokenizer.encode(" " + text, add_special_tokens=False)
            for clip, text in (clip_texts or {}).items()
        }
        self.blank = speech_lm.blank
        spoken = {t for ids in self.clip_tokens.values() for t in ids}
        self.ctc_vocab = torch.tensor(sorted(spoken | {self.blank}))  # the CTC's classes

    def teacher_context(self):
        if self.speech_lm.config.llm_mode == "lora":
            return self.speech_lm.llm.disable_adapter()
        return contextlib.nullcontext()

    def embed_audio(self, clip: str) -> tuple[torch.Tensor, torch.Tensor]:
        """A cached clip's LLM inputs (boundaries included) and adapter directions."""
        return self.speech_lm.adapt(self.features[clip])

    def forward(self, plan: Plan) -> tuple[torch.Tensor, ...]:
        llm = self.speech_lm.llm
        device = self.speech_lm.adapter.proj_in.weight.device
        table = llm.get_input_embeddings()
        heard: list[tuple[str, torch.Tensor]] = []

        def embed_audio(clip: str) -> torch.Tensor:
            embeds, directions = self.embed_audio(clip)
            heard.append((clip, directions))
            return embeds

        student = student_inputs(plan, lambda ids: table(ids.to(device)), embed_audio)
        decoder, head = decoder_and_head(llm)
        student_hidden = decoder(
            inputs_embeds=student.embeds.to(table.weight.dtype),
            attention_mask=student.attention.to(device),
        ).last_hidden_state
        teacher_llm = self.teacher or llm
        t_decoder, t_head = decoder_and_head(teacher_llm)
        with torch.no_grad(), self.teacher_context():
            teacher_hidden = t_decoder(
                input_ids=plan.teacher_ids.to(device),
                attention_mask=plan.teacher_attention.to(device),
            ).last_hidden_state
        sums = distillation_loss(
            student_hidden,
            teacher_hidden,
            student.mask.to(device),
            plan.teacher_mask.to(device),
            student.targets.to(device),
            head,
            t_head,
            alpha=self.loss_config.alpha,
            temperature=self.loss_config.temperature,
            chunk_size=self.loss_config.chunk_size,
        )
        # a zero term ties the loss to the adapter: a batch of text-only replay under a frozen LLM
        # has no trainable input, and every rank must still run backward
        loss, ctc = sums.loss + 0.0 * self.speech_lm.adapter.out_norm, sums.kl.new_zeros(())
        if self.loss_config.ctc_weight and heard:
            ctc = alignment_ctc_loss(
                [frames for _, frames in heard],
                [self.clip_tokens[clip] for clip, _ in heard],
                table.weight,
                self.blank,
                self.loss_config.ctc_scale,
                self.ctc_vocab,
            )
            loss = loss + self.loss_config.ctc_weight * ctc
        return loss, sums.kl, sums.nll, ctc.detach()


def encode_clips(speech_lm: SpeechLM, clips: list[str]) -> tuple[dict, dict]:
    """Encoder features of every clip (from the on-disk cache when present) and its seconds."""
    features, seconds = {}, {}
    with progress_bar(transient=True) as progress:
        bar = progress.add_task("encoding speech (cached on disk)", total=len(clips))
        for clip in clips:
            wave = load_waveform(clip)
            features[clip] = speech_lm.encoder.encode(wave)
            seconds[clip] = len(wave) / 16_000
            progress.advance(bar)
    return features, seconds


log = logging.getLogger(__name__)
WARMUP = "step-000000"  # the checkpoint the alignment warm-up is saved as


class Stage1Trainer:
    """The recipe's state; ``run()`` trains to ``train.steps`` from wherever the run stopped.

    Stage II subclasses it through three hooks: ``make_data`` (what is sampled), ``begin`` (the
    state of a fresh run) and ``training_record`` (what ``training.json`` says).
    """

    stage = "I"

    def __init__(self, config: Config, accelerator=None, keep_warmup: bool = False):
        from accelerate import Accelerator  # noqa: PLC0415 - deferred: heavy accelerate, loaded on this path only
        from accelerate.utils import DistributedDataParallelKwargs  # noqa: PLC0415 - deferred: heavy accelerate, loaded on this path only

        self.config = config
        self.keep_warmup = keep_warmup  # keep checkpoint 0 (the warm-up) for others to start from
        check_dimensions(config)  # before anything is built or synthesized
        precision = config.train.mixed_precision
        if precision == "auto":
            precision = "bf16" if torch.cuda.is_available() else "no"
        self.out = Path(config.train.out_dir)
        report_to = list(config.train.report_to)
        self.accelerator = accelerator or Accelerator(
            mixed_precision=precision,
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
            log_with=report_to or None,
            project_dir=str(self.out / "trackers") if report_to else None,
        )

    # -- set up ---------------------------------------------------------------------------------

    def setup(self) -> None:
        cfg, acc = self.config, self.accelerator
        torch.manual_seed(cfg.train.seed)
        with acc.main_process_first():  # the main process synthesizes and encodes; others reuse
            speech_lm = student_lm(cfg, str(acc.device))
            speech_lm.train()
            self.data: MixedData = self.make_data()
            features, self.clip_seconds = encode_clips(speech_lm, self.data.audio_clips)
        self.speech_lm = speech_lm
        module = Stage1Module(speech_lm, features, cfg, self.data.clip_texts)
        o = cfg.optim
        optimizer = build_optimizer(
            speech_lm.adapter, speech_lm.llm, o.adapter_lr, o.llm_lr, o.weight_decay, tuple(o.betas)
        )
        self.scheduler = build_scheduler(
            optimizer, o.warmup_steps, cfg.train.steps, o.decay_fraction
        )
        self.module, self.optimizer = acc.prepare(module, optimizer)
        self.data.window(
            lambda span: span_length(span, speech_lm.tokenizer, self._audio_length),
            cfg.data.max_tokens,
        )
        self.step, self.tokens_seen, self.speech_seconds = 0, 0, 0.0
        checkpoint = latest_checkpoint(self.out)
        if checkpoint is not None:
            self._resume(checkpoint)
        if acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.json", json.dumps(cfg.to_dict(), indent=1))
        tracker = None
        if cfg.train.report_to:  # off by default; one run name per output folder
            acc.init_trackers(self.out.name or "salad", config=flat_config(cfg.to_dict()))
            tracker = acc
        self.metrics = MetricsLog(
            self.out / "metrics.jsonl", self.step, acc.is_main_process, tracker
        )
        if checkpoint is None:
            self.begin()

    def make_data(self) -> MixedData:
        """The documents to sample (built on the main process first: it synthesizes)."""
        return build_data(self.config.data, self.config.train.seed)

    def begin(self) -> None:
        """Set up a run that has no checkpoint yet. Stage I: the alignment warm-up, if any, saved
        as checkpoint 0 so that a resumed run does not repeat it."""
        t = self.config.train
        if not t.align_steps:
            return
        with self.accelerator.no_sync(self.module):  # every rank runs the same warm-up alone
            align_adapter(
                self.accelerator.unwrap_model(self.module),
                self.data.audio_clips,
                t.align_steps,
                t.align_batch_size,
                t.align_lr or self.config.optim.adapter_lr,
                t.seed,
                log=lambda row: self.metrics.write(row, every=t.log_every),
                masking=t.align_masking,
            )
        self.save()

    def training_record(self) -> dict:
        """What the model was trained on, for `salad-eval gap` manifests and `report` figures."""
        t = self.config.train
        samples = self.step * t.grad_accum * t.batch_size * self.accelerator.num_processes
        d = self.config.data
        # the TTS voices heard in training: a gap report says which evaluation voices are new
        voices = list(d.voices) if d.corpus or d.tasks else []
        return {
            "stage": self.stage,
            "steps": self.step,
            "tokens_seen": self.tokens_seen,
            "voices": voices,
            "speech_hours": self.speech_seconds / 3600,
            "dataset_speech_hours": sum(self.clip_seconds.values()) / 3600,
            "shares": self.data.shares,
            "drawn": self.data.drawn(samples),
            "config": t.__dict__,
        }

    def _trainable(self) -> dict[str, nn.Parameter]:
        return {n: p for n, p in self.speech_lm.named_parameters() if p.requires_grad}

    def _resume(self, checkpoint: Path) -> None:
        state = load_state(checkpoint)
        with torch.no_grad():
            for name, param in self._trainable().items():
                param.copy_(state["trainable"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.speech_seconds = state["speech_seconds"]

    # -- train ----------------------------------------------------------------------------------

    def _plans(self, step: int) -> list[Plan]:
        t, acc = self.config.train, self.accelerator
        per_micro = t.batch_size * acc.num_processes
        plans = []
        for micro in range(t.grad_accum):
            first = (step * t.grad_accum + micro) * per_micro + acc.process_index * t.batch_size
            docs = [self.data.sample(first + i) for i in range(t.batch_size)]
            plans.append(
                plan_batch(
                    docs, self.speech_lm.tokenizer, self._audio_length, self.config.data.max_tokens
                )
            )
        return plans

    def _audio_length(self, clip: str) -> tuple[int, float]:
        frames = len(self.module_features[clip])
        return math.ceil(frames / self.config.model.stack) + 2, self.clip_seconds[clip]

    @property
    def module_features(self) -> dict[str, torch.Tensor]:
        return self.accelerator.unwrap_model(self.module).features

    def train_step(self) -> dict:
        acc, plans = self.accelerator, self._plans(self.step)
        started = time.perf_counter()
        device = acc.device
        counts = torch.tensor(
            [sum(p.n_text_positions for p in plans), sum(p.n_tokens for p in plans)],
            device=device,
            dtype=torch.float64,
        )
        n_text, n_tokens = (int(v) for v in acc.reduce(counts, "sum").tolist())
        seconds = acc.reduce(
            torch.tensor(sum(p.speech_seconds for p in plans), device=device, dtype=torch.float64),
            "sum",
        ).item()
        totals = torch.zeros(4, device=device, dtype=torch.float64)
        scale = acc.num_processes / max(n_text, 1)  # DDP averages gradients over processes
        for micro, plan in enumerate(plans):
            last = micro == len(plans) - 1
            with contextlib.nullcontext() if last else acc.no_sync(self.module):
                loss, kl, nll, ctc = self.module(plan)
                acc.backward(loss * scale)
            totals += torch.stack([loss.detach(), kl, nll, ctc]).double()
        if self.config.optim.grad_clip:
            acc.clip_grad_norm_(self.speech_lm.parameters(), self.config.optim.grad_clip)
        lrs = {f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups}
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        loss, kl, nll, ctc = (acc.reduce(totals, "sum") / max(n_text, 1)).tolist()
        self.step += 1
        self.tokens_seen += n_tokens
        self.speech_seconds += seconds
        elapsed = time.perf_counter() - started
        return {
            "step": self.step,
            "processes": acc.num_processes,
            "loss": loss,
            "kl": kl,
            "nll": nll,
            "ctc": ctc,
            "text_positions": n_text,
            "tokens_seen": self.tokens_seen,
            "speech_hours_seen": self.speech_seconds / 3600,
            **lrs,
            "tokens_per_s": n_tokens / elapsed,
            "step_seconds": elapsed,
        }

    def fit(self, headline: str, probe=None) -> Path:
        """Say what trains, set up, train to the end, save; returns the model directory."""
        if self.accelerator.is_main_process:
            log.info(headline)
        self.setup()
        final = self.run(probe)
        self.accelerator.end_training()
        return final

    def save(self) -> Path | None:
        """A resumable checkpoint at the current step (main process writes, all wait)."""
        acc, t = self.accelerator, self.config.train
        acc.wait_for_everyone()
        path = None
        pre_decay = f"step-{decay_start(t.steps, self.config.optim.decay_fraction):06d}"
        if acc.is_main_process:
            state = {
                "trainable": {n: p.detach().cpu().clone() for n, p in self._trainable().items()},
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "rng": rng_state(),
                "step": self.step,
                "samples_seen": self.step * t.grad_accum * t.batch_size * acc.num_processes,
                "tokens_seen": self.tokens_seen,
                "speech_seconds": self.speech_seconds,
            }
            keep = frozenset({pre_decay, *([WARMUP] if self.keep_warmup else [])})
            path = save_checkpoint(self.out, self.step, self.speech_lm, state, keep=keep)
            if path.name == pre_decay:
                atomic_write_text(self.out / "pre_decay", pre_decay)
        acc.wait_for_everyone()
        return path

    def run(self, probe=None) -> Path:
        """Train to ``train.steps``; returns the final model directory (``<out>/model``)."""

        t, acc = self.config.train, self.accelerator
        pre_decay = decay_start(t.steps, self.config.optim.decay_fraction)
        columns = (
            *Progress.get_default_columns()[:-1],
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            BarColumn(bar_width=0),
        )
        with progress_bar(*columns, disable=not acc.is_main_process) as progress:
            bar = progress.add_task(
                f"stage {self.stage}", total=t.steps, completed=self.step, info=""
            )
            while self.step < t.steps:
                row = self.train_step()
                self.metrics.write(row, every=t.log_every)
                progress.update(
                    bar,
                    completed=self.step,
                    info=f"loss {row['loss']:.3f}  {row['tokens_per_s']:.0f} tok/s",
                )
                if probe is not None and t.probe_every and self.step % t.probe_every == 0:
                    self.metrics.write(probe(self))
                if self.step % t.save_every == 0 or self.step in (pre_decay, t.steps):
                    self.save()
        final = self.out / "model"
        if acc.is_main_process:
            self.speech_lm.save(final)
            atomic_write_text(
                final / "training.json", json.dumps(self.training_record(), indent=1, default=str)
            )
        acc.wait_for_everyone()
        return final


def run_stage1(config: Config, keep_warmup: bool = False) -> Path:
    """Load, set up, train, save; returns the trained model directory. ``keep_warmup`` keeps
    the warm-up's checkpoint (``checkpoints/step-000000``), which a sweep's other runs share."""
    trainer = Stage1Trainer(config, keep_warmup=keep_warmup)
    m = config.model
    return trainer.fit(
        f"stage I: {m.llm} ({m.llm_mode}) <- {m.encoder}; "
        f"{config.train.steps} steps -> {trainer.out}",
        probe=demo_probe if config.train.probe_every else None,
    )
