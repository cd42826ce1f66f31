"""``salad-train run``: the whole SALAD loop, each step skipped when current and resumable.

Stage I -> gap report -> selection (gamma) -> Stage II -> gap report, and with ``--ablate-random``
also selection with gamma = 0 (same Stage I checkpoint, same budget of *kept* speech, so the
same selected hours to within one text) -> Stage II -> gap report.
Each step owns a directory under ``run.out_dir`` (Stage I keeps ``train.out_dir``) and writes
``done.json`` last, atomically, holding its key: a hash of the step's config and the keys of its
inputs. A rerun recomputes the keys, skips matching steps, and reruns the others, which resume:
Stage I/II from their checkpoints, gap from its score cache, select from its caches. A step whose
key changed starts over in a cleared directory. Finally ``report.{md,json,png}`` compare the
Stage II models with Stage I per task, from the gap runs' own ``results.json``.

With ``--seeds`` the loop runs once per seed (``train.seed`` and ``select.seed`` set to it) in
``<run.out_dir>/seed-<s>/``, Stage I in ``<train.out_dir>-seed<s>`` (``train.out_dir`` itself for
seed 0, as ``make demo SEED=<s>`` names it, so a demo's Stage I is reused), and
``seeds.{md,json,png}`` put the seeds side by side (``salad_train.loop.seeds``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from salad_eval import tasks
from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_text
from salad_eval.models.cascade import Cascade
from salad_eval.models.load import default_text_model, load_speech_model
from salad_eval.models.text_lm import TextLM, default_dtype
from salad_eval.run.runner import Models, run_gap
from salad_eval.run.spec import RunSpec
from salad_train.config import Config, RunConfig, check_replay, load_config, run_options
from salad_train.loop.report import write_loop_report
from salad_train.loop.seeds import write_seeds_report
from salad_train.recipe.stage1 import run_stage1
from salad_train.recipe.stage2 import run_stage2
from salad_train.selection.select import run_select

log = logging.getLogger(__name__)

STAGE1_SECTIONS = ("model", "data", "loss", "optim", "train")


@dataclass
class Step:
    label: str
    done: Path  # written last; its directory is the step's output
    key: str
    action: Callable[[], object]
    owned: bool = True  # the run owns the directory: cleared when it holds another key's work


def step_key(*parts: object) -> str:
    """A short hash of JSON-able parts (config sections, input keys)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def content_key(paths: list[str | None]) -> str:
    """What the data files say: bytes of files, (name, size) of each file under a directory."""
    digest = hashlib.sha256()
    for path in map(Path, filter(None, paths)):
        digest.update(str(path).encode() + b"\0")
        if path.is_file():
            digest.update(path.read_bytes())
        elif path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file()):
                digest.update(f"{file.relative_to(path)}:{file.stat().st_size}\0".encode())
    return digest.hexdigest()[:16]


def _recorded_key(path: Path) -> str | None:
    try:
        return json.loads(path.read_text())["key"]
    except (OSError, ValueError, KeyError):
        return None


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"


