"""Tiny random models of the paper's architectures, built offline from the real config classes.

The code that runs at scale (a bf16 Qwen2.5 LLM trained in full, a Mimi encoder) is tested and
benchmarked on these: same classes, same code paths, a few thousand parameters. The tokenizer is
a real one (the embedded SmolLM2's by default), so text goes through the real tokenization.
"""

from __future__ import annotations

from pathlib import Path

import torch


def save_tiny_qwen2(
    out: Path, tokenizer_dir: str | Path, hidden_size: int = 32, dtype: torch.dtype = torch.bfloat16
) -> Path:
    """A 2-layer random Qwen2 saved in ``dtype`` (bf16, as Qwen2.5 checkpoints ship) to ``out``."""
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    Qwen2ForCausalLM(config).to(dtype).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_mimi(out: Path) -> Path:
    """A 1-layer random Mimi (the paper's 12.5 Hz speech tokenizer) saved to ``out``."""
    from transformers import MimiConfig, MimiModel  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    torch.manual_seed(0)
    MimiModel(
        MimiConfig(
            hidden_size=32,
            num_filters=4,
            codebook_size=64,
            codebook_dim=32,
            num_quantizers=2,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=64,
            upsample_groups=32,
            vector_quantization_hidden_dimension=32,
        )
    ).save_pretrained(out)
    return out
