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
from salad_eval.checks import divergence_inputs, json_lines, text_lines, writable
from salad_eval.errors import SaladError
from salad_eval.home import home
from salad_eval.models.speech_lm import SpeechLMConfig
from salad_eval.options import check_value, declared, option, option_fields, typed
from salad_eval.run.spec import RunSpec
from salad_eval.speech.voices import resolve_voices
from salad_eval.tasks import check_data, get_task, is_local
from salad_train.trackers import check_trackers

PRESETS = Path(str(importlib.resources.files("salad_train") / "configs"))  # package data


@dataclass
class DataConfig:
    """Where speech and text come from and how documents become interleaved sequences."""

    corpus: str | None = None  # text documents (one per line) synthesized into speech
    tasks: list[str] = field(default_factory=list)  # "task:split": solved items as documents
    voices: list[str] = field(default_factory=lambda: ["piper/joe"])
    natural: list[str] = field(default_factory=list)  # LibriSpeech dirs, HF datasets, manifests
    replay: str | None = None  # text-only replay documents; default: the corpus
    replay_prob: float = option(1 / 3, min=0, max=1)
    text_span_words: list[int] = option([10, 30], min=1, ordered=True)
    speech_span_words: list[int] = option([5, 15], min=1, ordered=True)
    max_documents: int | None = option(None, min=1)
    workers: int = option(1, min=1, help="synthesis processes")
    synth_seed: int = option(0, min=0, help="TTS noise: the same seed, the same audio")
    max_tokens: int = option(2048, min=1)


@dataclass
class LossConfig:
    alpha: float = option(1.0, min=0, max=1)
    temperature: float = option(1.0, above=0)
    chunk_size: int = option(1024, min=1)
    ctc_weight: float = option(
        0.0, min=0, help="auxiliary CTC of adapter frames on LLM embeddings (small budgets)"
    )
    ctc_scale: float = option(30.0, above=0, help="cosine-logit scale of that CTC")


@dataclass
class OptimConfig:
    adapter_lr: float = option(1e-3, min=0)
    llm_lr: float = option(5e-5, min=0)
    weight_decay: float = option(0.1, min=0)
    betas: list[float] = option([0.9, 0.95], min=0, max=1, pair=True)
    warmup_steps: int = option(500, min=0)
    decay_fraction: float = option(0.2, min=0, max=1)
    grad_clip: float = option(1.0, min=0)


@dataclass
class TrainConfig:
    out_dir: str = "runs/stage1"
    steps: int = option(1000, min=1)
    batch_size: int = option(8, min=1, help="sequences per process per micro-step")
    grad_accum: int = option(1, min=1)
    seed: int = option(0, min=0)
    save_every: int = option(100, min=1)
    log_every: int = option(1, min=1)
    probe_every: int = option(0, min=0, help="0: no probes")
    probe_task: str = "demo"
    probe_items: int = option(16, min=1)
    probe_docs: int = option(
        4, min=0, help="held-out documents of the probes' corpus F and M (0: none)"
    )
    probe_corpus: str | None = None  # their corpus; None: salad_eval's embedded held-out prose
    mixed_precision: str = option(
        "auto", choices=("auto", "no", "bf16"), help="auto (bf16 on GPU) | no | bf16"
    )
    init_from: str | None = None  # a SALAD checkpoint whose adapter (and LLM weights) to start from
    align_steps: int = option(
        0, min=0, help="CTC-only adapter warm-up before distillation (recipe/align.py)"
    )
    align_batch_size: int = option(32, min=1, help="clips per warm-up step")
    align_lr: float | None = option(
        None, above=0, help="the warm-up's peak adapter LR; None: optim.adapter_lr"
    )
    align_masking: float = option(
        0.0, min=0, help="SpecAugment on the warm-up's features: the masked share"
    )
    report_to: list[str] = field(default_factory=list)  # trackers: tensorboard, wandb, trackio


@dataclass
class SelectConfig:
    """Stage II active selection: pool -> clusters -> per-cluster misalignment -> sampled texts."""

    pool: list[str] = field(default_factory=list)  # .txt / .jsonl files, saved HF datasets, hf:NAME
    pool_column: str = "text"  # the text field of JSONL rows and HF datasets
    pool_split: str = "train"  # the split of an hf:NAME dataset
    max_pool: int | None = option(None, min=1)
    min_words: int = option(8, min=0)
    embedder: str = "all-minilm-l6-v2"  # embedded name, local path or sentence-transformers hub id
    clusters: int = option(128, min=1)
    probe_texts: int = option(
        8, min=1, help="texts per cluster whose misalignment M(c) is measured"
    )
    probe_span_words: int = option(12, min=1, help="spoken words at the start of each probe text")
    gamma: float = option(5.0, min=0, help="P(c) ~ P_pool(c) * M(c)^gamma; 0 is random selection")
    signal: str = option(
        "misalignment",
        choices=("misalignment", "distillation"),
        help="M(c) as KL(speech LLM on text || on speech), or as Stage I's distillation KL "
        "(base LLM on text || speech LLM on speech)",
    )
    budget_hours: float | None = option(
        None, above=0, help="speech to select; None: budget_share x Stage I speech"
    )
    budget_share: float = option(0.01, min=0, max=1)
    max_cer: float = option(
        0.1, min=0, help="selected clips with a higher ASR character error rate are dropped"
    )
    checkpoint: str | None = None  # the Stage I model measuring M(c); default train.out_dir/model
    out_dir: str = "runs/select"
    workers: int = option(1, min=1, help="synthesis processes")
    seed: int = option(0, min=0)


