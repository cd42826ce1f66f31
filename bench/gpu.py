"""GPU check of the device paths: Stage I on CUDA (bf16 autocast, LoRA and full LLM), the
checkpoint loaded on CUDA, and its speech scores equal to the same checkpoint on the CPU.

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
    llm = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
    ))  # fmt: skip
    llm.save_pretrained(root / "llm")
    tokenizer.save_pretrained(root / "llm")
    whisper = WhisperModel(WhisperConfig(
        d_model=64, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=128, decoder_ffn_dim=128,
    ))  # fmt: skip
    whisper.save_pretrained(root / "encoder")
    WhisperFeatureExtractor().save_pretrained(root / "encoder")
    return str(root / "encoder"), str(root / "llm")


def manifest(clips: Path, root: Path) -> str:
    clips_ = sorted(clips.glob("*.flac"))
    rows = [{"audio": str(f.resolve()), "text": f.with_suffix(".txt").read_text().strip(),
             "document": f"d{i // 3}"} for i, f in enumerate(clips_)]  # fmt: skip
    path = root / "natural.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def train(root: Path, encoder: str, llm: str, natural: str, mode: str, context: str) -> dict:
    from salad_train.config import load_config
    from salad_train.stage1 import run_stage1

    out = root / f"run-{mode}"
    config = load_config("tiny", [
        f"model.encoder={encoder}", f"model.llm={llm}", f"model.llm_mode={mode}",
        f"model.encoder_context={context}", "model.adapter_width=64", "model.adapter_heads=2",
        f"data.natural=[{natural}]", "data.corpus=null", "data.tasks=[]", "data.replay_prob=0",
        "train.steps=8", "train.batch_size=4", "train.save_every=4", "optim.warmup_steps=2",
        "optim.llm_lr=1e-4", "loss.ctc_weight=0.5", "train.align_steps=10",
        "train.align_batch_size=4", f"train.out_dir={out}",
    ])  # fmt: skip
    started = time.perf_counter()
    model = run_stage1(config)
    rows = [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]
    align = [r["ctc_per_token"] for r in rows if "align_step" in r]
    rows = [r for r in rows if "loss" in r]
    return {"mode": mode, "seconds": round(time.perf_counter() - started, 1),
            "loss_first_last": [rows[0]["loss"], rows[-1]["loss"]],
            "ctc_first_last": [rows[0]["ctc"], rows[-1]["ctc"]],
            "align_ctc_first_last": [align[0], align[-1]],
            "finite": all(torch.isfinite(torch.tensor(r["loss"])) for r in rows),
            "model": str(model)}  # fmt: skip


def scores_on(model_dir: str, device: str, clips: list[Path]) -> list[list[float]]:
    from salad_eval.models.speech_lm import load_speech_lm
    from salad_eval.prompt import Audio, ScoringRequest, Text

    model = load_speech_lm(model_dir, device=device).eval()
    prompts = [(Text("Question: "), Audio(str(c), c.with_suffix(".txt").read_text()),
                Text("\nAnswer:")) for c in clips]  # fmt: skip
    requests = [ScoringRequest(p, (" yes", " no", " maybe")) for p in prompts]
    with torch.no_grad():
        return [[s.logprob for s in scores] for scores in model.score(requests)]


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
    report["train"] = [train(root, encoder, llm, natural, mode, context)
                       for mode, context in (("lora", "clip"), ("full", "window"))]  # fmt: skip
    clips = sorted(args.clips.glob("*.flac"))[:4]
    for run in report["train"]:
        gpu = scores_on(run["model"], "cuda" if report["cuda"] else "cpu", clips)
        cpu = scores_on(run["model"], "cpu", clips)
        run["max_abs_diff_gpu_vs_cpu"] = max(abs(a - b) for g, c in zip(gpu, cpu, strict=True)
                                             for a, b in zip(g, c, strict=True))  # fmt: skip
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
