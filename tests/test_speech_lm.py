"""The SALAD speech LLM with the real embedded Whisper tiny.en and SmolLM2, on real TTS speech."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from numerics import assert_float32_close, longest_reduction

from salad_eval.errors import SaladError
from salad_eval.models.encoder import CachedEncoder, MimiEncoder, WhisperEncoder, load_encoder
from salad_eval.models.lm_scoring import score_separately
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig, load_speech_lm
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, ScoringRequest, Text
from salad_eval.speech.tts import synthesize
from salad_eval.speech.voices import parse_voice

pytestmark = pytest.mark.integration

SMALL = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)
CHOICES = (" mat", " tree", " table", " roof", " door", " bed", " box", " floor", " sofa")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("audio") / "cat.wav"
    wave = synthesize("The cat sat on the mat.", parse_voice("piper/joe"))
    sf.write(path, wave, 16_000)
    return path


@pytest.fixture(scope="module")
def model() -> SpeechLM:
    return SpeechLM.from_config(SMALL, seed=0)


def spoken_request(clip: Path) -> ScoringRequest:
    prompt = (
        Text("Listen: "),
        Audio(str(clip), "the cat"),
        Text("\nWhere did the cat sit? Answer:"),
    )
    return ScoringRequest(prompt, CHOICES)


def test_whisper_output_length_matches_clip_duration(clip):
    encoder = load_encoder(cache=False)
    assert isinstance(encoder, WhisperEncoder)
    wave, _ = sf.read(clip, dtype="float32")
    assert abs(encoder.encode(wave).shape[0] - len(wave) / 16_000 * 50) <= 1
    long = np.tile(wave, int(32 * 16_000 / len(wave)) + 1)  # over one 30 s window
    features = encoder.encode(long)
    assert abs(features.shape[0] - len(long) / 16_000 * 50) <= 2
    assert features.shape[1] == encoder.dim == 384


PASSAGE = (
    "The cat sat on the mat.",
    "She bought three green apples and a loaf of bread at the market.",
    "My brother plays the guitar in a small band with his friends.",
    "Please close the window before the rain comes in tonight.",
)


def test_clip_context_keeps_frames_and_what_whisper_hears():
    """Clip context runs only the clip's frames; Whisper's own decoder still reads the words.

    The frame count is exact. What Whisper hears is measured as a corpus WER over four sentences
    (41 words, 2.4 points a word) with margin, never as one sentence's words: another CPU's TTS and
    ASR kernels round differently ("cats" for "cat" was seen). The clip context may hear a little
    worse than the 30 s window (the encoder sees no padding), by a bounded amount.
    """
    import jiwer
    from transformers import WhisperForConditionalGeneration, WhisperTokenizer
    from transformers.modeling_outputs import BaseModelOutput

    from salad_eval.assets import whisper_path
    from salad_eval.speech.quality import comparable

    window, fast = load_encoder(cache=False), load_encoder(cache=False, context="clip")
    assert window.fingerprint != fast.fingerprint  # separate feature caches
    whisper = WhisperForConditionalGeneration.from_pretrained(whisper_path()).eval()
    tokenizer = WhisperTokenizer.from_pretrained(whisper_path())

    def hear(features: torch.Tensor, said: str) -> str:
        """The first words heard, as many as were said (fed bare encoder outputs, Whisper does
        not stop at the end of the clip: it repeats it)."""
        outputs = BaseModelOutput(last_hidden_state=features[None])
        ids = whisper.generate(encoder_outputs=outputs, max_new_tokens=30)
        words = comparable(tokenizer.decode(ids[0], skip_special_tokens=True)).split()
        return " ".join(words[: len(said.split())])

    said = [comparable(text) for text in PASSAGE]
    heard: dict[str, list[str]] = {"clip": [], "window": []}
    for text, words in zip(PASSAGE, said, strict=True):
        wave = synthesize(text, parse_voice("piper/joe"))
        features = fast.encode(wave)
        assert features.shape == window.encode(wave).shape
        heard["clip"].append(hear(features, words))
        heard["window"].append(hear(window.encode(wave), words))
    wer = {name: jiwer.wer(said, texts) for name, texts in heard.items()}
    # measured here: 0.07 (clip) and 0.05 (window); a broken clip context hears nothing (WER ~1)
    assert wer["clip"] < 0.35 and wer["clip"] <= wer["window"] + 0.2, heard


@pytest.mark.numerics
def test_clip_mel_equals_its_30s_window(clip):
    """The clip context computes log-mels of the clip alone (14x cheaper than of a 30 s window):
    the first frames of the padded window, bit for bit on ordinary clips and to float rounding on a
    one-frame clip (BLAS blocks a two-row product otherwise), so cached features stay valid."""
    fast = load_encoder(cache=False, context="clip")
    wave, _ = sf.read(clip, dtype="float32")
    for length in (len(wave), len(wave) // 3 + 7, 161):  # the last frame straddles the clip end
        part = wave[:length]
        window = fast.extractor([part], sampling_rate=16_000, return_tensors="pt").input_features
        frames = -(-length // 320)
        mel, expected = fast._clip_mel(part, frames), window[:, :, : 2 * frames]
        if frames > 1:
            assert torch.equal(mel, expected)  # identity: the same STFT and mel matmul shapes
        else:  # the mel filterbank's sums over the 201 frequency bins, blocked otherwise
            assert_float32_close(mel, expected, terms=201)


def test_feature_cache_hits_on_rerun(clip, tmp_path):
    wave, _ = sf.read(clip, dtype="float32")
    cached = CachedEncoder(load_encoder(cache=False), root=tmp_path)
    first = cached.encode(wave)
    second = cached.encode(wave)
    assert (cached.misses, cached.hits) == (1, 1)
    assert torch.equal(first, second)
    assert len(list(tmp_path.rglob("*.npy"))) == 1


@pytest.mark.numerics
def test_shared_context_equals_scoring_each_choice(model, clip):
    request = spoken_request(clip)
    pieces, conts = model.tokenize(request.prompt, request.choices)
    with torch.inference_mode():
        context = model.embed_segments(pieces).embeds
    separate = score_separately(model.llm, context, conts)
    for batch_size in (1, 8):
        shared = model.score([request], batch_size=batch_size)[0]
        for got, (logprob, greedy) in zip(shared, separate, strict=True):
            # one forward per choice against a shared cache: other shapes, other summing orders
            assert_float32_close(got.logprob, logprob, terms=longest_reduction(model.llm))
            assert got.is_greedy == greedy
        assert [s.n_tokens for s in shared] == [len(c) for c in conts]


def test_audio_positions_are_boundaries_plus_stacked_frames(model, clip):
    wave, _ = sf.read(clip, dtype="float32")
    frames = model.encoder.encode(wave).shape[0]
    embedded = model.embed_segments([Text("Hi"), Audio(str(clip), "x"), Text(" there")])
    n_text = len(model.tokenizer.encode("Hi")) + len(model.tokenizer.encode(" there"))
    assert int((~embedded.is_text).sum()) == -(-frames // 4) + 2
    assert int(embedded.is_text.sum()) == n_text
    assert embedded.embeds.shape == (n_text + (~embedded.is_text).sum(), 576)
    embedded.embeds.sum().backward()  # training reaches the adapter and the boundaries
    assert model.adapter.proj_in.weight.grad.abs().sum() > 0
    assert model.adapter.audio_end.grad.abs().sum() > 0
    model.zero_grad()


def test_vocabulary_output_reads_frames_as_the_collapsed_tokens(model):
    """Frames on token embeddings come out as those embeddings, blanks dropped, runs merged."""
    table = model.llm.get_input_embeddings().weight.detach()
    a, b, c = (model.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" cat", " on", "."))
    frames = [a, a, model.blank, b, model.blank, b, b, c, model.blank]
    directions = torch.nn.functional.normalize(table[frames], dim=-1).requires_grad_()
    read = model.read_vocabulary(directions)
    # not a rounding bound: the softmax at readout_scale 300 leaves every other token a small,
    # nonzero weight e^(-300 (1 - cos)); 1e-4 bounds that leakage into the read embedding
    assert torch.allclose(read, table[[a, b, b, c]], atol=1e-4)
    read.sum().backward()
    assert directions.grad.abs().sum() > 0  # training reaches the adapter through the readout
    silence = torch.nn.functional.normalize(table[[model.blank] * 4], dim=-1)
    assert model.read_vocabulary(silence).shape == (0, table.shape[1])


@pytest.mark.numerics
def test_untouched_llm_on_text_gives_text_lm_scores(model):
    requests = [
        ScoringRequest((Text("Question: What color is the sky? Answer:"),), (" blue", " green")),
        ScoringRequest((Text("The capital of France is "),), ("Paris", "a potato")),
    ]
    text = TextLM().score(requests)
    speech = model.score(requests)
    for text_scores, speech_scores in zip(text, speech, strict=True):
        # identity: the frozen LLM and TextLM run the same kernels on the same shapes
        assert [s.logprob for s in speech_scores] == [s.logprob for s in text_scores]
        assert [s.n_tokens for s in speech_scores] == [s.n_tokens for s in text_scores]


_LOAD_AND_SCORE = """
import json, sys
from salad_eval.models.speech_lm import load_speech_lm
from salad_eval.prompt import Audio, ScoringRequest, Text
clip, *dirs = sys.argv[1:]
request = ScoringRequest((Audio(clip, "x"), Text(" Answer:")), (" yes", " no way"))
out = {}
for d in dirs:
    m = load_speech_lm(d)
    out[d] = {"scores": [s.logprob for s in m.score([request])[0]], "mode": m.config.llm_mode,
              "fingerprint": m.fingerprint}
