"""Stage I training throughput on the tiny preset: tokens/s with and without cached encoder
features, and where a step's time goes (encoder, teacher forward, student forward, backward).

Usage: ``python bench/train.py [--steps 3] [--batch-size 4]``. Timings are means over the steps
after one warm-up step; each phase is timed on its own, in the order a training step runs it.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402

from salad_eval.models.speech_lm import SpeechLM, load_waveform  # noqa: E402
from salad_train.config import load_config  # noqa: E402
from salad_train.recipe.align import align_adapter  # noqa: E402
from salad_train.recipe.batch import plan_batch, student_inputs  # noqa: E402
from salad_train.recipe.data import build_data  # noqa: E402
from salad_train.recipe.loss import distillation_loss  # noqa: E402
from salad_train.recipe.stage1 import Stage1Module, decoder_and_head, encode_clips  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=4)
    args = parser.parse_args()
    config = load_config("tiny", ["data.max_documents=12"])
    speech_lm = SpeechLM.from_config(config.model, seed=0)
    data = build_data(config.data, seed=0)
    features, seconds = encode_clips(speech_lm, data.audio_clips)
    module = Stage1Module(speech_lm, features, config, data.clip_texts)
    raw_encoder = speech_lm.encoder.encoder  # the uncached encoder behind the disk cache
    llm = speech_lm.llm
    table = llm.get_input_embeddings()
    decoder, head = decoder_and_head(llm)  # a LoRA's base model, as Stage I runs it

    def audio_length(clip: str) -> tuple[int, float]:
        return -(-len(features[clip]) // config.model.stack) + 2, seconds[clip]

    totals = {"encoder": 0.0, "teacher": 0.0, "student forward": 0.0, "backward": 0.0}
    tokens = 0
    for step in range(args.steps + 1):
        docs = [data.sample(step * args.batch_size + i) for i in range(args.batch_size)]
        plan = plan_batch(docs, speech_lm.tokenizer, audio_length, config.data.max_tokens)
        clips = [clip for row in plan.layout for clip, _ in row if clip]
        t0 = time.perf_counter()
        for clip in clips:  # what every step pays without the feature cache
            raw_encoder.encode(load_waveform(clip))
        t1 = time.perf_counter()
        with torch.no_grad(), module.teacher_context():
            teacher = decoder(
                input_ids=plan.teacher_ids, attention_mask=plan.teacher_attention
            ).last_hidden_state
        t2 = time.perf_counter()
        inputs = student_inputs(plan, table, lambda clip: module.embed_audio(clip)[0])
        student = decoder(inputs_embeds=inputs.embeds, attention_mask=inputs.attention)
        sums = distillation_loss(
            student.last_hidden_state,
            teacher,
            inputs.mask,
            plan.teacher_mask,
            inputs.targets,
            head,
            head,
            chunk_size=config.loss.chunk_size,
        )
        t3 = time.perf_counter()
        (sums.loss / max(sums.n_positions, 1)).backward()
        speech_lm.zero_grad(set_to_none=True)
        t4 = time.perf_counter()
        if step == 0:
            continue  # warm-up
        tokens += int(inputs.attention.sum())  # actual positions: vocabulary clips shrink
        for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            totals[key] += value
    cached = sum(totals.values()) - totals["encoder"]
    print(
        f"tiny preset, batch {args.batch_size}, {args.steps} steps, "
        f"{tokens / args.steps:.0f} student positions/step, {torch.get_num_threads()} threads"
    )
    print(f"tokens/s with cached features:    {tokens / cached:8.1f}")
    print(f"tokens/s encoding every step:     {tokens / sum(totals.values()):8.1f}")
    print(f"speed-up from the feature cache:  {sum(totals.values()) / cached:8.2f}x")
    for key, value in totals.items():
        print(
            f"  {key:16s} {value / args.steps:7.2f} s/step  "
            f"{100 * value / sum(totals.values()):5.1f}% of an uncached step"
        )
    clips = data.audio_clips
    started = time.perf_counter()
    align_adapter(
        module, clips, args.steps, 32, config.train.align_lr or config.optim.adapter_lr, seed=0
    )
    per_step = (time.perf_counter() - started) / args.steps
    batch = min(32, len(clips))
    print(
        f"CTC warm-up (no LLM pass): {per_step:.2f} s/step of {batch} clips, "
        f"{batch / per_step:.1f} clips/s"
    )


if __name__ == "__main__":
    main()
