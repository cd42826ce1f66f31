"""Tiny random speech LLMs of the families transformers implements natively, built offline.

Each builder writes a hub-style directory (config, random weights, a byte-level BPE tokenizer
trained here on one line of text, the family's own feature extractor config, and any LoRA the
family ships) that the family's adapter loads by path. Tests then run the real model classes and
the real audio path on CPU in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from salad_eval.models.gemma3n import AudioGemma3n

CORPUS = "The quick brown fox jumps over the lazy dog. Question: what is it? Answer: yes no maybe"


def tiny_bpe_tokenizer(specials: list[str], appended: tuple[str, ...] = (), **named):
    """A byte-level BPE tokenizer trained on ``CORPUS``; ``specials`` get the first ids and
    ``appended`` the last ones, in order (for families whose audio token ids lie past the text
    vocabulary). ``named`` goes to ``PreTrainedTokenizerFast`` (eos, pad, extra special tokens)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: PLC0415 - deferred: heavy tokenizers, loaded on this path only
    from transformers import PreTrainedTokenizerFast  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", *specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    bpe.train_from_iterator([CORPUS] * 10, trainer)
    bpe.add_special_tokens([AddedToken(token, special=True) for token in appended])
    return PreTrainedTokenizerFast(tokenizer_object=bpe, unk_token="<unk>", **named)


def _lm(vocab_size: int, **extra) -> dict:
    """A 2-layer decoder of width 32: the text config every tiny family shares."""
    return dict(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        **extra,
    )


def _save_random_lora(model, out: Path, targets: str) -> None:
    """A random LoRA (B not zero, so it moves the scores) on the modules ``targets`` matches,
    added to ``model`` and saved as peft saves one."""
    from peft import LoraConfig, get_peft_model_state_dict, inject_adapter_in_model  # noqa: PLC0415 - deferred: heavy peft, loaded on this path only
    from safetensors.torch import save_file  # noqa: PLC0415 - deferred: heavy safetensors, loaded on this path only

    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    inject_adapter_in_model(config, model)
    out.mkdir(parents=True, exist_ok=True)
    save_file(get_peft_model_state_dict(model), out / "adapter_model.safetensors")
    config.save_pretrained(out)


def save_tiny_audio_flamingo3(out: Path) -> Path:
    """Audio Flamingo 3: Whisper-style encoder (128 mels), MLP projector, Qwen2 decoder."""
    from transformers import (  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only
        AudioFlamingo3Config,
        AudioFlamingo3ForConditionalGeneration,
        AudioFlamingo3Processor,
        WhisperFeatureExtractor,
    )

    tokenizer = tiny_bpe_tokenizer(
        ["<|endoftext|>", "<sound>"], eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )
    config = AudioFlamingo3Config(
        audio_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            num_mel_bins=128,
        ),
        text_config=dict(model_type="qwen2", **_lm(len(tokenizer))),
        audio_token_id=tokenizer.convert_tokens_to_ids("<sound>"),
    )
    torch.manual_seed(0)
    AudioFlamingo3ForConditionalGeneration(config).save_pretrained(out)
    AudioFlamingo3Processor(WhisperFeatureExtractor(feature_size=128), tokenizer).save_pretrained(
        out
    )
    return out


def save_tiny_granite_speech(out: Path) -> Path:
    """Granite-Speech: conformer CTC encoder, windowed Q-Former projector, Granite decoder, and
    the LoRA that the family enables only when audio is present.

    ``GraniteSpeechFeatureExtractor`` needs torchaudio to exist (which does not load beside CPU
    torch here), so its config is written as the hub's checkpoints carry it."""
    from transformers import GraniteSpeechConfig, GraniteSpeechForConditionalGeneration  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    tokenizer = tiny_bpe_tokenizer(
        ["<|end_of_text|>", "<|audio|>"],
        eos_token="<|end_of_text|>",
        pad_token="<|end_of_text|>",
        extra_special_tokens={"audio_token": "<|audio|>"},
    )
    config = GraniteSpeechConfig(
        encoder_config=dict(
            input_dim=160,
            num_layers=2,
            hidden_dim=32,
            feedforward_mult=2,
            num_heads=2,
            output_dim=8,
            context_size=20,
            max_pos_emb=32,
            conv_kernel_size=3,
        ),
        projector_config=dict(
            model_type="blip_2_qformer",
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            encoder_hidden_size=32,
            cross_attention_frequency=1,
        ),
        text_config=dict(
            model_type="granite",
            **_lm(len(tokenizer)),
            tie_word_embeddings=True,
            logits_scaling=4.0,  # not 1, as in Granite text configs
        ),
        audio_token_index=tokenizer.convert_tokens_to_ids("<|audio|>"),
        has_lora_adapter=True,
    )
    torch.manual_seed(0)
    model = GraniteSpeechForConditionalGeneration(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _save_random_lora(model, out, r"model\.language_model\.layers\.\d+\.self_attn\.(q|v)_proj")
    (out / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "feature_extractor_type": "GraniteSpeechFeatureExtractor",
                "processor_class": "GraniteSpeechProcessor",
                "melspec_kwargs": {
                    "sample_rate": 16000,
                    "n_fft": 512,
                    "win_length": 400,
                    "hop_length": 160,
                    "n_mels": 80,
                },
                "projector_window_size": 15,
                "projector_downsample_rate": 5,
                "sampling_rate": 16000,
            },
            indent=2,
        )
    )
    return out


