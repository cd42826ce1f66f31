"""Periodic probes: M, F, text and speech accuracy against tokens seen.

The rows (``{"step", "tokens_seen", "probe": {"M", "F", "answer_M", "answer_F", "text_acc",
"speech_acc"}}``) land in ``metrics.jsonl``, where ``salad-eval report`` finds them for the
training-curve figure. M and F are the corpus divergences a gap report leads with
(``salad_eval.corpus_divergence``: per token, on ``train.probe_docs`` held-out documents with
spoken spans), so a sweep's curves use the paper's definitions; ``answer_M``/``answer_F`` (the KL
on the probe items' answers) and the accuracies are on ``train.probe_items`` task items.
Everything is measured with salad_eval's own code, so a probe and a gap report agree.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from salad_eval import corpus_divergence
from salad_eval.divergence import forgetting_kl, misalignment_kl
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import ScoringRequest, text_prompt
from salad_eval.scoring import item_metrics, score
from salad_eval.speech.synth import synthesize
from salad_eval.tasks import load_items

PROBE_VOICE = "piper/joe"


@functools.cache
def _probe_set(task: str, n_items: int) -> tuple[list, list]:
    """The first ``n_items`` items and their spoken prompts (synthesized once, then cached)."""
    items = load_items(task, limit=n_items)[:n_items]
    manifest = synthesize(items, PROBE_VOICE, show_progress=False)
    return items, [manifest.speech_prompt(item, PROBE_VOICE) for item in items]


@functools.cache
def _probe_docs(corpus: str | None, n_docs: int) -> tuple:
    """The first ``n_docs`` held-out documents with their spans spoken (synthesized once)."""
    texts = corpus_divergence.read_documents(corpus, n_docs)
    return tuple(corpus_divergence.speak_documents(texts, show_progress=False))


@functools.cache
def _base_model(llm: str):
    return TextLM(llm)


def _accuracy(model, prompts, items) -> float:
    requests = [ScoringRequest(p, i.choices) for p, i in zip(prompts, items, strict=True)]
    scores = score(model, requests, cache=False)
    return float(
        np.mean(
            [
                item_metrics(s, i.target, i.choices)["acc"]
                for s, i in zip(scores, items, strict=True)
            ]
        )
    )


def corpus_probe(speech_lm, base, n_docs: int, corpus: str | None = None) -> dict[str, float]:
    """Corpus F and M per token on ``n_docs`` held-out documents (cheap: a few documents, three
    forward passes each)."""
    rows = corpus_divergence.measure(
        speech_lm, _probe_docs(corpus, n_docs), base, show_progress=False
    )
    figures = corpus_divergence.summarize(rows, n_boot=1)
    return {name: figures[name]["value"] for name in ("F", "M") if name in figures}


def probe(
    speech_lm, task: str, n_items: int, n_docs: int = 4, corpus: str | None = None
) -> dict[str, float]:
    """Corpus M and F (``n_docs`` documents; none when 0), the answer-token KL diagnostics
    answer_M and answer_F, text@speech and speech@speech accuracy on ``n_items`` task items."""
    items, spoken = _probe_set(task, n_items)
    was_training = speech_lm.training
    speech_lm.eval()
    with torch.no_grad():
        base = _base_model(speech_lm.config.llm)
        result = corpus_probe(speech_lm, base, n_docs, corpus) if n_docs else {}
        result |= {
            "answer_M": float(
                np.mean(
                    [misalignment_kl(speech_lm, i, p) for i, p in zip(items, spoken, strict=True)]
                )
            ),
            "answer_F": float(np.mean([forgetting_kl(base, speech_lm, i) for i in items])),
            "text_acc": _accuracy(speech_lm, [text_prompt(i) for i in items], items),
            "speech_acc": _accuracy(speech_lm, spoken, items),
        }
    speech_lm.train(was_training)
    return result


def demo_probe(trainer) -> dict:
    """A metrics row for the trainer's current step (the probe hook ``Stage1Trainer.run`` calls)."""
    t = trainer.config.train
    return {
        "step": trainer.step,
        "tokens_seen": trainer.tokens_seen,
        "probe": probe(
            trainer.speech_lm, t.probe_task, t.probe_items, t.probe_docs, t.probe_corpus
        ),
    }
