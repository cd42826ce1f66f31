"""The paper's shape at toy scale on CPU: Stage I -> select -> Stage II with tiny random models of
the paper's architectures (a Qwen2 LLM trained in full, a Mimi encoder, a multi-layer adapter),
bf16 autocast, natural speech in every supported layout and a replay corpus.

The speech is real (Piper, synthesized once), laid out as a LibriSpeech-style dir, a jsonl
manifest without a ``document`` key (grouped by speaker) and an HF dataset saved with
``save_to_disk`` (its Audio column holds the bytes). It checks what silently moves a user's
numbers: the Stage II teacher is the original base LLM, the replay share drawn is replay_prob's,
every utterance is both heard and read, and a document longer than ``max_tokens`` is used whole.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from salad_train.config import load_config
from salad_train.recipe.data import speak

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SENTENCES = [
    "The kettle sang on the stove.",
    "A red kite rose over the hill.",
    "She folded the map and smiled.",
    "Rain tapped on the tin roof.",
    "The old dog slept by the door.",
    "We walked home along the river.",
]
POOL = [
    "Volcanoes form where magma rises through cracks in the crust of the earth.",
    "The heart pumps blood through arteries that carry oxygen to every organ.",
    "A budget lists the money a family expects to earn and to spend each month.",
    "Bees carry pollen from flower to flower and so help fruit trees bear fruit.",
    "The library lends books, music and films to anyone who holds a card.",
    "Tides rise and fall twice a day as the moon pulls on the oceans.",
    "Bread rises because yeast turns sugar into gas inside the dough.",
    "A compass needle points north because the earth is a giant magnet.",
]
REPLAY = [
    "Plain text keeps the model's reading skill while it learns to listen.",
    "Replay documents are read by the student and the teacher alike.",
]
MAX_TOKENS = 64  # two short utterances at 12.5 Hz fit; a chapter of four does not


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    from salad_eval.assets import llm_path
    from salad_eval.models.tiny_random import save_tiny_mimi, save_tiny_qwen2

    root = tmp_path_factory.mktemp("models")
    save_tiny_qwen2(root / "qwen2", llm_path())  # bf16, as Qwen2.5 ships
    save_tiny_mimi(root / "mimi")
    return {"llm": root / "qwen2", "encoder": root / "mimi"}


@pytest.fixture(scope="module")
def natural(tmp_path_factory) -> list[Path]:
    """The same six Piper utterances in the three layouts (copies: distinct clips per layout)."""
    import datasets

    root = tmp_path_factory.mktemp("natural")
    clips = [Path(speak(text, "piper/joe")) for text in SENTENCES]
    libri = root / "librispeech"
    for chapter, part in (("10", range(4)), ("11", range(4, 6))):  # one chapter > max_tokens
        folder = libri / "7" / chapter
        folder.mkdir(parents=True)
        lines = []
        for i in part:
            shutil.copy(clips[i], folder / f"7-{chapter}-{i:04d}.wav")
            lines.append(f"7-{chapter}-{i:04d} {SENTENCES[i].upper()}")
        (folder / f"7-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    (root / "manifest").mkdir()
    rows = []
    for i, clip in enumerate(clips):
        shutil.copy(clip, root / "manifest" / f"{i}.wav")
        rows.append({"audio": f"{i}.wav", "text": SENTENCES[i], "speaker": f"s{i % 2}"})
    manifest = root / "manifest" / "rows.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "hf-src").mkdir()
    for i, clip in enumerate(clips):
        shutil.copy(clip, root / "hf-src" / f"{i}.wav")
    hf = datasets.Dataset.from_dict(
        {
            "audio": [str(root / "hf-src" / f"{i}.wav") for i in range(6)],
            "text": SENTENCES,
            "speaker_id": [3] * 6,
            "chapter_id": [i // 3 for i in range(6)],
        }
    ).cast_column("audio", datasets.Audio(sampling_rate=16_000))
    hf.save_to_disk(str(root / "hf"))
    shutil.rmtree(root / "hf-src")  # the dataset holds the bytes, not the paths
    return [libri, manifest, root / "hf"]


def test_paper_shape_stage1_select_stage2(models, natural, tmp_path, fresh_accelerator_state):
    from salad_eval.models.digest import weights_digest
    from salad_eval.models.text_lm import load_llm
    from salad_train.recipe.batch import plan_batch
    from salad_train.recipe.data import draw
    from salad_train.recipe.stage1 import Stage1Trainer
    from salad_train.recipe.stage2 import Stage2Trainer
    from salad_train.selection.select import run_select

    (tmp_path / "pool.txt").write_text("\n".join(POOL) + "\n")
    (tmp_path / "replay.txt").write_text("\n".join(REPLAY) + "\n")
    config = load_config(
        "paper-3b",
        [
            f"model.encoder={models['encoder']}",
            f"model.llm={models['llm']}",
            "model.adapter_layers=2",
            "model.adapter_width=32",
            "model.adapter_heads=2",
            f"data.natural=[{','.join(map(str, natural))}]",
            f"data.replay={tmp_path / 'replay.txt'}",
            f"data.max_tokens={MAX_TOKENS}",
            "data.voices=[piper/joe]",
            "optim.warmup_steps=2",
            "train.steps=40",
            "train.batch_size=8",
            "train.grad_accum=1",
            "train.save_every=20",
            "train.log_every=10",
            "train.probe_every=0",
            "train.mixed_precision=bf16",
            f"train.out_dir={tmp_path / 'stage1'}",
            f"select.pool=[{tmp_path / 'pool.txt'}]",
            "select.embedder=all-minilm-l6-v2",  # the preset's bge-large is a hub id
            "select.clusters=2",
            "select.probe_texts=2",
            "select.budget_share=1.0",
            "select.max_cer=0.5",
            f"select.out_dir={tmp_path / 'select'}",
            "stage2.steps=4",
            f"stage2.out_dir={tmp_path / 'stage2'}",
        ],
    )
    assert config.model.llm_mode == "full"

    stage1 = Stage1Trainer(config)
    stage1.setup()
    assert stage1.accelerator.mixed_precision == "bf16"
    data = stage1.data
    utterances = {
        s.audio: s.text for docs in data.sources.values() for d in docs for s in d if s.recorded
    }
    assert len(utterances) == 18  # six utterances in each of the three layouts

    # a document longer than max_tokens is windowed: every span once, each window laid out whole
    chapter = [s.text for d in data.sources["speech"] for s in d if "7-10-" in (s.audio or "")]
    assert chapter == [t.lower().capitalize() for t in SENTENCES[:4]]
    tokenizer = stage1.speech_lm.tokenizer
    for index, window in enumerate(data.sources["speech"]):
        rng = random.Random(index)
        for laid_out in (draw(window, rng) for _ in range(4)):  # heard and read in turn
            plan = plan_batch([laid_out], tokenizer, stage1._audio_length, MAX_TOKENS)
            assert len(plan.layout[0]) == len(window)  # nothing cut
    final1 = stage1.run()

    # the replay share drawn is replay_prob's, within sampling error; every utterance heard & read
    record = json.loads((final1 / "training.json").read_text())
    samples = 40 * 8
    p = config.data.replay_prob
    assert abs(record["drawn"]["replay"] - p) < 3 * (p * (1 - p) / samples) ** 0.5
    heard, read = set(), set()
    for index in range(samples):
        for span in data.sample(index):
            if span.text in REPLAY:
                assert data.source(index) == "replay"
            (heard if span.audio else read).add(span.audio or span.text)
    assert set(utterances) <= heard
    assert set(utterances.values()) <= read
    # the budget is a share of the dataset's speech (each clip once), not of the hours seen
    assert record["dataset_speech_hours"] == pytest.approx(
        sum(stage1.clip_seconds[c] for c in utterances) / 3600
    )
    assert record["speech_hours"] > record["dataset_speech_hours"]

    out = run_select(config)
    report = json.loads((out / "report.json").read_text())
    assert report["budget_hours"] == pytest.approx(record["dataset_speech_hours"])
    assert 0 < report["kept_hours"] <= report["budget_hours"]

    base = weights_digest(load_llm(str(models["llm"]), "float32")[0])
    stage2 = Stage2Trainer(config)
    stage2.setup()
    module = stage2.accelerator.unwrap_model(stage2.module)
    assert weights_digest(module.teacher) == base  # the teacher is the original base LLM ...
    assert weights_digest(stage2.speech_lm.llm) != base  # ... not the Stage I LLM it starts from
    final2 = stage2.run()
    record2 = json.loads((final2 / "training.json").read_text())
    assert set(record2["drawn"]) == {"natural", "selected", "replay"}
    assert weights_digest(module.teacher) == base  # and stays it