def save_tiny_phi4_multimodal(out: Path) -> Path:
    """Phi-4-multimodal: conformer audio encoder, speech projector, Phi-3-style decoder, and
    its speech LoRA in ``speech-lora/`` (loaded as the native checkpoints are)."""
    from transformers import (  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only
        Phi4MultimodalConfig,
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalForCausalLM,
    )

    image, audio = "<|endoftext10|>", "<|endoftext11|>"
    tokenizer = tiny_bpe_tokenizer(
        ["<|endoftext|>", image, audio],
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": image, "audio_token": audio},
    )
    eos = tokenizer.eos_token_id
    config = Phi4MultimodalConfig(
        **_lm(len(tokenizer)),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            crop_size=28,
            image_token_id=tokenizer.convert_tokens_to_ids(image),
        ),
        audio_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_blocks=1,
            num_attention_heads=2,
            ext_pw_out_channel=32,
            depthwise_separable_out_channel=32,
            nemo_conv_channels=32,
            bias_max_distance=50,
            audio_token_id=tokenizer.convert_tokens_to_ids(audio),
        ),
    )
    torch.manual_seed(0)
    model = Phi4MultimodalForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    Phi4MultimodalFeatureExtractor().save_pretrained(out)
    _save_random_lora(model, out / "speech-lora", r"model\.layers\.\d+\.self_attn\.(qkv|o)_proj")
    return out


def save_tiny_gemma3n(out: Path) -> Path:
    """Gemma-3n: USM-style conformer audio encoder, per-layer inputs, AltUp, LAuReL, KV sharing
    and sliding-window layers, at 4 layers (a 64-token window, so contexts outrun it)."""
    from transformers import Gemma3nAudioFeatureExtractor, Gemma3nConfig  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    # Gemma-3n's id layout: text, then 128 vision ids, then 128 audio ids (here 8 and 8)
    vision = ["<end_of_image>", "<image_soft_token>", *(f"<vision_{i}>" for i in range(6))]
    audio = ["<end_of_audio>", "<audio_soft_token>", *(f"<audio_{i}>" for i in range(6))]
    tokenizer = tiny_bpe_tokenizer(
        ["<pad>", "<eos>", "<bos>", "<start_of_image>", "<start_of_audio>"],
        (*vision, *audio),
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        extra_special_tokens={
            "image_token": "<image_soft_token>",
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "audio_token": "<audio_soft_token>",
            "boa_token": "<start_of_audio>",
            "eoa_token": "<end_of_audio>",
        },
    )
    ids = tokenizer.convert_tokens_to_ids
    n_text = ids(vision[0])
    config = Gemma3nConfig(
        text_config=dict(
            **_lm(len(tokenizer)) | dict(num_hidden_layers=4),
            head_dim=16,
            vocab_size_per_layer_input=n_text,
            hidden_size_per_layer_input=8,
            altup_num_inputs=2,
            laurel_rank=4,
            num_kv_shared_layers=2,
            sliding_window=64,
            layer_types=["sliding_attention", "full_attention"] * 2,
            activation_sparsity_pattern=[0.95, 0.0, 0.0, 0.0],
            pad_token_id=ids("<pad>"),
            eos_token_id=ids("<eos>"),
            bos_token_id=ids("<bos>"),
        ),
        vision_config=dict(hidden_size=16, vocab_size=8, vocab_offset=n_text),
        audio_config=dict(
            hidden_size=32,
            vocab_size=8,
            vocab_offset=n_text + 8,
            conf_num_attention_heads=2,
            conf_num_hidden_layers=1,
            sscp_conv_channel_size=(8, 4),
        ),
        boi_token_id=ids("<start_of_image>"),
        eoi_token_id=ids(vision[0]),
        image_token_id=ids(vision[1]),
        boa_token_id=ids("<start_of_audio>"),
        eoa_token_id=ids(audio[0]),
        audio_token_id=ids(audio[1]),
    )
    torch.manual_seed(0)
    model = AudioGemma3n(config)
    with torch.no_grad():  # constant-initialised scales drawn as a trained model has them:
        for param in model.parameters():  # AltUp's output scale starts at 0, muting the
            if param.numel() > 1 and param.std() == 0:  # per-layer inputs
                param.add_(0.5 * torch.randn_like(param))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    Gemma3nAudioFeatureExtractor().save_pretrained(out)
    return out