@dataclass
class Stage2Config:
    """Stage II training: branch off Stage I before its decay, train on a three-way mix."""

    steps: int = option(1000, min=1, help="the linear decay from the plateau learning rate to zero")
    stage1: str | None = None  # the Stage I run dir holding pre_decay; default train.out_dir
    selection: str | None = None  # the select dir holding selected.jsonl; default select.out_dir
    natural_share: float = option(
        1 / 3, min=0, help="natural speech (data.natural; else Stage I speech documents)"
    )
    selected_share: float = option(1 / 3, min=0, help="selected synthetic speech")
    replay_share: float = option(1 / 3, min=0, help="text replay (data.replay, else data.corpus)")
    adapter_lr: float | None = option(
        None, min=0, help="Stage II's plateau adapter LR; None: optim.adapter_lr (Stage I's)"
    )
    llm_lr: float | None = option(
        None, min=0, help="Stage II's plateau LLM LR; None: optim.llm_lr (Stage I's)"
    )
    out_dir: str = "runs/stage2"


# `salad-train run`: the whole loop and the gap reports that measure each stage. Its keys are
# RunSpec's options, with RunSpec's defaults and ranges (a gap option is declared there once;
# the loop runs its gap reports with every one), plus the loop's own out_dir.
RunConfig = dataclasses.make_dataclass(
    "RunConfig",
    [
        *(
            (
                f.name,
                f.type,
                dataclasses.field(
                    default=f.default, default_factory=f.default_factory, metadata=f.metadata
                ),
            )
            for f in option_fields(RunSpec)
        ),
        ("out_dir", "str", dataclasses.field(default="runs/loop")),
    ],
)


@dataclass
class SweepConfig:
    """`salad-train sweep`: Stage I once per alpha; the paper's Fig. 3 / Fig. 4 from its probes."""

    alphas: list[float] = option([0.0, 0.5, 1.0], min=0, max=1, help="loss.alpha of each run")
    probe_every: int | None = option(
        None, min=1, help="train.probe_every of each run; None: it, else steps // 5"
    )
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
    "run.data_dir",
    "run.divergence_corpus",
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
            value = typed(value, names[key].type, f"config key {where}{key}")
            meta = declared(names[key])
            if meta is not None:  # its range, choices or pair
                check_value(value, meta, f"{where}{key}", f"config key {where}{key}={value!r}")
        kwargs[key] = value
    return cls(**kwargs)


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
    RunSpec(**run_options(config.run)).checked(lambda name: f"run.{name}")  # options together
    check_paths(config)
    check_names(config)
    check_trackers(config.train.report_to)
    return config


def run_options(run: Any) -> dict[str, Any]:
    """The gap options of a ``run:`` section (all its keys but out_dir), as RunSpec takes them."""
    return {f.name: getattr(run, f.name) for f in option_fields(RunSpec)}


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
    if config.run.divergences:
        divergence_inputs(None, config.run.divergence_voice, "run.divergence_voice")
    if config.run.chat_template:  # as load_speech_model refuses it, before any training
        raise SaladError(
            "run.chat_template applies to external speech LLMs; the loop scores SALAD "
            "checkpoints, in the raw format they were trained on: set it false"
        )
    for name, kind in (
        (config.model.encoder, None),
        (config.model.llm, "llm"),
        (config.run.asr, "asr"),
        (config.run.text_model, "llm"),
        (config.select.embedder, "embedder"),
    ):
        if name is not None:
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
        ("run.divergence_corpus", config.run.divergence_corpus),
        ("train.init_from", config.train.init_from),
        ("run.exclude_items", config.run.exclude_items),
    )
    for label, value in named:
        if value is not None and not Path(value).exists():
            raise SaladError(f"{label} {value} does not exist; fix the path in the config")
    for label, value in named[:4]:
        if value is not None:
            text_lines(value, label)  # UTF-8 text with documents, not a binary or empty file
    if config.run.data_dir is not None and not Path(config.run.data_dir).is_dir():
        raise SaladError(f"run.data_dir {config.run.data_dir} is not a directory; fix the path")
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
