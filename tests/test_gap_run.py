"""`salad-eval gap` end to end, with the real embedded models at small scale.

A tiny randomly initialised SALAD checkpoint (real Whisper tiny.en encoder, real SmolLM2) is
scored on a few demo items spoken by Piper; the same run is repeated uninterrupted, killed with
SIGKILL and resumed, and sharded over two processes by `accelerate launch`: all give the same
results.json. A test double whose "speech" path reads the transcript proves the decomposition.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from homes import scoreless_home

from salad_eval.errors import SaladError
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import ScoringRequest, Text, prompt_text
from salad_eval.run.runner import Models, run_gap
from salad_eval.run.spec import RunSpec

pytestmark = pytest.mark.integration

VOICE = "piper/joe"
LIMIT = 6
BIN = Path(sys.executable).parent


class TranscriptSpeechLM:
    """Test double of a speech LLM: the text LLM, its 'speech' path reading the transcript."""

    def __init__(self, text_lm: TextLM):
        self.text_lm = text_lm

    @property
    def fingerprint(self) -> str:
        return "transcript-" + self.text_lm.fingerprint

    @property
    def dtype(self) -> str:
        return self.text_lm.dtype

    def score(self, requests, batch_size=8):
        as_text = [ScoringRequest((Text(prompt_text(r.prompt)),), r.choices) for r in requests]
        return self.text_lm.score(as_text, batch_size)


@pytest.fixture(scope="module")
def checkpoint(random_checkpoint) -> Path:
    return random_checkpoint


def _gap_args(checkpoint: Path, out: Path) -> list[str]:
    return [
        "gap",
        "--model",
        str(checkpoint),
        "--tasks",
        "demo",
        "--voices",
        VOICE,
        "--limit",
        str(LIMIT),
        "--asr",
        "whisper-tiny.en",
        "--n-boot",
        "200",
        "--divergence-docs",
        "2",
        "--out",
        str(out),
    ]


def _env(salad_home: Path) -> dict:
    # CPU kernels round differently with another thread count (~1e-7); fix it so runs compare
    # bit for bit (torchrun would otherwise give each process one thread)
    return {
        **os.environ,
        "SALAD_HOME": str(salad_home),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "2",
    }


def _figures(run_dir: Path) -> dict:
    """results.json without what legitimately differs between runs (times, the command line)."""
    results = json.loads((run_dir / "results.json").read_text())
    for volatile in ("created", "seconds", "command"):
        results["manifest"].pop(volatile)
    results["manifest"]["setup"]["names"]["speech"] = None
    return results


@pytest.fixture(scope="module")
def reference(checkpoint, tmp_path_factory) -> Path:
    """An uninterrupted one-process run."""
    root = tmp_path_factory.mktemp("reference")
    out = root / "run"
    subprocess.run(
        [BIN / "salad-eval", *_gap_args(checkpoint, out)],
        env=_env(scoreless_home(root / "home")),
        check=True,
    )
    return out


def test_report_has_every_condition_control_and_identity(reference):
    results = json.loads((reference / "results.json").read_text())
    overall = results["metrics"]["acc"]["overall"]
    conditions = {
        "text@base",
        "text@speech",
        "speech@speech",
        "speech@cascade",
        "speech@speech:silent",
        "speech@speech:shuffled",
    }
    assert conditions <= set(overall["accuracy"])
    for figure in [
        *overall["accuracy"].values(),
        overall["gap"],
        overall["forgetting"],
        overall["misalignment"],
    ]:
        assert figure["n"] == LIMIT and figure["ci_low"] <= figure["value"] <= figure["ci_high"]
    assert overall["gap"]["num"] == overall["forgetting"]["num"] + overall["misalignment"]["num"]
    assert (
        overall["gap"]["value"] == overall["forgetting"]["value"] + overall["misalignment"]["value"]
    )
    rows = [json.loads(line) for line in (reference / "items.jsonl").read_text().splitlines()]
    assert len(rows) == LIMIT * 6
    assert all("answer_kl" in r for r in rows if r["condition"] in ("text@speech", "speech@speech"))
    # corpus F and M: a frozen LLM has forgotten nothing, a random adapter is misaligned
    assert results["corpus_divergence"]["F"]["value"] == 0.0
    assert results["corpus_divergence"]["M"]["value"] > 0.0
    assert results["manifest"]["corpus_divergence"]["documents"] == 2
    assert all("wer" in r for r in rows if r["condition"] == "speech@cascade")
    # a frozen LLM behind a random adapter has forgotten nothing: identical text scores
    base = [r["logprobs"] for r in rows if r["condition"] == "text@base"]
    assert base == [r["logprobs"] for r in rows if r["condition"] == "text@speech"]
    manifest = results["manifest"]  # one dtype (the CPU default), recorded once and per model
    assert manifest["setup"]["dtype"] == "float32"
    assert {model["dtype"] for model in manifest["models"].values()} == {"float32"}
    for plot in ("gap_decomposition.png", "misalignment_by_domain.png", "accuracy_by_voice.png"):
        assert (reference / plot).stat().st_size > 1000


def test_random_adapter_ignores_its_audio(reference):
    """A random adapter carries no information: speech is at the level of the controls."""
    results = json.loads((reference / "results.json").read_text())
    assert results["controls"]["ignores_audio"] is True
    summary = (reference / "summary.md").read_text()
    assert "no evidence that the model's answers depend on its audio" in summary


def test_killed_run_resumes_to_the_same_results(checkpoint, reference, tmp_path):
    salad_home = scoreless_home(tmp_path / "home")
    out = tmp_path / "run"
    args = [BIN / "salad-eval", *_gap_args(checkpoint, out)]
    proc = subprocess.Popen(args, env=_env(salad_home), start_new_session=True)
    # wait for the event itself: enough scores cached, or the run's end
    while proc.poll() is None:
        if len(list((salad_home / "scores").rglob("*.json"))) >= LIMIT + 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (out / "results.json").exists()
    subprocess.run(args, env=_env(salad_home), check=True)
    assert _figures(out) == _figures(reference)


def test_two_processes_under_accelerate_match_one(checkpoint, reference, tmp_path):
    out = tmp_path / "run"
    # --multi_gpu starts torchrun; ACCELERATE_USE_CPU makes it a gloo process group on CPU
    launch = [
        BIN / "accelerate",
        "launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "salad_eval.cli",
        *_gap_args(Path(checkpoint), out),
    ]
    env = {**_env(scoreless_home(tmp_path / "home")), "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(launch, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "(rank 1)" in proc.stderr  # the second process really scored its shard
    assert _figures(out) == _figures(reference)


def test_identity_speech_path_has_no_forgetting_and_no_misalignment(tmp_path):
    text = TextLM("smollm2-135m")
    setup = RunSpec(tasks=["demo"], voices=VOICE, limit=LIMIT, n_boot=100)
    results = run_gap(setup, Models(speech=TranscriptSpeechLM(text), text=text), tmp_path)
    overall = results["metrics"]["acc"]["overall"]
    assert overall["forgetting"]["value"] == 0.0
    assert overall["misalignment"]["value"] == 0.0
    assert overall["gap"]["value"] == 0.0


def test_models_of_another_dtype_than_the_run_are_refused_before_any_work(tmp_path):
    text = TextLM("smollm2-135m")  # float32
    setup = RunSpec(tasks=["demo"], voices=VOICE, limit=LIMIT, dtype="bfloat16")
    with pytest.raises(SaladError, match="one dtype"):
        run_gap(setup, Models(speech=TranscriptSpeechLM(text), text=text), tmp_path)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "{not_ckpt}"], "not a SALAD checkpoint"),
        (["--model", "{ckpt}", "--limit", "0"], "--limit 0: a gap needs at least 2 items"),
        (["--model", "{ckpt}", "--limit", "1"], "at least 2"),
        (["--model", "{ckpt}", "--voices", "coqui/nobody"], "coqui"),
    ],
)
def test_bad_input_is_one_line(args, message, checkpoint, tmp_path):
    not_ckpt = tmp_path / "plain"
    not_ckpt.mkdir()
    args = [a.format(ckpt=checkpoint, not_ckpt=not_ckpt) for a in args]
    proc = subprocess.run(
        [BIN / "salad-eval", "gap", "--tasks", "demo", "--voices", VOICE, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    shutil.rmtree(not_ckpt)


def test_divergence_over_a_corpus(checkpoint, tmp_path):
    """`salad-eval divergence`: the gap report's corpus F and M; F is 0 for a frozen LLM, M is
    positive for a random adapter."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "# two short documents\n"
        "The old lighthouse keeper climbed the stairs every evening to light the lamp for ships.\n"
        "A warm cup of tea on a rainy afternoon makes a quiet book feel even more pleasant.\n"
    )
    out = tmp_path / "divergence.json"
    proc = subprocess.run(
        [
            BIN / "salad-eval",
            "divergence",
            "--model",
            str(checkpoint),
            "--corpus",
            str(corpus),
            "--voice",
            VOICE,
            "--text-words",
            "4",
            "--speech-words",
            "4",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    result = json.loads(out.read_text())
    assert result["setup"] == {
        "corpus": str(corpus),
        "documents": 2,
        "voice": VOICE,
        "span_words": [4, 4],
    }
    f, m = result["figures"]["F"], result["figures"]["M"]
    assert f["value"] == 0.0 and f["n"] == 2
    assert m["value"] > 0.0 and m["n"] == 2
    docs = result["documents"]
    assert m["tokens"] == sum(d["m_tokens"] for d in docs) > 0  # a per-token mean
    # float64 sums over the documents (numpy's against Python's): approx's relative 1e-6
    assert m["value"] == pytest.approx(sum(d["m_sum"] for d in docs) / m["tokens"])
    assert proc.stdout.startswith("F: 0 [0, 0] nats per token over 2 documents")


def test_a_lora_run_prints_no_library_warning(tiny_qwen2, tmp_path):
    """A LoRA checkpoint's gap run (as `make demo`'s) shows salad's output only: peft reads
    transformers' deprecated ``is_gradient_checkpointing`` when it wraps the LLM, a
    FutureWarning salad silences where it calls peft (``speech_lm._peft_wrapping``)."""
    config = SpeechLMConfig(
        adapter_layers=1,
        adapter_width=32,
        adapter_heads=2,
        llm=str(tiny_qwen2),
        llm_mode="lora",
    )
    checkpoint = SpeechLM.from_config(config, seed=0).save(tmp_path / "lora")
    args = [*_gap_args(checkpoint, tmp_path / "run"), "--no-divergences"]
    args[args.index("--limit") + 1] = "2"
    proc = subprocess.run(
        [BIN / "salad-eval", *args],
        env=_env(scoreless_home(tmp_path / "home")),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert not [line for line in proc.stdout.splitlines() if "Warning" in line], proc.stdout
