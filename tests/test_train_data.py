"""Stage I data logic (no models): natural utterances heard and read, long documents windowed,
manifest rows grouped into documents or refused, replay asked for but missing refused."""

from __future__ import annotations

import json

import pytest

from salad_eval.errors import SaladError
from salad_train.config import DataConfig, load_config
from salad_train.recipe.data import MixedData, Span, natural_documents, windows


def _manifest(tmp_path, rows: list[dict]) -> str:
    path = tmp_path / "natural.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_manifest_rows_group_by_document_else_speaker_chapter_in_order(tmp_path):
    rows = [{"audio": f"{i}.wav", "text": f"t{i}", "speaker": i % 2} for i in range(5)]
    docs = natural_documents(DataConfig(natural=[_manifest(tmp_path, rows)]))
    assert [[s.text for s in d] for d in docs] == [["t0", "t2", "t4"], ["t1", "t3"]]
    assert all(s.recorded and s.audio.endswith(f"{s.text[1:]}.wav") for d in docs for s in d)
    rows = [{**r, "document": "book"} for r in rows]
    (doc,) = natural_documents(DataConfig(natural=[_manifest(tmp_path, rows)]))
    assert [s.text for s in doc] == [f"t{i}" for i in range(5)]


def test_manifest_rows_without_a_document_are_refused_in_one_line(tmp_path):
    rows = [{"audio": f"{i}.wav", "text": f"t{i}"} for i in range(3)]
    with pytest.raises(SaladError) as error:
        natural_documents(DataConfig(natural=[_manifest(tmp_path, rows)]))
    assert "'document'" in str(error.value) and "\n" not in str(error.value)


def test_each_sample_draws_heard_or_read_anew():
    doc = tuple(Span(f"u{i}", f"u{i}.wav", recorded=True) for i in range(4))
    fixed = (Span("synthetic text"), Span("synthetic speech", "s.wav"))
    data = MixedData(
        {"speech": [doc, fixed], "replay": [(Span("replay"),)]},
        {"speech": 2 / 3, "replay": 1 / 3},
        seed=0,
        where="Stage I data",
    )
    heard, read = set(), set()
    for index in range(200):
        sample = data.sample(index)
        assert sample == data.sample(index)  # a pure function of the index
        if sample in (fixed, (Span("replay"),)):
            assert data.source(index) == ("speech" if sample == fixed else "replay")
            continue
        for span in sample:
            (heard if span.audio else read).add(span.text)
    assert heard == read == {"u0", "u1", "u2", "u3"}  # every utterance both heard and read


def test_long_documents_are_windowed_so_all_their_text_is_used():
    doc = tuple(Span(f"w{i}", f"w{i}.wav", recorded=True) for i in range(10))
    length = {f"w{i}": 3 + i % 3 for i in range(10)}
    parts = windows(doc, lambda span: length[span.text], max_tokens=9)
    assert [s for part in parts for s in part] == list(doc)  # each span once, in order
    assert all(sum(length[s.text] for s in part) <= 9 for part in parts)
    assert windows((Span("clip", "c.wav"),), lambda span: 50, 9) == [(Span("clip", "c.wav"),)]
    replay = (Span(" ".join(f"w{i}" for i in range(40))),)  # a long text: cut at words
    parts = windows(replay, lambda span: len(span.text.split()), max_tokens=9)
    assert " ".join(s.text for part in parts for s in part) == replay[0].text
    assert all(sum(len(s.text.split()) for s in part) <= 9 for part in parts)


def test_drawn_shares_count_what_the_run_sampled():
    data = MixedData(
        {"speech": [(Span("a", "a.wav"),)], "replay": [(Span("b"),)]},
        {"speech": 0.75, "replay": 0.25},
        seed=1,
        where="Stage I data",
    )
    drawn = data.drawn(4000)
    replay = sum(data.sample(i) == (Span("b"),) for i in range(4000)) / 4000
    assert drawn["replay"] == replay and abs(replay - 0.25) < 3 * (0.25 * 0.75 / 4000) ** 0.5


PAPER_OFFLINE = [  # the paper presets' hub ids, as embedded models: no hub offline
    "model.encoder=whisper-tiny.en",
    "model.llm=smollm2-135m",
    "select.embedder=all-minilm-l6-v2",
]


def test_replay_asked_for_without_text_fails_before_any_work(tmp_path):
    (tmp_path / "natural.jsonl").write_text("")
    natural = f"data.natural=[{tmp_path / 'natural.jsonl'}]"
    offline = PAPER_OFFLINE
    with pytest.raises(SaladError) as error:
        load_config("paper-3b", [natural, *offline])
    message = str(error.value)
    assert "data.replay_prob=0.3333" in message and "data.replay" in message
    assert "\n" not in message
    (tmp_path / "replay.txt").write_text("some text to replay\n")
    assert load_config("paper-3b", [natural, *offline, f"data.replay={tmp_path / 'replay.txt'}"])
    assert load_config("paper-3b", [natural, *offline, "data.replay_prob=0"])


@pytest.mark.parametrize("name", ["paper-3b", "paper-7b"])
def test_paper_presets_select_and_train_stage2_as_the_paper(name, tmp_path):
    """Each preset loads and validates with its select and stage2 sections, set as the paper sets
    them (and salad's defaults where the paper gives no value, which the YAML says)."""
    import yaml

    from salad_train.config import PRESETS
    from salad_train.recipe.stage2 import stage2_config

    tree = yaml.safe_load((PRESETS / f"{name}.yaml").read_text())
    assert tree["select"]["embedder"] == "BAAI/bge-large-en-v1.5"  # overridden below: offline
    (tmp_path / "natural.jsonl").write_text("")
    (tmp_path / "replay.txt").write_text("some text to replay\n")
    data = [
        f"data.natural=[{tmp_path / 'natural.jsonl'}]",
        f"data.replay={tmp_path / 'replay.txt'}",
    ]
    config = load_config(name, [*data, *PAPER_OFFLINE])
    s, t = config.select, config.stage2
    assert config.data.voices == ["kokoro/af_heart"]
    assert (s.clusters, s.gamma, s.budget_share, s.budget_hours) == (128, 5.0, 0.01, None)
    assert s.signal == "misalignment"
    assert t.steps == 1810 and t.natural_share == t.selected_share == t.replay_share
    assert (t.adapter_lr, t.llm_lr) == (None, None)  # Stage II decays from Stage I's plateau
    optim = stage2_config(config, tmp_path).optim
    assert (optim.adapter_lr, optim.llm_lr) == (config.optim.adapter_lr, config.optim.llm_lr)
    assert (optim.warmup_steps, optim.decay_fraction) == (0, 1.0)
