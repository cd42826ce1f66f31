"""The checks every speech-LLM family passes (``tests/test_family_<name>.py``), on a tiny random
model of its real config class with a tiny BPE tokenizer trained here: all offline.

A family test builds and saves its model, then calls these on the adapter reloaded by path.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from numerics import assert_float32_close, longest_reduction
from typer.testing import CliRunner

from salad_eval.models.lm_generation import end_ids
from salad_eval.models.lm_scoring import score_separately
from salad_eval.prompt import Audio, Decoding, GenerationRequest, ScoringRequest, Text
from salad_eval.speech.tts import synthesize
from salad_eval.speech.voices import parse_voice

VOICE = "espeak/en-us"
CHOICES = (" yes", " no", " maybe not", " the quick brown fox", " a", " dog", " lazy", " it")
CORPUS = "The quick brown fox jumps over the lazy dog. Question: what is it? Answer: yes no maybe"
CONDITIONS = {"text@base", "text@speech", "speech@speech", "speech@cascade"}


def bpe_tokenizer(specials: list[str], **named: str):
    """A byte-level BPE trained on a line of English, ``specials`` first (ids 0..), and named
    special tokens (``eos_token``, ``audio_token``...) set from them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE(unk_token=specials[0]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([CORPUS] * 10, trainer)
    standard = {
        k: v for k, v in named.items() if k in ("unk_token", "eos_token", "pad_token", "bos_token")
    }
    extra = {k: v for k, v in named.items() if k not in standard}
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe, unk_token=specials[0], **standard, extra_special_tokens=extra
    )


def speech_clips(root: Path) -> dict[str, Path]:
    """Two eSpeak clips of different lengths and one second of silence, 16 kHz."""
    root.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, text in (("short", "Is the fox quick?"), ("long", "The lazy dog sleeps in the sun.")):
        clips[name] = root / f"{name}.wav"
        sf.write(clips[name], synthesize(text, parse_voice(VOICE)), 16_000)
    clips["silence"] = root / "silence.wav"
    sf.write(clips["silence"], np.zeros(16_000, dtype=np.float32), 16_000)
    return clips


def mixed_requests(clips: dict[str, Path]) -> list[ScoringRequest]:
    """Requests of mixed lengths and layouts: text only, a clip first, in the middle, two clips,
    a clip last, few or many choices."""
    short, long = Audio(str(clips["short"]), "x"), Audio(str(clips["long"]), "y")
    return [
        ScoringRequest((Text("Question: what is the fox? Answer:"),), CHOICES),
        ScoringRequest((short, Text(" Answer:")), CHOICES[:3]),
        ScoringRequest((Text("Question: "), long, Text(" Answer: ")), CHOICES[2:]),
        ScoringRequest((Text("Q: "), short, Text(" and "), long, Text(" A:")), CHOICES),
        ScoringRequest((Text("Listen: "), long), CHOICES[:2]),
        ScoringRequest((Text("The quick brown"),), (" fox", "dog", " lazy dog")),
    ]


def terms_of(model) -> int:
    """``terms`` of ``numerics.float32_tolerance`` for a family adapter's log-probs: the
    longest dot product of its HF model (audio encoder and projector included)."""
    return longest_reduction(model.model)


def check_shared_equals_separate(model, requests: list[ScoringRequest]) -> None:
    """Shared-context scores == one full forward of the model over ``context + choice``."""
    scores = model.score(requests, batch_size=8)
    assert len(scores) == len(requests)
    for request, row in zip(requests, scores, strict=True):
        pieces, conts = model.tokenize(request.prompt, request.choices)
        with torch.inference_mode():
            context = model.embed(pieces)
        reference = score_separately(_FullModel(model.model), context, conts)
        assert len(row) == len(request.choices)
        assert all(s.n_tokens == len(c) > 0 for s, c in zip(row, conts, strict=True))
        assert all(s.logprob < 0 for s in row)
        assert_float32_close(
            [s.logprob for s in row], [lp for lp, _ in reference], terms=terms_of(model)
        )


