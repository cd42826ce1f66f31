"""Forgetting F and misalignment M as the SALAD paper defines them: on held-out prose, per token.

- F = KL(P_base(. | text prefix) || P_speech(. | text prefix)) at every token of a document: the
  base text LLM and the speech LLM both read it as text.
- M = KL(P_speech(. | text prefix) || P_speech(. | the same prefix, some spans spoken)) at every
  text token after the first spoken span: the speech LLM reads the document as text, then with
  spans of it spoken.

Each document is cut into alternating spans of fixed lengths (``span_words``: 10 text, 10 speech
words by default); a seeded phase, drawn per document, sets the length of the opening text span
(1 to 10 words), so the first spoken span always has some text before it and spoken spans fall
at different places in different documents. Every speech span is synthesized on its own in one
voice through the audio store, and the document is laid out exactly as Stage I lays out a
training document (``salad_eval.interleave``): the teacher sequence is the all-text version, the
student sequence holds each spoken span's clip, and their text positions are aligned one to one,
the very positions Stage I distils. M leaves out the text before the first spoken span: the two
sequences are identical there, so its KL is 0 by construction and would only dilute M.

Both are per-token means pooled over every evaluated token of every document (KL summed over all
of them, divided by their number), as the paper reports them, with a 95% bootstrap interval over
documents. The default corpus, ``salad_eval/corpus/heldout.txt``, is 32 documents of
project-written educational prose that no training preset reads (neither Stage I's ``data.corpus``
and ``data.tasks`` nor Stage II's ``select.pool``): F and M are measured on text training never
met. A user corpus (one document per line; the paper: FineWeb-Edu) gives its first N documents,
so keep those out of training.

The answer-token KL of each evaluation item (``salad_eval.divergence``) stays in gap reports as a
per-item diagnostic; the F and M a report leads with, and that ``salad-eval report`` fits speech
accuracy against, are these.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from salad_eval.checks import text_lines
from salad_eval.divergence import supports_divergence
from salad_eval.home import BadEntry, cached_entry, checked_float, home, json_bytes, parts_key
from salad_eval.interleave import AUDIO, Document, Span, plan_batch, span_tokens, student_inputs
from salad_eval.models.placement import input_device
from salad_eval.progress import progress_bar
from salad_eval.prompt import Audio, Model
from salad_eval.scoring import Shard, file_hash
from salad_eval.speech import store
from salad_eval.speech.normalize import normalize
from salad_eval.speech.synth import ensure_clip
from salad_eval.speech.voices import parse_voice
from salad_eval.stats import interval, resample_indices

log = logging.getLogger(__name__)

DEFAULT_CORPUS = Path(__file__).parent / "corpus" / "heldout.txt"
DEFAULT_DOCS = 32
DEFAULT_VOICE = "espeak/en-us"  # ~0.04 s a clip; the tiny preset trains on its variants (+m3)
SPAN_WORDS = (10, 10)  # (text, speech) words per span
MAX_TOKENS = 2048  # tokens per document (the paper's context); the student is cut at a span
CUT_SEED = 0  # where each document's first spoken span begins (fixed: runs stay comparable)
VERSION = 1  # bumped when a value changes meaning; keys cached per-document values


@dataclass(frozen=True)
class DocumentKL:
    """One document's summed KL and the number of tokens it was summed over (F: every token of the
    all-text sequence but the first; M: the text tokens after the first spoken span). ``f_sum``
    is None when no base LLM (or one with another vocabulary) was given."""

    f_sum: float | None
    f_tokens: int
    m_sum: float
    m_tokens: int

    def to_dict(self) -> dict:
        return asdict(self)


def read_documents(path: str | Path | None = None, n: int | None = DEFAULT_DOCS) -> list[str]:
    """The first ``n`` documents (all when None) of a corpus, one per non-empty line (``#`` lines
    are comments); the embedded held-out prose when ``path`` is None."""
    where = str(DEFAULT_CORPUS if path is None else path)
    docs = [
        line
        for line in text_lines(where, "--divergence-corpus")
        if line and not line.startswith("#")
    ]
    return docs[:n]


def cut(
    text: str, span_words: Sequence[int] = SPAN_WORDS, seed: int = CUT_SEED
) -> list[tuple[str, bool]]:
    """``text`` as alternating (words, is_speech) spans: a seeded opening text span of 1 to
    ``span_words[0]`` words, then ``span_words[1]`` spoken and ``span_words[0]`` written words in
    turn. The phase depends only on the seed and the document, not on the other documents."""
    text_words, speech_words = span_words
    words = text.split()
    at = random.Random(f"{seed}:{text}").randint(1, text_words)
    spans, speech = [(" ".join(words[:at]), False)], True
    while at < len(words):
        n = speech_words if speech else text_words
        spans.append((" ".join(words[at : at + n]), speech))
        at += n
        speech = not speech
    return spans


def speak_document(
    text: str,
    voice: str = DEFAULT_VOICE,
    span_words: Sequence[int] = SPAN_WORDS,
    seed: int = CUT_SEED,
    synth_seed: int = 0,
) -> Document:
    """The document cut (``cut``) with each speech span synthesized on its own in ``voice`` (made
    once in the audio store, verified), as Stage I synthesizes its speech spans."""
    spec = parse_voice(voice)
    return tuple(
        Span(words, str(ensure_clip(normalize(words), spec, synth_seed)) if speech else None)
        for words, speech in cut(text, span_words, seed)
    )


def speak_documents(
    texts: Sequence[str],
    voice: str = DEFAULT_VOICE,
    span_words: Sequence[int] = SPAN_WORDS,
    seed: int = CUT_SEED,
    synth_seed: int = 0,
    show_progress: bool = True,
) -> list[Document]:
    docs = []
    with progress_bar(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task("synthesizing divergence corpus", total=len(texts))
        for text in texts:
            docs.append(speak_document(text, voice, span_words, seed, synth_seed))
            progress.advance(bar)
    return docs


def same_vocabulary(base, speech) -> bool:
    """F compares two distributions token by token: only over one tokenizer's vocabulary."""
    return base.tokenizer.get_vocab() == speech.tokenizer.get_vocab()


