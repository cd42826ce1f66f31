"""The bad-input matrix: every command refuses bad values before any model loads or audio is made.

For each command, bad values of each option type (negative, zero, non-numeric, missing path,
empty file, binary file, malformed YAML/JSON, unknown names) go through the real CLI entry point:
exit status 2, one line ``error: ...``, no traceback. The model-load hook makes any model load,
asset preparation or synthesis raise, so a refusal that came after one would fail the test. Most
cases run in-process (no model is needed to refuse); a few run as real subprocesses.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from salad_eval import launch

BIN = Path(sys.executable).parent


class ModelLoaded(AssertionError):
    """Raised by the hook: a command did work before refusing its input."""


def _forbid(*_args, **_kwargs):
    raise ModelLoaded("a model, asset or clip was loaded or built before the input was refused")


HOOK = """
import importlib, transformers, onnxruntime
from salad_eval.assets import registry
resolve = importlib.import_module("salad_eval.assets.resolve")
from salad_eval.speech import tts
def forbid(*args, **kwargs):
    raise AssertionError("a model, asset or clip was loaded or built before the input was refused")
transformers.PreTrainedModel.from_pretrained = classmethod(forbid)
onnxruntime.InferenceSession.__init__ = forbid
registry.prepare = resolve.prepare = forbid
tts.synthesize = forbid
"""


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """The model-load hook: the single places where models, engines, assets and clips are made."""
    import onnxruntime
    import transformers

    from salad_eval.assets import registry
    from salad_eval.speech import tts

    resolve = importlib.import_module("salad_eval.assets.resolve")  # the package hides the module
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(_forbid))
    monkeypatch.setattr(onnxruntime.InferenceSession, "__init__", _forbid)
    monkeypatch.setattr(registry, "prepare", _forbid)
    monkeypatch.setattr(resolve, "prepare", _forbid)
    monkeypatch.setattr(tts, "synthesize", _forbid)
    # the process-wide parts of the CLI start and end stay out of the test process
    monkeypatch.setattr(launch, "stop_on_signals", lambda: None)
    monkeypatch.setattr(launch, "quiet_third_party", lambda: None)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """Bad and good inputs on disk: empty, binary, malformed files and a checkpoint's config."""
    root = tmp_path_factory.mktemp("inputs")
    binary = bytes(range(256)) * 8
    (root / "empty.txt").write_text("")
    (root / "binary.txt").write_bytes(binary)
    (root / "binary.jsonl").write_bytes(binary)
    (root / "cut.jsonl").write_text('{"audio": "a.flac", "text": "Hello."}\n{"audio": "b.fl')
    (root / "docs.txt").write_text("A first document to speak.\nA second one.\n")
    (root / "bad.yaml").write_text("train: [1, 2\n")
    (root / "binary.yaml").write_bytes(binary)
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "empty.yaml").write_text("")
    for name, content in {
        "run_empty": b"",
        "run_binary": binary,
        "run_malformed": b'{"metric": ',
        "run_incomplete": b'{"metric": "acc", "metrics": {"acc": {}}}',
    }.items():
        (root / name).mkdir()
        (root / name / "results.json").write_bytes(content)
    # a user task whose choices are bare letters and that has no generate: block
    (root / "letters_task").mkdir()
    (root / "letters_task" / "letters.jsonl").write_text(
        '{"question": "Which is a colour? A. red B. dog", "answer": 0}\n'
    )
    (root / "letters_task" / "letters.yaml").write_text(
        "task: letters\nversion: 1\ntext_task: letters\ndata_files:\n  test: letters.jsonl\n"
        "test_split: test\nprompt:\n  - speak: '{{question}}'\n  - text: \"\\nAnswer:\"\n"
        "choices: \"['A', 'B']\"\ntarget: answer\n"
    )
    from salad_eval.models.speech_lm import CHECKPOINT_FORMAT, CHECKPOINT_KEY

    (root / "ckpt").mkdir()  # a SALAD checkpoint as far as the checks read it (no weights)
    (root / "ckpt" / "config.json").write_text(
        json.dumps({CHECKPOINT_KEY: {"format": CHECKPOINT_FORMAT}})
    )
    (root / "trained_ckpt").mkdir()  # its training.json is binary
    (root / "trained_ckpt" / "config.json").write_text((root / "ckpt" / "config.json").read_text())
    (root / "trained_ckpt" / "training.json").write_bytes(binary)
    (root / "bad_ckpt").mkdir()
    (root / "bad_ckpt" / "config.json").write_text("{not json")
    (root / "qwen").mkdir()
    (root / "qwen" / "config.json").write_text('{"model_type": "qwen2_audio"}')
    return {path.name: str(path) for path in root.iterdir()} | {"missing": str(root / "nope")}


