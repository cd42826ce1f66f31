"""Endpoint throughput, on the same items in one run: ``--concurrency 8`` against 1.

The demo items' generation prompts go to a real llama.cpp server (the ``xllamacpp`` wheel serving
the embedded SmolLM2 GGUF, 8 slots) through salad's endpoint adapter, greedy, with no cache: 8
requests in flight, which the server decodes together, against one at a time, as a harness
without concurrency sends them. The replies must be identical; the figure is the ratio of the
two times, paired round by round, its median quoted. It also counts how often the server's
greedy letter (llama.cpp on the Q4_1 GGUF) equals the in-process one (salad's float32
dequantization of the same file), by the extraction rule.

    .venv/bin/python bench/endpoint.py [--items 100] [--concurrency 8] [--max-new-tokens 16]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the test servers

from servers import MODEL_ID, llama_cpp_server  # noqa: E402

from salad_eval import generation  # noqa: E402
from salad_eval.endpoint.client import Connection  # noqa: E402
from salad_eval.endpoint.model import EndpointModel  # noqa: E402
from salad_eval.extraction import extract  # noqa: E402
from salad_eval.models.text_lm import TextLM  # noqa: E402
from salad_eval.prompt import Decoding, GenerationRequest, text_prompt  # noqa: E402
from salad_eval.tasks import generation as template_of  # noqa: E402
from salad_eval.tasks import get_task, load_items  # noqa: E402

ROUNDS = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    items = load_items("demo", args.items, answer="generate")
    until = template_of(get_task("demo")).until
    requests = [GenerationRequest(text_prompt(item), until) for item in items]
    decoding = Decoding(max_new_tokens=args.max_new_tokens)
    with llama_cpp_server(slots=args.concurrency) as url:

        def model(concurrency: int) -> EndpointModel:
            return EndpointModel(
                f"openai-completions:{MODEL_ID}", Connection((url,), None, concurrency)
            )

        wide, narrow = model(args.concurrency), model(1)
        generation.generate(wide, requests[:2], decoding, cache=False)  # warm up
        together, alone = [], []
        for _ in range(ROUNDS):  # in turn, so a machine that drifts slows both alike
            started = time.perf_counter()
            ours = generation.generate(wide, requests, decoding, cache=False)
            together.append(time.perf_counter() - started)
            started = time.perf_counter()
            single = generation.generate(narrow, requests, decoding, cache=False)
            alone.append(time.perf_counter() - started)
    assert ours == single, "concurrent greedy replies differ from one-at-a-time ones"
    tokens = sum(r.n_tokens for sampled in ours for r in sampled)
    ratio = statistics.median(a / t for a, t in zip(alone, together, strict=True))
    print(
        f"endpoint, {len(items)} demo items, {tokens} reply tokens, greedy, max "
        f"{args.max_new_tokens} new tokens (llama.cpp server, embedded SmolLM2 GGUF, CPU):"
    )
    print(
        f"  --concurrency {args.concurrency}: {statistics.median(together):.2f} s median "
        f"({len(items) / statistics.median(together):.2f} items/s); --concurrency 1: "
        f"{statistics.median(alone):.2f} s median ({len(items) / statistics.median(alone):.2f} "
        "items/s)"
    )
    print(f"  concurrent / one at a time: {ratio:.2f}x the throughput (median of {ROUNDS} rounds)")
    print("  replies identical: yes")
    local = generation.generate(TextLM("smollm2-135m"), requests, decoding, cache=False)
    same = sum(
        _letter(item, a[0]) == _letter(item, b[0])
        for item, a, b in zip(items, ours, local, strict=True)
    )
    print(f"  greedy letters equal to the in-process model's: {same}/{len(items)}")


def _letter(item, reply) -> str | None:
    return extract(reply.text, item.choices, item.options, reply.truncated).letter


if __name__ == "__main__":
    main()
