"""Coqui TTS on its real code path: a tiny random VITS of Coqui's own config classes.

The models are built by ``fixtures/tiny_coqui.py`` in the Coqui environment (``make coqui``) as
local model folders, one single-speaker and one with two speakers, and spoken through
``coqui/<folder>`` voices by the Coqui worker: clips made, stored, reused and byte-identical
in two empty cache homes; a gap run with a report; export and import; and the refusals of an
unknown speaker or model before any model loads. Nothing here is skipped: without the Coqui
environment every test fails, saying to run ``make coqui``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import soundfile as sf
from homes import bare_home

from salad_eval.errors import SaladError
from salad_eval.speech import coqui, exchange, tts
from salad_eval.speech.voices import parse_voice

pytestmark = pytest.mark.integration

SALAD_EVAL = str(Path(sys.executable).parent / "salad-eval")
BUILD = Path(__file__).parent / "fixtures" / "tiny_coqui.py"
LIMIT = 3
# The model-load hook of test_bad_input, and Coqui's worker: a refusal comes before either.
HOOK = """
from salad_eval.speech import coqui, exchange, tts
def forbid(*args, **kwargs):
    raise AssertionError("a model, a clip or the Coqui worker was used before the refusal")
tts.synthesize = coqui.Worker.request = forbid
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The tiny VITS folders: ``single`` and ``multi`` (speakers alice and bob)."""
    try:
        python = coqui.python()
        coqui.package_version()
    except SaladError as err:
        pytest.fail(f"Coqui's environment is missing ({err}); run `make coqui`")
    root = tmp_path_factory.mktemp("coqui")
    folders = {"single": root / "single", "multi": root / "multi"}
    builds = [
        subprocess.Popen([python, str(BUILD), str(folders["single"])], stderr=subprocess.PIPE),
        subprocess.Popen([python, str(BUILD), str(folders["multi"]), "alice", "bob"]),
    ]
    for build in builds:
        build.communicate(timeout=300)
        assert build.returncode == 0
    return folders


def _salad(home: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "SALAD_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "2"}
    return subprocess.Popen(
        [SALAD_EVAL, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _done(*procs: subprocess.Popen) -> list[str]:
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err[-3000:]
        outs.append(out)
    return outs


def _clips(home: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (home / "audio").rglob("*.flac")}


def test_demo_clips_are_byte_identical_in_two_empty_homes_and_reused(models, tmp_path) -> None:
    homes = [bare_home(tmp_path / name) for name in ("a", "b")]
    voice = f"coqui/{models['single']}"
    synth = ("synth", "--tasks", "demo", "--limit", str(LIMIT), "--voices", voice)
    _done(*(_salad(home, *synth) for home in homes))
    first, second = (_clips(home) for home in homes)
    assert len(first) >= LIMIT  # every item's clip, at least
    assert first == second  # the same names (keys) and the same bytes
    stamps = {p: p.stat().st_mtime_ns for p in (homes[0] / "audio").rglob("*.flac")}
    _done(_salad(homes[0], *synth))
    assert {p: p.stat().st_mtime_ns for p in (homes[0] / "audio").rglob("*.flac")} == stamps


def test_two_speakers_of_one_model_speak_differently(models) -> None:
    text = "The capital of France is Paris."
    alice, bob = (parse_voice(f"coqui/{models['multi']}:speaker={s}") for s in ("alice", "bob"))
    first, again, other = (tts.synthesize(text, v) for v in (alice, alice, bob))
    assert first.dtype == np.float32 and first.size > tts.SAMPLE_RATE // 10
    assert np.array_equal(first, again)
    assert first.shape != other.shape or not np.array_equal(first, other)
    version = tts.voice_version(alice)
    assert version.startswith(f"coqui-tts=={coqui.package_version()};r{tts.REVISION};")
    assert len(version.split(";")[-1].split(",")) == 3  # config.json, model.pth, speakers.json
    listing = _done(
        _salad(
            bare_home(models["multi"].parent / "home"),
            "assets",
            "--voices",
            f"coqui/{models['multi']},coqui/{models['single']}",
        )
    )[0]
    assert "alice, bob" in listing


@pytest.mark.parametrize(
    ("voice", "closest"),
    [("MULTI:speaker=nobdy", "closest: "), ("not-a-model", "closest: tts_models/")],
)
def test_unknown_speaker_or_model_is_refused_before_anything_loads(models, voice, closest):
    voice = "coqui/" + voice.replace("MULTI", str(models["multi"]))
    argv = ["salad-eval", "synth", "--tasks", "demo", "--limit", "1", "--voices", voice]
    code = f"{HOOK}\nimport sys\nsys.argv = {argv!r}\nfrom salad_eval.cli import main\nmain()\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and closest in lines[0], done.stderr


def test_missing_environment_says_make_coqui(monkeypatch) -> None:
    monkeypatch.setenv("SALAD_COQUI_PYTHON", sys.executable)  # salad's own: no coqui-tts
    coqui.python.cache_clear()
    coqui._probe.cache_clear()
    try:
        with pytest.raises(SaladError, match="make coqui"):
            coqui.package_version()
    finally:
        coqui.python.cache_clear()
        coqui._probe.cache_clear()


def test_gap_run_reports_and_the_audio_travels(models, random_checkpoint, tmp_path) -> None:
    home, other = bare_home(tmp_path / "home"), bare_home(tmp_path / "other")
    out, exported = tmp_path / "run", tmp_path / "export"
    voices = f"coqui/{models['single']},espeak/en-us"
    gap = ("gap", "--model", str(random_checkpoint), "--voices", voices, "--tasks", "demo")
    options = ("--limit", str(LIMIT), "--n-boot", "100", "--no-controls", "--no-divergences")
    _done(_salad(home, *gap, *options, "--out", str(out)))
    results = json.loads((out / "results.json").read_text())
    assert (out / "report.html").is_file() and (out / "items.jsonl").is_file()
    # the random voice says nothing Whisper can read: its clips are flagged, and the run says so
    quality = results["manifest"]["synthesis"]["demo"][f"coqui/{models['single']}"]
    assert quality["rows"] == LIMIT and quality["flagged_rows"] >= 1, quality
    assert quality["failed_rows"] == 0  # flagged, never dropped
    _done(_salad(home, "audio", "export", str(exported), "--run", str(out)))
    _done(_salad(other, "audio", "import", str(exported)))
    coqui_clips = {
        row["sha256"]
        for row in map(json.loads, (exported / exchange.INDEX).read_text().splitlines())
        if row["engine"] == "coqui"
    }
    assert coqui_clips
    imported = {p.name: p.read_bytes() for p in (other / "audio").rglob("*.flac")}
    assert imported == {k: v for k, v in _clips(home).items() if k in imported}


def test_sigterm_leaves_no_coqui_worker_and_no_half_clip(models, tmp_path) -> None:
    home = bare_home(tmp_path / "home")
    voice = f"coqui/{models['single']}"
    run = _salad(home, "synth", "--tasks", "demo", "--limit", str(LIMIT), "--voices", voice,
                 "--workers", "2")  # fmt: skip
    try:
        parent = psutil.Process(run.pid)
        deadline = time.monotonic() + 300
        coqui_workers: list[psutil.Process] = []
        while not coqui_workers and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            with contextlib.suppress(psutil.Error):
                coqui_workers = [
                    p
                    for p in parent.children(recursive=True)
                    if "coqui_worker" in " ".join(p.cmdline())
                ]
        assert coqui_workers, "no Coqui worker was started"
        everyone = parent.children(recursive=True)
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 128 + signal.SIGTERM
        _, alive = psutil.wait_procs(everyone, timeout=15)
        assert not alive, f"left running: {[p.cmdline()[-1] for p in alive]}"
    finally:
        if run.poll() is None:
            run.kill()
    for clip in (home / "audio").rglob("*.flac"):  # atomic writes: whatever is stored is whole
        assert sf.info(str(clip)).frames > 0