def run_step(step: Step, number: int, total: int) -> bool:
    """Run ``step`` unless its done.json holds its key; returns whether it ran."""
    head = f"[{number}/{total}] {step.label} ..."
    if _recorded_key(step.done) == step.key:
        log.info("%s skipped (current)", head)
        return False
    out = step.done.parent
    if step.owned:  # the key of the work in progress, so a rerun knows whether to resume it
        attempt = out / "attempt.json"
        if out.exists() and _recorded_key(attempt) != step.key:
            shutil.rmtree(out)  # another config's partial work: start over
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(attempt, json.dumps({"key": step.key}))
    step.done.unlink(missing_ok=True)
    log.info(head)
    started = time.monotonic()
    step.action()
    seconds = time.monotonic() - started
    atomic_write_text(
        step.done,
        json.dumps(
            {
                "key": step.key,
                "seconds": round(seconds, 1),
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
        ),
    )
    log.info("%s done in %s", head, _duration(seconds))
    return True


def _stage1_sections(config: Config) -> dict:
    tree = config.to_dict()
    return json.loads(json.dumps({k: tree[k] for k in STAGE1_SECTIONS}, default=str))


def check_stage1_dir(config: Config) -> None:
    """``train.out_dir`` may hold only this config's Stage I run (it resumes from it)."""
    saved = Path(config.train.out_dir) / "config.json"
    if not saved.is_file():
        return
    tree = json.loads(saved.read_text())
    if {k: tree.get(k) for k in STAGE1_SECTIONS} != _stage1_sections(config):
        raise SaladError(
            f"{saved.parent} holds a Stage I run of another config; delete it or "
            "set train.out_dir to a new directory"
        )


def check_tasks(run: RunConfig) -> None:
    """Every task loads (a missing benchmark mirror fails now, not after Stage I)."""
    for task in run.tasks:
        tasks.load_items(task, run.limit, data_dir=run.data_dir)
        if run.answer != "loglik" and (problem := tasks.generation_problem(task, run.data_dir)):
            raise SaladError(problem)


def gap_setup(run: RunConfig, names: dict[str, str], dtype: str) -> RunSpec:
    """The ``salad-eval gap`` spec of every gap report of the loop: every option of ``run:``."""
    return RunSpec(**{**run_options(run), "dtype": dtype}, names=names)


def gap_report(model: Path, run: RunConfig, out: Path) -> dict:
    """``salad-eval gap`` on ``model`` with the run's options (``run:``, RunSpec's fields)."""
    import torch  # noqa: PLC0415 - deferred: heavy torch, loaded on this path only

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = run.dtype or default_dtype(device)
    chat = run.chat_template
    speech = load_speech_model(str(model), device=device, dtype=dtype, chat_template=chat)
    text_name = default_text_model(speech, run.text_model)
    text = TextLM(text_name, dtype=dtype, device=device, chat_template=chat)
    setup = gap_setup(run, {"speech": str(model), "text": text_name, "asr": run.asr}, dtype)
    cascade = Cascade(asr=run.asr, text_model=text, device=device)
    training = json.loads((model / "training.json").read_text())
    return run_gap(setup, Models(speech=speech, text=text, cascade=cascade), out, training)


def _gap_step(name: str, model: Path, model_key: str, config: Config, out: Path) -> Step:
    run = config.run
    settings = run_options(run)  # every gap option: a changed one reruns the step
    for key in ("exclude_items", "divergence_corpus"):  # the file's content, not its name
        if settings[key]:
            settings[key] = content_key([settings[key]])
    return Step(
        f"gap ({name})",
        out / "done.json",
        step_key("gap", settings, model_key),
        lambda: gap_report(model, run, out),
    )


def _branch(config: Config, root: Path, stage1_key: str, gamma: float, suffix: str) -> list[Step]:
    """select (gamma) -> Stage II -> gap, in ``select{suffix}``, ``stage2{suffix}``, ..."""
    stage1 = Path(config.train.out_dir)
    select = dataclasses.replace(
        config.select,
        gamma=gamma,
        checkpoint=str(stage1 / "model"),
        out_dir=str(root / f"select{suffix}"),
    )
    select_config = dataclasses.replace(config, select=select)
    select_key = step_key(
        "select",
        asdict(select),
        config.data.voices,
        config.data.text_span_words,
        config.data.speech_span_words,
        stage1_key,
        content_key(select.pool),
    )
    stage2 = dataclasses.replace(
        config.stage2,
        stage1=str(stage1),
        selection=select.out_dir,
        out_dir=str(root / f"stage2{suffix}"),
    )
    stage2_config = dataclasses.replace(config, select=select, stage2=stage2)
    stage2_key = step_key("stage2", asdict(stage2), stage1_key, select_key)
    name = f"stage II{' random' if gamma == 0 else ''}"
    model = Path(stage2.out_dir) / "model"
    return [
        Step(
            f"select (gamma={gamma:g})",
            Path(select.out_dir) / "done.json",
            select_key,
            lambda: run_select(select_config),
        ),
        Step(
            name, Path(stage2.out_dir) / "done.json", stage2_key, lambda: run_stage2(stage2_config)
        ),
        _gap_step(name, model, stage2_key, config, root / f"gap-stage2{suffix}"),
    ]


def plan_steps(config: Config, ablate_random: bool) -> tuple[list[Step], dict[str, Step]]:
    """Every step of the loop in order, and the gap step of each compared model by name."""
    root = Path(config.run.out_dir)
    stage1 = Path(config.train.out_dir)
    data = config.data
    stage1_key = step_key(
        "stage1", _stage1_sections(config), content_key([data.corpus, data.replay, *data.natural])
    )
    steps = [
        Step("stage I", stage1 / "done.json", stage1_key, lambda: run_stage1(config), owned=False),
        _gap_step("stage I", stage1 / "model", stage1_key, config, root / "gap-stage1"),
        *_branch(config, root, stage1_key, config.select.gamma, ""),
    ]
    if ablate_random:
        steps += _branch(config, root, stage1_key, 0.0, "-random")
    gaps = {
        step.label.removeprefix("gap (").removesuffix(")"): step
        for step in steps
        if step.label.startswith("gap")
    }
    return steps, gaps


def run_loop(config: Config, ablate_random: bool = False) -> Path:
    """``salad-train run``: every step (skipped when current), then the report; returns its dir."""
    check_tasks(config.run)
    check_replay(config, stage2=True)
    check_stage1_dir(config)
    steps, gaps = plan_steps(config, ablate_random)
    root = Path(config.run.out_dir)
    total = len(steps) + 1
    for number, step in enumerate(steps, 1):
        run_step(step, number, total)
    report = Step(
        "report",
        root / "report.done.json",
        step_key("report", *(s.key for s in steps)),
        lambda: write_loop_report({name: s.done.parent for name, s in gaps.items()}, root),
        owned=False,
    )
    run_step(report, total, total)
    return root


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` as distinct non-negative seeds, in the order given."""
    try:
        seeds = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SaladError(f"--seeds {text!r} must be distinct non-negative integers, e.g. 0,1,2")
    return seeds


def seed_overrides(config: Config, seed: int) -> list[str]:
    """One seed's loop: its seeds, its Stage I dir (``make demo SEED=<s>``'s) and its run dir."""
    stage1 = config.train.out_dir if seed == 0 else f"{config.train.out_dir}-seed{seed}"
    return [
        f"train.seed={seed}",
        f"select.seed={seed}",
        f"train.out_dir={stage1}",
        f"run.out_dir={Path(config.run.out_dir) / f'seed-{seed}'}",
    ]


def run_seeds(
    config_name: str, overrides: list[str], seeds: list[int], ablate_random: bool = False
) -> Path:
    """``salad-train run --seeds``: the loop once per seed, then the report across seeds."""
    base = load_config(config_name, overrides)
    configs = {
        seed: load_config(config_name, [*overrides, *seed_overrides(base, seed)]) for seed in seeds
    }
    for config in configs.values():  # every seed's Stage I dir is usable before any trains
        check_stage1_dir(config)
    roots = {}
    for number, (seed, config) in enumerate(configs.items(), 1):
        log.info("== seed %s (%s/%s) ==", seed, number, len(seeds))
        roots[seed] = run_loop(config, ablate_random)
    out = Path(base.run.out_dir)
    write_seeds_report(roots, out, base.run.n_boot)
    return out
