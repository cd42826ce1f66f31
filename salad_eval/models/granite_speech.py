"""Granite-Speech (``GraniteSpeechForConditionalGeneration``) on the generic HF speech-LLM base.

A clip is one ``<|audio|>`` per projector output and nothing around it, as its processor writes
it. The audio path is the model's own: log-mel features (80 mels, stacked in pairs), the
conformer encoder, the windowed Q-Former projector (3 outputs per 15 encoder frames), then the
clip's valid outputs. Its LoRA is on for spoken prompts only (``speech_lora``).

The log-mel features are computed here, not by ``GraniteSpeechFeatureExtractor``: that class
needs torchaudio, whose wheels do not load beside the CPU torch the project pins. ``LogMel``
follows it step by step (torchaudio's ``MelSpectrogram`` is an STFT with a periodic Hann window,
power 2, and an HTK mel bank without normalisation; ``transformers.audio_utils`` builds the
same bank), reading the same ``preprocessor_config.json``.

The logits are divided by the Granite decoder's ``logits_scaling`` (a muP multiplier of the
Granite text configs), as ``GraniteForCausalLM`` divides them and as this model's forward did
while its decoder was a ``GraniteForCausalLM``; the locked transformers' forward applies the bare
LM head instead, which would score speech and text at another temperature than the text LLM.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from salad_eval.models.hf_audio import HFAudioLM
from salad_eval.models.speech_lora import NO_ADAPTER, SpeechLoRA, load_lora


class LogMel:
    """``GraniteSpeechFeatureExtractor`` for one clip, without torchaudio."""

    def __init__(
        self,
        melspec_kwargs: dict,
        projector_window_size: int = 15,
        projector_downsample_rate: int = 5,
    ) -> None:
        from transformers.audio_utils import mel_filter_bank  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        self.melspec_kwargs = dict(melspec_kwargs)
        self.projector_window_size = projector_window_size
        self.projector_downsample_rate = projector_downsample_rate
        rate, n_fft = melspec_kwargs["sample_rate"], melspec_kwargs["n_fft"]
        self.mel_bank = torch.from_numpy(
            mel_filter_bank(
                num_frequency_bins=n_fft // 2 + 1,
                num_mel_filters=melspec_kwargs["n_mels"],
                min_frequency=0.0,
                max_frequency=rate / 2,
                sampling_rate=rate,
                norm=None,
                mel_scale="htk",
            )
        ).float()

    @classmethod
    def from_pretrained(cls, path: str) -> LogMel:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - deferred: heavy huggingface_hub, loaded on this path only

        local = Path(path) / "preprocessor_config.json"
        file = local if local.is_file() else hf_hub_download(path, "preprocessor_config.json")
        config = json.loads(Path(file).read_text())
        melspec = {
            "sample_rate": 16000,
            "n_fft": 512,
            "win_length": 400,
            "hop_length": 160,
            "n_mels": 80,
            **config.get("melspec_kwargs", {}),
        }
        return cls(
            melspec,
            config.get("projector_window_size", 15),
            config.get("projector_downsample_rate", 5),
        )

    def to_dict(self) -> dict:
        return {
            "melspec_kwargs": self.melspec_kwargs,
            "projector_window_size": self.projector_window_size,
            "projector_downsample_rate": self.projector_downsample_rate,
        }

    def __call__(self, wave: np.ndarray) -> tuple[torch.Tensor, int]:
        """(1, frames, 2 * n_mels) features of one clip and its number of projector outputs."""
        kw = self.melspec_kwargs
        audio = torch.as_tensor(wave, dtype=torch.float32)
        spec = (
            torch.stft(
                audio,
                n_fft=kw["n_fft"],
                hop_length=kw["hop_length"],
                win_length=kw["win_length"],
                window=torch.hann_window(kw["win_length"]),
                center=True,
                pad_mode="reflect",
                return_complex=True,
            ).abs()
            ** 2
        )
        logmel = (spec.T @ self.mel_bank).clip_(min=1e-10).log10_()
        logmel = torch.maximum(logmel, logmel.max() - 8.0).div_(4).add_(1)
        if logmel.shape[0] % 2 == 1:
            logmel = logmel[:-1]
        features = logmel.reshape(1, -1, 2 * logmel.shape[-1])
        encoder_frames = (len(wave) // kw["hop_length"] + 1) // 2
        blocks = math.ceil(encoder_frames / self.projector_window_size)
        return features, blocks * (self.projector_window_size // self.projector_downsample_rate)


class GraniteSpeech(SpeechLoRA, HFAudioLM):
    """``GraniteSpeechForConditionalGeneration`` + the LoRA beside it + tokenizer + log-mel."""

    family = "granite-speech"
    model_class = "GraniteSpeechForConditionalGeneration"

    def load_model(self, path: str, dtype: torch.dtype) -> nn.Module:
        from transformers import GraniteSpeechForConditionalGeneration  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        model = self.placement.load(
            GraniteSpeechForConditionalGeneration, path, dtype=dtype, **NO_ADAPTER
        )
        if model.config.has_lora_adapter:
            load_lora(model, path)
        return model

    def decoder_parts(self) -> tuple[nn.Module, nn.Module]:
        return self.model.model.language_model, _ScaledHead(self.model)

    def load_feature_extractor(self, path: str) -> LogMel:
        return LogMel.from_pretrained(path)

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        out = []
        for wave in waves:
            features, n_outputs = self.feature_extractor(wave)
            features = features.to(self.input_device, self.model.dtype)
            out.append(self.model.get_audio_features(features).pooler_output[0, :n_outputs])
        return out


class _ScaledHead(nn.Module):
    """The LM head, then ``/ logits_scaling`` as ``GraniteForCausalLM`` applies it."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.lm_head = model.lm_head
        self.scaling = model.config.text_config.logits_scaling

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden) / self.scaling
