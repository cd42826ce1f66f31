"""The run report's files (results.json, summary.md, PNGs) and `salad-eval report` across runs."""

from __future__ import annotations

import json
import random
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from typer.testing import CliRunner

from salad_eval.cli import app
from salad_eval.errors import SaladError
from salad_eval.gap import compare_runs, write_report

VOICES = ("kokoro/af_heart", "piper/joe")
CONDITIONS = (
    "text@base",
    "text@speech",
    "speech@speech",
    "speech@cascade",
    "speech@speech:silent",
    "speech@speech:shuffled",
)


def run_records(seed: int, speech_rate: float, kl_scale: float) -> list[dict]:
    """Two tasks, three domains, two voices, every condition; KL and WER on their rows."""
    rng = random.Random(seed)
    rates = dict(zip(CONDITIONS, (0.8, 0.7, speech_rate, 0.75, 0.3, 0.3), strict=True))
    records = []
    for task in ("arc_easy", "demo"):
        for i in range(24):
            domain = ("physics", "biology", "history")[i % 3]
            for cond, p in rates.items():
                for voice in [None] if cond.startswith("text@") else VOICES:
                    correct = rng.random() < p
                    rec = {
                        "task": task,
                        "item": f"{task}/{i}",
                        "domain": domain,
                        "condition": cond,
                        "voice": voice,
                        "target": 1,
                        "logprobs": [-2.0, -1.0],
                        "n_chars": [4, 6],
                        "n_tokens": [1, 2],
                        "greedy": [False, correct],
                        "pred": int(correct),
                        "pred_norm": int(correct),
                        "correct": correct,
                        "correct_norm": correct,
                    }
                    if cond in ("text@speech", "speech@speech"):
                        rec["answer_kl"] = kl_scale * rng.random()
                    if cond == "speech@cascade":
                        rec["wer"] = rng.random() / 5
                    records.append(rec)
    return records


MANIFEST = {"command": "salad-eval gap --model ckpt/ --tasks arc_easy,demo", "seed": 0}
CORPUS_SETUP = {
    "corpus": "heldout.txt",
    "held_out": True,
    "documents": 32,
    "voice": "espeak/en-us",
    "span_words": [10, 10],
}


