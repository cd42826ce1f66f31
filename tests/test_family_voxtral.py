"""Voxtral on a tiny random ``VoxtralForConditionalGeneration`` with a tiny ``tekken.json``
(mistral-common's tokenizer file, as the hub ships it: ``<s>`` = 1, ``[AUDIO]`` = 24,
``[BEGIN_AUDIO]`` = 25), read by transformers without mistral-common."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import family_checks as checks
import pytest
import torch
from family_conformance import FamilyConformance

from salad_eval.models.voxtral import Voxtral

pytestmark = [pytest.mark.integration, pytest.mark.numerics]  # scores compared across paths

NAMED = {
    0: "<unk>",
    1: "<s>",
    2: "</s>",
    3: "[INST]",
    4: "[/INST]",
    24: "[AUDIO]",
    25: "[BEGIN_AUDIO]",
}
PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


def write_tekken(directory: Path, n_special: int = 32) -> int:
    """A tekken.json: ``n_special`` control tokens, the 256 bytes and a few merges; its size."""
    specials = [
        {"rank": i, "token_str": NAMED.get(i, f"<SPECIAL_{i}>"), "is_control": True}
        for i in range(n_special)
    ]
    tokens = [bytes([b]) for b in range(256)] + [b"th", b"he", b" t", b"the", b" the", b"ow"]
    vocab = [
        {"rank": i, "token_bytes": base64.b64encode(t).decode(), "token_str": None}
        for i, t in enumerate(tokens)
    ]
    size = n_special + len(tokens)
    config = {
        "pattern": PATTERN,
        "num_vocab_tokens": len(tokens),
        "default_vocab_size": size,
        "default_num_special_tokens": n_special,
        "version": "v7",
    }
    tekken = {"config": config, "vocab": vocab, "special_tokens": specials}
    (directory / "tekken.json").write_text(json.dumps(tekken))
    return size


def save_tiny_voxtral(path: Path) -> Path:
    """A tiny Voxtral: a 1-layer Whisper-style encoder, a 2-layer Llama decoder, its tekken.json."""
    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    path.mkdir()
    vocab_size = write_tekken(path)
    config = VoxtralConfig(
        audio_config=dict(
            hidden_size=32,
            intermediate_size=128,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_mel_bins=128,
            max_source_positions=1500,
        ),
        text_config=dict(
            model_type="llama",
            vocab_size=vocab_size,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            head_dim=16,
        ),
        audio_token_id=24,
    )
    torch.manual_seed(0)
    VoxtralForConditionalGeneration(config).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(path)
    return path


class TestVoxtral(FamilyConformance):
    adapter = Voxtral
    build = staticmethod(save_tiny_voxtral)
    clips_grow = False  # 30 s windows: 375 positions each

    def own_audio_inputs(self, model, waves):
        """``VoxtralProcessor._retrieve_input_features``: 30 s windows stacked on the batch."""
        windows = []
        for wave in waves:
            mel = model.feature_extractor(
                wave,
                sampling_rate=16_000,
                padding=True,
                truncation=False,
                pad_to_multiple_of=480_000,
                return_tensors="pt",
            )["input_features"]
            windows.append(mel.reshape(128, -1, 3000).transpose(0, 1))
        counts = [len(w) * 375 for w in windows]  # 1500 encoder frames / 4 stacked per window
        return {"input_features": torch.cat(windows)}, counts

    def test_the_tekken_tokenizer_and_its_bos(self, model, clips):
        """tekken.json read without mistral-common; every encoding starts with <s>, as
        mistral-common encodes a prompt: spoken (before the first clip) and text-only alike."""
        tokenizer = model.tokenizer
        assert tokenizer.convert_tokens_to_ids(["<s>", "[AUDIO]", "[BEGIN_AUDIO]"]) == [1, 24, 25]
        pieces, _ = model.tokenize(checks.mixed_requests(clips)[1].prompt, checks.CHOICES)
        assert pieces[0] == [1] and model.audio_open == ("[BEGIN_AUDIO]",)
        (context,), _ = model.tokenize(checks.mixed_requests(clips)[0].prompt, checks.CHOICES)
        assert context[0] == 1 and context[1:] == tokenizer.encode(
            "Question: what is the fox? Answer:", add_special_tokens=False
        )

    def test_an_unpublished_backbone_asks_for_text_model(self, model):
        import copy

        from salad_eval.errors import SaladError
        from salad_eval.models.load import default_text_model

        mini = copy.copy(model)
        mini.name = "mistralai/Voxtral-Mini-3B-2507"
        with pytest.raises(SaladError, match="text backbone is not published.*pass --text-model"):
            default_text_model(mini, None)
