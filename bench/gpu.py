"""GPU check of the device paths: Stage I on CUDA (bf16 autocast, LoRA and full LLM), the
checkpoint loaded on CUDA, and its speech scores equal to the same checkpoint on the CPU; batched
scoring on CUDA (batch 32 and ``--batch-size auto`` against batch 1, in float32 and bf16); and the
paper's shape (tiny Qwen2 trained in full, tiny Mimi, a 2-layer adapter, natural speech grouped by
speaker, text replay) through Stage I and Stage II, with the Stage II teacher's digest checked
against the base LLM's and the replay share drawn against ``data.replay_prob``.

Models are small random ones of the real architectures (Whisper encoder, Llama decoder with the
given tokenizer), so the check needs no downloads and runs where TTS engines are absent: the
speech is a natural-speech manifest of existing clips (``--clips``: a folder of 16 kHz .flac files,
each with a .txt transcript beside it). Prints one JSON report.

    python bench/gpu.py --tokenizer <dir with tokenizer.json> --clips <folder>
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch


def build_models(root: Path, tokenizer_dir: str) -> tuple[str, str]:
    from transformers import (
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperModel,
    )

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    llm = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            tie_word_embeddings=True,
        )
    )
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    whisper = WhisperModel(
        WhisperConfig(
            d_model=64,
            encoder_layers=2,
            decoder_layers=1,
            encoder_attention_heads=2,
            decoder_attention_heads=2,
            encoder_ffn_dim=128,
            decoder_ffn_dim=128,
        )
    )
    whisper.save_pretrained(root / "encoder")
    WhisperFeatureExtractor().save_pretrained(root / "encoder")
    return str(root / "encoder"), str(root / "llm")


def manifest(clips: Path, root: Path) -> str:
    clips_ = sorted(clips.glob("*.flac"))
    rows = [
        {
            "audio": str(f.resolve()),
            "text": f.with_suffix(".txt").read_text().strip(),
            "document": f"d{i // 3}",
        }
        for i, f in enumerate(clips_)
    ]
    path = root / "natural.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def train(root: Path, encoder: str, llm: str, natural: str, mode: str, context: str) -> dict:
    from salad_train.config import load_config
    from salad_train.recipe.stage1 import run_stage1

    out = root / f"run-{mode}"
    config = load_config(
        "tiny",
        [
            f"model.encoder={encoder}",
            f"model.llm={llm}",
            f"model.llm_mode={mode}",
            f"model.encoder_context={context}",
            "model.adapter_width=64",
            "model.adapter_heads=2",
            f"data.natural=[{natural}]",
            "data.corpus=null",
            "data.tasks=[]",
            "data.replay_prob=0",
            "train.steps=8",
            "train.batch_size=4",
            "train.save_every=4",
            "optim.warmup_steps=2",
            "optim.llm_lr=1e-4",
            "loss.ctc_weight=0.5",
            "train.align_steps=10",
            "train.align_batch_size=4",
            f"train.out_dir={out}",
        ],
    )
    started = time.perf_counter()
    model = run_stage1(config)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    align = [r["ctc_per_token"] for r in rows if "align_step" in r]
    rows = [r for r in rows if "loss" in r]
    return {
        "mode": mode,
        "seconds": round(time.perf_counter() - started, 1),
        "loss_first_last": [rows[0]["loss"], rows[-1]["loss"]],
        "ctc_first_last": [rows[0]["ctc"], rows[-1]["ctc"]],
        "align_ctc_first_last": [align[0], align[-1]],
        "finite": all(torch.isfinite(torch.tensor(r["loss"])) for r in rows),
        "model": str(model),
    }


def paper_models(root: Path, tokenizer_dir: str) -> tuple[str, str]:
    """A tiny random Qwen2 (saved in bf16, as Qwen2.5 ships) and a tiny random Mimi."""
    from salad_eval.models.tiny_random import save_tiny_mimi, save_tiny_qwen2

    save_tiny_qwen2(root / "qwen2", tokenizer_dir, hidden_size=128)
    save_tiny_mimi(root / "mimi")
    return str(root / "mimi"), str(root / "qwen2")


def paper_shape(root: Path, tokenizer_dir: str, clips: Path) -> dict:
    """The paper preset's paths at toy scale: Stage I, then Stage II on the clips as the
    selection (no TTS needed); the teacher must be the base LLM bit for bit."""
    from salad_eval.models.digest import weights_digest
    from salad_eval.models.text_lm import load_llm
    from salad_train.config import load_config
    from salad_train.recipe.stage1 import Stage1Trainer
    from salad_train.recipe.stage2 import Stage2Trainer

    root = root / "paper"
    root.mkdir()
    encoder, llm = paper_models(root, tokenizer_dir)
    files = sorted(clips.glob("*.flac"))
    texts = [f.with_suffix(".txt").read_text().strip() for f in files]
    rows = [
        {"audio": str(f.resolve()), "text": t, "speaker": f"s{i % 2}"}  # no document key
        for i, (f, t) in enumerate(zip(files, texts, strict=True))
    ]
    (root / "natural.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "replay.txt").write_text("\n".join(texts) + "\n")
    (root / "select").mkdir()
    (root / "select" / "selected.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "spans": [[r["text"], True]],
                    "audio": [r["audio"]],
                    "dropped": False,
                    "seconds": 1.0,
                }
            )
            + "\n"
            for r in rows
        )
    )
    config = load_config(
        "paper-3b",
        [
            f"model.encoder={encoder}",
            f"model.llm={llm}",
            "model.adapter_layers=2",
            "model.adapter_width=64",
            "model.adapter_heads=2",
            f"data.natural=[{root}/natural.jsonl]",
            f"data.replay={root}/replay.txt",
            "data.max_tokens=128",
            "train.steps=8",
            "train.batch_size=4",
            "train.grad_accum=1",
            "train.save_every=4",
            "train.log_every=1",
            "train.probe_every=0",
            "optim.warmup_steps=2",
            f"train.out_dir={root}/stage1",
            f"select.out_dir={root}/select",
            "stage2.steps=4",
            f"stage2.out_dir={root}/stage2",
        ],
    )
    started = time.perf_counter()
    stage1 = Stage1Trainer(config)
    model1 = stage1.fit("paper shape: stage I")
    stage2 = Stage2Trainer(config)
    stage2.setup()
    teacher = weights_digest(stage2.accelerator.unwrap_model(stage2.module).teacher)
    model2 = stage2.run()
    rows1 = [r for r in map(json.loads, (root / "stage1" / "metrics.jsonl").open()) if "loss" in r]
    record = json.loads((model1 / "training.json").read_text())
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "mixed_precision": stage1.accelerator.mixed_precision,
        "loss_first_last": [rows1[0]["loss"], rows1[-1]["loss"]],
        "replay_prob": config.data.replay_prob,
        "replay_drawn": record["drawn"]["replay"],
        "teacher_is_base": teacher == weights_digest(load_llm(llm, "float32")[0]),
        "stage2_drawn": json.loads((model2 / "training.json").read_text())["drawn"],
    }


def precision(encoder: str, llm: str, device: str) -> dict:
    """Per dtype, an untouched speech LLM reads text exactly as its base (text@speech ==
    text@base bit for bit), and a full-LLM step at the 7B rate under bf16 autocast moves the
    float32 master weights."""
    from accelerate import Accelerator

    from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
    from salad_eval.models.text_lm import TextLM
    from salad_eval.prompt import ScoringRequest, Text

    requests = [
        ScoringRequest(
            (Text("Question: What color is the sky? Answer:"),), (" blue", " green", " the sea")
        )
    ]
    report = {}
    for dtype in ("float32", "bfloat16"):
        config = SpeechLMConfig(encoder=encoder, adapter_width=64, adapter_heads=2, llm=llm)
        speech = SpeechLM.from_config(config, device=device, dtype=dtype)
        base = TextLM(llm, dtype=dtype, device=device)
        report[f"text_equals_base_{dtype}"] = [
            [s.logprob for s in r] for r in speech.score(requests)
        ] == [[s.logprob for s in r] for r in base.score(requests)]
    config = SpeechLMConfig(
        encoder=encoder, adapter_width=64, adapter_heads=2, llm=llm, llm_mode="full"
    )
    speech = SpeechLM.from_config(config, device=device).train()  # float32 masters
    norm = speech.llm.model.norm.weight
    before = norm.detach().clone()
    optimizer = torch.optim.AdamW(speech.llm.parameters(), lr=5e-6)
    accelerator = Accelerator(mixed_precision="bf16" if device == "cuda" else "no")
    ids = torch.tensor(
        [speech.tokenizer.encode("The cat sat on the warm mat by the door.")], device=device
    )
    with accelerator.autocast():
        loss = speech.llm(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    report["master_dtype"] = str(norm.dtype)
    report["llm_weights_moved_at_5e-6"] = bool((norm.detach() != before).all())
    return report


def scores_on(model_dir: str, device: str, clips: list[Path]) -> list[list[float]]:
    from salad_eval.models.speech_lm import load_speech_lm
    from salad_eval.prompt import Audio, ScoringRequest, Text

    model = load_speech_lm(model_dir, device=device).eval()
    prompts = [
        (Text("Question: "), Audio(str(c), c.with_suffix(".txt").read_text()), Text("\nAnswer:"))
        for c in clips
    ]
    requests = [ScoringRequest(p, (" yes", " no", " maybe")) for p in prompts]
    with torch.no_grad():
        return [[s.logprob for s in scores] for scores in model.score(requests)]


def batched(encoder: str, llm: str, device: str, clips: list[Path]) -> dict:
    """Cross-item batched scoring on the device: per dtype, scores at batch 32 and at ``auto``
    against batch 1 (max abs difference), the size ``auto`` found, and items/s of each."""
    from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
    from salad_eval.prompt import Audio, ScoringRequest, Text
    from salad_eval.scoring import resolve_batch_size, score

    prompts = [
        (
            Text("Question: " + "so " * (i % 7)),
            Audio(str(c), c.with_suffix(".txt").read_text()),
            Text("\nAnswer:"),
        )
        for i, c in enumerate(clips * 4)
    ]
    requests = [
        ScoringRequest(p, (" yes", " no", " maybe not", " it is hard to say")) for p in prompts
    ]
    report = {"requests": len(requests)}
    for dtype in ("float32", "bfloat16"):
        config = SpeechLMConfig(encoder=encoder, adapter_width=64, adapter_heads=2, llm=llm)
        model = SpeechLM.from_config(config, device=device, dtype=dtype)
        auto = resolve_batch_size(model, requests, "auto")
        rows, seconds = {}, {}
        for size in (1, 32, auto):
            score(model, requests[:2], size, cache=False)  # warm up
            started = time.perf_counter()
            rows[size] = score(model, requests, size, cache=False)
            seconds[size] = time.perf_counter() - started
        one = [s.logprob for row in rows[1] for s in row]
        report[dtype] = {
            "auto_batch_size": auto,
            "items_per_s": {str(b): round(len(requests) / t, 1) for b, t in seconds.items()},
            "max_abs_diff_vs_batch_1": {
                str(b): max(
                    abs(a - c)
                    for a, c in zip(one, [s.logprob for row in r for s in row], strict=True)
                )
                for b, r in rows.items()
                if b != 1
            },
        }
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--clips", required=True, type=Path)
    args = parser.parse_args()
    report: dict = {"cuda": torch.cuda.is_available(), "torch": torch.__version__}
    if torch.cuda.is_available():
        report["device"] = torch.cuda.get_device_name()
    root = Path(tempfile.mkdtemp(prefix="salad-gpu-"))
    encoder, llm = build_models(root, args.tokenizer)
    natural = manifest(args.clips, root)
    report["train"] = [
        train(root, encoder, llm, natural, mode, context)
        for mode, context in (("lora", "clip"), ("full", "window"))
    ]
    clips = sorted(args.clips.glob("*.flac"))[:4]
    for run in report["train"]:
        gpu = scores_on(run["model"], "cuda" if report["cuda"] else "cpu", clips)
        cpu = scores_on(run["model"], "cpu", clips)
        run["max_abs_diff_gpu_vs_cpu"] = max(
            abs(a - b) for g, c in zip(gpu, cpu, strict=True) for a, b in zip(g, c, strict=True)
        )
    report["paper_shape"] = paper_shape(root, args.tokenizer, args.clips)
    report["precision"] = precision(encoder, llm, "cuda" if report["cuda"] else "cpu")
    report["batched"] = batched(
        encoder, llm, "cuda" if report["cuda"] else "cpu", sorted(args.clips.glob("*.flac"))[:8]
    )
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