def check_batch_sizes(model, requests: list[ScoringRequest]) -> None:
    one = model.score(requests, batch_size=1)
    eight = model.score(requests, batch_size=8)
    # batches of 1 and 8 pad and shape the matmuls apart: the same sums in another order
    assert_float32_close(
        [s.logprob for r in one for s in r],
        [s.logprob for r in eight for s in r],
        terms=terms_of(model),
    )
    assert [[s.n_tokens for s in r] for r in one] == [[s.n_tokens for s in r] for r in eight]
    backwards = model.score(requests[::-1], batch_size=4)  # other batches, answered in order
    assert_float32_close(
        [s.logprob for r in backwards[::-1] for s in r],
        [s.logprob for r in one for s in r],
        terms=terms_of(model),
    )


def check_audio_moves_scores(model, clips: dict[str, Path], grows: bool = True) -> None:
    """The clip reaches the decoder: silence in its place gives other log-probs; a longer clip
    takes more positions (unless ``grows`` is False: the family pads every clip to 30 s)."""

    def scored(clip: str) -> np.ndarray:
        request = ScoringRequest((Text("Q: "), Audio(str(clips[clip]), "x"), Text(" A:")), CHOICES)
        return np.array([s.logprob for s in model.score([request])[0]])

    speech, silence = scored("short"), scored("silence")
    assert np.abs(speech - silence).max() > 1e-3
    lengths = [
        model.embed(model.tokenize((Audio(str(clips[c]), c),), ())[0]).shape[0]
        for c in ("short", "long")
    ]
    assert lengths[1] > lengths[0] if grows else lengths[1] == lengths[0]


def check_own_audio_path(model, clips: dict[str, Path], own_inputs) -> None:
    """Per choice, the model's own forward agrees: its placeholder tokens in the text, its own
    audio merge. ``own_inputs(waves)`` gives the forward's audio arguments and the number of
    placeholders of each clip, both computed as the family's processor does."""
    from salad_eval.models.speech_lm import load_waveform

    short, long = Audio(str(clips["short"]), "x"), Audio(str(clips["long"]), "y")
    request = ScoringRequest((Text("Q: "), short, Text(" and "), long, Text(" A:")), CHOICES)
    pieces, conts = model.tokenize(request.prompt, request.choices)
    inputs, counts = own_inputs([load_waveform(p.path) for p in pieces if isinstance(p, Audio)])
    opening = model.tokenizer.convert_tokens_to_ids(list(model.audio_open))
    closing = model.tokenizer.convert_tokens_to_ids(list(model.audio_close))
    placeholder = model.model.config.audio_token_id
    ids, clip = [], 0
    for piece in pieces:
        if isinstance(piece, Audio):
            ids += opening + [placeholder] * int(counts[clip]) + closing
            clip += 1
        else:
            ids += piece
    expected = own_forward_scores(model.model, ids, conts, **inputs)
    scores = model.score([request])[0]
    assert_float32_close([s.logprob for s in scores], expected, terms=terms_of(model))


def own_forward_scores(forward, ids: list[int], conts: list[list[int]], **inputs) -> list[float]:
    """Per choice, its log-prob from one ``forward(input_ids=ids + choice, **inputs)``: the
    model's own path, the reference the adapter's scores are held to."""
    scores = []
    with torch.inference_mode():
        for cont in conts:
            logits = forward(input_ids=torch.tensor([ids + cont]), **inputs).logits[0]
            steps = logits[-len(cont) - 1 : -1].float().log_softmax(-1)
            scores.append(steps.gather(-1, torch.tensor(cont)[:, None]).sum().item())
    return scores