print(json.dumps(out))
"""


def test_checkpoints_round_trip_in_a_fresh_process(clip, tmp_path):
    request = ScoringRequest((Audio(str(clip), "x"), Text(" Answer:")), (" yes", " no way"))
    expected = {}
    for mode in ("lora", "full"):
        torch.manual_seed(1)
        lm = SpeechLM.from_config(SpeechLMConfig(**{**SMALL.to_dict(), "llm_mode": mode}), seed=1)
        with torch.no_grad():  # move the trained parts away from the base, as training would
            for name, param in lm.llm.named_parameters():
                if (mode == "lora" and "lora_B" in name) or (mode == "full" and "norm" in name):
                    param.add_(torch.randn_like(param) * 0.05)
        directory = lm.save(tmp_path / mode)
        expected[str(directory)] = {
            "scores": [s.logprob for s in lm.score([request])[0]],
            "mode": mode,
            "fingerprint": lm.fingerprint,
        }
        del lm
    run = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_SCORE, str(clip), *expected],
        capture_output=True,
        text=True,
        check=True,
    )
    loaded = json.loads(run.stdout.strip().splitlines()[-1])
    assert loaded == expected
    lora, full = (expected[str(tmp_path / m)]["scores"] for m in ("lora", "full"))
    assert lora != full  # each checkpoint's own LLM weights did travel


def test_a_directory_that_is_not_a_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(SaladError, match="not a SALAD checkpoint") as err:
        load_speech_lm(tmp_path)
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(SaladError, match="not a SALAD checkpoint"):
        load_speech_lm(tmp_path)


def test_mimi_encoder_feeds_a_speech_lm(clip, tmp_path):
    from transformers import MimiConfig, MimiModel

    config = MimiConfig(
        hidden_size=32,
        num_filters=4,
        upsampling_ratios=[8, 6, 5, 4],
        codebook_size=16,
        codebook_dim=32,
        num_quantizers=4,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        head_dim=16,
        sliding_window=16,
        upsample_groups=32,
        vector_quantization_hidden_dimension=32,
    )
    torch.manual_seed(0)
    MimiModel(config).save_pretrained(tmp_path / "mimi")
    encoder = load_encoder(str(tmp_path / "mimi"), cache=False)
    assert isinstance(encoder, MimiEncoder)
    wave, _ = sf.read(clip, dtype="float32")
    features = encoder.encode(wave)
    assert features.shape[1] == 32
    assert abs(features.shape[0] - len(wave) / 16_000 * 12.5) <= 1
    lm = SpeechLM.from_config(
        SpeechLMConfig(**{**SMALL.to_dict(), "encoder": str(tmp_path / "mimi"), "stack": 1})
    )
    scores = lm.score([spoken_request(clip)])[0]
    assert len(scores) == len(CHOICES)
    assert all(np.isfinite(s.logprob) and s.logprob < 0 for s in scores)
