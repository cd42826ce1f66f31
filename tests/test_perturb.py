"""Acoustic conditions: perturbed clips measured against what was asked (SNR, RT60), their
determinism, babble's donors, the transcripts, the spec grammar, the robustness report, the
Kokoro English voices from a file and the voice-diversity figure, with the real engines.

One synthesis in a fresh cache home per module (eSpeak, the fastest engine, plus Piper for a
second speaker) carries the clip tests.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from salad_eval.errors import SaladError
from salad_eval.prompt import Audio, Speak
from salad_eval.speech import perturb, store, tts
from salad_eval.speech.synth import synthesize
from salad_eval.speech.voices import (
    PERTURBATIONS,
    SNR_LADDER,
    parse_voice,
    resolve_voices,
)
from salad_eval.tasks import load_items

CLEAN = "espeak/en-us"
NOISY = [
    f"{CLEAN}+noise={kind}:snr={snr}"
    for kind, snr in (("white", 0), ("pink", 5), ("brown", 20), ("babble", 5))
]
ROOM = f"{CLEAN}+reverb:rt60=0.5"
VOICES = [CLEAN, *NOISY, ROOM, f"{CLEAN}+telephone+packetloss:rate=0.2", "espeak/en+f3"]


@pytest.fixture(scope="module")
def run(fresh_home: Path):
    items = load_items("demo", limit=5)
    return items, synthesize(items, ",".join(VOICES), show_progress=False)


def _audio(clip) -> np.ndarray:
    return store.read_clip(Path(clip.path).stem)


def _base(clip) -> np.ndarray:
    return store.read_clip(store.sidecar(Path(clip.path).stem)["clip"]["base"])


@pytest.mark.integration
def test_measured_snr_is_the_requested_one(run) -> None:
    items, manifest = run
    for voice in NOISY:
        requested = parse_voice(voice).acoustics[0].settings["snr"]
        for item in items:
            clip = manifest.row(item, voice).clips[0]
            measured = perturb.measured_snr(_base(clip), _audio(clip))
            assert abs(measured - requested) < 0.5, (voice, item.id, measured)


@pytest.mark.integration
def test_measured_rt60_is_the_requested_one(run) -> None:
    for rt60, room in ((0.3, 4.0), (0.5, 5.0), (0.8, 6.0)):
        ir = perturb.impulse_response(rt60, room, seed=7)
        assert abs(perturb.measured_rt60(ir) - rt60) < 0.2 * rt60
    items, manifest = run  # the reverberated clip: the clean one plus its room's tail
    clip = manifest.row(items[0], ROOM).clips[0]
    wet, dry = _audio(clip), _base(clip)
    assert len(wet) > len(dry) + 0.2 * store.SAMPLE_RATE
    ir = perturb.impulse_response(0.5, 5.0, perturb.room_seed(parse_voice(ROOM), 0, 0))
    expected = perturb.reverberate(dry, ir)
    expected *= min(1.0, 0.99 / np.max(np.abs(expected)))
    np.testing.assert_allclose(wet, expected, atol=2e-4)  # 16-bit FLAC


@pytest.mark.integration
def test_same_spec_and_seed_give_the_same_bytes(run) -> None:
    items, manifest = run
    perturbed = [str(parse_voice(v)) for v in VOICES if parse_voice(v).acoustics]
    before = {v: [manifest.row(i, v).clips[0].sha256 for i in items] for v in perturbed}
    for voice in perturbed:
        for item in items:
            store.discard(Path(manifest.row(item, voice).clips[0].path).stem)
    again = synthesize(items, ",".join(VOICES), show_progress=False)
    assert all(again.voices[v].made == len(items) for v in perturbed)
    assert {v: [again.row(i, v).clips[0].sha256 for i in items] for v in perturbed} == before
    clean = _base(manifest.row(items[0], NOISY[0]).clips[0])
    voice = parse_voice(NOISY[0])
    same = perturb.apply(clean, voice, seed=0, clip_key="k")
    np.testing.assert_array_equal(same, perturb.apply(clean, voice, seed=0, clip_key="k"))
    assert not np.array_equal(same, perturb.apply(clean, voice, seed=1, clip_key="k"))


@pytest.mark.integration
def test_babble_never_holds_the_items_own_speech(run) -> None:
    items, manifest = run
    voice = NOISY[-1]
    for item in items:
        own = manifest.row(item, CLEAN).clips
        clip = manifest.row(item, voice).clips[0]
        fields = store.sidecar(Path(clip.path).stem)["clip"]
        donors = fields["donors"]
        assert len(donors) == 4 and not {Path(c.path).stem for c in own} & set(donors)
        assert not {store.sidecar(d)["clip"]["text"] for d in donors} & {c.normalized for c in own}
        clean, noisy = _base(clip), _audio(clip)
        gain = float(noisy @ clean / (clean @ clean))
        residual = noisy - gain * clean  # the babble as mixed in
        assert abs(np.corrcoef(residual, clean)[0, 1]) < 0.1
    pool = [("a", "the same words", "k1"), ("b", "the same words", "k2"), ("c", "other", "k3")]
    assert perturb.choose_donors({"the same words"}, pool, "a", 4, 0) == ["k3"]


@pytest.mark.integration
def test_a_perturbation_never_changes_the_transcript(run) -> None:
    items, manifest = run
    for item in items:
        spoken = [part.text for part in item.context if isinstance(part, Speak)]
        clean = manifest.speech_prompt(item, CLEAN)
        for voice in VOICES[1:]:
            prompt = manifest.speech_prompt(item, voice)
            audio = [seg for seg in prompt if isinstance(seg, Audio)]
            assert [seg.transcript for seg in audio] == spoken
            assert [seg for seg in prompt if not isinstance(seg, Audio)] == [
                seg for seg in clean if not isinstance(seg, Audio)
            ]
        row = manifest.row(item, NOISY[0])
        assert [c.normalized for c in row.clips] == [
            c.normalized for c in manifest.row(item, CLEAN).clips
        ]


@pytest.mark.integration
def test_every_perturbation_does_what_it_says(run) -> None:
    items, manifest = run
    clean = _base(manifest.row(items[0], NOISY[0]).clips[0])
    rng = np.random.default_rng(0)
    assert abs(len(perturb.speed(clean, 1.25)) - len(clean) / 1.25) < 2
    assert abs(len(perturb.tempo(clean, 1.25)) - len(clean) / 1.25) < 600
    lost = perturb.packet_loss(np.ones(16000), 0.3, 20, rng)
    assert 0.15 < np.mean(lost == 0) < 0.45
    clipped = perturb.clip(clean, 10)
    assert np.mean(np.abs(clipped) >= np.max(np.abs(clipped)) - 1e-9) >= 0.09
    phone = perturb.telephone(clean, "mulaw", 300, 3400)
    spectrum = np.abs(np.fft.rfft(phone)) ** 2
    f = np.fft.rfftfreq(len(phone), 1 / store.SAMPLE_RATE)
    assert spectrum[f > 4200].sum() < 1e-3 * spectrum.sum()
    for spec in ("codec=mp3:level=0.9", "codec=pcm:bits=4", "noise=pink:snr=10", "speed:rate=0.8"):
        out = perturb.apply(clean, parse_voice(f"{CLEAN}+{spec}"), 0, "k")
        assert out.dtype == np.float32 and np.all(np.abs(out) <= 1) and len(out) > 1000
        assert not np.allclose(out[: len(clean)], clean[: len(out)], atol=1e-3)
    # the noise colours: pink and brown put more of their power low
    lows = []
    for kind in ("white", "pink", "brown"):
        power = np.abs(np.fft.rfft(perturb.coloured_noise(kind, 16000, rng))) ** 2
        lows.append(power[:500].sum() / power.sum())
    assert lows[0] < lows[1] < lows[2]


def test_a_typo_gets_one_line_listing_every_perturbation() -> None:
    with pytest.raises(SaladError) as info:
        resolve_voices(f"{CLEAN}+noize=babble:snr=5")
    message = str(info.value)
    assert "\n" not in message and "did you mean noise" in message
    for name, (kinds, params) in PERTURBATIONS.items():
        assert name in message and all(f"{p}=<" in message for p in params)
        assert all(kind in message for kind in kinds)
    for bad, says in (
        (f"{CLEAN}+noise=whit", "white|pink"),
        (f"{CLEAN}+reverb:rt6=1", "rt60=<"),
        (f"{CLEAN}+reverb:rt60=9", "outside"),
        (f"{CLEAN}+speed:rate=x", "number"),
    ):
        with pytest.raises(SaladError, match=says):
            parse_voice(bad)
    voice = parse_voice("espeak/en+f3:rate=150+noise:snr=5,talkers=2+reverb:rt60=0.6")
    assert (voice.name, str(voice.clean)) == ("en+f3", "espeak/en+f3:rate=150")
    assert str(voice) == "espeak/en+f3:rate=150+noise=white:snr=5,talkers=2+reverb:rt60=0.6"
    assert resolve_voices(str(voice)) == (voice,)
    noise = [str(v) for v in resolve_voices("noise")]
    assert noise[0] == "kokoro/jm_kumo" and len(noise) == 1 + len(SNR_LADDER)
    assert len(resolve_voices("robustness")) > 10
    held = [str(v) for v in resolve_voices("heldout+reverb:rt60=0.6")]
    assert held == ["kokoro/jm_kumo+reverb:rt60=0.6", "kokoro/jf_alpha+reverb:rt60=0.6"]


@pytest.mark.integration
def test_kokoro_english_voice_from_a_local_file(tmp_path: Path, monkeypatch) -> None:
    from salad_eval.assets import kokoro_files

    with np.load(kokoro_files()[1]) as voices:
        np.save(tmp_path / "af_heart.npy", voices["jm_kumo"])
    tts.kokoro_voice_file.cache_clear()
    tts.kokoro_style.cache_clear()
    monkeypatch.delenv("SALAD_KOKORO_VOICES", raising=False)
    with pytest.raises(SaladError, match="SALAD_KOKORO_VOICES") as info:
        tts.synthesize("Hello there.", parse_voice("kokoro/af_heart"))
    assert "\n" not in str(info.value)
    tts.kokoro_voice_file.cache_clear()
    monkeypatch.setenv("SALAD_KOKORO_VOICES", str(tmp_path))
    heart = tts.synthesize("Hello there.", parse_voice("kokoro/af_heart"))
    np.testing.assert_array_equal(
        heart, tts.synthesize("Hello there.", parse_voice("kokoro/jm_kumo"))
    )
    assert "voice=" in tts.voice_version(parse_voice("kokoro/af_heart"))
    tts.kokoro_voice_file.cache_clear()
    tts.kokoro_style.cache_clear()


@pytest.mark.integration
def test_voice_diversity_tells_speakers_apart(run) -> None:
    from salad_eval.speech import diversity

    items, manifest = run
    voices = [CLEAN, NOISY[2], "espeak/en+f3"]
    result = diversity.voice_diversity(diversity.run_clips(manifest, items, voices))
    assert result["available"], result
    d = np.array(result["distances"])
    # not rounding bounds: the report rounds distances to 4 decimals (one step: 1e-4); the
    # diagonal, 1 - cos(e, e), rounds to 0 or one step, and C @ C.T is symmetric to far below it
    np.testing.assert_allclose(d, d.T, atol=1e-6)
    assert np.allclose(np.diag(d), 0, atol=1e-4)
    assert d[0, 2] > max(result["spread"].values())  # two espeak speakers (male, female)
    assert d[0, 2] > d[0, 1]  # brown noise at 20 dB moves espeak less than another speaker
    assert diversity.summary_lines(result)[0] == "## Voice diversity"


def test_robustness_table_and_plots(tmp_path: Path) -> None:
    import matplotlib.image

    from salad_eval.gap import write_report

    speaker = "kokoro/jm_kumo"
    ladder = [speaker] + [f"{speaker}+noise=white:snr={s}" for s in SNR_LADDER]
    voices = ladder + [f"{speaker}+reverb:rt60=0.6", f"{speaker}+reverb:rt60=1.2"]
    rng = random.Random(0)
    records = []
    for i in range(30):
        base = {
            "task": "demo",
            "item": f"q{i}",
            "domain": "d",
            "target": 1,
            "logprobs": [-2.0, -1.0],
            "n_chars": [4, 6],
            "n_tokens": [1, 2],
        }
        for cond, voice, p in [("text@base", None, 0.8), ("text@speech", None, 0.8)] + [
            (c, v, p - 0.03 * k)
            for k, v in enumerate(voices)
            for c, p in (("speech@speech", 0.6), ("speech@cascade", 0.75))
        ]:
            ok = rng.random() < p
            rec = {
                **base,
                "condition": cond,
                "voice": voice,
                "greedy": [False, ok],
                "pred": int(ok),
                "pred_norm": int(ok),
                "correct": ok,
                "correct_norm": ok,
            }
            if cond == "speech@cascade":
                rec["wer"] = 0.05 * voices.index(voice)
            records.append(rec)
    results = write_report(tmp_path, records, {"command": "test"}, n_boot=100)
    rows = {r["voice"]: r for r in results["robustness"]}
    assert set(rows) == set(voices)
    assert rows[ladder[1]]["snr"] == 20 and rows[voices[-1]]["rt60"] == 1.2
    assert rows[speaker]["acoustics"] == "clean"
    summary = (tmp_path / "summary.md").read_text()
    assert "## Robustness" in summary and "`noise=white:snr=0`" in summary
    for name in ("accuracy_vs_snr.png", "accuracy_vs_rt60.png"):
        assert matplotlib.image.imread(tmp_path / name).shape[0] > 100


@pytest.mark.integration
def test_perturbed_clips_export_with_their_sources(run, tmp_path: Path, monkeypatch) -> None:
    from salad_eval.speech import exchange

    items, manifest = run
    clip = manifest.row(items[0], NOISY[-1]).clips[0]
    key = Path(clip.path).stem
    assert exchange.export_clips({key: clip.sha256}, tmp_path / "x").clips == 1 + 1 + 4
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "elsewhere"))  # another machine's store
    assert exchange.import_clips(tmp_path / "x").clips == 6
    assert store.stored_clip(key, []).sha256 == clip.sha256