def corpus_figures(f: float, m: float) -> dict:
    """Corpus F and M as `salad-eval gap` hands them to the report."""

    def fig(value: float) -> dict:
        return {
            "value": value,
            "ci_low": 0.9 * value,
            "ci_high": 1.1 * value,
            "n": 32,
            "tokens": 1800,
        }

    return {"F": fig(f), "M": fig(m), "setup": CORPUS_SETUP}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    """Two written runs: a weak speech model with few hours, a better one with more."""
    dirs = []
    for k, (rate, kl, hours) in enumerate(((0.45, 3.0, 10), (0.65, 0.8, 1000))):
        run_dir = tmp_path_factory.mktemp(f"run{k}")
        manifest = {
            **MANIFEST,
            "training": {"speech_hours": hours},
            "corpus_divergence": CORPUS_SETUP,
        }
        # the per-item answer KL runs the other way: the fit must read the corpus M
        write_report(
            run_dir,
            run_records(k, rate, 1 / kl),
            manifest,
            n_boot=200,
            corpus_divergence=corpus_figures(0.01 * kl, kl),
        )
        dirs.append(run_dir)
    probes = [
        {
            "tokens_seen": 1000 * s,
            "probe": {"M": 2 / s, "F": 0.1 * s, "text_acc": 0.8, "speech_acc": 0.4 + 0.1 * s},
        }
        for s in (1, 2, 3)
    ]
    lines = [json.dumps(p) for p in probes] + [json.dumps({"step": 1, "loss": 2.5})]
    (dirs[1] / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    return dirs


def figures(node, path=""):
    """Every figure (a dict with a value) in results.json, with where it sits."""
    if isinstance(node, dict):
        if "value" in node:
            yield path, node
        else:
            for key, child in node.items():
                yield from figures(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from figures(child, f"{path}/{i}")


def test_results_json_has_ci_and_n_for_every_figure(runs):
    results = json.loads((runs[0] / "results.json").read_text())
    assert results["manifest"] == {
        **MANIFEST,
        "training": {"speech_hours": 10},
        "corpus_divergence": CORPUS_SETUP,
    }
    assert results["corpus_divergence"]["M"]["value"] == 3.0  # corpus F and M, per token
    assert set(results["corpus_divergence"]) == {"F", "M"}
    found = list(figures(results["metrics"]))
    assert len(found) > 100
    for path, fig in found:
        assert {"value", "ci_low", "ci_high", "n"} <= set(fig), path
        assert fig["n"] > 0, path
    overall = results["metrics"]["acc"]["overall"]
    assert set(overall["accuracy"]) == set(CONDITIONS)
    assert overall["n_items"] == 48
    assert set(results["metrics"]["acc"]["voices"]) == set(VOICES)
    assert set(results["metrics"]["acc"]["domains"]) == {"physics", "biology", "history"}
    assert {(t["a"], t["b"]) for t in results["metrics"]["acc"]["mcnemar"]} >= {
        ("text@base", "speech@speech"),
        ("speech@speech", "speech@speech:silent"),
    }
    assert results["controls"]["checked"] is True


def test_summary_reads_as_a_report(runs):
    summary = (runs[0] / "summary.md").read_text()
    for needle in (
        "# Text-speech understanding gap",
        "Does the model listen to its audio?",
        "## Conditions",
        "### By task",
        "### By domain",
        "### By voice",
        "exact McNemar",
        "misalignment",
        "`arc_easy`",
        "kokoro/af_heart",
        "salad-eval gap --model ckpt/",
        "gap_decomposition.png",
        "## Divergences: forgetting F and misalignment M",
        "| M, misalignment | 3 [2.7, 3.3] |",
        "32 documents of `heldout.txt` (held out",
        "## Per-item answer KL (diagnostic)",
    ):
        assert needle in summary, needle


def test_report_says_which_voices_training_heard(tmp_path):
    records = [
        {**r, "voice": "kokoro/jm_kumo"} if r["voice"] == VOICES[0] else r
        for r in run_records(0, 0.5, 1.0)
    ]
    training = {"speech_hours": 2, "voices": ["piper/joe:length_scale=1.2", "espeak/en-us"]}
    results = write_report(tmp_path, records, {**MANIFEST, "training": training}, n_boot=50)
    assert results["voice_exposure"] == {"kokoro/jm_kumo": "unseen", "piper/joe": "speaker seen"}
    summary = (tmp_path / "summary.md").read_text()
    assert "`kokoro/jm_kumo` (unseen in training)" in summary
    assert json.loads((tmp_path / "results.json").read_text())["voice_exposure"] == {
        "kokoro/jm_kumo": "unseen",
        "piper/joe": "speaker seen",
    }
    write_report(tmp_path, records, MANIFEST, n_boot=50)  # no training.json: nothing to say
    assert "training voices of this model are not recorded" in (tmp_path / "summary.md").read_text()


def test_plots_are_written_and_non_empty(runs):
    for name in ("gap_decomposition.png", "misalignment_by_domain.png", "accuracy_by_voice.png"):
        path = runs[0] / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = matplotlib.image.imread(path)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 300
        assert pixels.std() > 0.05  # something is drawn, not a blank canvas


def test_report_compares_runs(runs, tmp_path):
    out = tmp_path / "cmp"
    result = compare_runs(runs, out)
    assert {r["run"] for r in result["rows"]} == {runs[0].name, runs[1].name}
    assert {r["task"] for r in result["rows"]} == {"arc_easy", "demo", "all tasks"}
    for row in result["rows"]:
        for column in ("speech acc", "gap", "forgetting", "misalignment"):
            assert {"value", "ci_low", "ci_high", "n"} <= set(row[column])
    assert result["fit_log_m"] is None  # two runs: a line through them says nothing
    assert set(result["plots"]) == {
        "gap_vs_speech_hours.png",
        "speech_acc_vs_log_m.png",
        "training_curves.png",
    }
    for plot in result["plots"]:
        assert matplotlib.image.imread(out / plot).std() > 0.05
    md = (out / "comparison.md").read_text()
    assert runs[0].name in md and "the log M fit needs at least 3" in md


def _third_run(root: Path, setup: dict) -> Path:
    """A third run between the fixture's two (M 1.5, speech accuracy 0.55)."""
    manifest = {**MANIFEST, "training": {"speech_hours": 100}, "corpus_divergence": setup}
    write_report(
        root,
        run_records(2, 0.55, 1.0),
        manifest,
        n_boot=50,
        corpus_divergence=corpus_figures(0.015, 1.5),
    )
    return root


def test_the_log_m_fit_needs_three_runs_with_one_corpus_setup(runs, tmp_path):
    third = _third_run(tmp_path / "third", CORPUS_SETUP)
    result = compare_runs([*runs, third], tmp_path / "cmp")
    assert result["fit_log_m"]["n"] == 3
    assert result["fit_log_m"]["slope"] < 0  # the runs with more misalignment hear worse
    assert "R^2" in (tmp_path / "cmp" / "comparison.md").read_text()
    for key, other in (("voice", "piper/en_US-amy"), ("span_words", [5, 5]), ("corpus", "x.txt")):
        odd = _third_run(tmp_path / f"odd-{key}", {**CORPUS_SETUP, key: other})
        with pytest.raises(SaladError, match=f"different setups \\({key} ") as err:
            compare_runs([*runs, odd], tmp_path / f"cmp-{key}")
        assert "\n" not in str(err.value)


def test_a_run_without_corpus_m_is_left_out_of_the_log_m_fit(runs, tmp_path):
    """Its per-item answer KL is another quantity: never mixed into the fit."""
    old = tmp_path / "old-run"
    write_report(old, run_records(5, 0.9, 0.01), MANIFEST, n_boot=50)
    assert json.loads((old / "results.json").read_text())["corpus_divergence"] is None
    third = _third_run(tmp_path / "third", CORPUS_SETUP)
    result = compare_runs([*runs, third, old], tmp_path / "cmp")
    assert result["fit_log_m"]["n"] == 3
    assert (
        "Left out of the log M fit (no corpus M): old-run"
        in (tmp_path / "cmp" / "comparison.md").read_text()
    )
    result = compare_runs([old], tmp_path / "cmp-old")
    assert result["fit_log_m"] is None and "speech_acc_vs_log_m.png" not in result["plots"]


def test_report_command(runs, tmp_path):
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["report", str(runs[0]), str(runs[1]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "misalignment" in res.output and (out / "comparison.json").is_file()


def test_report_rejects_a_dir_without_results(tmp_path):
    with pytest.raises(SaladError, match="has no results.json"):
        compare_runs([tmp_path], tmp_path / "out")
    (tmp_path / "results.json").write_text('{"accuracy": 0.5}')
    with pytest.raises(SaladError, match="is not a gap report"):
        compare_runs([tmp_path], tmp_path / "out")
    res = CliRunner().invoke(app, ["report", str(tmp_path / "missing")])
    assert res.exit_code != 0


def test_report_pairs_divergences_by_document_and_item(runs, tmp_path):
    """Run 1's answer KL is scaled by 1/0.8 against run 0's 1/3: b - a is positive and clear.
    Corpus M per document: b's documents are a's at 0.8 of their KL, so b - a is negative."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(20, 100, 32)
    m_sum = tokens * rng.gamma(2.0, 0.5, 32)
    for k, scale, rate, kl in ((0, 1.0, 0.45, 3.0), (1, 0.8, 0.65, 0.8)):
        docs = [
            {"f_sum": None, "f_tokens": int(t), "m_sum": float(scale * m), "m_tokens": int(t)}
            for t, m in zip(tokens, m_sum, strict=True)
        ]
        results = json.loads((runs[k] / "results.json").read_text())
        (tmp_path / f"r{k}").mkdir()
        for f in runs[k].iterdir():
            if f.is_file():
                (tmp_path / f"r{k}" / f.name).write_bytes(f.read_bytes())
        (tmp_path / f"r{k}" / "results.json").write_text(
            json.dumps({**results, "corpus_documents": docs})
        )
        records = run_records(k, rate, 1 / kl)  # as the fixture wrote them, with items.jsonl
        (tmp_path / f"r{k}" / "items.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records)
        )
    result = compare_runs([tmp_path / "r0", tmp_path / "r1"], tmp_path / "cmp")
    rows = {r["figure"]: r for r in result["paired_divergences"]}
    assert set(rows) == {"corpus M", "answer M", "answer F"}
    corpus = rows["corpus M"]
    assert corpus["n"] == 32 and corpus["unit"] == "document"
    assert corpus["diff"] == pytest.approx(-0.2 * m_sum.sum() / tokens.sum())
    assert corpus["ci_high"] < 0 and corpus["p"] < 0.01
    assert rows["answer M"]["n"] == 48 and rows["answer M"]["diff"] > 0
    assert rows["answer M"]["p"] < 0.01
    assert "## Paired divergences" in (tmp_path / "cmp" / "comparison.md").read_text()