def _eval_cases(f: dict[str, str]) -> list[list[str]]:
    gap = ["gap", "--model", f["ckpt"]]
    div = ["divergence", "--model", f["ckpt"], "--corpus", f["docs.txt"]]
    return [
        # synth: numbers, names, paths
        ["synth", "--limit", "-3"],
        ["synth", "--limit", "0"],
        ["synth", "--limit", "abc"],
        ["synth", "--workers", "0"],
        ["synth", "--shots", "-1"],
        ["synth", "--wer-threshold", "-0.5"],
        ["synth", "--wer-threshold", "x"],
        ["synth", "--tasks", ","],
        ["synth", "--tasks", "dem"],
        ["synth", "--voices", "piper/jo"],
        ["synth", "--voices", "piper/joe:length_scale=abc"],
        ["synth", "--data-dir", f["missing"]],
        ["synth", "--data-dir", f["empty.txt"]],
        ["synth", "--limt", "3"],
        # gap
        ["gap"],
        ["gap", "--model", f["missing"]],
        ["gap", "--model", f["empty.txt"]],
        ["gap", "--model", f["bad_ckpt"]],
        ["gap", "--model", f["run_empty"]],
        [*gap, "--limit", "-3"],
        [*gap, "--limit", "0"],
        [*gap, "--limit", "1"],
        [*gap, "--seed", "-1"],
        [*gap, "--synth-seed", "x"],
        [*gap, "--batch-size", "0"],
        # answers by generation
        [*gap, "--answer", "maybe"],
        [*gap, "--answer", "generate", "--max-new-tokens", "0"],
        [*gap, "--answer", "generate", "--samples", "0"],
        [*gap, "--answer", "generate", "--temperature", "-1"],
        [*gap, "--answer", "generate", "--top-p", "0"],
        [*gap, "--answer", "generate", "--samples", "3"],
        [*gap, "--answer", "generate", "--metric", "acc"],
        [*gap, "--metric", "acc_gen"],
        [*gap, "--answer", "generate", "--tasks", "letters", "--include-path", f["letters_task"]],
        [*gap, "--batch-size", "-2"],
        [*gap, "--batch-size", "many"],
        [*gap, "--n-boot", "0"],
        [*gap, "--workers", "0"],
        [*gap, "--shots", "-1"],
        [*gap, "--tasks", "dem"],
        [*gap, "--voices", "nobody"],
        [*gap, "--voices", "recorded"],  # demo has no recordings
        [*gap, "--voices", "recorded:speed=2"],
        [*gap, "--device", "toaster"],
        [*gap, "--voices", "piper/joe+noize=babble:snr=5"],
        [*gap, "--voices", "noise+reverb:x=1"],
        [*gap, "--voices", "kokoro/af_heart"],
        [*gap, "--device", "cuda:99"],
        [*gap, "--dtype", "int8"],
        [*gap, "--text-model", "smollm"],
        [*gap, "--asr", "smollm2-135m"],
        [*gap, "--out", f["docs.txt"]],
        [*gap, "--data-dir", f["missing"]],
        ["gap", "--model", f["trained_ckpt"]],
        [*gap, "--metric", "accuracy"],
        [*gap, "--shot-budget", "0"],
        [*gap, "--shot-budget", "100"],
        [*gap, "--exclude-items", f["missing"]],
        [*gap, "--exclude-items", f["docs.txt"]],
        [*gap, "--divergence-docs", "0"],
        [*gap, "--divergence-corpus", f["missing"]],
        [*gap, "--divergence-corpus", f["empty.txt"]],
        [*gap, "--divergence-corpus", f["binary.txt"]],
        [*gap, "--divergence-voice", "nobody"],
        [*gap, "--divergence-voice", "recorded"],
        [*gap, "--divergence-voice", "espeak/en-us+noise=babble:snr=5"],
        [*gap, "--divergence-span-words", "10"],
        [*gap, "--divergence-span-words", "10,0"],
        [*gap, "--chat-template", "--log-samples", "--seed", "x"],
        # divergence
        ["divergence", "--model", f["ckpt"], "--corpus", f["missing"]],
        ["divergence", "--model", f["ckpt"], "--corpus", f["empty.txt"]],
        ["divergence", "--model", f["ckpt"], "--corpus", f["binary.txt"]],
        ["divergence", "--model", f["qwen"], "--corpus", f["docs.txt"]],
        ["divergence", "--model", f["missing"], "--corpus", f["docs.txt"]],
        [*div, "--limit", "0"],
        [*div, "--speech-words", "0"],
        [*div, "--text-words", "-4"],
        [*div, "--voice", "recorded"],
        [*div, "--voice", "x/y"],
        [*div, "--out", f["ckpt"]],
        # serve
        ["serve"],
        ["serve", "--model", f["missing"]],
        ["serve", "--model", f["bad_ckpt"]],
        ["serve", "--model", "smollm"],
        ["serve", "--model", f["ckpt"], "--chat-template"],
        ["serve", "--model", "smollm2-135m", "--model-type", "nope"],
        ["serve", "--model", "smollm2-135m", "--port", "70000"],
        ["serve", "--model", "smollm2-135m", "--batch-size", "0"],
        ["serve", "--model", "smollm2-135m", "--max-audio-seconds", "0"],
        ["serve", "--model", "smollm2-135m", "--max-request-mb", "-1"],
        ["serve", "--model", "smollm2-135m", "--device", "cuda:99"],
        ["serve", "--model", "smollm2-135m", "--dtype", "int8"],
        ["serve", "--model", "smollm2-135m", "--api-key-env", "SALAD_TEST_NO_SUCH_VARIABLE"],
        # report
        ["report", f["missing"]],
        ["report", f["run_empty"]],
        ["report", f["run_binary"]],
        ["report", f["run_malformed"]],
        ["report", f["run_incomplete"]],
        # view (a folder without report.html, a broken run to rebuild)
        ["view", f["missing"]],
        ["view", f["run_empty"]],
        ["view", "--embed-audio", f["run_empty"]],
        ["view", "--rebuild", f["run_malformed"]],
        ["view", "--rebuild", f["run_incomplete"]],
        ["view", "--rebuild", f["missing"]],
        # tasks, assets
        ["tasks", "--data-dir", f["missing"]],
        ["assets", "prepare", "whisper-base", "nope"],
        ["assets", "prepare", "--x"],
    ]


