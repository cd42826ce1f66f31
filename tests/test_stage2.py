"""Stage II at toy scale with the real SmolLM2 (LoRA, as in the tiny preset), Whisper tiny.en and
Piper: it starts from Stage I's pre-decay checkpoint (weights and optimizer moments), decays to
zero, and draws the three sources in their shares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from salad_eval.errors import SaladError
from salad_train.config import load_config
from salad_train.recipe.checkpoint import load_state
from salad_train.recipe.data import speak
from salad_train.recipe.metrics import read_metrics
from salad_train.recipe.stage1 import run_stage1
from salad_train.recipe.stage2 import Stage2Trainer, selected_documents

pytestmark = pytest.mark.integration

CORPUS = [
    "The cat sat on the warm mat near the door and watched the rain fall.",
    "Bread is baked in a hot oven until the crust turns brown and crisp.",
]
SELECTED = [
    ("Trains leave the station", "every hour on the hour"),
    ("The river runs past", "old mills and quiet farms"),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage2")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    rows = [
        {
            "spans": [[text, False], [spoken, True]],
            "audio": [None, speak(spoken, "piper/joe")],
            "dropped": False,
            "seconds": 1.5,
        }
        for text, spoken in SELECTED
    ]
    rows.append({"spans": [["dropped", True]], "audio": [None], "dropped": True, "seconds": 0})
    (root / "select").mkdir()
    (root / "select" / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_config(
        "tiny",
        [
            f"data.corpus={root / 'corpus.txt'}",
            "data.tasks=[]",
            "data.voices=[piper/joe]",
            "data.replay_prob=0.3",
            "train.align_steps=2",
            "train.align_batch_size=4",
            "model.adapter_layers=1",
            "model.adapter_width=32",
            "model.adapter_heads=2",
            "optim.warmup_steps=1",
            "optim.decay_fraction=0.5",
            "train.steps=4",
            "train.batch_size=2",
            "train.save_every=1",
            f"train.out_dir={root / 'stage1'}",
            f"select.out_dir={root / 'select'}",
            "stage2.steps=3",
            f"stage2.out_dir={root / 's2'}",
        ],
    )


def test_selected_documents_keep_clips_and_skip_dropped(config):
    docs = selected_documents(Path(config.select.out_dir))
    assert len(docs) == 2
    for doc, (text, spoken) in zip(docs, SELECTED, strict=True):
        assert [s.text for s in doc] == [text, spoken]
        assert doc[0].audio is None and Path(doc[1].audio).is_file()
    with pytest.raises(SaladError, match="run `salad-train select`"):
        selected_documents(Path(config.select.out_dir) / "missing")


def test_stage2_branches_from_pre_decay_and_decays_to_zero(config):
    with pytest.raises(SaladError, match="no pre_decay checkpoint"):
        Stage2Trainer(config)
    run_stage1(config)
    stage1 = Path(config.train.out_dir)
    assert (stage1 / "pre_decay").read_text() == "step-000002"
    pre = load_state(stage1 / "checkpoints" / "step-000002")

    trainer = Stage2Trainer(config)
    trainer.setup()
    assert trainer.step == 0
    trainable = trainer._trainable()
    assert set(trainable) == set(pre["trainable"])
    for name, param in trainable.items():  # bit for bit the pre-decay weights before step 1
        assert torch.equal(param.detach(), pre["trainable"][name]), name
    moments = trainer.optimizer.state_dict()["state"]
    for key, saved in pre["optimizer"]["state"].items():
        assert torch.equal(moments[key]["exp_avg"], saved["exp_avg"])
        assert torch.equal(moments[key]["exp_avg_sq"], saved["exp_avg_sq"])

    # the three sources in equal shares, a pure function of the index
    draws = [trainer.data.source(i) for i in range(3000)]
    counts = [draws.count(name) for name in ("natural", "selected", "replay")]
    assert stats.chisquare(counts).pvalue > 0.001
    assert draws == [trainer.data.source(i) for i in range(3000)]
    assert all(trainer.data.sample(i) in trainer.data.sources[draws[i]] for i in range(60))

    final = trainer.run()
    plateau = config.optim.adapter_lr
    lrs = [row["lr_adapter"] for row in read_metrics(Path(config.stage2.out_dir) / "metrics.jsonl")]
    assert np.allclose(lrs, [plateau * 2 / 3, plateau / 3, 0.0])  # linear from the plateau to 0
    assert set(trainer.scheduler.get_last_lr()) == {0.0}  # adapter and LoRA groups alike
    training = json.loads((final / "training.json").read_text())
    assert training["stage"] == "II" and training["steps"] == 3
    assert training["stage1_checkpoint"].endswith("step-000002")
    assert training["selected_texts"] == 2
    assert training["speech_hours"] > pre["speech_seconds"] / 3600  # counted on from Stage I
    changed = load_state(Path(config.stage2.out_dir) / "checkpoints" / "step-000003")["trainable"]
    assert any(not torch.equal(changed[n], pre["trainable"][n]) for n in changed)  # it trained


def test_stage2_teacher_is_the_base_llm_not_the_stage1_llm(config, tiny_qwen2, tmp_path):
    """``llm_mode: full``: Stage I moves the LLM and Stage II's student starts there, but its
    teacher is the original base LLM, loaded by name (it was a copy of the Stage I LLM)."""
    from dataclasses import replace

    from salad_eval.models.digest import weights_digest
    from salad_eval.models.text_lm import load_llm

    full = replace(
        config,
        model=replace(config.model, llm=str(tiny_qwen2), llm_mode="full"),
        optim=replace(config.optim, llm_lr=1e-3),
        train=replace(config.train, out_dir=str(tmp_path / "stage1")),
        stage2=replace(config.stage2, out_dir=str(tmp_path / "stage2")),
    )
    run_stage1(full)
    trainer = Stage2Trainer(full)
    trainer.setup()
    teacher = trainer.accelerator.unwrap_model(trainer.module).teacher
    base = weights_digest(load_llm(str(tiny_qwen2))[0])
    assert weights_digest(teacher) == base
    assert weights_digest(trainer.speech_lm.llm) != base  # the student is Stage I's LLM