def whisper_features(feature_extractor, waves) -> tuple[torch.Tensor, torch.Tensor]:
    """Whisper features padded to 30 s, as the family's processor computes them, and their
    attention mask (the frames each clip really has)."""
    features = feature_extractor(
        waves,
        sampling_rate=16_000,
        padding="max_length",
        return_attention_mask=True,
        return_tensors="pt",
    )
    return features["input_features"], features["attention_mask"]


def save_omni(model_class, config, tokenizer, path: Path) -> Path:
    """A tiny random Omni model (seed 0) saved as the hub publishes it: the whole model, its
    tokenizer and a 128-bin Whisper feature extractor; returns ``path``."""
    from transformers import WhisperFeatureExtractor

    torch.manual_seed(0)
    model_class(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    WhisperFeatureExtractor(feature_size=128).save_pretrained(path)
    return path


def save_text_llm(llm, tokenizer_from: Path | str, path: Path) -> Path:
    """Save ``llm`` (a family's own decoder as a plain causal LM) with the family's tokenizer,
    for ``--text-model``; returns ``path``."""
    from transformers import AutoTokenizer

    llm.save_pretrained(path)
    AutoTokenizer.from_pretrained(tokenizer_from).save_pretrained(path)
    return path


def qwen2_text_llm(model, path: Path) -> Path:
    """The loaded family's Qwen2 decoder and LM head (``model.language_model``, ``lm_head``) as a
    plain ``Qwen2ForCausalLM`` saved at ``path``: its text@base."""
    from transformers import Qwen2ForCausalLM

    llm = Qwen2ForCausalLM(model.model.config.text_config)
    llm.model.load_state_dict(model.model.model.language_model.state_dict())
    llm.lm_head.load_state_dict(model.model.lm_head.state_dict())
    return save_text_llm(llm, model.name, path)


def check_text_prompts_score_as_text_llm(family, model_dir: Path, text_llm: Path, dtype: str):
    """Text-only prompts through the family (``family(model_dir, dtype=...)``) score bit for bit
    as through ``text_llm``, its own decoder as a plain causal LM: text@speech == text@base."""
    from salad_eval.models.text_lm import TextLM

    requests = [
        ScoringRequest((Text("Question: what is the fox? Answer:"),), CHOICES),
        ScoringRequest((Text("The quick brown "),), (" fox", "dog", " lazy dog")),
    ]
    speech, text = family(str(model_dir), dtype=dtype), TextLM(str(text_llm), dtype=dtype)
    assert speech.dtype == text.dtype == dtype
    assert [[s.logprob for s in row] for row in speech.score(requests)] == [
        [s.logprob for s in row] for row in text.score(requests)
    ]


def check_published_text_backbones(model_type: str, backbones: dict[str, str | None]) -> None:
    """The registry's text backbone (``text@base``) for each published checkpoint of the family,
    ``None`` where its text LLM is not published (the user passes ``--text-model``)."""
    from salad_eval.models.registry import family_for

    family = family_for(model_type)
    for checkpoint, expected in backbones.items():
        found = family.text_backbone(checkpoint, None).text_model
        assert (found is None) if expected is None else (found == expected), checkpoint


def gap_report(model_dir: Path, text_dir: Path, out: Path, *more: str) -> dict:
    """``salad-eval gap --model <dir> --text-model <dir>`` in process; returns results.json."""
    from salad_eval.cli import app

    args = [
        "gap",
        "--model",
        str(model_dir),
        "--text-model",
        str(text_dir),
        "--tasks",
        "demo",
        "--voices",
        VOICE,
        "--limit",
        "3",
        "--n-boot",
        "50",
        "--answer",
        "both",
        "--max-new-tokens",
        "6",
        "--out",
        str(out),
        *more,
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((out / "results.json").read_text())


def check_generation(model, clips: dict[str, Path], steps: int = 4) -> None:
    """Greedy replies to text and spoken prompts: identical at batch sizes 1 and 8, and equal
    to greedy decoding by whole forwards of the decoder over the growing context, no cache (a
    reply reads the context scoring reads, and the batched KV-cache loop changes nothing)."""
    asked = [GenerationRequest(r.prompt) for r in mixed_requests(clips)]
    decoding = Decoding(max_new_tokens=steps)
    one = model.generate(asked, decoding, batch_size=1)
    assert one == model.generate(asked, decoding, batch_size=8)
    stops = end_ids(model.tokenizer, model.model)
    table = model.decoder.get_input_embeddings()
    for request, (reply,) in zip(asked, one, strict=True):
        with torch.inference_mode():
            context = model.embed(model.tokenize(request.prompt, ())[0])
            ids: list[int] = []
            while len(ids) < steps and not (ids and ids[-1] in stops):
                logits = model.decoder(inputs_embeds=context[None]).logits[0, -1]
                ids.append(int(logits.argmax()))
                step = table(torch.tensor(ids[-1:], device=context.device))
                context = torch.cat([context, step.to(context.dtype)])
        assert reply.n_tokens == len(ids)
        kept = ids[:-1] if ids[-1] in stops else ids
        assert reply.text == model.tokenizer.decode(kept, skip_special_tokens=True)


def check_gap_report(out: Path, results: dict) -> None:
    """A complete report: every file, every item in all four conditions and both controls,
    answered by log-likelihood and by generation (``--answer both``)."""
    for name in ("results.json", "items.jsonl", "summary.md", "gap_decomposition.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    conditions = {row["condition"] for row in rows}
    assert conditions >= CONDITIONS
    assert {"speech@speech:silent", "speech@speech:shuffled"} <= conditions
    for condition in CONDITIONS:
        assert sum(row["condition"] == condition for row in rows) == 3
    assert all(len(row["logprobs"]) == len(row["n_tokens"]) > 1 for row in rows)
    assert set(results["conditions"]) >= CONDITIONS and results["n_items"] == 3
    overall = results["metrics"]["acc"]["overall"]
    gap, forgetting, misalignment = (overall[k] for k in ("gap", "forgetting", "misalignment"))
    assert gap["num"] == forgetting["num"] + misalignment["num"] and gap["den"] == 3
    assert "cascade_gap" in overall and results["controls"]
    assert results["manifest"]["models"]["speech"]["fingerprint"]
    generated = results["metrics"]["acc_gen"]["overall"]
    gap, forgetting, misalignment = (generated[k] for k in ("gap", "forgetting", "misalignment"))
    assert gap["num"] == forgetting["num"] + misalignment["num"] and gap["den"] == 3
    assert set(generated["no_answer"]) == set(generated["accuracy"]) >= CONDITIONS
    assert set(generated["agreement"]) == set(generated["accuracy"])
    assert all(len(row["replies"]) == 1 and row["rule"] == "letter-v1" for row in rows)


def check_no_forgetting(out: Path) -> None:
    """text@base and text@speech scored every item alike (a LoRA off for text prompts)."""
    rows = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    text = {
        c: [r["logprobs"] for r in rows if r["condition"] == c]
        for c in ("text@base", "text@speech")
    }
    assert text["text@base"] == text["text@speech"]


class _FullModel(torch.nn.Module):
    """The whole HF model (its own forward over ``inputs_embeds``) as the reference scorer."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model = model

    def get_input_embeddings(self):
        return self.model.get_input_embeddings()

    def forward(self, inputs_embeds, **kwargs):
        return self.model(inputs_embeds=inputs_embeds, **kwargs)


def check_mixed_requests_keep_their_order(model, clips) -> None:
    """Spoken and text requests scored together answer in order, as each does alone (within
    float tolerance: cross-request batches pad)."""
    requests = mixed_requests(clips)
    together, alone = model.score(requests), [model.score([r])[0] for r in requests]
    assert [len(row) for row in together] == [len(r.choices) for r in requests]
    assert_float32_close(
        [s.logprob for row in together for s in row],
        [s.logprob for row in alone for s in row],
        terms=terms_of(model),
    )
