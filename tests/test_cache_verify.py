"""Every cache entry is verified when read: a bad one is counted, rebuilt and never used.

Unit level: ``home.cached_entry`` against each corruption (truncated, zero bytes, garbage, and
the issue's unsealed truncation ``0.982`` of ``0.98298``). End to end: a gap run on a few demo
items with the real embedded models; then every score, divergence, transcript, silence clip and
encoder-feature entry of its cache home is corrupted (the three ways in turn), and the rerun
repairs them all and writes the same items.jsonl and results.json as the uncorrupted run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from salad_eval import conditions, home

CORRUPTIONS = {
    "truncated": lambda data: data[: max(1, len(data) // 2)],
    "zero bytes": lambda data: b"",
    "garbage": lambda data: bytes(range(256)) * 2,
}


def _corrupt(path: Path, how: str) -> None:
    path.write_bytes(CORRUPTIONS[how](path.read_bytes()))


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_bad_entry_is_counted_rebuilt_and_never_used(tmp_path, how):
    builds = []

    def build() -> np.ndarray:
        builds.append(1)
        return np.arange(12, dtype=np.float32).reshape(3, 4)

    def read() -> np.ndarray:
        return home.cached_entry(
            tmp_path / "x.npy",
            "test",
            build,
            home.npy_bytes,
            lambda data: home.checked_array(data, columns=4),
        )

    first = read()
    before = home.REBUILT["test"]
    assert np.array_equal(read(), first) and len(builds) == 1  # a good entry is read, not built
    _corrupt(tmp_path / "x.npy", how)
    assert np.array_equal(read(), first) and len(builds) == 2
    assert home.REBUILT["test"] == before + 1
    assert np.array_equal(read(), first) and len(builds) == 2  # repaired on disk


def test_a_truncation_that_still_parses_is_caught(tmp_path):
    path = tmp_path / "kl.json"
    value = home.cached_entry(
        path,
        "test",
        lambda: 0.98298123,
        home.json_bytes,
        lambda data: home.checked_float(json.loads(data)),
    )
    path.write_text("0.982")  # unsealed, as the old cache wrote it, and cut
    again = home.cached_entry(
        path,
        "test",
        lambda: 0.98298123,
        home.json_bytes,
        lambda data: home.checked_float(json.loads(data)),
    )
    assert again == value == 0.98298123
    n = home.REBUILT["test"]
    assert f"rebuilt {n} bad test entr{'y' if n == 1 else 'ies'}" in home.rebuilt_report()
    sealed = path.read_bytes()
    path.write_bytes(sealed.replace(b"0.98298123", b"0.98298124"))  # same length, other value
    with pytest.raises(home.BadEntry):
        home.unseal(path.read_bytes())
    for text in ("NaN", "-1.0", '"0.9"', "[0.9]"):  # parse, but no valid KL value
        with pytest.raises(home.BadEntry):
            home.checked_float(json.loads(text), low=-1e-4)


@pytest.fixture(scope="module")
def gap_home(tmp_path_factory):
    """An empty cache home (assets shared) and the models of a small gap run, loaded in it."""
    from salad_eval.models.cascade import Cascade
    from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
    from salad_eval.models.text_lm import TextLM
    from salad_eval.run.runner import Models
    from salad_eval.run.spec import RunSpec

    root = tmp_path_factory.mktemp("verify")
    (root / "home").mkdir()
    (root / "home" / "assets").symlink_to(home.home() / "assets")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALAD_HOME", str(root / "home"))
        config = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)
        speech = SpeechLM.from_config(config, seed=0)
        text = TextLM("smollm2-135m")
        models = Models(
            speech=speech, text=text, cascade=Cascade(asr="whisper-tiny.en", text_model=text)
        )
        setup = RunSpec(tasks=["demo"], voices="piper/joe", limit=2, n_boot=50, divergence_docs=2)
        yield root, setup, models


def _run(gap_home, name: str) -> tuple[str, dict]:
    from salad_eval.run.runner import run_gap

    root, setup, models = gap_home
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SALAD_HOME", str(root / "home"))
        conditions._CHECKED.clear()  # a new command verifies the silence clips again
        run_gap(setup, models, root / name)
    results = json.loads((root / name / "results.json").read_text())
    for volatile in ("created", "seconds", "command"):
        results["manifest"].pop(volatile)
    return (root / name / "items.jsonl").read_text(), results


@pytest.mark.integration
def test_every_kind_of_corrupted_entry_is_repaired_and_the_rerun_matches(gap_home):
    items, results = _run(gap_home, "clean")
    cache = gap_home[0] / "home"
    kinds = {  # REBUILT kind -> the entries of that kind in the cache home
        "score": sorted((cache / "scores").rglob("*.json")),
        "divergence": sorted((cache / "divergences").rglob("*.json")),
        "transcript": sorted((cache / "transcripts").rglob("*.txt")),
        "silence clip": sorted((cache / "audio" / "silence").glob("*.flac")),
        "encoder feature": sorted((cache / "features").rglob("*.npy")),
    }
    for kind, paths in kinds.items():
        assert paths, f"the run cached no {kind} entry"
        for i, path in enumerate(paths):
            _corrupt(path, list(CORRUPTIONS)[i % len(CORRUPTIONS)])
    before = dict(home.REBUILT)
    rerun_items, rerun_results = _run(gap_home, "rerun")
    assert rerun_items == items
    assert rerun_results == results
    rebuilt = {kind: home.REBUILT[kind] - before.get(kind, 0) for kind in kinds}
    # every entry was bad; features are read only to rescore, and then each clip is encoded once
    assert rebuilt == {kind: len(paths) for kind, paths in kinds.items()}
    assert _run(gap_home, "again")[0] == items  # repaired on disk: nothing more to rebuild
    assert {kind: home.REBUILT[kind] - before.get(kind, 0) for kind in kinds} == rebuilt


@pytest.mark.integration
def test_a_bad_embedding_chunk_is_re_embedded(tmp_path, monkeypatch):
    """Stage II's sentence embeddings, with the real embedded MiniLM."""
    from salad_train.selection.cluster import embed

    (tmp_path / "assets").symlink_to(home.home() / "assets")
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    texts = ["The cat sat on the warm mat.", "Dogs bark at night.", "The sun rises early."]
    clean = embed(texts)
    (chunk,) = (tmp_path / "embeddings").rglob("*.npy")
    for how in CORRUPTIONS:
        before = home.REBUILT["embedding"]
        _corrupt(chunk, how)
        # identity: the rebuilt chunk is the same model on the same texts and shapes
        assert np.array_equal(embed(texts), clean)
        assert home.REBUILT["embedding"] == before + 1
