"""Scoring speed, on the same items in one run.

- text condition (``text@base``, embedded SmolLM2): items/s of salad's ``TextLM`` against lm-eval's
  own ``hf`` model on the identical (context, continuation) requests;
- speech condition (``speech@speech``, a SALAD speech LLM over the embedded Whisper encoder):
  items/s with the shared context (one context pass, choices batched on its KV cache) against
  scoring each choice separately, and that speed-up against the ideal one the token counts allow
  (tokens of all per-choice passes / tokens of the shared passes). Target: >= 80% of ideal.

Items come from ARC-Easy in the local mirror ($SALAD_BENCHMARKS); their spoken parts are read by
Kokoro. Encoder outputs are computed once before timing (the speech LLM caches them on disk), so
both speech paths time the same thing: the LLM.

    .venv/bin/python bench/scoring.py [--items 40] [--speech-items 12]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import soundfile as sf
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM

from salad_eval.assets import llm_path
from salad_eval.models.lm_scoring import score_continuations, score_separately
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, Item, Prompt, ScoringRequest, Speak, Text, text_prompt
from salad_eval.speech.tts import Kokoro
from salad_eval.speech.voices import parse_voice
from salad_eval.tasks import load_items


def timed(run) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def bench_text(items: list[Item]) -> None:
    requests = [ScoringRequest(text_prompt(item), item.choices) for item in items]
    instances = [
        Instance("loglikelihood", doc={}, arguments=(item.text_context, choice), idx=i)
        for item in items
        for i, choice in enumerate(item.choices)
    ]
    salad = TextLM("smollm2-135m")
    reference = HFLM(pretrained=llm_path(), device="cpu", batch_size=8)
    salad.score(requests[:2])  # warm up both
    reference.loglikelihood(instances[:8], disable_tqdm=True)
    t_salad = timed(lambda: salad.score(requests, batch_size=8))
    t_ref = timed(lambda: reference.loglikelihood(instances, disable_tqdm=True))
    n = len(items)
    print(f"text@base, {n} ARC-Easy items ({len(instances)} choices):")
    print(f"  salad TextLM     {n / t_salad:6.2f} items/s")
    print(f"  lm-eval hf       {n / t_ref:6.2f} items/s")
    print(f"  salad / lm-eval  {t_ref / t_salad:6.2f}x")


def spoken(items: list[Item], folder: Path) -> list[Prompt]:
    kokoro, voice = Kokoro(), parse_voice("kokoro/jf_alpha")
    prompts = []
    for n, item in enumerate(items):
        prompt = []
        for k, part in enumerate(item.context):
            if isinstance(part, Speak):
                path = folder / f"{n}-{k}.flac"
                sf.write(path, kokoro.synthesize(part.text, voice, 0), 16_000)
                prompt.append(Audio(str(path), part.text))
            else:
                prompt.append(Text(part.text))
        prompts.append(tuple(prompt))
    return prompts


def bench_speech(items: list[Item]) -> None:
    model = SpeechLM.from_config(SpeechLMConfig(), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        prompts = spoken(items, Path(tmp))
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
    print(f"speech@speech, {n} spoken ARC-Easy items (mean context {mean_context:.0f} positions):")
    print(f"  shared context   {n / t_shared:6.2f} items/s")
    print(f"  per choice       {n / t_separate:6.2f} items/s")
    print(f"  speed-up {achieved:.2f}x of ideal {ideal:.2f}x = {achieved / ideal:.0%} (target 80%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=40, help="text items")
    parser.add_argument("--speech-items", type=int, default=12, help="spoken items")
    args = parser.parse_args()
    torch.manual_seed(0)
    bench_text(load_items("arc_easy", limit=args.items))
    bench_speech(load_items("arc_easy", limit=args.speech_items))


if __name__ == "__main__":
    main()
