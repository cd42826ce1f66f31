"""The family registry: ``--model`` dispatch by ``model_type``, ``--model-type``, the one-line
error for an unknown type, ``salad-eval models``, and the plugin door (an adapter registered by
another installed package through the ``salad_eval.models`` entry-point group)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from salad_eval.cli import app
from salad_eval.errors import SaladError
from salad_eval.models import registry
from salad_eval.models.load import load_speech_model, speech_model_kind
from salad_eval.prompt import ScoringRequest, Text

PLUGIN = '''"""A test plugin: a family of "speech LLMs" that prefer short choices."""

from salad_eval.models.registry import Backbone, Family
from salad_eval.prompt import ChoiceScore


class ShortestChoice:
    def __init__(self, name_or_path, device="cpu", dtype="float32", chat_template=False):
        self.name, self._dtype = name_or_path, dtype

    fingerprint = "shortest-choice-1"

    @property
    def dtype(self):
        return self._dtype

    def score(self, requests, batch_size=8):
        return [[ChoiceScore(-float(len(c)), len(c), len(c), False) for c in r.choices]
                for r in requests]


FAMILY = Family("Shortest (test plugin)", ("shortest_lm",), "salad_shortest_plugin:ShortestChoice",
                (Backbone("acme/shortest-1b", "acme/text-1b", "the acme model card", 64, 2),),
                tested=True)
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> Path:
    """The plugin package and its dist-info (entry point included), put on the path."""
    site = tmp_path / "site"
    (site / "salad_shortest_plugin").mkdir(parents=True)
    (site / "salad_shortest_plugin" / "__init__.py").write_text(PLUGIN)
    info = site / "salad_shortest_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: salad-shortest-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nshortest = salad_shortest_plugin:FAMILY\n"
    )
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    return site


def _checkpoint(root: Path, model_type: str) -> str:
    root.mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"model_type": model_type}))
    return str(root)


def test_every_model_type_maps_to_its_family():
    for family in registry.FAMILIES:
        for model_type in family.model_types:
            assert registry.family_for(model_type) is family
        assert family.load_adapter().__name__ in family.adapter
    names = {f.name for f in registry.FAMILIES}
    assert {"Qwen2-Audio", "Qwen2.5-Omni", "Qwen3-Omni", "Voxtral"} <= names


def _cli_error(args: list[str], capsys) -> str:
    """What ``salad-eval ARGS`` prints when it refuses: its one stderr line (exit status 2)."""
    from salad_eval import launch
    from salad_eval.cli import main

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", ["salad-eval", *args])
        patch.setattr(launch, "stop_on_signals", lambda: None)
        patch.setattr(launch, "quiet_third_party", lambda: None)
        with pytest.raises(SystemExit) as exit_info:
            main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    return err.strip()


def test_unknown_model_type_is_one_line_listing_the_families(tmp_path, capsys):
    model = _checkpoint(tmp_path / "m", "whisper_llama_audio")
    with pytest.raises(SaladError) as error:
        speech_model_kind(model)
    message = str(error.value)
    assert "\n" not in message and "'whisper_llama_audio' is not supported" in message
    for family in registry.FAMILIES:
        assert f"{family.name} ({', '.join(family.model_types)})" in message
    assert _cli_error(["gap", "--model", model, "--limit", "2"], capsys) == f"error: {message}"
    with pytest.raises(SaladError, match="'nope' is not supported; supported families: Qwen2"):
        speech_model_kind(model, model_type="nope")


def test_published_text_backbones():
    family = registry.family_for("qwen2_5_omni")
    assert family.text_backbone("Qwen/Qwen2.5-Omni-7B", None).text_model == "Qwen/Qwen2.5-7B"

    class Shape:  # a local copy of the 3B: recognised by its decoder's shape
        hidden_size, num_hidden_layers = 2048, 36

    assert family.text_backbone("/models/omni-3b", Shape()).text_model == "Qwen/Qwen2.5-3B"
    assert family.text_backbone("/models/other", None) is None


def test_models_lists_every_family_backbone_and_tested():
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    for family in registry.FAMILIES:
        row = next(line for line in result.output.splitlines() if f" {family.name} " in line)
        assert (" yes " if family.tested else " no ") in row
        for backbone in family.backbones:
            assert backbone.speech_model in result.output
            assert (backbone.text_model or "not published") in result.output


def test_every_tested_family_runs_the_conformance_suite():
    """``tested`` means its ``tests/test_family_<name>.py`` holds a ``FamilyConformance`` class
    for its adapter: the common checks, run from one place."""
    from family_conformance import FamilyConformance

    for path in sorted(Path(__file__).parent.glob("test_family_*.py")):
        importlib.import_module(path.stem)
    suites, covered = [FamilyConformance], set()
    while suites:
        suite = suites.pop()
        suites += suite.__subclasses__()
        covered |= {suite.adapter} if "adapter" in vars(suite) else set()
    tested = {family.load_adapter() for family in registry.FAMILIES if family.tested}
    assert tested == covered


def test_a_plugin_registers_a_family(plugin, tmp_path):
    family = registry.family_for("shortest_lm")
    assert family.name == "Shortest (test plugin)"
    assert "Shortest (test plugin) (shortest_lm)" in registry.supported()
    model = load_speech_model(_checkpoint(tmp_path / "short", "shortest_lm"))
    assert type(model).__name__ == "ShortestChoice"
    request = ScoringRequest((Text("Pick:"),), (" a", " abc", " ab"))
    assert [s.logprob for s in model.score([request])[0]] == [-2.0, -4.0, -3.0]
    # --model-type forces the family whatever config.json says
    forced = load_speech_model(_checkpoint(tmp_path / "q", "qwen2_audio"), model_type="shortest_lm")
    assert type(forced).__name__ == "ShortestChoice"
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "400"})
    assert "Shortest (test plugin)" in result.output and "acme/text-1b" in result.output


def test_a_broken_plugin_is_a_one_line_error(plugin, monkeypatch):
    (plugin / "salad_shortest_plugin" / "__init__.py").write_text("FAMILY = 'not a family'\n")
    monkeypatch.delitem(sys.modules, "salad_shortest_plugin", raising=False)
    with pytest.raises(SaladError, match="model plugin 'shortest'.* is not a salad_eval"):
        registry.families()


def test_a_hub_id_is_recognised_from_its_config(tmp_path, monkeypatch):
    """A hub id's family comes from its config.json (here from a local HF cache, offline)."""
    revision = "0" * 40
    repo = tmp_path / "hub" / "models--acme--tiny-omni"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    _checkpoint(repo / "snapshots" / revision, "qwen2_5_omni")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    assert speech_model_kind("acme/tiny-omni") == "qwen2_5_omni"
    with pytest.raises(SaladError, match="unreachable offline"):
        speech_model_kind("acme/not-cached")


def test_a_wrong_forced_family_is_a_one_line_error(tmp_path):
    """--model-type forces a family the checkpoint is not: one line naming both, no traceback."""
    model = _checkpoint(tmp_path / "q", "qwen2_audio")
    with pytest.raises(SaladError) as error:
        load_speech_model(model, model_type="gemma3n")
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"--model-type gemma3n: {model} does not")
    assert "Gemma-3n" in message