def _kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) per row, from logits of shape (L, V), in float32 (as Stage I's loss)."""
    p_log, q_log = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return (p_log.exp() * (p_log - q_log)).sum(-1)


def positions(doc: Document, tokenizer, audio_length, max_tokens: int = MAX_TOKENS):
    """The document's all-text token ids and its aligned M positions: ``(text ids, student
    inputs plan, student positions, teacher positions)``; the i-th student and i-th teacher
    position predict the same token, and the teacher positions index the text ids.

    The student sequence (the plan, a batch of one) is cut at the last span that fits in
    ``max_tokens`` positions; ``audio_length(clip)`` gives a clip's actual number of LLM inputs
    (boundaries included). The text ids hold the whole document up to ``max_tokens`` tokens (and
    at least the plan's all-text sequence, of which they are an extension), so F does not depend
    on how long the clips are.
    """
    plan = plan_batch([doc], tokenizer, lambda clip: (audio_length(clip), 0.0), max_tokens)
    ids, s_mask, t_mask = plan.student_ids[0], plan.student_mask[0], plan.teacher_mask[0]
    audio = (ids == AUDIO).nonzero()
    first = int(audio[0]) if len(audio) else len(ids)  # before it, both sequences are the same
    s_index = s_mask.nonzero()[:, 0]
    skip = int((s_index < first).sum())
    whole = torch.tensor([t for span in span_tokens(tokenizer, doc) for t in span])
    text_ids = whole[: max(max_tokens, plan.teacher_ids.shape[1])]
    return text_ids, plan, s_index[skip:], t_mask.nonzero()[:, 0][skip:]


def document_kl(speech, doc: Document, base=None, max_tokens: int = MAX_TOKENS) -> DocumentKL:
    """F and M of one interleaved document: three forward passes (the base and the speech LLM on
    the all-text sequence, the speech LLM on the interleaved one), KL summed per position."""
    table = speech.llm.get_input_embeddings()
    device = input_device(table)  # not table.weight.device: a device map may offload it
    with torch.inference_mode():
        spoken = [Audio(s.audio, s.text) for s in doc if s.audio]
        clips = speech.audio_inputs_of(spoken) if spoken else {}
        text_ids, plan, m_student, m_teacher = positions(
            doc, speech.tokenizer, lambda clip: len(clips[clip]), max_tokens
        )
        # the planned clip lengths are the actual ones, so the plan's student positions hold
        student = student_inputs(plan, lambda ids: table(ids.to(device)), clips.__getitem__)
        speech_text = speech.llm(input_ids=text_ids[None].to(device)).logits[0]
        m_sum = 0.0
        if len(m_student):
            heard = speech.llm(inputs_embeds=student.embeds.to(device)).logits[0]
            m_rows = _kl_rows(speech_text[m_teacher.to(device)], heard[m_student.to(device)])
            m_sum = float(m_rows.double().sum())
        f_tokens = max(min(len(text_ids), max_tokens) - 1, 0)  # every token but the first
        f_sum = None
        if base is not None:
            base_text = base.llm(input_ids=text_ids[None].to(input_device(base.llm))).logits[0]
            f_rows = _kl_rows(base_text[:f_tokens], speech_text[:f_tokens].to(base_text.device))
            f_sum = float(f_rows.double().sum())
    return DocumentKL(f_sum, f_tokens, m_sum, len(m_student))


def measure(
    speech,
    docs: Sequence[Document],
    base=None,
    max_tokens: int = MAX_TOKENS,
    show_progress: bool = True,
) -> list[DocumentKL]:
    """``document_kl`` of every document (``base`` left out if its vocabulary differs)."""
    base = base if base is not None and same_vocabulary(base, speech) else None
    rows = []
    with progress_bar(transient=True, disable=not show_progress) as progress:
        bar = progress.add_task("corpus divergences", total=len(docs))
        for doc in docs:
            rows.append(document_kl(speech, doc, base, max_tokens))
            progress.advance(bar)
    return rows


def summarize(rows: Sequence[DocumentKL], n_boot: int = 1000, seed: int = 0) -> dict:
    """``{"F": figure, "M": figure}``: per-token means pooled over documents (sum / tokens), each
    with a bootstrap interval over documents, ``n`` documents and ``tokens``; a divergence with
    no token to read is left out."""
    out = {}
    for name, sums, counts in (
        ("F", [r.f_sum for r in rows], [r.f_tokens for r in rows]),
        ("M", [r.m_sum for r in rows], [r.m_tokens for r in rows]),
    ):
        kept = [(s, c) for s, c in zip(sums, counts, strict=True) if s is not None and c > 0]
        if not kept:
            continue
        s, c = np.array([k[0] for k in kept]), np.array([k[1] for k in kept], dtype=np.int64)
        idx = resample_indices(len(kept), n_boot, seed, f"corpus-{name}")
        samples = s[idx].sum(axis=1) / c[idx].sum(axis=1)
        low, high = interval(samples)
        out[name] = {
            "value": float(s.sum() / c.sum()),
            "ci_low": low,
            "ci_high": high,
            "n": len(kept),
            "tokens": int(c.sum()),
        }
    return out


def corpus_fm(
    speech,
    base=None,
    texts: Sequence[str] | None = None,
    voice: str = DEFAULT_VOICE,
    span_words: Sequence[int] = SPAN_WORDS,
    synth_seed: int = 0,
    max_tokens: int = MAX_TOKENS,
    n_boot: int = 1000,
    seed: int = 0,
    show_progress: bool = True,
) -> dict:
    """F and M of ``speech`` (against ``base``) over ``texts`` (default: the embedded held-out
    documents): ``summarize``'s figures; what a gap report and a training probe show."""
    texts = read_documents() if texts is None else texts
    docs = speak_documents(texts, voice, span_words, CUT_SEED, synth_seed, show_progress)
    return summarize(measure(speech, docs, base, max_tokens, show_progress), n_boot, seed)


def _parsed_document_kl(data: bytes) -> DocumentKL:
    """A cached document's KL sums and token counts, checked (``BadEntry`` if unusable)."""
    entry = json.loads(data)
    if not isinstance(entry, dict) or set(entry) != {"f_sum", "f_tokens", "m_sum", "m_tokens"}:
        raise BadEntry(f"not a document's divergences: {entry!r}")
    for key in ("f_tokens", "m_tokens"):
        if isinstance(entry[key], bool) or not isinstance(entry[key], int) or entry[key] < 0:
            raise BadEntry(f"{key} is not a count: {entry[key]!r}")
    f_sum = None if entry["f_sum"] is None else checked_float(entry["f_sum"], low=-1e-4)
    return DocumentKL(
        f_sum, entry["f_tokens"], checked_float(entry["m_sum"], low=-1e-4), entry["m_tokens"]
    )


def gap_figures(
    speech: Model,
    text: Model,
    *,
    corpus: str | None,
    documents: int,
    voice: str,
    span_words: Sequence[int],
    synth_seed: int,
    n_boot: int,
    seed: int,
    shard: Shard,
) -> dict:
    """Corpus F and M of a gap run: ``{"F", "M"}`` figures and the ``setup`` the
    manifest records. Per-document values are cached (and sharded like the scores), keyed by
    both models' fingerprints, the spans and the bytes of their clips. ``clips``: {key: sha256}
    of the spans' audio, which the run's manifest lists with the items' (``salad-eval audio``)."""
    path = Path(corpus) if corpus else DEFAULT_CORPUS
    texts = read_documents(path, documents)
    span_words = tuple(span_words)

    def speak() -> list:
        return speak_documents(
            texts, voice, span_words, CUT_SEED, synth_seed, show_progress=shard.main
        )

    docs = speak() if shard.main else None  # the main process synthesizes, the others reuse
    shard.wait()
    docs = docs or speak()
    readable = supports_divergence(text)  # F: one vocabulary, both LLMs
    base = text if readable and same_vocabulary(text, speech) else None
    ids = [speech.fingerprint, base.fingerprint if base is not None else None]

    def one(doc) -> DocumentKL:
        spans = [(s.text, file_hash(s.audio) if s.audio else None) for s in doc]
        key = parts_key("corpus", VERSION, ids, spans, MAX_TOKENS)
        return cached_entry(
            home() / "divergences" / key[:2] / f"{key}.json",
            "divergence",
            lambda: document_kl(speech, doc, base),
            lambda row: json_bytes(row.to_dict()),
            _parsed_document_kl,
        )

    if shard.size > 1:
        for index in shard.take(len(docs)):
            one(docs[index])
        shard.wait()
    log.info("corpus F and M: %s documents of %s, %s", len(docs), path.name, voice)
    rows = []
    with progress_bar(transient=True, disable=not shard.main) as progress:
        bar = progress.add_task("corpus divergences", total=len(docs))
        for doc in docs:
            rows.append(one(doc))
            progress.advance(bar)
    figures = summarize(rows, n_boot, seed)
    # per document, in corpus order: what a paired model-vs-model test of M needs
    figures["documents"] = [row.to_dict() for row in rows]
    spoken = [Path(span.audio).stem for doc in docs for span in doc if span.audio]
    figures["clips"] = {key: store.sidecar(key)["sha256"] for key in spoken}
    figures["setup"] = {
        "corpus": str(path),
        "corpus_hash": file_hash(path),
        "held_out": path.resolve() == DEFAULT_CORPUS.resolve(),
        "documents": len(docs),
        "voice": voice,
        "span_words": list(span_words),
        "cut_seed": CUT_SEED,
        "synth_seed": synth_seed,
        "max_tokens": MAX_TOKENS,
        "version": VERSION,
        "forgetting": base is not None,
    }
    return figures
