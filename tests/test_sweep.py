"""`salad-train sweep`: the Fig. 3 / Fig. 4 fits on constructed data with known answers, the
report on constructed probe rows, and one tiny end-to-end sweep through the CLI.

The end-to-end run uses the toy model of ``test_train_stage1.py`` (a tiny random Llama with
SmolLM2's tokenizer; the real Whisper tiny.en, Piper and probes) for two steps per alpha.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from salad_eval.errors import SaladError
from salad_train.sweep import fits
from salad_train.sweep.sweep import parse_variant, write_report

# -- fits -----------------------------------------------------------------------------------------


def test_loo_r2_is_one_on_an_exact_line_and_matches_a_case_worked_by_hand():
    x = np.arange(6.0)
    assert fits.loo_r2(x, 3 - 2 * x) == pytest.approx(1.0)
    # (0,0), (1,2), (2,1): leaving out each point, the line through the other two predicts
    # 3, 0.5 and 4: errors -3, 1.5, -3, PRESS 20.25; total SS about the mean 1 is 2
    assert fits.loo_r2([0, 1, 2], [0, 2, 1]) == pytest.approx(1 - 20.25 / 2)
    with pytest.raises(fits.TooFewPoints):
        fits.loo_r2([0, 1], [1, 2])


def test_partial_r2_is_the_share_of_residual_variance_and_zero_for_a_copied_control():
    control = np.array([0.0, 0, 0, 0, 1, 1, 1, 1])
    x = np.array([-1.0, 1, -1, 1, -1, 1, -1, 1])  # orthogonal to the intercept and the control
    noise = np.array([1.0, 1, -1, -1, 1, 1, -1, -1])  # orthogonal to all three
    y = 2 + 3 * control + 0.5 * x + noise
    # the control leaves 0.5 x + noise; x explains its 0.25 * 8 of (0.25 + 1) * 8
    assert fits.partial_r2(y, x, control) == pytest.approx(0.25 / 1.25)
    assert fits.partial_r2(y, control, control) == pytest.approx(0.0, abs=1e-12)
    two = np.column_stack([control, noise])
    assert fits.partial_r2(y, x, two) == pytest.approx(1.0)  # both controls leave only 0.5 x


@pytest.mark.parametrize("E, B, beta", [(0.3, 50.0, 0.4), (0.05, 2e3, 0.7), (1.2, 5.0, 0.15)])
def test_power_law_fit_recovers_known_parameters(E, B, beta):
    D = np.geomspace(1e4, 1e8, 8)
    fit = fits.power_law_fit(D, E + B * D**-beta)
    for name, want in (("E", E), ("B", B), ("beta", beta)):
        assert fit[name] == pytest.approx(want, rel=1e-3), name
    assert fit["r2"] == pytest.approx(1.0) and fit["n"] == 8


# -- the report -----------------------------------------------------------------------------------

E, B, BETA = 0.2, 30.0, 0.5
A_SPEECH, B_SPEECH, A_TEXT, B_TEXT = 0.6, -0.1, 0.7, -0.5


def _write_run(root: Path, name: str, alpha: float, steps: list[int]) -> list[dict]:
    """Probe rows with M = E + B D^-beta exactly, F growing with alpha's complement and tokens,
    accuracies exact lines in log M and F; a loss row between them, as in a real run."""
    run = root / name
    run.mkdir(parents=True)
    rows = []
    for step in steps:
        tokens = 1000 * step
        m = E + B * tokens**-BETA
        f = (1.2 - alpha) * 0.01 * np.log(step + 1)
        rows.append({"step": step, "loss": 1.0, "tokens_seen": tokens})
        rows.append(
            {
                "step": step,
                "tokens_seen": tokens,
                "probe": {
                    "M": m,
                    "F": f,
                    "speech_acc": A_SPEECH + B_SPEECH * np.log(m),
                    "text_acc": A_TEXT + B_TEXT * f,
                    "answer_M": 0.0,
                    "answer_F": 0.0,
                },
            }
        )
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def test_report_fits_constructed_probe_rows(tmp_path):
    root = tmp_path / "sweep"
    _write_run(root, "alpha-0", 0.0, [10, 20, 40, 80, 160])
    _write_run(root, "alpha-1", 1.0, [10, 30, 90, 270])
    _write_run(root, "alpha-0.5-narrow", 0.5, [10, 20])  # too few for its own power law
    (root / "notes").mkdir()  # not a run dir
    summary = write_report(root)
    assert summary == json.loads((root / "sweep.json").read_text())
    runs = {r["name"]: r for r in summary["runs"]}
    assert set(runs) == {"alpha-0", "alpha-1", "alpha-0.5-narrow"}
    assert runs["alpha-0.5-narrow"]["variant"] == "narrow"
    assert runs["alpha-0.5-narrow"]["alpha"] == 0.5
    for name in ("alpha-0", "alpha-1"):
        law = runs[name]["m_power_law"]
        assert law["fit"] == "power_law"
        for key, want in (("E", E), ("B", B), ("beta", BETA)):
            assert law[key] == pytest.approx(want, rel=1e-3), (name, key)
            assert law["ci"][key] == pytest.approx([want, want], rel=1e-2), (name, key)
        assert law["trend"] == "falling"
    assert runs["alpha-0.5-narrow"]["m_power_law"]["fit"] is None
    assert "too few points" in runs["alpha-0.5-narrow"]["m_power_law"]["note"]
    speech, text = summary["fig3"]["speech_acc_vs_log_M"], summary["fig3"]["text_acc_vs_F"]
    assert speech["n"] == text["n"] == len(summary["points"]) == 11
    assert speech["slope"] == pytest.approx(B_SPEECH) and speech["intercept"] == pytest.approx(
        A_SPEECH
    )
    assert text["slope"] == pytest.approx(B_TEXT) and text["intercept"] == pytest.approx(A_TEXT)
    for fit in (speech, text):
        assert fit["r2"] == pytest.approx(1.0) and fit["loo_r2"] == pytest.approx(1.0)
        assert fit["n_runs"] == 3 and fit["loro_r2"] == pytest.approx(1.0)
        assert fit["partial_r2"] == pytest.approx(1.0)
    assert (root / "fig3.png").stat().st_size > 0 and (root / "fig4.png").stat().st_size > 0
    md = (root / "sweep.md").read_text()
    assert "leave-one-out R^2 1" in md and "too few points" in md
    assert "leave-one-run-out R^2 1 over 3 runs" in md


def test_report_says_when_there_are_too_few_points(tmp_path):
    root = tmp_path / "sweep"
    _write_run(root, "alpha-1", 1.0, [5, 10])
    summary = write_report(root)
    for fit in summary["fig3"].values():
        assert fit["fit"] is None and fit["note"].startswith("too few points for a fit: 2")
    assert summary["runs"][0]["m_power_law"]["fit"] is None
    assert (root / "fig3.png").is_file() and (root / "fig4.png").is_file()
    assert "too few points for a fit: 2" in (root / "sweep.md").read_text()


def test_variants_split_only_before_the_next_dotted_key():
    v = parse_variant(
        "narrow:data.max_documents=2,data.voices=[espeak/en-us,piper/joe:"
        "length_scale=1.2,noise_scale=0.8],train.seed=1"
    )
    assert v.name == "narrow"
    assert v.overrides == [
        "data.max_documents=2",
        "data.voices=[espeak/en-us,piper/joe:length_scale=1.2,noise_scale=0.8]",
        "train.seed=1",
    ]
    for bad in ("narrow", "2x:data.seed=1", "narrow:"):
        with pytest.raises(SaladError):
            parse_variant(bad)


# -- end to end -----------------------------------------------------------------------------------

CORPUS = [
    "The cat sat on the warm mat near the door and watched the rain fall.",
    "Bread is baked in a hot oven until the crust turns brown and crisp.",
    "A small boat crossed the quiet lake early in the morning light.",
]


@pytest.fixture(scope="module")
def toy_config(tmp_path_factory) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from salad_eval.assets import llm_path

    root = tmp_path_factory.mktemp("toy")
    tokenizer = AutoTokenizer.from_pretrained(llm_path())
    torch.manual_seed(0)
    LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    ).save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    config = {
        "model": {
            "encoder": "whisper-tiny.en",
            "stack": 4,
            "adapter_layers": 1,
            "adapter_width": 32,
            "adapter_heads": 2,
            "llm": str(root / "llm"),
            "llm_mode": "lora",
            "lora_r": 4,
        },
        "data": {
            "corpus": "corpus.txt",
            "voices": ["piper/joe"],
            "replay_prob": 0.4,
            "text_span_words": [3, 5],
            "speech_span_words": [2, 4],
            "max_tokens": 96,
        },
        "loss": {"chunk_size": 16},
        "optim": {"warmup_steps": 1},
        "train": {
            "steps": 3,
            "batch_size": 1,
            "save_every": 3,
            "mixed_precision": "no",
            "probe_items": 2,
            "probe_docs": 1,
        },
        "sweep": {"alphas": [0.0, 0.5, 1.0], "probe_every": 1},
    }
    path = root / "toy.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.integration
def test_sweep_command_trains_each_alpha_once_and_reports(toy_config, tmp_path, caplog):
    from salad_train.cli import app

    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--config",
        str(toy_config),
        "--alphas",
        "0,1",
        "--steps",
        "3",
        f"sweep.out_dir={out}",
    ]
    result = CliRunner().invoke(app, args)
    if result.exception and not isinstance(result.exception, SystemExit):
        import traceback

        traceback.print_exception(result.exception)
    assert result.exit_code == 0, (result.output, result.exception)
    for name, alpha in (("alpha-0", 0.0), ("alpha-1", 1.0)):
        run = out / name
        assert (run / "model" / "training.json").is_file()
        assert json.loads((run / "config.json").read_text())["loss"]["alpha"] == alpha
    assert not (out / "alpha-0.5").exists()
    summary = json.loads((out / "sweep.json").read_text())
    assert [r["points"] for r in summary["runs"]] == [3, 3]  # probes at steps 1, 2, 3
    assert summary["fig3"]["speech_acc_vs_log_M"]["n"] == 6
    for key in ("r2", "loo_r2", "partial_r2"):
        assert key in summary["fig3"]["speech_acc_vs_log_M"]
    assert {r["m_power_law"]["fit"] for r in summary["runs"]} == {"power_law"}
    assert (out / "fig3.png").is_file() and (out / "fig4.png").is_file()
    assert "R^2" in (out / "sweep.md").read_text()
    caplog.set_level(logging.INFO, logger="salad_train")
    caplog.clear()
    again = CliRunner().invoke(app, args)  # resumable: finished runs are skipped
    assert again.exit_code == 0, again.output
    assert sum("done, skipped" in m for m in caplog.messages) == 2


def _model_files(run: Path) -> dict[str, bytes]:
    """The trained weights of a run (training.json names its out_dir, so it is left out)."""
    model = run / "model"
    return {str(p.relative_to(model)): p.read_bytes() for p in sorted(model.rglob("*.safetensors"))}


def _losses(run: Path) -> list[tuple]:
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    return [
        (r["step"], r.get("align_step"), r.get("ctc_per_token"), r.get("loss"))
        for r in rows
        if "probe" not in r
    ]


@pytest.mark.integration
def test_later_alphas_share_the_first_warm_up_and_train_as_if_they_ran_it(
    toy_config, tmp_path, caplog
):
    from salad_train.cli import app

    # the log, not the CLI's output: CliRunner calls the app, not main(), which sets up stderr
    caplog.set_level(logging.INFO, logger="salad_train")
    warmup = ["train.align_steps=3", "train.align_batch_size=2", "train.probe_every=0"]
    out = tmp_path / "sweep"
    result = CliRunner().invoke(
        app,
        [
            "sweep",
            "--config",
            str(toy_config),
            "--alphas",
            "0,1",
            *warmup,
            "sweep.probe_every=3",
            f"sweep.out_dir={out}",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert any("alpha-1: loss.alpha=1, warm-up shared from alpha-0" in m for m in caplog.messages)
    assert (out / "alpha-0" / "checkpoints" / "step-000000" / "state.pt").is_file()
    alone = tmp_path / "alone"  # the same alpha-1 run, warming up by itself
    result = CliRunner().invoke(
        app,
        [
            "stage1",
            "--config",
            str(toy_config),
            *warmup,
            "loss.alpha=1",
            "train.probe_every=3",
            f"train.out_dir={alone}",
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert not (alone / "checkpoints" / "step-000000").exists()  # kept only for a sweep
    assert _losses(out / "alpha-1") == _losses(alone)
    assert [r[1] for r in _losses(alone)][:3] == [1, 2, 3]  # the warm-up rows are there
    weights = _model_files(alone)
    assert weights and _model_files(out / "alpha-1") == weights
    assert _model_files(out / "alpha-0") != weights  # alpha changes training after the warm-up


def test_sweep_section_is_validated_and_the_paper_presets_sweep_the_paper_grid(toy_config):
    from salad_train.config import PRESETS, load_config

    with pytest.raises(SaladError, match="unknown config key sweep"):
        load_config(str(toy_config), ["sweep.bogus=1"])
    with pytest.raises(SaladError, match="sweep.alphas"):
        load_config(str(toy_config), ["sweep.alphas=[0,1.5]"])
    assert load_config("tiny").sweep.out_dir == "runs/tiny-sweep"
    for name in ("paper-3b", "paper-7b"):
        tree = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
        assert tree["sweep"]["alphas"] == [0.0, 0.25, 0.5, 0.75, 1.0]
