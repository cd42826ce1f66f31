"""Training configs: plain YAML naming what to build, presets in ``salad_train/configs/``.

``load_config("tiny", ["train.steps=20", "loss.alpha=0.5"])`` reads a preset (or a YAML path),
applies dotted ``key=value`` overrides (values parsed as YAML), and checks every key against the
dataclasses below, so a typo is a one-line error before any work starts. Relative paths inside a
YAML file are relative to that file; paths given as overrides are relative to the working dir.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from salad_eval.assets.resolve import resolve
from salad_eval.checks import json_lines, text_lines, writable
from salad_eval.errors import SaladError
from salad_eval.home import home
from salad_eval.models.speech_lm import SpeechLMConfig
from salad_eval.speech.voices import resolve_voices
from salad_eval.tasks import check_data, get_task, is_local
from salad_train.recipe.trackers import check_trackers

PRESETS = Path(str(importlib.resources.files("salad_train") / "configs"))  # package data


@dataclass
class DataConfig:
    """Where speech and text come from and how documents become interleaved sequences."""

    corpus: str | None = None  # text documents (one per line) synthesized into speech
    tasks: list[str] = field(default_factory=list)  # "task:split": solved items as documents
    voices: list[str] = field(default_factory=lambda: ["piper/joe"])
    natural: list[str] = field(default_factory=list)  # LibriSpeech dirs, HF datasets, manifests
    replay: str | None = None  # text-only replay documents; default: the corpus
    replay_prob: float = 1 / 3
    text_span_words: list[int] = field(default_factory=lambda: [10, 30])
    speech_span_words: list[int] = field(default_factory=lambda: [5, 15])
    max_documents: int | None = None
    workers: int = 1  # synthesis processes
    synth_seed: int = 0  # TTS noise: the same seed, the same audio
    max_tokens: int = 2048


@dataclass
class LossConfig:
    alpha: float = 1.0
    temperature: float = 1.0
    chunk_size: int = 1024
    ctc_weight: float = 0.0  # auxiliary CTC of adapter frames on LLM embeddings (small budgets)
    ctc_scale: float = 30.0  # cosine-logit scale of that CTC


@dataclass
class OptimConfig:
    adapter_lr: float = 1e-3
    llm_lr: float = 5e-5
    weight_decay: float = 0.1
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    warmup_steps: int = 500
    decay_fraction: float = 0.2
    grad_clip: float = 1.0


@dataclass
class TrainConfig:
    out_dir: str = "runs/stage1"
    steps: int = 1000
    batch_size: int = 8  # sequences per process per micro-step
    grad_accum: int = 1
    seed: int = 0
    save_every: int = 100
    log_every: int = 1
    probe_every: int = 0  # 0: no probes
    probe_task: str = "demo"
    probe_items: int = 16
    probe_docs: int = 4  # held-out documents of the probes' corpus F and M (0: none)
    probe_corpus: str | None = None  # their corpus; None: salad_eval's embedded held-out prose
    mixed_precision: str = "auto"  # auto (bf16 on GPU) | no | bf16
    init_from: str | None = None  # a SALAD checkpoint whose adapter (and LLM weights) to start from
    align_steps: int = 0  # CTC-only adapter warm-up before distillation (recipe/align.py)
    align_batch_size: int = 32  # clips per warm-up step
    align_lr: float | None = None  # the warm-up's peak adapter LR; None: optim.adapter_lr
    align_masking: float = 0.0  # SpecAugment on the warm-up's features: the masked share
    report_to: list[str] = field(default_factory=list)  # trackers: tensorboard, wandb, trackio


@dataclass
class SelectConfig:
    """Stage II active selection: pool -> clusters -> per-cluster misalignment -> sampled texts."""

    pool: list[str] = field(default_factory=list)  # .txt / .jsonl files, saved HF datasets, hf:NAME
    pool_column: str = "text"  # the text field of JSONL rows and HF datasets
    pool_split: str = "train"  # the split of an hf:NAME dataset
    max_pool: int | None = None
    min_words: int = 8
    embedder: str = "all-minilm-l6-v2"  # embedded name, local path or sentence-transformers hub id
    clusters: int = 128
    probe_texts: int = 8  # texts per cluster whose misalignment M(c) is measured
    probe_span_words: int = 12  # spoken words at the start of each probe text
    gamma: float = 5.0  # P(c) ~ P_pool(c) * M(c)^gamma; 0 is random selection
    budget_hours: float | None = None  # speech to select; None: budget_share x Stage I speech
    budget_share: float = 0.01
    max_cer: float = 0.1  # selected clips with a higher ASR character error rate are dropped
    checkpoint: str | None = None  # the Stage I model measuring M(c); default train.out_dir/model
    out_dir: str = "runs/select"
    workers: int = 1  # synthesis processes
    seed: int = 0


@dataclass
class Stage2Config:
    """Stage II training: branch off Stage I before its decay, train on a three-way mix."""

    steps: int = 1000  # the linear decay from the plateau learning rate to zero
    stage1: str | None = None  # the Stage I run dir holding pre_decay; default train.out_dir
    selection: str | None = None  # the select dir holding selected.jsonl; default select.out_dir
    natural_share: float = 1 / 3  # natural speech (data.natural; else Stage I speech documents)
    selected_share: float = 1 / 3  # selected synthetic speech
    replay_share: float = 1 / 3  # text replay (data.replay, else data.corpus)
    out_dir: str = "runs/stage2"


@dataclass
class RunConfig:
    """`salad-train run`: the whole loop and the gap reports that measure each stage."""

    tasks: list[str] = field(default_factory=lambda: ["demo"])
    limit: int | None = None  # items per task
    voices: str = "default"  # voice sets and/or voices, as `salad-eval gap --voices`
    asr: str = "whisper-base"  # the cascade's ASR
    shots: int = 0  # spoken few-shot examples per item, as `salad-eval gap --shots`
    shot_budget: int | None = None  # with shots: as many as fit this many text tokens (the paper)
    metric: str = "acc"  # the reports' headline: acc or acc_norm
    exclude_items: str | None = None  # `salad-train decontam --out` file: its item ids are dropped
    batch_size: int = 8  # choices per forward pass when scoring
    n_boot: int = 1000
    controls: bool = True
    out_dir: str = "runs/loop"


@dataclass
class SweepConfig:
    """`salad-train sweep`: Stage I once per alpha; the paper's Fig. 3 / Fig. 4 from its probes."""

    alphas: list[float] = field(default_factory=lambda: [0.0, 0.5, 1.0])  # loss.alpha of each run
    probe_every: int | None = None  # train.probe_every of each run; None: it, else steps // 5
    out_dir: str = "runs/sweep"  # alpha-<a>[-<variant>]/ run dirs, sweep.json, fig3/fig4, sweep.md