def _train_cases(f: dict[str, str]) -> list[list[str]]:
    cases = []
    for command in ("stage1", "select", "stage2", "run"):
        cases += [
            [command, "train.steps=abc"],
            [command, "train.steps=-3"],
            [command, "train.steps=0"],
            [command, "loss.alpha=2"],
            [command, "optim.adapter_lr=fast"],
            [command, "train.steps"],
            [command, "train.steps=[1"],
            [command, "train.stepz=3"],
            [command, "--config", f["missing"]],
            [command, "--config", f["bad.yaml"]],
            [command, "--config", f["binary.yaml"]],
            [command, "--config", f["list.yaml"]],
            [command, "--config", f["empty.yaml"]],
            [command, f"data.corpus={f['missing']}"],
            [command, f"data.corpus={f['empty.txt']}"],
            [command, f"data.corpus={f['binary.txt']}"],
            [command, "data.voices=[piper/jo]"],
            [command, "data.workers=0"],
            [command, "data.tasks=[demo:test]"],
            [command, f"data.natural=[{f['binary.jsonl']}]"],
            [command, f"data.natural=[{f['cut.jsonl']}]"],
            [command, "model.llm=smollm"],
            [command, "train.mixed_precision=fp8"],
        ]
    return cases + [
        ["select", "select.clusters=0"],
        ["select", "select.gamma=-1"],
        *(
            [
                "select",
                f"select.pool=[{f[name]}]",
                f"select.checkpoint={f['ckpt']}",
                "select.budget_hours=0.01",
            ]
            for name in ("binary.txt", "binary.jsonl", "missing")
        ),
        ["stage1", "train.probe_docs=-1"],
        ["stage1", f"train.probe_corpus={f['binary.txt']}"],
        ["stage1", f"train.probe_corpus={f['missing']}"],
        ["stage2", "stage2.steps=-1"],
        ["run", "run.tasks=[dem]"],
        ["run", "run.limit=0"],
        ["run", "run.limit=1"],  # as `salad-eval gap --limit 1`: before Stage I trains
        ["run", "run.batch_size=many"],
        ["run", "run.shot_budget=100"],
        ["run", "run.chat_template=true"],
        ["run", "run.divergence_voice=recorded"],
        ["run", f"run.divergence_corpus={f['binary.txt']}"],
        ["run", f"run.data_dir={f['missing']}"],
        ["run", "run.voices=nobody"],
        ["run", "--ablate-random=3"],
        ["stage1", "--conf", "x"],
        ["decontam", "--tasks", "dem"],
        ["decontam", "--n", "0"],
        ["decontam", "--limit", "x"],
        ["decontam", "--out", f["ckpt"]],
        ["decontam", "train.steps=abc"],
    ]


