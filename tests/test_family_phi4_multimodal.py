"""Phi-4-multimodal on a tiny random model saved as the native checkpoints are, speech LoRA in
``speech-lora/`` (``tiny_audio_llms``): the LoRA is on for spoken prompts only."""

from __future__ import annotations

from pathlib import Path

import family_checks as checks
import numpy as np
import pytest
import soundfile as sf
import torch
from numerics import assert_float32_close

from salad_eval.models.lm_scoring import score_separately
from salad_eval.models.phi4_multimodal import Phi4Multimodal
from salad_eval.models.speech_lm import load_waveform
from salad_eval.models.speech_lora import NO_ADAPTER
from salad_eval.models.tiny_audio_llms import save_tiny_phi4_multimodal
from salad_eval.prompt import Audio, ScoringRequest, Text

pytestmark = pytest.mark.numerics  # scores compared across batches and paths


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return save_tiny_phi4_multimodal(tmp_path_factory.mktemp("phi-4-multimodal") / "model")


@pytest.fixture(scope="module")
def model(model_dir) -> Phi4Multimodal:
    return Phi4Multimodal(str(model_dir))


def test_shared_context_equals_per_choice(model, clips):
    for request in checks.mixed_requests(clips):  # one at a time: the LoRA follows each prompt
        checks.check_shared_equals_separate(model, [request])


def test_batch_sizes_agree(model, clips):
    checks.check_batch_sizes(model, checks.mixed_requests(clips))


def test_audio_moves_scores(model, clips):
    checks.check_audio_moves_scores(model, clips)


def test_mixed_requests_keep_their_order(model, clips):
    """Spoken and text requests are scored in two groups (LoRA on, off), answered in order."""
    checks.check_mixed_requests_keep_their_order(model, clips)


def test_lora_is_on_for_speech_only(model, clips):
    """The same text context scores apart with the speech LoRA on."""
    request = checks.mixed_requests(clips)[0]
    pieces, conts = model.tokenize(request.prompt, request.choices)
    with torch.inference_mode():
        context = model.embed(pieces)
        model.use_lora_for((Audio(str(clips["short"]), "x"),))
        on = [lp for lp, _ in score_separately(model.decoder, context, conts)]
    off = [s.logprob for s in model.score([request])[0]]
    assert np.abs(np.array(on) - np.array(off)).max() > 1e-3


def test_audio_path_is_the_models_own(model, clips, tmp_path):
    """Per choice, the model's own forward agrees: its feature extractor over both clips at once,
    its placeholder counts and merge, with the speech LoRA on. The clips are of one length: the
    adapter encodes each clip alone, where a batch would pad the shorter one (which moves its
    embeddings by about 1e-5)."""
    first = load_waveform(str(clips["short"]))
    padded = np.zeros_like(load_waveform(str(clips["long"])))
    padded[: len(first)] = first
    sf.write(tmp_path / "short-padded.wav", padded, 16_000)
    short, long = Audio(str(tmp_path / "short-padded.wav"), "x"), Audio(str(clips["long"]), "y")
    request = ScoringRequest((Text("Q: "), short, Text(" and "), long, Text(" A:")), checks.CHOICES)
    pieces, conts = model.tokenize(request.prompt, request.choices)
    waves = [load_waveform(p.path) for p in pieces if isinstance(p, Audio)]
    inputs = dict(model.feature_extractor(waves, sampling_rate=16_000, return_tensors="pt"))
    counts = iter(inputs["audio_embed_sizes"].tolist())
    placeholder = model.model.config.audio_config.audio_token_id
    ids = [i for p in pieces for i in ([placeholder] * next(counts) if isinstance(p, Audio) else p)]
    model.use_lora_for(request.prompt)
    expected = checks.own_forward_scores(model.model, ids, conts, **inputs)
    scores = [s.logprob for s in model.score([request])[0]]
    assert_float32_close(scores, expected, terms=checks.terms_of(model))


@pytest.fixture(scope="module")
def text_llm(model_dir, tmp_path_factory) -> Path:
    """The tiny model's own decoder and LM head as a plain causal LM (its text@base)."""
    from transformers import Phi3Config, Phi3ForCausalLM, Phi4MultimodalForCausalLM

    base = Phi4MultimodalForCausalLM.from_pretrained(model_dir, **NO_ADAPTER)
    config = base.config.to_dict()
    llm = Phi3ForCausalLM(
        Phi3Config(
            **{k: config[k] for k in Phi3Config().to_dict() if k in config and k != "model_type"}
        )
    )
    missing, _ = llm.load_state_dict(base.state_dict(), strict=False)  # less the audio/vision
    assert not missing
    return checks.save_text_llm(llm, model_dir, tmp_path_factory.mktemp("phi-4-multimodal-text"))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_text_prompts_score_as_its_own_text_llm(model_dir, text_llm, dtype):
    """With the LoRA off, text@speech == text@base bit for bit, in each dtype."""
    checks.check_text_prompts_score_as_text_llm(Phi4Multimodal, model_dir, text_llm, dtype)


@pytest.fixture(scope="module")
def gap_run(model_dir, text_llm, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("phi-4-multimodal-gap") / "report"
    return out, checks.gap_report(model_dir, text_llm, out)


@pytest.mark.slow  # a whole gap run
def test_gap_report_is_complete(gap_run):
    checks.check_gap_report(*gap_run)
    checks.check_no_forgetting(gap_run[0])  # its LoRA is off for text


def test_published_text_backbone():
    checks.check_published_text_backbones(
        "phi4_multimodal", {"microsoft/Phi-4-multimodal-instruct": "microsoft/Phi-4-mini-instruct"}
    )
