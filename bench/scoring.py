"""Scoring speed, on the same items in one run.

- text condition (``text@base``, embedded SmolLM2): items/s of salad's scoring engine (cross-item
  batches, the shared context) against lm-eval's own ``hf`` model on the identical (context,
  continuation) requests at the same batch size (sequences per forward), and both accuracies
  (they must be equal). Target: >= 1.0x;
- speech condition (``speech@speech``, a SALAD speech LLM over the embedded Whisper encoder):
  items/s of the engine at batch 1 against batch 32, each from an empty feature cache (clips
  encoded in batches too);
- the shared context alone: one context pass with the choices batched on its KV cache against
  scoring each choice separately, and that speed-up against the ideal one the token counts allow
  (tokens of all per-choice passes / tokens of the shared passes). Target: >= 80% of ideal.

Items come from ARC-Easy in the local mirror ($SALAD_BENCHMARKS); their spoken parts are read by
eSpeak (the fastest voice: the voice does not change how fast a model scores). Figures are ratios
within one run; run it with OMP_NUM_THREADS=1 on a shared machine.

    .venv/bin/python bench/scoring.py [--items 64] [--batch-size 8] [--speech-items 64]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from salad_eval.assets import llm_path
from salad_eval.models.lm_scoring import score_continuations, score_separately
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, Item, Prompt, ScoringRequest, Speak, Text, text_prompt
from salad_eval.scoring import score
from salad_eval.speech.tts import synthesize
from salad_eval.speech.voices import parse_voice
from salad_eval.tasks import load_items

ROUNDS = 3  # text: salad and lm-eval timed in turn, the median pair ratio quoted


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench_text(items: list[Item], batch_size: int) -> None:
    requests = [ScoringRequest(text_prompt(item), item.choices) for item in items]
    instances = [
        Instance("loglikelihood", doc={}, arguments=(item.text_context, choice), idx=i)
        for item in items
        for i, choice in enumerate(item.choices)
    ]
    salad = TextLM("smollm2-135m")
    reference = HFLM(pretrained=llm_path(), device="cpu", batch_size=batch_size)
    score(salad, requests[:2], cache=False)  # warm up both
    reference.loglikelihood(instances[:8], disable_tqdm=True)
    t_salads, t_refs = [], []
    for _ in range(ROUNDS):  # in turn, so a machine that drifts slows both alike
        started = time.perf_counter()
        ours = score(salad, requests, batch_size, cache=False)
        t_salads.append(time.perf_counter() - started)
        started = time.perf_counter()
        theirs = reference.loglikelihood(instances, disable_tqdm=True)
        t_refs.append(time.perf_counter() - started)
    t_salad, t_ref = statistics.median(t_salads), statistics.median(t_refs)
    ratio = statistics.median(r / s for r, s in zip(t_refs, t_salads, strict=True))
    acc_salad = accuracy(items, [[s.logprob for s in row] for row in ours])
    rows, start = [], 0
    for item in items:
        rows.append([ll for ll, _ in theirs[start : start + len(item.choices)]])
        start += len(item.choices)
    acc_ref = accuracy(items, rows)
    n = len(items)
    print(
        f"text@base, {n} ARC-Easy items ({len(instances)} choices), batch size {batch_size}, "
        f"median of {ROUNDS} rounds:"
    )
    print(f"  salad            {n / t_salad:6.2f} items/s  acc {acc_salad:.4f}")
    print(f"  lm-eval hf       {n / t_ref:6.2f} items/s  acc {acc_ref:.4f}")
    print(
        f"  salad / lm-eval  {ratio:6.2f}x (target >= 1.0x); accuracy "
        f"{'identical' if acc_salad == acc_ref else 'DIFFERENT'}"
    )


def accuracy(items: list[Item], logprobs: list[list[float]]) -> float:
    return sum(
        int(np.argmax(row)) == item.target for item, row in zip(items, logprobs, strict=True)
    ) / len(items)


def spoken(items: list[Item], folder: Path) -> list[Prompt]:
    voice = parse_voice("espeak/en-us")
    prompts = []
    for n, item in enumerate(items):
        prompt = []
        for k, part in enumerate(item.context):
            if isinstance(part, Speak):
                path = folder / f"{n}-{k}.flac"
                sf.write(path, synthesize(part.text, voice), 16_000)
                prompt.append(Audio(str(path), part.text))
            else:
                prompt.append(Text(part.text))
        prompts.append(tuple(prompt))
    return prompts


def bench_speech_batches(model: SpeechLM, items: list[Item], prompts: list[Prompt]) -> None:
    requests = [ScoringRequest(p, item.choices) for item, p in zip(items, prompts, strict=True)]
    cold, warm = {}, {}
    for batch_size in (1, 32):
        score(model, requests[:2], batch_size, cache=False)  # warm up
        for path in model.encoder.root.glob("*.npy"):  # an empty feature cache: encoding counts
            path.unlink()
        cold[batch_size] = timed(lambda b=batch_size: score(model, requests, b, cache=False))
        warm[batch_size] = timed(lambda b=batch_size: score(model, requests, b, cache=False))
    n = len(items)
    print(f"speech@speech, {n} spoken ARC-Easy items:")
    for label, times in (("clips encoded", cold), ("features cached", warm)):
        print(
            f"  {label:16} batch 1 {n / times[1]:6.2f} items/s, batch 32 {n / times[32]:6.2f} "
            f"items/s: {times[1] / times[32]:.2f}x"
        )


def bench_shared_context(model: SpeechLM, items: list[Item], prompts: list[Prompt]) -> None:
    """One item at a time: the shared context against a pass per choice."""
    with torch.inference_mode():
        cases = []
        for item, prompt in zip(items, prompts, strict=True):
            pieces, conts = model.tokenize(prompt, item.choices)
            cases.append((model.embed_segments(pieces).embeds, conts))
    shared_tokens = sum(len(ctx) + sum(max(len(c) - 1, 0) for c in conts) for ctx, conts in cases)
    separate_tokens = sum(sum(len(ctx) + len(c) for c in conts) for ctx, conts in cases)
    score_continuations(model.llm, *cases[0])  # warm up
    t_shared = timed(lambda: [score_continuations(model.llm, ctx, c, 8) for ctx, c in cases])
    t_separate = timed(lambda: [score_separately(model.llm, ctx, c) for ctx, c in cases])
    n = len(items)
    ideal = separate_tokens / shared_tokens
    achieved = t_separate / t_shared
    mean_context = sum(len(ctx) for ctx, _ in cases) / n
    print(f"shared context, {n} spoken ARC-Easy items (mean context {mean_context:.0f} positions):")
    print(f"  shared context   {n / t_shared:6.2f} items/s")
    print(f"  per choice       {n / t_separate:6.2f} items/s")
    print(f"  speed-up {achieved:.2f}x of ideal {ideal:.2f}x = {achieved / ideal:.0%} (target 80%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=64, help="text items")
    parser.add_argument("--batch-size", type=int, default=8, help="text: rows per forward")
    parser.add_argument("--speech-items", type=int, default=64, help="spoken items")
    parser.add_argument("--shared-items", type=int, default=12, help="spoken items, shared context")
    args = parser.parse_args()
    torch.manual_seed(0)
    bench_text(load_items("arc_easy", limit=args.items), args.batch_size)
    items = load_items("arc_easy", limit=args.speech_items)
    model = SpeechLM.from_config(SpeechLMConfig(), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        model.encoder.root = Path(tmp) / "features"  # its own feature cache, emptied per run
        prompts = spoken(items, Path(tmp))
        bench_speech_batches(model, items, prompts)
        n = args.shared_items
        bench_shared_context(model, items[:n], prompts[:n])


if __name__ == "__main__":
    main()