def _refused(main, argv: list[str], capsys) -> str:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", argv)
        with pytest.raises(SystemExit) as exit_info:
            main()
    out, err = capsys.readouterr()
    assert exit_info.value.code == 2, (argv, out, err)
    assert out == "" and "Traceback" not in err, (argv, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    return lines[0]


def test_every_salad_eval_command_refuses_bad_input_before_work(files, capsys):
    from salad_eval.cli import main

    for argv in _eval_cases(files):
        _refused(main, ["salad-eval", *argv], capsys)


def test_every_salad_train_command_refuses_bad_input_before_work(files, capsys):
    from salad_train.cli import main

    for argv in _train_cases(files):
        _refused(main, ["salad-train", *argv], capsys)


def test_the_messages_say_what_is_wrong(files, capsys):
    from salad_eval.cli import main as eval_main
    from salad_train.cli import main as train_main

    gap = ["salad-eval", "gap", "--model", files["ckpt"]]
    assert "--batch-size" in _refused(eval_main, [*gap, "--batch-size", "0"], capsys)
    generate = [*gap, "--answer", "generate"]
    for more, message in (
        (["--max-new-tokens", "0"], "--max-new-tokens 0 is out of range"),
        (["--samples", "0"], "--samples 0 is out of range"),
        (["--temperature", "-1"], "--temperature -1.0 is out of range"),
        (["--top-p", "0"], "--top-p 0.0 is out of range"),
        (["--samples", "3"], "needs --temperature > 0"),
        (["--metric", "acc"], "--metric acc needs log-likelihoods"),
        (["--tasks", "letters", "--include-path", files["letters_task"]], "add a generate:"),
    ):
        assert message in _refused(eval_main, [*generate, *more], capsys), more
    assert "must be one of loglik, generate, both" in _refused(
        eval_main, [*gap, "--answer", "maybe"], capsys
    )
    assert "--limit" in _refused(eval_main, ["salad-eval", "synth", "--limit", "-3"], capsys)
    assert "did you mean demo" in _refused(eval_main, [*gap, "--tasks", "dem"], capsys)
    assert "not UTF-8 text" in _refused(
        eval_main,
        ["salad-eval", "divergence", "--model", files["ckpt"], "--corpus", files["binary.txt"]],
        capsys,
    )
    assert "not a gap report" in _refused(
        eval_main, ["salad-eval", "report", files["run_incomplete"]], capsys
    )
    message = _refused(train_main, ["salad-train", "stage1", "train.steps=abc"], capsys)
    assert "train.steps must be an integer" in message


@pytest.mark.slow
@pytest.mark.parametrize(
    "argv",
    [
        ["salad-eval", "synth", "--limit", "-3"],
        ["salad-eval", "gap", "--model", "MODEL", "--batch-size", "0"],
        ["salad-train", "stage1", "train.steps=abc"],
    ],
)
def test_a_real_process_refuses_with_status_2_and_one_line(files, argv):
    """The installed entry points, in a fresh process with the same model-load hook."""
    argv = [{"MODEL": files["ckpt"], "BINARY_RUN": files["run_binary"]}.get(a, a) for a in argv]
    module = "salad_eval.cli" if argv[0] == "salad-eval" else "salad_train.cli"
    code = f"{HOOK}\nimport sys\nsys.argv = {argv!r}\nfrom {module} import main\nmain()\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
