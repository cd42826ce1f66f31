"""An installed salad works anywhere: the wheel ships the task specs, the demo items, the training
presets and corpora, and report.html's script, style and template. It is built, installed (no
deps) into a scratch venv that sees this environment's packages, and used from a folder outside
the checkout: it lists every task, loads the `tiny` preset and scores demo items exactly as the
checkout does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from numerics import assert_float32_close

from salad_eval.home import home, project_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SMOLLM2_TERMS = 1536  # SmolLM2-135M's longest dot product: its MLP's down projection

ROOT = project_root()
USE = """
import json
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import ScoringRequest, text_prompt
from salad_eval.tasks import TASKS_DIR, load_items
from salad_train.config import load_config

config = load_config("tiny")
items = load_items("demo", limit=3)
scores = TextLM("smollm2-135m").score([ScoringRequest(text_prompt(i), i.choices) for i in items])
print(json.dumps({"corpus": config.data.corpus, "steps": config.train.steps,
                  "out_dir": config.train.out_dir, "tasks_dir": str(TASKS_DIR),
                  "logprobs": [s.logprob for row in scores for s in row]}))
"""


def _git_files(*folders: str) -> set[str]:
    out = subprocess.run(
        ["git", "ls-files", *folders], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the tracked files: no stale build/ folder, nothing untracked."""
    source, out = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("wheel")
    for path in _git_files():
        if (ROOT / path).is_file():
            (source / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / path, source / path)
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(source)]
    subprocess.run([*build, "--disable-pip-version-check"], check=True)
    (path,) = out.glob("salad-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A scratch venv with only the wheel installed; the dependencies come from this one's
    site-packages (a path, so its editable salad is not seen)."""
    root = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    import torch  # the dependencies live where torch does

    (site,) = (root / "lib").glob("python*/site-packages")
    (site / "deps.pth").write_text(str(Path(torch.__file__).parents[1]) + "\n")
    subprocess.run(
        [
            root / "bin" / "python",
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--disable-pip-version-check",
            str(wheel),
        ],
        check=True,
    )
    return root


def _run(venv: Path, cwd: Path, *args: str, **env: str) -> str:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SALAD_")}
    environ.update(HF_HUB_OFFLINE="1", SALAD_HOME=str(home()), **env)
    done = subprocess.run(
        [venv / "bin" / args[0], *args[1:]], cwd=cwd, env=environ, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_wheel_holds_every_module_spec_preset_and_corpus(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in _git_files("salad_eval", "salad_train"):
        if path.endswith((".py", ".yaml", ".txt", ".js", ".css", ".html")):  # report.html's too
            assert path in names, f"{path} is missing from the wheel"
    for path in _git_files("tasks"):
        assert "salad_eval/task_specs/" + path.removeprefix("tasks/") in names


def test_installed_salad_lists_every_task_outside_the_checkout(venv, tmp_path):
    listed = _run(venv, tmp_path, "salad-eval", "tasks", COLUMNS="200")
    from salad_eval.tasks import list_tasks

    assert {line.split("│")[1].strip() for line in listed.splitlines() if line.count("│") > 2} - {
        "task"
    } == set(list_tasks())


def test_installed_salad_loads_tiny_and_scores_demo_items(venv, tmp_path):
    used = json.loads(_run(venv, tmp_path, "python", "-c", USE))
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    corpus = site / "salad_train" / "corpus" / "everyday.txt"
    assert Path(used["corpus"]).resolve() == corpus.resolve()
    assert used["steps"] == 100 and used["out_dir"] == "runs/tiny"  # relative to the cwd
    assert Path(used["tasks_dir"]).resolve() == (site / "salad_eval" / "task_specs").resolve()
    # the checkout's own scoring of the same items: same weights, prompts and threads
    from salad_eval.models.text_lm import TextLM
    from salad_eval.prompt import ScoringRequest, text_prompt
    from salad_eval.tasks import load_items

    items = load_items("demo", limit=3)
    here = TextLM("smollm2-135m").score([ScoringRequest(text_prompt(i), i.choices) for i in items])
    assert_float32_close(
        used["logprobs"], [s.logprob for row in here for s in row], terms=SMOLLM2_TERMS
    )


def test_the_cache_home_outside_a_checkout(venv, tmp_path):
    code = "from salad_eval.home import home; print(home())"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SALAD_")}
    environ["HOME"] = str(tmp_path)
    done = subprocess.run(
        [venv / "bin" / "python", "-c", code],
        cwd=tmp_path,
        env=environ,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.strip() == str(tmp_path / ".cache" / "salad")
