"""Token-level divergences on a prompt's continuation: the per-item diagnostic and Stage II's
per-cluster misalignment.

- forgetting F = mean over positions of KL(P_base(. | text) || P_speech(. | text))
- misalignment M = mean over positions of KL(P_speech(. | text) || P_speech(. | partly spoken))

Both are measured on the same continuation tokens under two prompts and reported per token, as
the paper does: a sum would grow with the continuation's length, and Stage II raises M(c) to
gamma = 5, so a cluster of longer texts would outweigh one of equal per-token misalignment. On a
benchmark item the continuation is the correct answer (``answer_F``/``answer_M`` in a gap
report, a diagnostic); on a selection pool's text it is the first ``CONTINUATION_TOKENS``
tokens after a spoken prefix (``text_misalignments``, what Stage II ranks clusters by). The F
and M a gap report, ``salad-eval divergence`` and the training probes lead with are the paper's,
over a whole held-out document with interleaved spoken spans: ``salad_eval.corpus_divergence``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence

import torch

from salad_eval.home import cached_entry, checked_float, home, json_bytes, parts_key
from salad_eval.models.placement import input_device
from salad_eval.models.speech_lm import SpeechLM
from salad_eval.models.text_lm import TextLM
from salad_eval.progress import progress_bar
from salad_eval.prompt import Audio, Item, Prompt, Speak, Text, prompt_text
from salad_eval.scoring import Shard, file_hash
from salad_eval.speech.synth import synthesize
from salad_eval.speech.voices import resolve_voices

log = logging.getLogger(__name__)
CONTINUATION_TOKENS = 32  # tokens of a corpus text's continuation that a divergence reads
VERSION = 2  # bumped when a value changes meaning (2: per-token means; 1 summed), keys caches


def supports_divergence(*models: object) -> bool:
    """TextLM and SpeechLM (an HF LLM with salad's tokenization) expose their distributions;
    an external family or an endpoint does not."""
    return all(isinstance(model, TextLM | SpeechLM) for model in models)


def _inputs(model, prompt: Prompt, continuation: str) -> tuple[torch.Tensor, list[int]]:
    """(context input embeddings (T, d), continuation token ids) as the model scores them."""
    if hasattr(model, "embed_segments"):  # SpeechLM: text and audio segments
        pieces, (ids,) = model.tokenize(prompt, [continuation])
        return model.embed_segments(pieces).embeds, ids
    context_ids, (ids,) = model.encoder.encode_pair(prompt_text(prompt), [continuation])
    return model.embed(context_ids), ids


def continuation_logprobs(
    model, prompt: Prompt, continuation: str, ids: Sequence[int]
) -> torch.Tensor:
    """Log-distributions (L, V) over the next token at each of the continuation's L tokens.

    ``ids`` fixes the continuation tokens, so two prompts are compared on identical positions.
    """
    context, _ = _inputs(model, prompt, continuation)
    embed = model.llm.get_input_embeddings()
    with torch.inference_mode():
        tokens = torch.tensor(list(ids), dtype=torch.long, device=input_device(embed))
        full = torch.cat([context.to(embed.weight.dtype), embed(tokens)])
        logits = model.llm(inputs_embeds=full[None]).logits[0]
        return logits[context.shape[0] - 1 : -1].float().log_softmax(-1)


def kl_per_token(p_log: torch.Tensor, q_log: torch.Tensor) -> float:
    """Mean over positions of KL(P || Q), from log-probabilities of shape (L, V)."""
    return float((p_log.exp() * (p_log - q_log)).sum(-1).mean())


def divergence(
    model_p,
    prompt_p: Prompt,
    model_q,
    prompt_q: Prompt,
    continuation: str,
    max_tokens: int | None = None,
) -> float:
    """KL(P || Q) per token over the continuation's first ``max_tokens`` tokens (all when None),
    tokenized as ``model_p`` reads text."""
    _, ids = _inputs(model_p, (Text(prompt_text(prompt_p)),), continuation)
    ids = ids[:max_tokens]
    if not ids:
        return 0.0
    p = continuation_logprobs(model_p, prompt_p, continuation, ids)
    q = continuation_logprobs(model_q, prompt_q, continuation, ids)
    return kl_per_token(p, q)


def forgetting_kl(base, speech, item: Item, max_tokens: int | None = None) -> float:
    """F on an item: base LLM vs speech LLM, both reading the text, on the answer tokens."""
    prompt = (Text(item.text_context),)
    return divergence(base, prompt, speech, prompt, item.choices[item.target], max_tokens)


def misalignment_kl(
    speech, item: Item, speech_prompt: Prompt, max_tokens: int | None = None, teacher=None
) -> float:
    """M on an item: the speech LLM on the text vs on the spoken version, on the answer tokens.
    With a ``teacher`` (the base LLM), the teacher reads the text instead: Stage I's
    distillation KL on those tokens."""
    text = (Text(item.text_context),)
    reference = speech if teacher is None else teacher
    return divergence(reference, text, speech, speech_prompt, item.choices[item.target], max_tokens)


def spoken_prefix_items(
    texts: Sequence[str], name: str = "corpus", span_words: int = 12
) -> list[Item]:
    """Each document as an item whose first words are spoken and whose rest is the continuation.

    The divergence is then measured on the text that follows the spoken span, as in the paper's
    partly spoken prefixes. Documents too short to have both parts are skipped.
    """
    items = []
    for index, text in enumerate(texts):
        words = text.split()
        spoken = min(span_words, len(words) // 2)
        if spoken < 2:
            continue
        items.append(
            Item(
                task=name,
                id=str(index),
                domain=name,
                context=(Speak(" ".join(words[:spoken])),),
                choices=(" " + " ".join(words[spoken:]),),
                target=0,
            )
        )
    return items


def text_misalignments(
    speech,
    texts: Sequence[str],
    voices: str | Sequence,
    base=None,
    span_words: int = 12,
    workers: int = 1,
    out_dir=None,
    max_cer: float | None = None,
    continuation_tokens: int = CONTINUATION_TOKENS,
    seed: int = 0,
    teacher=None,
) -> list[dict]:
    """Per document: misalignment M (mean over the voices) and, given the base LLM, forgetting F,
    both per token over the first ``continuation_tokens`` tokens after the spoken words; clips
    synthesized with ``seed``. With a ``teacher`` (the base LLM), M is the distillation KL
    instead (``misalignment_kl``).

    This is what Stage II measures per cluster (``salad_train.selection.select``). A clip
    whose ASR character error rate is above ``max_cer`` does not say its text, so M would measure
    the TTS: that voice is left out of the document's M (``voices`` counts those measured,
    ``unreadable`` those left out; M is None when none is left).
    """
    spec = voices if isinstance(voices, str) else ",".join(str(v) for v in voices)
    names = [str(v) for v in resolve_voices(spec)]
    items = spoken_prefix_items(texts, "corpus", span_words)
    manifest = synthesize(items, spec, workers=workers, out_dir=out_dir, seed=seed)
    rows = []
    with progress_bar(transient=True) as progress:
        bar = progress.add_task("divergences", total=len(items))
        for item in items:
            ok = [v for v in names if manifest.row(item, v).status == "ok"]
            readable = [v for v in ok if max_cer is None or manifest.row(item, v).cer <= max_cer]
            values = [
                misalignment_kl(
                    speech, item, manifest.speech_prompt(item, v), continuation_tokens, teacher
                )
                for v in readable
            ]
            row = {
                "doc": int(item.id),
                "M": sum(values) / len(values) if values else None,
                "voices": len(values),
                "unreadable": len(ok) - len(readable),
            }
            if base is not None:
                row["F"] = forgetting_kl(base, speech, item, continuation_tokens)
            rows.append(row)
            progress.advance(bar)
    return rows


def _cached_kl(kind: str, key: str, compute: Callable[[], float]) -> float:
    """A KL value cached on disk by content key (per-item divergences), sealed and validated."""
    return cached_entry(
        home() / kind / key[:2] / f"{key}.json",
        "divergence",
        compute,
        json_bytes,
        lambda data: checked_float(json.loads(data), low=-1e-4),
    )


def answer_kls(
    name: str,
    items: list[Item],
    shard: Shard,
    compute: Callable[[Item], float],
    ids: list,
    spoken: dict[str, Prompt] | None = None,
) -> list[float]:
    """Per-item KL values, cached on disk (and sharded like the scores), keyed by the bytes of
    each item's clips in ``spoken``: a new TTS or normalizer never reuses a stale M."""

    def one(item: Item) -> float:
        clips = [
            file_hash(seg.path) for seg in (spoken or {}).get(item.id, ()) if isinstance(seg, Audio)
        ]
        key = parts_key(
            name,
            VERSION,
            ids,
            item.task,
            item.id,
            item.text_context,
            item.choices[item.target],
            clips,
        )
        return _cached_kl("divergences", key, lambda: compute(item))

    if shard.size > 1:
        for index in shard.take(len(items)):
            one(items[index])
        shard.wait()
    log.info("%s answer KL %s (diagnostic): per item, per answer token", items[0].task, name)
    return [one(item) for item in items]
