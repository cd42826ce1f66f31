"""report.html from a run folder's files, without a browser: the outcomes the item filter counts,
the flips between runs, the clips copied beside the page (or inside it), a clip the store lost
named missing, the page written the same twice, and `salad-eval view`. The page in a real
browser, over real gap runs: tests/test_page_browser.py."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_bad_input import _refused
from typer.testing import CliRunner

from salad_eval.cli import app, main
from salad_eval.gap import write_report
from salad_eval.page import build, write_run_page
from salad_eval.page.items import (
    MISALIGNED,
    RESCUED,
    SILENCE,
    count_outcome,
    flips,
    heard_rows,
    item_views,
    outcomes,
)
from salad_eval.prompt import Item, Speak, Text
from salad_eval.speech import store
from salad_eval.speech.manifest import Clip, ManifestRow, SynthManifest

VOICES = ("espeak/en-us", "espeak/en-us+noise=white:snr=5")
TEXT = ("text@base", "text@speech")
SPEECH = ("speech@speech", "speech@cascade", "speech@speech:silent", "speech@speech:shuffled")
# per item: text@base, text@speech, then per voice: speech@speech, cascade, silent, shuffled
RIGHT = {
    "misaligned": (True, True, [(False, True, False, False), (True, True, False, False)]),
    "forgotten": (True, False, [(False, False, False, False), (False, False, True, False)]),
    "all-right": (True, True, [(True, True, True, True), (True, True, True, True)]),
    "all-wrong": (False, False, [(False, False, False, False), (False, False, False, False)]),
}


def records_of(right: dict = RIGHT) -> list[dict]:
    rows = []
    for item, (base, text, voiced) in right.items():
        shared = {"task": "demo", "item": item, "domain": "geography", "target": 0}
        for condition, ok in zip(TEXT, (base, text), strict=True):
            rows.append(_record(shared, condition, None, ok))
        for voice, oks in zip(VOICES, voiced, strict=True):
            for condition, ok in zip(SPEECH, oks, strict=True):
                rows.append(_record(shared, condition, voice, ok))
    return rows


def _record(shared: dict, condition: str, voice: str | None, ok: bool) -> dict:
    rec = {
        **shared,
        "condition": condition,
        "voice": voice,
        "logprobs": [-1.0, -2.0] if ok else [-2.0, -1.0],
        "pred": 0 if ok else 1,
        "pred_norm": 0 if ok else 1,
        "correct": ok,
        "correct_norm": ok,
    }
    if condition == "speech@cascade":
        rec |= {"wer": 0.25, "transcript": "what is the capital of france"}
    return rec


def test_outcomes_per_voice_and_their_counts():
    records = records_of()
    by_item = {}
    for rec in records:
        by_item.setdefault(rec["item"], []).append(rec)
    assert outcomes(by_item["misaligned"], "correct") == (
        False,
        {VOICES[0]: MISALIGNED | RESCUED, VOICES[1]: 0},
    )
    assert outcomes(by_item["forgotten"], "correct") == (True, {VOICES[0]: 0, VOICES[1]: SILENCE})
    assert outcomes(by_item["all-right"], "correct") == (False, {v: SILENCE for v in VOICES})
    assert outcomes(by_item["all-wrong"], "correct") == (False, {v: 0 for v in VOICES})
    counts = {
        o: count_outcome(records, o) for o in ("misaligned", "forgotten", "rescued", "silence")
    }
    assert counts == {"misaligned": 1, "forgotten": 1, "rescued": 1, "silence": 2}


def test_flips_are_each_run_against_the_first():
    first = records_of()
    second = records_of({**RIGHT, "all-wrong": (True, False, RIGHT["all-wrong"][2])})
    items, conditions, voices, _ = item_views([(first, None, "acc"), (second, None, "acc")])
    flipped = {item["id"]: item["flips"] for item in items}
    assert flipped["all-wrong"] == [[1, conditions.index("text@base"), -1, 0, 1]]
    assert all(not f for name, f in flipped.items() if name != "all-wrong")
    assert [v["name"] for v in voices] == list(VOICES)
    assert [(v["speaker"], v["acoustics"]) for v in voices] == [
        ("espeak/en-us", "clean"),
        ("espeak/en-us", "noise=white:snr=5"),
    ]
    assert flips([None, items[0]["runs"][0]]) == []


def _items() -> list[Item]:
    return [
        Item(
            "demo",
            name,
            "geography",
            (Text("Question: "), Speak(f"Is {name} </script> <b>right</b>?"), Text("\nAnswer:")),
            (" yes", " no"),
            0,
        )
        for name in RIGHT
    ]


def _manifest(items: list[Item]) -> SynthManifest:
    """One stored clip per item and voice, each of its own length (frames tell them apart)."""
    rows = []
    for n, item in enumerate(items):
        for m, voice in enumerate(VOICES):
            frames = 8000 + 1000 * n + 100 * m
            audio = 0.1 * np.sin(np.arange(frames) * 440 * 2 * np.pi / 16000)
            fields = {"text": item.spoken_texts[0], "voice": voice}
            stored = store.write_clip(fields, audio)
            path = str(store.clip_path(store.key_of(fields)))
            clip = Clip(
                item.spoken_texts[0],
                item.spoken_texts[0],
                path,
                stored.sha256,
                stored.seconds,
                "is it",
                0.5,
                0.2,
            )
            rows.append(
                ManifestRow("demo", item.id, voice, "ok", (clip,), clip.seconds, 0.5, 0.2, n == 0)
            )
    return SynthManifest(rows)


@pytest.fixture
def run_dir(tmp_path, monkeypatch) -> Path:
    """A run folder as `salad-eval gap` writes it, its clips in a store of its own."""
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    run = tmp_path / "run"
    records = records_of()
    items = _items()
    run.mkdir()
    (run / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    build.write_heard(run, heard_rows(items, _manifest(items), VOICES, 0, True, "loglik"))
    write_report(run, records, {"command": "salad-eval gap --tasks demo"}, n_boot=20)
    write_run_page(run)
    return run


def page_data(page: Path) -> dict:
    text = page.read_text(encoding="utf-8")
    block = re.search(r'<script type="application/json" id="salad-data">(.*?)</script>', text, re.S)
    return json.loads(block.group(1))


def test_the_page_holds_every_item_its_text_and_a_wav_copy_of_every_clip(run_dir):
    data = page_data(run_dir / "report.html")
    assert [i["id"] for i in data["items"]] == list(RIGHT)
    item = data["items"][0]
    assert item["context"][1] == [1, "Is misaligned </script> <b>right</b>?"]  # spoken, intact
    heard = [json.loads(line) for line in (run_dir / "heard.jsonl").read_text().splitlines()]
    for row in heard:
        for voice, entry in row["voices"].items():
            (clip,) = entry["clips"]
            copy = data["audio"][clip["sha256"][:16]]
            assert copy["src"] == f"audio/{clip['sha256'][:16]}.wav"
            info = sf.info(run_dir / copy["src"])
            assert (info.format, info.samplerate) == ("WAV", 16000)
            assert info.frames == sf.info(store.clip_path(clip["key"])).frames
            assert copy["s"] == pytest.approx(clip["seconds"], abs=1e-4)
            donor = entry["shuffled"]["item"]  # the shuffled control plays another item's clip
            assert donor != row["item"] and entry["shuffled"]["clips"][0]["key"] in {
                c["key"] for r in heard if r["item"] == donor for c in r["voices"][voice]["clips"]
            }
    assert len(list((run_dir / "audio").iterdir())) == len(RIGHT) * len(VOICES)
    first = (run_dir / "report.html").read_bytes()
    write_run_page(run_dir)
    assert (run_dir / "report.html").read_bytes() == first  # the same page, written again


def test_a_clip_the_store_lost_is_named_missing_and_the_others_stay(run_dir, tmp_path):
    heard = [json.loads(line) for line in (run_dir / "heard.jsonl").read_text().splitlines()]
    lost, changed = (
        heard[0]["voices"][VOICES[0]]["clips"][0],
        heard[1]["voices"][VOICES[0]]["clips"][0],
    )
    store.clip_path(lost["key"]).unlink()
    store.clip_path(changed["key"]).write_bytes(store.encode(np.zeros(9000)))
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("audio", "report.html"))
    data = page_data(write_run_page(copy))
    missing = data["audio"][lost["sha256"][:16]]
    assert "missing from the audio store" in data["missing"][missing["missing"]]
    other = data["audio"][changed["sha256"][:16]]
    assert "other audio" in data["missing"][other["missing"]]
    assert sum("src" in a for a in data["audio"].values()) == len(data["audio"]) - 2
    assert sorted(p.stem for p in (copy / "audio").iterdir()) == sorted(
        k for k, a in data["audio"].items() if "src" in a
    )


def test_embed_audio_makes_one_file(run_dir, tmp_path):
    copy = tmp_path / "single"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("audio", "report.html"))
    data = page_data(write_run_page(copy, embed_audio=True))
    assert all(a["src"].startswith("data:audio/wav;base64,") for a in data["audio"].values())
    assert not (copy / "audio").exists()


def test_view_prints_the_page_without_a_display_and_refuses_a_folder_without_one(
    run_dir, tmp_path, capsys
):
    res = CliRunner().invoke(app, ["view", str(run_dir)])
    assert res.exit_code == 0 and res.output.strip() == str((run_dir / "report.html").resolve())
    (run_dir / "report.html").unlink()
    error = _refused(main, ["salad-eval", "view", str(run_dir)], capsys)
    assert "has no report.html" in error and "--rebuild" in error
    res = CliRunner().invoke(app, ["view", "--rebuild", str(run_dir)])
    assert res.exit_code == 0 and (run_dir / "report.html").is_file()
    error = _refused(main, ["salad-eval", "view", str(tmp_path / "nothing")], capsys)
    assert "is not a folder" in error
