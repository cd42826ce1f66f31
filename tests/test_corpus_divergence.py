"""Corpus forgetting F and misalignment M (the paper's definitions), on tiny random Qwen2 LLMs
with SmolLM2's tokenizer (``tiny_qwen2``), the real Whisper tiny.en encoder and eSpeak spans of
two held-out documents; the held-out corpus checked against everything the tiny preset trains on.
"""

from __future__ import annotations

import re

import pytest
import torch
from homes import scoreless_home
from numerics import assert_float32_close

from salad_eval import corpus_divergence as cd
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, Text

VOCAB = 49_152  # the tiny Qwen2's (SmolLM2's) vocabulary: each KL sums over it


def _speech_lm(llm, mode: str = "frozen") -> SpeechLM:
    config = SpeechLMConfig(
        encoder="whisper-tiny.en",
        encoder_context="clip",
        adapter_layers=1,
        adapter_width=32,
        adapter_heads=2,
        llm=str(llm),
        llm_mode=mode,
    )
    return SpeechLM.from_config(config, seed=0)


def _perturbed(llm) -> SpeechLM:
    """A speech LLM whose LLM differs from its base in one weight."""
    speech = _speech_lm(llm)
    weight = next(p for n, p in speech.llm.named_parameters() if "down_proj" in n)
    with torch.no_grad():
        weight[0, 0] += 1.0
    return speech


@pytest.fixture(scope="module")
def base(tiny_qwen2) -> TextLM:
    return TextLM(str(tiny_qwen2))


@pytest.fixture(scope="module")
def docs():
    """Two held-out documents, spans of 10 words, the spoken ones in eSpeak (cheap)."""
    return cd.speak_documents(cd.read_documents(n=2), show_progress=False)


def test_documents_are_cut_into_fixed_spans_with_a_seeded_phase():
    text = " ".join(f"w{i}" for i in range(57))
    spans = cd.cut(text, (10, 10))
    assert spans == cd.cut(text, (10, 10))  # the same document, the same cut
    assert " ".join(words for words, _ in spans) == text
    assert [speech for _, speech in spans] == [i % 2 == 1 for i in range(len(spans))]
    lengths = [len(words.split()) for words, _ in spans]
    assert 1 <= lengths[0] <= 10 and all(n == 10 for n in lengths[1:-1])
    phases = {len(cd.cut(f"{k} " + text, (10, 10))[0][0].split()) for k in range(40)}
    assert len(phases) > 3  # documents start their spoken spans at different places


@pytest.mark.integration
@pytest.mark.numerics
@pytest.mark.parametrize("mode", ["frozen", "lora"])
def test_f_is_exactly_zero_for_an_untouched_llm(tiny_qwen2, base, docs, mode):
    speech = _speech_lm(tiny_qwen2, mode)
    rows = cd.measure(speech, docs, base, show_progress=False)
    assert [row.f_sum for row in rows] == [0.0, 0.0]
    assert all(row.f_tokens > 100 and row.m_tokens > 40 for row in rows)
    figures = cd.summarize(rows, n_boot=50)
    assert figures["F"]["value"] == 0.0 and figures["F"]["ci_high"] == 0.0
    assert figures["M"]["value"] > 0.0  # a random adapter: the spoken spans are not understood
    assert figures["F"]["n"] == figures["M"]["n"] == 2


@pytest.mark.integration
@pytest.mark.numerics
def test_f_is_positive_after_perturbing_one_llm_weight(tiny_qwen2, base, docs):
    figures = cd.summarize(cd.measure(_perturbed(tiny_qwen2), docs, base, show_progress=False))
    assert figures["F"]["value"] > 0.0


