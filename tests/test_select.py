"""Stage II selection: balanced clusters, misalignment weights, budget, CER filter, a real run."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from salad_eval.errors import SaladError
from salad_eval.models.speech_lm import SpeechLMConfig
from salad_train.config import SelectConfig, load_config
from salad_train.selection.cluster import balanced_kmeans
from salad_train.selection.pool import read_pool
from salad_train.selection.select import Selected, cluster_weights, fill_budget, sample_order


@pytest.mark.parametrize(("n", "k"), [(200, 8), (203, 8), (97, 10), (50, 50)])
def test_balanced_kmeans_sizes_are_floor_or_ceil(n, k):
    rng = np.random.default_rng(n)
    centers = rng.normal(size=(3, 16)) * 4  # uneven blobs: plain k-means would be unbalanced
    rest = n - n // 2
    x = np.concatenate(
        [
            centers[0] + rng.normal(size=(n // 2, 16)),
            centers[rng.integers(1, 3, rest)] + rng.normal(size=(rest, 16)),
        ]
    )
    labels, centroids = balanced_kmeans(x, k, seed=1)
    sizes = np.bincount(labels, minlength=k)
    assert set(sizes) <= {n // k, -(-n // k)} and sizes.sum() == n
    assert centroids.shape == (k, 16)
    again, _ = balanced_kmeans(x, k, seed=1)
    assert np.array_equal(labels, again)  # deterministic given the seed


def test_balanced_kmeans_finds_separated_groups():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(loc=10 * g, size=(25, 4)) for g in range(4)])
    labels, _ = balanced_kmeans(x, 4, seed=0)
    for g in range(4):  # every true group lands whole in one cluster
        assert len(set(labels[25 * g : 25 * (g + 1)])) == 1


def test_weights_follow_the_formula():
    pool = np.array([0.25, 0.25, 0.25, 0.25])
    m = np.array([1.0, 2.0, 0.5, 4.0])
    assert np.allclose(cluster_weights(pool, m, 0.0), pool)
    expected = pool * m**5 / (pool * m**5).sum()
    weights = cluster_weights(pool, m, 5.0)
    assert np.allclose(weights, expected)
    assert weights[3] == pytest.approx(1024 / (1 + 32 + 1 / 32 + 1024))  # highest M dominates
    uneven = np.array([0.1, 0.2, 0.3, 0.4])
    assert np.allclose(cluster_weights(uneven, m, 2.0), uneven * m**2 / (uneven * m**2).sum())


def _counts(labels, weights, draws, seed):
    chosen = list(itertools.islice(sample_order(labels, weights, seed), draws))
    assert len(chosen) == draws and len(set(chosen)) == draws  # without replacement
    return np.bincount(labels[chosen], minlength=len(weights))


def test_gamma_zero_matches_pool_shares():
    k, per = 8, 2000
    labels = np.repeat(np.arange(k), per)
    pool = np.full(k, 1 / k)
    weights = cluster_weights(pool, np.linspace(0.5, 5, k), 0.0)
    counts = _counts(labels, weights, 800, seed=3)  # 5% of each cluster: replacement negligible
    assert stats.chisquare(counts, 800 * pool).pvalue > 0.001


def test_gamma_five_dominated_by_highest_misalignment():
    k, per = 4, 5000
    labels = np.repeat(np.arange(k), per)
    m = np.array([1.0, 1.5, 2.0, 3.0])
    weights = cluster_weights(np.full(k, 1 / k), m, 5.0)
    draws = 1000
    counts = _counts(labels, weights, draws, seed=4)
    for c in range(k):  # per-cluster binomial bounds (5 sigma)
        sigma = np.sqrt(draws * weights[c] * (1 - weights[c]))
        assert abs(counts[c] - draws * weights[c]) <= 5 * sigma + 1
    assert counts[3] > counts[:3].sum()  # 3^5 = 243 vs 1 + 7.6 + 32


def test_sample_order_takes_each_text_once():
    labels = np.repeat(np.arange(4), 50)
    assert sorted(sample_order(labels, np.full(4, 0.25), seed=0)) == list(range(200))
    order = list(sample_order(labels, np.array([0.0, 1.0, 0.0, 0.0]), seed=0))
    assert sorted(order) == list(range(50, 100))  # a cluster of weight 0 is never drawn


def _fake_synthesis(actual: np.ndarray):
    """Clips ``actual`` seconds long (not as estimated); every fifth text unreadable."""

    def make(indices: list[int]) -> list[Selected]:
        return [
            Selected(i, "", 0, "", (), 0.0, seconds=float(actual[i]), dropped=i % 5 == 0)
            for i in indices
        ]

    return make


@pytest.mark.parametrize("gamma", [0.0, 5.0])
def test_the_budget_counts_kept_seconds_so_both_arms_keep_the_same_hours(gamma):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 50)
    est = rng.uniform(1, 10, size=200)
    actual = est * rng.uniform(0.5, 2.0, size=200)  # synthesis is longer or shorter
    weights = cluster_weights(np.full(4, 0.25), np.array([0.1, 0.2, 0.4, 0.8]), gamma)
    chosen = fill_budget(
        sample_order(labels, weights, seed=0), _fake_synthesis(actual), est, budget=300.0
    )
    kept = sum(c.seconds for c in chosen if not c.dropped)
    assert 300.0 - actual.max() < kept <= 300.0  # full to within one text, never over
    assert any(c.dropped for c in chosen)  # dropped texts are listed but count nothing
    everything = fill_budget(
        sample_order(labels, weights, seed=0), _fake_synthesis(actual), est, budget=1e9
    )
    assert sorted(c.index for c in everything) == list(range(200))  # a large budget: the pool


def test_equal_per_token_kl_at_different_lengths_gives_equal_weights():
    """M(c) is a per-token mean: a cluster of longer continuations does not weigh more."""
    import torch

    from salad_eval.divergence import kl_per_token

    torch.manual_seed(0)
    p = torch.randn(1, 50).log_softmax(-1)
    q = torch.randn(1, 50).log_softmax(-1)
    short = kl_per_token(p.expand(8, -1), q.expand(8, -1))
    long = kl_per_token(p.expand(32, -1), q.expand(32, -1))
    assert short == pytest.approx(long) and short > 0
    weights = cluster_weights(np.full(2, 0.5), np.array([short, long]), gamma=5.0)
    assert weights == pytest.approx([0.5, 0.5])


def test_pool_reads_text_jsonl_and_rejects_small(tmp_path):
    (tmp_path / "a.txt").write_text("# comment\none two three four five six seven eight\nshort\n")
    (tmp_path / "b.txt").write_text(
        "para one line one\ncontinues here and again\n\npara two line one\nand goes on further\n"
    )
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"body": "nine words in a json row for the pool"}) + "\n"
    )
    config = SelectConfig(
        pool=[str(tmp_path / n) for n in ("a.txt", "b.txt", "c.jsonl")],
        pool_column="body",
        clusters=2,
        min_words=8,
    )
    texts = read_pool(config)
    assert texts == [
        "one two three four five six seven eight",
        "para one line one continues here and again",
        "para two line one and goes on further",
        "nine words in a json row for the pool",
    ]
    with pytest.raises(SaladError, match="fewer than select.clusters"):
        read_pool(SelectConfig(pool=config.pool, pool_column="body", clusters=10))
    with pytest.raises(SaladError, match="no 'text' field"):
        read_pool(SelectConfig(pool=[str(tmp_path / "c.jsonl")], clusters=1))


def test_select_config_keys_are_checked():
    with pytest.raises(SaladError, match="unknown config key select.'gama'"):
        load_config("tiny", ["select.gama=2"])
    config = load_config("tiny", ["select.gamma=0"])
    assert config.select.gamma == 0 and Path(config.select.pool[0]).is_file()


def _selection_in(tmp_path: Path) -> list[str]:
    """Overrides: the pool, Stage I model and output under ``tmp_path``, in 3 clusters."""
    return [
        f"select.pool=[{tmp_path / 'pool.txt'}]",
        f"select.checkpoint={tmp_path / 'stage1/model'}",
        f"select.out_dir={tmp_path / 'select'}",
        "select.clusters=3",
    ]


@pytest.mark.integration
def test_select_real_run(tmp_path):
    """The whole selection with real embedder, TTS, ASR and a random-adapter speech LLM."""
    from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
    from salad_train.selection.select import Selected, _synthesize, run_select

    model = SpeechLMConfig(
        encoder="whisper-tiny.en", stack=8, adapter_layers=1, adapter_width=64, adapter_heads=2
    )
    SpeechLM.from_config(model, seed=0).save(tmp_path / "stage1" / "model")
    pool = Path(__file__).parents[1] / "salad_train" / "corpus" / "pool.txt"
    lines = [ln for ln in pool.read_text().splitlines() if not ln.startswith("#")]
    (tmp_path / "pool.txt").write_text("\n".join(lines[::4]) + "\n")  # 24 texts in all topics
    config = load_config(
        "tiny",
        [
            *_selection_in(tmp_path),
            "select.probe_texts=1",
            "select.budget_hours=0.004",
            "select.max_cer=0.5",
            "data.voices=[piper/joe]",
        ],
    )
    out = run_select(config)
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(ln) for ln in (out / "selected.jsonl").read_text().splitlines()]
    assert report["pool"] == 24 and report["clusters"] == 3
    assert sorted(r["size"] for r in report["clusters_detail"]) == [8, 8, 8]
    assert all(r["M"] > 0 for r in report["clusters_detail"])  # a random adapter is misaligned
    assert 0 < report["selected"] == len(rows)
    assert sum(r["seconds"] for r in rows if not r["dropped"]) <= 0.004 * 3600
    assert report["dropped"] == sum(r["dropped"] for r in rows)
    for row in rows:
        assert row["dropped"] == (row["cer"] > 0.5)
        clips = [a for a, (_, speech) in zip(row["audio"], row["spans"], strict=True) if speech]
        assert clips and all(Path(c).is_file() for c in clips)
    assert (out / "report.png").stat().st_size > 0 and "| c" in (out / "report.md").read_text()
    # the CER filter: a threshold below every clip's CER drops every text, and counts it
    strict = dataclasses.replace(config, select=dataclasses.replace(config.select, max_cer=-1.0))
    chosen = [
        Selected(
            r["index"],
            r["text"],
            r["cluster"],
            r["voice"],
            tuple(tuple(s) for s in r["spans"]),
            r["est_seconds"],
        )
        for r in rows
    ]
    assert all(s.dropped and "CER" in s.reason for s in _synthesize(chosen, strict, out))


def _fake_selection(tmp_path, monkeypatch, overrides):
    """run_select on 24 pool texts with the embedder, probes and synthesis faked: what it calls."""
    from salad_train.selection import select

    (tmp_path / "stage1" / "model").mkdir(parents=True)
    (tmp_path / "stage1" / "model" / "config.json").write_text("{}")
    (tmp_path / "pool.txt").write_text(
        "\n".join(f"text {i} " + "word " * (8 + i) for i in range(24)) + "\n"
    )
    calls = []

    def probes(texts, config, checkpoint, out):
        calls.append(len(texts))
        return [1.0 + i % 3 for i in range(len(texts))]

    def synthesize(chosen, config, out):
        return [Selected(**{**dataclasses.asdict(s), "seconds": s.est_seconds}) for s in chosen]

    monkeypatch.setattr(select, "probe_misalignment", probes)
    monkeypatch.setattr(select, "_synthesize", synthesize)
    monkeypatch.setattr(select, "select_key", lambda *_: "key")
    monkeypatch.setattr(
        select, "embed", lambda pool, _: np.random.default_rng(0).normal(size=(len(pool), 4))
    )
    config = load_config(
        "tiny",
        [
            *_selection_in(tmp_path),
            "select.probe_texts=2",
            "select.budget_hours=0.002",
            *overrides,
        ],
    )
    report = json.loads((select.run_select(config) / "report.json").read_text())
    return calls, report


def test_random_selection_measures_no_probes(tmp_path, monkeypatch):
    calls, report = _fake_selection(tmp_path / "g0", monkeypatch, ["select.gamma=0"])
    assert calls == [] and report["gamma"] == 0 and report["selected"] > 0
    assert all(r["M"] is None and r["probes"] == 0 for r in report["clusters_detail"])
    assert [r["weight"] for r in report["clusters_detail"]] == pytest.approx([1 / 3] * 3)
    calls, report = _fake_selection(tmp_path / "g5", monkeypatch, ["select.signal=distillation"])
    assert calls == [6] and report["signal"] == "distillation"
    assert all(r["M"] > 0 and r["probes"] == 2 for r in report["clusters_detail"])


def test_probes_follow_the_synthesis_seed_and_the_signal(tmp_path, monkeypatch):
    from salad_train.selection import select

    seen = {}

    def measure(speech_lm, texts, voices, **kwargs):
        seen.update(kwargs)
        return [{"M": 0.5} for _ in texts]

    class Model:
        config = SpeechLMConfig(llm="smollm2-135m")

        def eval(self):
            return self

    monkeypatch.setattr(select, "text_misalignments", measure)
    monkeypatch.setattr(select, "load_speech_lm", lambda _: Model())
    monkeypatch.setattr(select, "TextLM", lambda llm: f"base {llm}")
    for signal, teacher in (("misalignment", None), ("distillation", "base smollm2-135m")):
        config = load_config("tiny", ["data.synth_seed=7", f"select.signal={signal}"])
        assert select.probe_misalignment(["a b c d"], config, tmp_path, tmp_path) == [0.5]
        assert seen["seed"] == 7 and seen["teacher"] == teacher
    with pytest.raises(SaladError, match="select.signal") as error:
        load_config("tiny", ["select.signal=loss"])
    assert "\n" not in str(error.value)