@dataclass
class Config:
    model: SpeechLMConfig = field(default_factory=SpeechLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    run: RunConfig = field(default_factory=RunConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PATH_KEYS = (
    "data.corpus",
    "data.replay",
    "data.natural",
    "train.init_from",
    "select.pool",
    "select.checkpoint",
    "stage2.stage1",
    "stage2.selection",
    "train.probe_corpus",
    "run.exclude_items",
)
HUB_PREFIX = "hf:"  # a pool entry naming an HF dataset, not a path


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in names:
            raise SaladError(f"unknown config key {where}{key!r}; valid keys: {', '.join(names)}")
        section = _SECTIONS.get(names[key].type)
        if section is not None:
            if not isinstance(value, dict):
                raise SaladError(f"config section {where}{key!r} must be a mapping")
            value = _build(section, value, f"{where}{key}.")
        else:
            value = _typed(value, names[key].type, f"{where}{key}")
            _check_range(f"{where}{key}", value)
        kwargs[key] = value
    return cls(**kwargs)


def _typed(value: Any, annotation: str, key: str) -> Any:
    """``value`` as the field's declared type, or a one-line error naming key, type and value."""
    base = annotation.removesuffix(" | None")
    if value is None and base != annotation:
        return None
    if base.startswith(("list[", "tuple[")):
        element = base.split("[")[1].split(",")[0].rstrip("]")
        values = [value] if isinstance(value, (str, int, float)) else value  # one value: a list
        if not isinstance(values, (list, tuple)):
            raise SaladError(f"config key {key} must be a list of {element}, got {value!r}")
        typed = [_typed(v, element, key) for v in values]
        return tuple(typed) if base.startswith("tuple[") else typed
    if base == "float" and isinstance(value, str):
        try:
            return float(value)  # YAML reads 5e-4 as a string
        except ValueError:
            pass
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "float": isinstance(value, (int, float)) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
    }.get(base, isinstance(value, str))  # str and the Literal names (checked where they are used)
    if not ok:
        kind = {"int": "an integer", "float": "a number", "bool": "true or false"}.get(base, "text")
        raise SaladError(f"config key {key} must be {kind}, got {value!r}")
    return float(value) if base == "float" else value


# value ranges; a list's rule holds for each element
_RANGES = {
    "model.stack": ">=1",
    "model.adapter_layers": ">=0",
    "model.adapter_width": ">=1",
    "model.adapter_heads": ">=1",
    "model.lora_r": ">=1",
    "model.lora_alpha": ">0",
    "model.readout_scale": ">0",
    "data.replay_prob": "0..1",
    "data.text_span_words": ">=1",
    "data.speech_span_words": ">=1",
    "data.max_documents": ">=1",
    "data.workers": ">=1",
    "data.max_tokens": ">=1",
    "data.synth_seed": ">=0",
    "loss.alpha": "0..1",
    "loss.temperature": ">0",
    "loss.chunk_size": ">=1",
    "loss.ctc_weight": ">=0",
    "loss.ctc_scale": ">0",
    "optim.adapter_lr": ">=0",
    "optim.llm_lr": ">=0",
    "optim.weight_decay": ">=0",
    "optim.betas": "0..1",
    "optim.warmup_steps": ">=0",
    "optim.decay_fraction": "0..1",
    "optim.grad_clip": ">=0",
    "train.steps": ">=1",
    "train.batch_size": ">=1",
    "train.grad_accum": ">=1",
    "train.seed": ">=0",
    "train.save_every": ">=1",
    "train.log_every": ">=1",
    "train.probe_every": ">=0",
    "train.probe_items": ">=1",
    "train.probe_docs": ">=0",
    "train.align_steps": ">=0",
    "train.align_batch_size": ">=1",
    "train.align_lr": ">0",
    "train.align_masking": ">=0",
    "select.max_pool": ">=1",
    "select.min_words": ">=0",
    "select.clusters": ">=1",
    "select.probe_texts": ">=1",
    "select.probe_span_words": ">=1",
    "select.gamma": ">=0",
    "select.budget_hours": ">0",
    "select.budget_share": "0..1",
    "select.max_cer": ">=0",
    "select.workers": ">=1",
    "select.seed": ">=0",
    "stage2.steps": ">=1",
    "stage2.natural_share": ">=0",
    "stage2.selected_share": ">=0",
    "stage2.replay_share": ">=0",
    "run.limit": ">=1",
    "run.batch_size": ">=1",
    "run.n_boot": ">=1",
    "run.shots": ">=0",
    "run.shot_budget": ">=1",
    "sweep.alphas": "0..1",
    "sweep.probe_every": ">=1",
}
_PAIRS = ("data.text_span_words", "data.speech_span_words", "optim.betas")  # exactly two values
_CHOICES = {
    "model.encoder_context": ("window", "clip"),
    "train.mixed_precision": ("auto", "no", "bf16"),
    "run.metric": ("acc", "acc_norm"),
}


def _check_range(key: str, value: Any) -> None:
    if value is None:
        return
    if key in _CHOICES and value not in _CHOICES[key]:
        raise SaladError(f"config key {key}={value!r} must be one of {', '.join(_CHOICES[key])}")
    if key in _PAIRS and len(value) != 2:
        raise SaladError(f"config key {key} must hold two values, got {value!r}")
    if key in _PAIRS[:2] and value[0] > value[1]:
        raise SaladError(f"config key {key} must be [min, max], got {value!r}")
    rule = _RANGES.get(key)
    for x in value if isinstance(value, list) else [value]:
        if rule is None or _within(x, rule):
            continue
        words = rule.replace("..", " to ").replace(">=", ">= ").replace(">0", "> 0")
        raise SaladError(f"config key {key}={value!r} is out of range: it must be {words}")


def _within(x: float, rule: str) -> bool:
    if rule.startswith(">="):
        return x >= float(rule[2:])
    if rule.startswith(">"):
        return x > float(rule[1:])
    low, high = rule.split("..")
    return float(low) <= x <= float(high)


_SECTIONS = {
    "SpeechLMConfig": SpeechLMConfig,
    "DataConfig": DataConfig,
    "LossConfig": LossConfig,
    "OptimConfig": OptimConfig,
    "TrainConfig": TrainConfig,
    "SelectConfig": SelectConfig,
    "Stage2Config": Stage2Config,
    "RunConfig": RunConfig,
    "SweepConfig": SweepConfig,
}


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SaladError(f"override {dotted!r}: {part!r} is not a section")
    node[leaf] = value


def _get_dotted(tree: dict, dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _resolve_paths(tree: dict, base: Path) -> None:
    def resolved(value: str) -> str:
        return value if value.startswith(HUB_PREFIX) else str((base / value).resolve())

    for key in PATH_KEYS:
        value = _get_dotted(tree, key)
        if isinstance(value, str):
            _set_dotted(tree, key, resolved(value))
        elif isinstance(value, list):
            _set_dotted(tree, key, [resolved(v) for v in value])


def load_config(name_or_path: str, overrides: list[str] = ()) -> Config:
    """A validated ``Config`` from a preset name or YAML path plus dotted overrides."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS / f"{name_or_path}.yaml"
    if not path.is_file():
        presets = ", ".join(sorted(p.stem for p in PRESETS.glob("*.yaml")))
        raise SaladError(f"config {name_or_path!r} not found; pass a YAML path or one of {presets}")
    try:
        tree = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())[:120]
        raise SaladError(f"config {path} is not valid YAML ({reason}); fix or replace it") from None
    if not isinstance(tree, dict):
        raise SaladError(f"config {path} must be a YAML mapping")
    _resolve_paths(tree, path.parent)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SaladError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise SaladError(f"override {item!r}: {raw!r} is not a YAML value") from None
        _set_dotted(tree, key, value)
    config = _build(Config, tree, "")
    check_paths(config)
    check_names(config)
    check_trackers(config.train.report_to)
    return config


def check_names(config: Config) -> None:
    """Tasks, voices and model names resolve (no model is loaded, no asset prepared)."""
    for spec in config.data.tasks:
        name, _, split = spec.partition(":")
        if not split or split == get_task(name).test_split:
            raise SaladError(
                f"data.tasks entry {spec!r} must name a split other than the task's evaluation "
                "split, e.g. arc_easy:train"
            )
    for name in [*config.run.tasks, config.train.probe_task]:
        get_task(name)
    checked = [(spec.partition(":")[0], spec.partition(":")[2], 0) for spec in config.data.tasks]
    checked += [(name, None, config.run.shots) for name in config.run.tasks]
    for name, split, shots in [*checked, (config.train.probe_task, None, 0)]:
        if is_local(name, split=split):  # hub data is checked where it is loaded
            check_data(name, shots=shots, split=split)
    resolve_voices(",".join(config.data.voices))
    resolve_voices(config.run.voices)
    for name, kind in (
        (config.model.encoder, None),
        (config.model.llm, "llm"),
        (config.run.asr, "asr"),
        (config.select.embedder, "embedder"),
    ):
        resolve(name, kind=kind, build=False)


def check_paths(config: Config) -> None:
    """Every data path exists, some speech source is named and every output folder (and the
    cache home) can be written (before anything is built)."""
    home()
    for label, value in (
        ("train.out_dir", config.train.out_dir),
        ("select.out_dir", config.select.out_dir),
        ("stage2.out_dir", config.stage2.out_dir),
        ("run.out_dir", config.run.out_dir),
        ("sweep.out_dir", config.sweep.out_dir),
    ):
        writable(Path(value), label)
    data = config.data
    named = (
        ("data.corpus", data.corpus),
        ("data.replay", data.replay),
        ("train.probe_corpus", config.train.probe_corpus),
        ("train.init_from", config.train.init_from),
        ("run.exclude_items", config.run.exclude_items),
    )
    for label, value in named:
        if value is not None and not Path(value).exists():
            raise SaladError(f"{label} {value} does not exist; fix the path in the config")
    for label, value in named[:3]:
        if value is not None:
            text_lines(value, label)  # UTF-8 text with documents, not a binary or empty file
    for value in data.natural:
        if not Path(value).exists():
            raise SaladError(f"data.natural {value} does not exist; fix the path in the config")
        if value.endswith(".jsonl"):
            json_lines(value, "data.natural")  # a manifest: JSON rows, not binary or truncated
    if data.corpus is None and not data.tasks and not data.natural:
        raise SaladError(
            "no speech data: set data.corpus or data.tasks (synthetic) or data.natural (recorded)"
        )
    check_replay(config)


def check_replay(config: Config, stage2: bool = False) -> None:
    """Replay that is asked for (by Stage I, and with ``stage2`` by Stage II) has text to draw
    from: the paper presets name none by default, and an empty replay list would turn it off."""
    data = config.data
    asked = [("data.replay_prob", data.replay_prob)]
    if stage2:
        asked.append(("stage2.replay_share", config.stage2.replay_share))
    wanted = [f"{key}={value:g}" for key, value in asked if value > 0]
    if wanted and data.replay is None and data.corpus is None and not data.tasks:
        raise SaladError(
            f"no replay text for {' and '.join(wanted)}: set data.replay to a text corpus (one "
            "document per line), or set those to 0 to train without text replay"
        )


def model_dimensions(model: SpeechLMConfig) -> tuple[int, int]:
    """(encoder feature dim, LLM hidden size), read from the model configs, no weights loaded."""
    from transformers import AutoConfig  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    encoder = AutoConfig.from_pretrained(resolve(model.encoder))
    llm = AutoConfig.from_pretrained(resolve(model.llm, kind="llm"))
    return getattr(encoder, "d_model", None) or encoder.hidden_size, llm.hidden_size


def check_dimensions(config: Config) -> None:
    """A warm start (``train.init_from``) must fit this encoder x stack and this LLM."""
    if config.train.init_from is None:
        return
    checkpoint = Path(config.train.init_from) / "config.json"
    try:
        adapter = json.loads(checkpoint.read_text())["salad_checkpoint"]["adapter"]
    except (OSError, ValueError, KeyError):
        raise SaladError(
            f"train.init_from {config.train.init_from} is not a SALAD checkpoint; "
            "pass a directory written by salad-train"
        ) from None
    encoder_dim, llm_dim = model_dimensions(config.model)
    want = (encoder_dim * config.model.stack, llm_dim)
    if (adapter["in_dim"], adapter["out_dim"]) != want:
        raise SaladError(
            f"dimension mismatch: train.init_from's adapter maps {adapter['in_dim']} -> "
            f"{adapter['out_dim']}, but {config.model.encoder} x stack {config.model.stack} gives "
            f"{want[0]} and {config.model.llm} expects {want[1]}; use a matching encoder/LLM/stack"
        )
