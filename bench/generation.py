"""Generation speed, on the same items in one run: batched replies against one item at a time.

``--answer generate`` replies to the demo items' multiple-choice prompts (embedded SmolLM2,
greedy, the text condition): salad's engine batching ``--batch-size`` contexts per forward with
the KV cache, left-padded, against the same engine at batch 1, which is how VoiceBench and most
harnesses generate (one item per ``generate`` call). The replies must be identical; the figure
is the ratio of the two times, paired round by round, its median quoted. Run it with
OMP_NUM_THREADS=1 on a shared machine.

    .venv/bin/python bench/generation.py [--items 32] [--batch-size 8] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import time

from salad_eval import generation
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Decoding, GenerationRequest, text_prompt
from salad_eval.tasks import generation as template_of
from salad_eval.tasks import get_task, load_items

ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    items = load_items("demo", args.items, answer="generate")
    until = template_of(get_task("demo")).until
    requests = [GenerationRequest(text_prompt(item), until) for item in items]
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    model = TextLM("smollm2-135m")
    generation.generate(model, requests[:2], decoding, 2, cache=False)  # warm up
    batched, single = [], []
    for _ in range(ROUNDS):  # in turn, so a machine that drifts slows both alike
        started = time.perf_counter()
        ours = generation.generate(model, requests, decoding, args.batch_size, cache=False)
        batched.append(time.perf_counter() - started)
        started = time.perf_counter()
        alone = generation.generate(model, requests, decoding, 1, cache=False)
        single.append(time.perf_counter() - started)
    assert ours == alone, "batched greedy replies differ from one-at-a-time ones"
    tokens = sum(r.n_tokens for sampled in ours for r in sampled)
    ratio = statistics.median(s / b for s, b in zip(single, batched, strict=True))
    print(
        f"generation, {len(items)} demo items, {tokens} reply tokens, greedy, "
        f"max {args.max_new_tokens} new tokens (embedded SmolLM2, CPU):"
    )
    print(
        f"  batch {args.batch_size}: {statistics.median(batched):.2f} s median; one item at a "
        f"time: {statistics.median(single):.2f} s median"
    )
    print(f"  batched / one at a time: {ratio:.2f}x faster (median of {ROUNDS} paired rounds)")
    print("  replies identical: yes")


if __name__ == "__main__":
    main()