@pytest.mark.integration
def test_a_document_longer_than_max_tokens_is_cut_at_a_span(tiny_qwen2, base, docs):
    """F reads the first ``max_tokens`` text tokens whatever the clips' lengths; the student is
    cut at the last span that fits, and M reads its text positions only."""
    speech = _speech_lm(tiny_qwen2)
    whole = cd.document_kl(speech, docs[0], base)
    cut = cd.document_kl(speech, docs[0], base, max_tokens=100)
    assert cut.f_tokens == 99 and cut.f_sum == 0.0
    assert 0 < cut.m_tokens < whole.m_tokens


def _kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    p, q = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return (p.exp() * (p - q)).sum(-1)


def _direct(speech: SpeechLM, base: TextLM, doc) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-position KL of F and M computed here, through the scoring path (``tokenize`` and
    ``embed_segments`` of an interleaved prompt), not through the training layout."""
    texts = [span.text if i == 0 else " " + span.text for i, span in enumerate(doc)]
    ids = [speech.tokenizer.encode(t, add_special_tokens=False) for t in texts]
    text_ids = torch.tensor([t for span in ids for t in span])
    owner = [i for i, span in enumerate(ids) for _ in span]  # the span of each text token
    prompt = tuple(
        Audio(s.audio, s.text) if s.audio else Text(t) for s, t in zip(doc, texts, strict=True)
    )
    assert speech._special_prefix == []  # SmolLM2's tokenizer adds no BOS, as training lays out
    pieces, _ = speech.tokenize(prompt, ())
    heard = speech.embed_segments(
        pieces, speech.audio_inputs_of([p for p in prompt if isinstance(p, Audio)])
    )
    first_audio = int((heard.token_ids < 0).nonzero()[0])
    student = [
        i
        for i in range(len(heard.token_ids) - 1)
        if heard.token_ids[i + 1] >= 0 and i >= first_audio
    ]
    first_speech = next(i for i, span in enumerate(doc) if span.audio)
    teacher = [
        j
        for j in range(len(text_ids) - 1)
        if doc[owner[j + 1]].audio is None and owner[j + 1] > first_speech
    ]
    assert len(student) == len(teacher) > 0
    with torch.inference_mode():
        text_logits = speech.llm(input_ids=text_ids[None]).logits[0]
        heard_logits = speech.llm(inputs_embeds=heard.embeds[None]).logits[0]
        base_logits = base.llm(input_ids=text_ids[None]).logits[0]
    m = _kl(text_logits[teacher], heard_logits[student])
    f = _kl(base_logits[:-1], text_logits[:-1])
    return f, m


@pytest.mark.integration
@pytest.mark.numerics
def test_f_and_m_are_per_token_means_over_the_text_positions(tiny_qwen2, base, docs):
    speech = _perturbed(tiny_qwen2)
    rows = cd.measure(speech, docs, base, show_progress=False)
    direct = [_direct(speech, base, doc) for doc in docs]
    for row, (f, m) in zip(rows, direct, strict=True):
        assert (row.f_tokens, row.m_tokens) == (len(f), len(m))
        # per-token KLs, each a sum over the vocabulary, summed over the document's tokens
        assert_float32_close(row.f_sum / row.f_tokens, float(f.mean()), terms=VOCAB, floor=0.0)
        assert_float32_close(row.m_sum / row.m_tokens, float(m.mean()), terms=VOCAB, floor=0.0)
        assert float(f.mean()) > 0 and float(m.mean()) > 0
    figures = cd.summarize(rows, n_boot=100)
    # pooled over every token of both documents, not a mean of the two documents' means
    all_f, all_m = torch.cat([f for f, _ in direct]), torch.cat([m for _, m in direct])
    assert_float32_close(figures["F"]["value"], float(all_f.mean()), terms=VOCAB, floor=0.0)
    assert_float32_close(figures["M"]["value"], float(all_m.mean()), terms=VOCAB, floor=0.0)
    assert (figures["F"]["tokens"], figures["M"]["tokens"]) == (len(all_f), len(all_m))
    assert figures["M"]["ci_low"] <= figures["M"]["value"] <= figures["M"]["ci_high"]


@pytest.mark.integration
def test_a_gap_run_records_and_caches_corpus_f_and_m(tiny_qwen2, base, tmp_path, monkeypatch):
    from salad_eval.scoring import Shard

    salad_home = scoreless_home(tmp_path / "home")
    monkeypatch.setenv("SALAD_HOME", str(salad_home))
    speech = _speech_lm(tiny_qwen2)
    figure_options = dict(
        corpus=None, documents=2, voice=cd.DEFAULT_VOICE, span_words=cd.SPAN_WORDS
    )
    figure_options |= dict(synth_seed=0, n_boot=50, seed=1234, shard=Shard())
    first = cd.gap_figures(speech, base, **figure_options)
    assert first["F"]["value"] == 0.0 and first["M"]["value"] > 0.0
    assert [d["m_tokens"] > 0 for d in first["documents"]] == [True, True]  # per document
    assert first["setup"] | {"corpus_hash": None} == {
        "corpus": str(cd.DEFAULT_CORPUS),
        "corpus_hash": None,
        "held_out": True,
        "documents": 2,
        "voice": "espeak/en-us",
        "span_words": [10, 10],
        "cut_seed": 0,
        "synth_seed": 0,
        "max_tokens": 2048,
        "version": cd.VERSION,
        "forgetting": True,
    }
    assert len(list((salad_home / "divergences").rglob("*.json"))) == 2
    monkeypatch.setattr(cd, "document_kl", lambda *a, **k: pytest.fail("not cached"))
    assert cd.gap_figures(speech, base, **figure_options) == first
    import inspect

    from salad_eval.cli import gap  # the command line states the same defaults

    options = inspect.signature(gap).parameters
    assert options["divergence_docs"].default.default == cd.DEFAULT_DOCS
    assert options["divergence_voice"].default.default == cd.DEFAULT_VOICE


def _ngrams(text: str, n: int = 8) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z']+", text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def test_the_held_out_corpus_is_disjoint_from_what_the_tiny_preset_trains_on(benchmarks_dir):
    """Stage I (data.corpus, data.tasks, replay) and Stage II (select.pool) never read it."""
    from salad_train.config import PRESETS, load_config
    from salad_train.recipe.data import read_corpus, task_documents
    from salad_train.selection.pool import read_source

    config = load_config("tiny")
    named = [config.data.corpus, config.data.replay, *config.select.pool, config.train.probe_corpus]
    assert cd.DEFAULT_CORPUS.name not in " ".join(p.read_text() for p in PRESETS.glob("*.yaml"))
    assert all(path is None or "heldout" not in path for path in named)
    training = read_corpus(config.data.corpus) + task_documents(config.data.tasks)
    training += [text for source in config.select.pool for text in read_source(source)]
    assert len(training) > 2000  # the tiny corpus and the Stage II pool
    seen = set().union(*(_ngrams(text) for text in training))
    held_out = cd.read_documents(n=None)
    assert len(held_out) == cd.DEFAULT_DOCS
    for doc in held_out:
        assert len(doc.split()) >= 90  # room for several spoken spans
        assert not _ngrams(doc) & seen, doc[:60]


@pytest.mark.integration
def test_training_probes_report_corpus_f_and_m(tiny_qwen2):
    """The periodic probe reads the same corpus divergences (a few documents) as a gap report,
    beside the answer-KL diagnostics and the accuracies of a few task items."""
    from salad_train.recipe.probe import probe

    speech = _speech_lm(tiny_qwen2).train()
    row = probe(speech, "demo", n_items=2, n_docs=2)
    assert set(row) == {"F", "M", "answer_F", "answer_M", "text_acc", "speech_acc"}
    assert row["F"] == 0.0 and row["M"] > 0.0
    assert speech.training  # handed back as it came
    assert "F" not in probe(speech, "demo", n_items=2, n_docs=0)
