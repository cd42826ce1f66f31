"""Recorded audio as a voice: a task's own recordings scored through every condition.

The fixture is real speech: the five LibriVox utterances (with their transcripts) of Debian's
``pocketsphinx-testdata``, laid out at test time as an MMSU mirror (VoiceBench's ``prompt`` /
``reference`` rows, audio as paths relative to the JSONL); one clip is turned into 44.1 kHz
stereo FLAC, so conversion to 16 kHz mono is exercised too. Nothing is committed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from salad_eval import recordings
from salad_eval.errors import SaladError
from salad_eval.home import home
from salad_eval.prompt import Speak
from salad_eval.speech import recorded, store
from salad_eval.speech.voices import resolve_voices
from salad_eval.tasks import load_items

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
MMSU = Path("hlt-lab/voicebench/mmsu")


def _librivox(tmp: Path) -> Path:
    """The LibriVox folder of pocketsphinx-testdata: installed, else the .deb unpacked here."""
    if (LIBRIVOX / "transcription").is_file():
        return LIBRIVOX
    subprocess.run(
        ["apt-get", "download", "pocketsphinx-testdata"], cwd=tmp, check=True, capture_output=True
    )
    deb = next(tmp.glob("pocketsphinx-testdata_*.deb"))
    subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp / "root")], check=True)
    return tmp / "root" / LIBRIVOX.relative_to("/")


@pytest.fixture(scope="module")
def mirror(tmp_path_factory) -> Path:
    """A local mirror holding an MMSU split of five recorded questions (real natural speech)."""
    tmp = tmp_path_factory.mktemp("recorded")
    source = _librivox(tmp)
    data = tmp / "mirror" / MMSU
    (data / "clips").mkdir(parents=True)
    rows = []
    for number, line in enumerate((source / "transcription").read_text().splitlines()):
        words, _, utterance = line.partition("(")
        name, text = utterance.strip(" )"), words.replace("<s>", "").replace("</s>", "").strip()
        if number == 0:  # stereo 44.1 kHz FLAC: the store must resample and mix it down
            audio, rate = sf.read(source / f"{name}.wav", dtype="float32")
            stereo = resample_poly(audio, 441, 160).astype(np.float32)
            sf.write(data / "clips" / f"{name}.flac", np.stack([stereo, stereo * 0.5], 1), 44100)
            path = f"clips/{name}.flac"
        else:
            shutil.copyfile(source / f"{name}.wav", data / "clips" / f"{name}.wav")
            path = f"clips/{name}.wav"
        rows.append(
            {
                "question_id": name,
                "prompt": text,
                "reference": "ABCD"[number % 4],
                "subject": "literature",
                "audio": path,
            }
        )
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp / "mirror"


def test_recorded_parts_carry_their_files_and_transcripts(mirror):
    items = load_items("mmsu", data_dir=str(mirror))
    assert len(items) == 5 and items[1].id == "sense_and_sensibility_01_austen_64kb-0880"
    speak = [part for part in items[1].context if isinstance(part, Speak)]
    assert speak == [
        Speak(
            "he was not an ill disposed young man",
            str(mirror / MMSU / "clips" / f"{items[1].id}.wav"),
        )
    ]
    assert items[1].text_context.endswith("he was not an ill disposed young man\nAnswer:")
    assert [item.target for item in items] == [0, 1, 2, 3, 0]


def test_mmsu_schema_rows_and_missing_audio_synthesize_otherwise(tmp_path):
    """Rows without recordings: TTS voices speak them, the voice recorded fails them, clearly."""
    from salad_eval.speech.synth import synthesize

    data = tmp_path / MMSU
    data.mkdir(parents=True)
    rows = [
        {
            "question": "What color is the sky on a clear day?",
            "choices": ["green", "blue", "red", "black"],
            "answer": "B",
            "subject": "physics",
        },
        {
            "question": "How many legs does a dog have?",
            "choices": ["two", "four", "six", "eight"],
            "answer": 1,
            "subject": "biology",
        },
    ]
    (data / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_items("mmsu", data_dir=str(tmp_path))
    assert [(i.domain, i.target) for i in items] == [("physics", 1), ("biology", 1)]
    assert items[0].spoken_texts == (
        "What color is the sky on a clear day?\nA. green\nB. blue\nC. red\nD. black",
    )
    manifest = synthesize(items, "espeak/en-us,recorded", out_dir=tmp_path, show_progress=False)
    assert [r.status for r in manifest.rows if r.voice == "espeak/en-us"] == ["ok", "ok"]
    failed = [r for r in manifest.rows if r.voice == "recorded"]
    assert [r.status for r in failed] == ["failed", "failed"]
    assert "no recording" in failed[0].reason


@pytest.fixture(scope="module")
def gap_run(mirror, tmp_path_factory) -> Path:
    """`salad-eval gap` on the recorded fixture, its audio as the voice, in a fresh cache home."""
    from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig

    root = tmp_path_factory.mktemp("gap")
    config = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)
    checkpoint = SpeechLM.from_config(config, seed=0).save(root / "random")
    salad_home = root / "home"
    salad_home.mkdir()
    (salad_home / "assets").symlink_to(home() / "assets")  # the prepared models; nothing else
    out = root / "run"
    args = [
        "gap",
        "--model",
        str(checkpoint),
        "--tasks",
        "mmsu",
        "--voices",
        "recorded",
        "--data-dir",
        str(mirror),
        "--limit",
        "5",
        "--asr",
        "whisper-tiny.en",
        "--n-boot",
        "200",
        "--no-divergences",
        "--answer",
        "both",
        "--max-new-tokens",
        "8",
        "--out",
        str(out),
    ]
    env = {**os.environ, "SALAD_HOME": str(salad_home), "HF_HUB_OFFLINE": "1"}
    subprocess.run([BIN / "salad-eval", *args], env=env, check=True)
    return out


def test_gap_report_holds_every_condition_both_controls_and_cascade_wer(gap_run):
    results = json.loads((gap_run / "results.json").read_text())
    accuracy = results["metrics"]["acc"]["overall"]["accuracy"]
    conditions = {
        "text@base",
        "text@speech",
        "speech@speech",
        "speech@cascade",
        "speech@speech:silent",
        "speech@speech:shuffled",
    }
    assert conditions <= set(accuracy) and {a["n"] for a in accuracy.values()} == {5}
    overall = results["metrics"]["acc"]["overall"]
    assert overall["gap"]["num"] == overall["forgetting"]["num"] + overall["misalignment"]["num"]
    manifest = results["manifest"]
    assert manifest["voices"] == ["recorded"] and not manifest["excluded_items"]
    rows = [json.loads(line) for line in (gap_run / "items.jsonl").read_text().splitlines()]
    spoken = [r for r in rows if r["condition"].startswith("speech@")]
    assert len(spoken) == 5 * 4 and {r["voice"] for r in spoken} == {"recorded"}
    # natural speech: Whisper tiny.en (the cascade) and base (the clip check) read it back well
    wers = [r["wer"] for r in rows if r["condition"] == "speech@cascade"]
    assert len(wers) == 5 and np.mean(wers) < 0.25
    reported = results["metrics"]["acc"]["voices"]["recorded"]["divergence"]["wer"]
    assert reported["n"] == 5 and abs(reported["value"] - np.mean(wers)) < 1e-9
    assert manifest["synthesis"]["mmsu"]["recorded"]["mean_wer"] < 0.25
    checks = results["controls"]["checks"]
    assert {(c["voice"], c["control"]) for c in checks} == {
        ("recorded", "speech@speech:silent"),
        ("recorded", "speech@speech:shuffled"),
    }
    assert "recorded" in (gap_run / "summary.md").read_text()
    # answered by generation too: MMSU's recordings speak the options, and are heard as such
    generated = results["metrics"]["acc_gen"]["overall"]
    assert {a["n"] for a in generated["accuracy"].values()} == {5}
    assert manifest["tasks"]["mmsu"]["generate"]["options"] == "spoken"
    assert all(len(r["replies"]) == 1 for r in spoken)
    assert manifest["synthesis"]["mmsu:generate"]["recorded"]["rows"] == 5


def test_recorded_clips_are_stored_verified_and_keyed_by_source_bytes(gap_run, mirror):
    """Each clip scored is the source converted to 16 kHz mono, its key from the source bytes."""
    salad_home = gap_run.parent / "home"
    clips = json.loads((gap_run / "results.json").read_text())["manifest"]["clips"]
    assert len(clips) == 5
    sources = {
        hashlib.sha256(p.read_bytes()).hexdigest(): p for p in (mirror / MMSU / "clips").iterdir()
    }
    for key, sha256 in clips.items():
        flac = salad_home / "audio" / "clips" / key[:2] / f"{key}.flac"
        sidecar = json.loads(flac.with_suffix(".json").read_text())
        assert hashlib.sha256(flac.read_bytes()).hexdigest() == sha256 == sidecar["sha256"]
        fields = sidecar["clip"]
        assert fields["engine"] == "recorded" and store.key_of(fields) == key
        source = sources[fields["source_sha256"]]
        audio, rate = sf.read(flac)
        original = sf.info(source)
        assert rate == 16000 and audio.ndim == 1
        assert abs(len(audio) / rate - original.duration) < 0.01


def test_a_damaged_recorded_clip_is_rebuilt_from_its_source(gap_run, mirror, monkeypatch):
    from salad_eval.speech.synth import synthesize

    monkeypatch.setenv("SALAD_HOME", str(gap_run.parent / "home"))
    clips = json.loads((gap_run / "results.json").read_text())["manifest"]["clips"]
    key = sorted(clips)[0]
    store.clip_path(key).write_bytes(b"garbage")
    items = load_items("mmsu", data_dir=str(mirror))
    manifest = synthesize(items, "recorded", out_dir=gap_run.parent, show_progress=False)
    assert len(manifest.repaired) == 1 and key in manifest.repaired[0]
    assert manifest.voices["recorded"].made == 1 and manifest.voices["recorded"].cached == 4
    assert manifest.digests(items, ["recorded"]) == clips  # the same bytes again


def test_audio_values_as_the_hub_gives_them(mirror, monkeypatch, tmp_path):
    """An HF ``Audio`` column (bytes inline) is read undecoded; its bytes become a kept file."""
    import datasets
    import pyarrow as pa

    from salad_eval import tasks

    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(tasks.MIRROR_ENV, raising=False)
    wav = next((mirror / MMSU / "clips").glob("*.wav"))
    data = wav.read_bytes()
    audio = pa.array(
        [{"bytes": data, "path": wav.name}],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )
    table = pa.table(
        {"audio": audio, "prompt": ["he was not an ill disposed young man"], "reference": ["B"]}
    )
    features = datasets.Features(
        {
            "audio": datasets.Audio(),
            "prompt": datasets.Value("string"),
            "reference": datasets.Value("string"),
        }
    )
    hub = datasets.Dataset(table).cast(features)  # decodes on access: would need torchcodec
    monkeypatch.setattr(datasets, "load_dataset", lambda *args, **kwargs: hub)
    (item,) = load_items("mmsu")
    kept = Path(item.context[1].recording)
    assert kept.read_bytes() == data and kept.stem == hashlib.sha256(data).hexdigest()
    decoded = {"array": sf.read(wav, dtype="float32")[0], "sampling_rate": 16000}
    again = recordings.source(decoded, None)  # a decoded value: kept as a WAV of its samples
    # not a rounding bound: the kept WAV holds 16-bit samples (a step of 2^-15 ~ 3e-5)
    assert np.allclose(
        recorded.convert(again, recorded.clip_fields(again)),
        recorded.convert(str(kept), recorded.clip_fields(str(kept))),
        atol=1e-4,
    )


def test_bad_recorded_inputs_are_one_line_errors(mirror, tmp_path):
    with pytest.raises(SaladError, match="no parameters"):
        resolve_voices("recorded:speed=2")
    assert [str(v) for v in resolve_voices("recorded,espeak/en-us")] == ["recorded", "espeak/en-us"]
    with pytest.raises(SaladError, match="does not exist"):
        recordings.source("clips/missing.wav", mirror / MMSU)
    from salad_eval import checks

    with pytest.raises(SaladError, match="task demo has no recordings"):
        checks.inputs(tasks=["demo"], voices="recorded")
    with pytest.raises(SaladError, match="cannot speak other text"):
        from salad_eval.speech.synth import ensure_clip

        ensure_clip("hello", resolve_voices("recorded")[0])
    changed = tmp_path / "changed.wav"
    shutil.copyfile(next((mirror / MMSU / "clips").glob("*.wav")), changed)
    before = recorded.clip_fields(str(changed))
    audio, rate = sf.read(changed)
    buffer = io.BytesIO()
    sf.write(buffer, audio * 0.5, rate, format="WAV")
    changed.write_bytes(buffer.getvalue())
    os.utime(changed, ns=(1, 1))
    assert store.key_of(recorded.clip_fields(str(changed))) != store.key_of(before)


def test_recorded_clips_export_and_import(gap_run, monkeypatch, tmp_path):
    from salad_eval.speech import exchange

    monkeypatch.setenv("SALAD_HOME", str(gap_run.parent / "home"))
    clips = json.loads((gap_run / "results.json").read_text())["manifest"]["clips"]
    assert exchange.export_clips(clips, tmp_path / "export").clips == 5
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "elsewhere"))
    imported = exchange.import_clips(tmp_path / "export")
    assert (imported.clips, imported.replaced, imported.foreign) == (5, 0, 0)
    problems: list[str] = []
    assert {k: store.stored_clip(k, problems).sha256 for k in clips} == clips and not problems


def test_perturbations_compose_with_recorded_audio(mirror, monkeypatch, tmp_path):
    from salad_eval.speech import perturb
    from salad_eval.speech.synth import synthesize

    (tmp_path / "assets").symlink_to(home() / "assets")
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    items = load_items("mmsu", data_dir=str(mirror))
    voice = "recorded+noise=babble:snr=5,talkers=2"
    manifest = synthesize(items, f"recorded,{voice}", show_progress=False)
    for item in items:
        clean, noisy = manifest.row(item, "recorded").clips[0], manifest.row(item, voice).clips[0]
        fields = store.sidecar(Path(noisy.path).stem)["clip"]
        assert fields["base"] == Path(clean.path).stem and len(fields["donors"]) == 2
        assert Path(clean.path).stem not in fields["donors"]
        heard = store.read_clip(Path(noisy.path).stem)
        snr = perturb.measured_snr(store.read_clip(fields["base"]), heard)
        assert abs(snr - 5) < 0.5 and noisy.text == clean.text
