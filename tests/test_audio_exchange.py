"""The same audio anywhere: `salad-eval gap` in empty cache homes, and `salad-eval audio`.

Two empty cache homes (sharing only the prepared assets), in separate processes, with Kokoro and
Piper voices: identical items.jsonl and results.json, because synthesis is a pure function of
text, voice and seed. The first run's audio, exported and imported into a third empty home, is
scored there without synthesizing anything, and gives the same results.json again: how another
machine, whose float kernels may make other bytes, scores exactly the same audio.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from homes import bare_home

from salad_eval.errors import SaladError
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
from salad_eval.speech import exchange

pytestmark = pytest.mark.integration

SALAD_EVAL = str(Path(sys.executable).parent / "salad-eval")
VOICES = "piper/joe,espeak/en-us"  # Kokoro's seeded graph: test_own_data's worker-count test
LIMIT = 3
DOCS = 2  # corpus F/M documents: their spoken spans travel with the items' clips


def _start(salad_home: Path, *args: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "SALAD_HOME": str(salad_home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }  # one thread count: CPU kernels round alike
    return subprocess.Popen(
        [SALAD_EVAL, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _wait(*procs: subprocess.Popen) -> None:
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]


def _gap(salad_home: Path, checkpoint: Path, out: Path) -> subprocess.Popen:
    return _start(
        salad_home,
        "gap",
        "--model",
        str(checkpoint),
        "--tasks",
        "demo",
        "--voices",
        VOICES,
        "--limit",
        str(LIMIT),
        "--asr",
        "whisper-tiny.en",
        "--n-boot",
        "100",
        "--no-controls",
        "--divergence-docs",
        str(DOCS),
        "--out",
        str(out),
    )


def _results(run_dir: Path) -> dict:
    """results.json without what legitimately differs between runs (times, the command line, and
    the commit: in a shared work tree one can land between the runs)."""
    results = json.loads((run_dir / "results.json").read_text())
    for volatile in ("created", "seconds", "command", "git_commit"):
        results["manifest"].pop(volatile)
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("exchange")
    config = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)
    checkpoint = SpeechLM.from_config(config, seed=0).save(root / "random")
    homes = {name: bare_home(root / f"home-{name}") for name in ("a", "b", "c")}
    first, second, imported = (root / f"run-{name}" for name in ("a", "b", "c"))
    _wait(_gap(homes["a"], checkpoint, first), _gap(homes["b"], checkpoint, second))
    exported = root / "export"
    _wait(_start(homes["a"], "audio", "export", str(exported), "--run", str(first)))
    _wait(_start(homes["c"], "audio", "import", str(exported)))
    clips = homes["c"] / "audio" / "clips"
    before = {p: p.stat().st_mtime_ns for p in clips.rglob("*.flac")}
    _wait(_gap(homes["c"], checkpoint, imported))
    after = {p: p.stat().st_mtime_ns for p in clips.rglob("*.flac")}
    assert after == before  # every clip scored was an imported one: nothing was synthesized
    return {
        "first": first,
        "second": second,
        "imported": imported,
        "export": exported,
        "home": homes["c"],
    }


def test_two_empty_cache_homes_give_identical_runs(runs) -> None:
    first, second = runs["first"], runs["second"]
    assert (first / "items.jsonl").read_bytes() == (second / "items.jsonl").read_bytes()
    assert _results(first) == _results(second)
    assert len(_results(first)["manifest"]["clips"]) >= 2 * LIMIT  # every item, in both voices


def test_imported_audio_gives_the_same_results(runs) -> None:
    assert _results(runs["imported"]) == _results(runs["first"])
    index = (runs["export"] / exchange.INDEX).read_text().splitlines()
    rows = [json.loads(line) for line in index]
    assert {row["engine"] for row in rows} == {"piper", "espeak"}  # espeak: also the F/M spans
    assert _results(runs["imported"])["corpus_divergence"]["M"]["n"] == DOCS
    scored = _results(runs["first"])["manifest"]["clips"]
    assert {row["key"]: row["sha256"] for row in rows} == scored


def test_a_tampered_export_is_refused_before_anything_is_stored(runs, tmp_path, monkeypatch):
    tampered = tmp_path / "export"
    shutil.copytree(runs["export"], tampered)
    flac = sorted((tampered / "clips").glob("*.flac"))[-1]
    flac.write_bytes(flac.read_bytes()[:-100])
    monkeypatch.setenv("SALAD_HOME", str(bare_home(tmp_path / "home")))
    with pytest.raises(SaladError, match="does not match its sha256"):
        exchange.import_clips(tampered)
    assert not (tmp_path / "home" / "audio").exists()
    with pytest.raises(SaladError, match="not found"):
        exchange.import_clips(tmp_path / "nothing-here")
    with pytest.raises(SaladError, match="no clip digests|not found"):
        exchange.run_clips(tmp_path)
