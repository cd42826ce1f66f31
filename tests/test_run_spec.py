"""One declaration of a gap run: ``RunSpec``'s fields are ``salad-eval gap``'s options,
``salad_eval.evaluate()``'s keywords and salad-train's ``run:`` keys, with the same defaults and
ranges, and the loop's gap reports take (and key on) every one. A new gap option is one field of
``RunSpec`` (salad_eval/run/spec.py); these tests then cover it as they are."""

from __future__ import annotations

import dataclasses
import inspect
import json

import pytest
import typer
from test_bad_input import _refused, no_model_loads  # noqa: F401 - the model-load hook, autouse

import salad_eval
from salad_eval import corpus_divergence
from salad_eval.cli import app
from salad_eval.errors import SaladError
from salad_eval.gap.records import METRICS
from salad_eval.models.speech_lm import CHECKPOINT_FORMAT, CHECKPOINT_KEY
from salad_eval.options import declared, default_of, option_fields
from salad_eval.run.spec import CallOptions, RunSpec, cli_name
from salad_train.config import RunConfig, load_config
from salad_train.loop.loop import _gap_step, gap_setup

SPEC = {f.name: f for f in option_fields(RunSpec)}
CALL = {f.name: f for f in option_fields(CallOptions)}
TRAINER_ONLY = {"out_dir"}  # the loop's own keys of `run:`; every other key is a gap option


def _cli_default(field: dataclasses.Field) -> object:
    """A declared default as the command line shows it: a list is comma-separated text."""
    default = default_of(field)
    if isinstance(default, list) and not declared(field)["repeat"]:
        return ",".join(map(str, default))
    return None if default is dataclasses.MISSING else default


def test_the_cli_the_api_and_the_trainer_take_the_same_gap_options():
    command = typer.main.get_command(app).commands["gap"]
    cli = {p.name: p for p in command.params}
    assert set(cli) == set(SPEC) | set(CALL)
    for name, field in {**CALL, **SPEC}.items():
        assert cli[name].opts[0] == cli_name(name)
        assert cli[name].default == _cli_default(field), name
        assert declared(field)["help"].rstrip(".") in cli[name].help, name

    api = inspect.signature(salad_eval.evaluate).parameters
    assert set(api) == {"model"} | set(SPEC) | set(CALL)
    for name, field in {**CALL, **SPEC}.items():
        if name != "model":
            assert api[name].default == default_of(field), name

    trainer = {f.name: f for f in dataclasses.fields(RunConfig)}
    assert set(trainer) == set(SPEC) | TRAINER_ONLY
    for name, field in SPEC.items():
        assert trainer[name].type == field.type, name
        assert default_of(trainer[name]) == default_of(field), name
        assert declared(trainer[name]) == declared(field), name  # ranges, choices, help


def test_the_declared_defaults_are_those_of_the_modules_they_reach():
    assert SPEC["divergence_docs"].default == corpus_divergence.DEFAULT_DOCS
    assert SPEC["divergence_voice"].default == corpus_divergence.DEFAULT_VOICE
    assert default_of(SPEC["divergence_span_words"]) == list(corpus_divergence.SPAN_WORDS)
    assert declared(SPEC["metric"])["choices"] == tuple(METRICS)


@pytest.mark.parametrize("name", [n for n, f in SPEC.items() if declared(f)["min"] is not None])
def test_every_range_is_refused_alike_by_the_api_and_the_trainer(name):
    low = declared(SPEC[name])["min"]
    bad = [low - 1, low - 1] if SPEC[name].type.startswith("list[") else low - 1
    with pytest.raises(SaladError, match=f"^{cli_name(name)} "):
        RunSpec(**{name: bad}).checked()  # what evaluate() and `salad-eval gap` run
    with pytest.raises(SaladError, match=f"^config key run.{name}="):
        load_config("tiny", [f"run.{name}={bad}"])
    good = [low, low] if isinstance(bad, list) else low
    RunSpec(**{"shots": 5} | {name: good}).checked()  # its lowest value is fine


def test_limit_1_is_refused_alike_by_salad_eval_gap_and_salad_train_run(tmp_path, capsys):
    """Before any model loads (the hook of test_bad_input) and before any training."""
    from salad_eval.cli import main as eval_main
    from salad_train.cli import main as train_main

    (tmp_path / "config.json").write_text(
        json.dumps({CHECKPOINT_KEY: {"format": CHECKPOINT_FORMAT}})
    )  # a SALAD checkpoint as far as the checks read it (no weights)

    gap = _refused(
        eval_main, ["salad-eval", "gap", "--model", str(tmp_path), "--limit", "1"], capsys
    )
    run = _refused(train_main, ["salad-train", "run", "run.limit=1", "--config", "tiny"], capsys)
    reason = "a gap needs at least 2 items (paired statistics, shuffled audio); raise"
    assert gap == f"error: --limit 1: {reason} --limit"
    assert run == f"error: config key run.limit=1: {reason} run.limit"


def _changed(value: object, annotation: str) -> object:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, list):
        return [*value, value[-1]]
    if value is None:
        return 3 if annotation.startswith("int") else "other"
    return f"{value}x"


def test_the_loops_gap_reports_take_and_key_on_every_option(tmp_path):
    config = load_config("tiny")
    setup = dataclasses.asdict(gap_setup(config.run, {"speech": "m"}, "float32"))
    resolved = {"dtype": "float32", "metric": config.run.metric or "acc"}  # the run's own
    for name in SPEC:
        assert setup[name] == resolved.get(name, getattr(config.run, name)), name

    def key(run) -> str:
        return _gap_step(
            "stage I", tmp_path, "m", dataclasses.replace(config, run=run), tmp_path
        ).key

    base = key(config.run)
    for name in SPEC:
        changed = dataclasses.replace(
            config.run, **{name: _changed(getattr(config.run, name), SPEC[name].type)}
        )
        assert key(changed) != base, name
    assert key(dataclasses.replace(config.run, out_dir="elsewhere")) == base
