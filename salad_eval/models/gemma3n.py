"""Gemma-3n (``Gemma3nForConditionalGeneration``) on the generic HF speech-LLM base.

A clip is ``\\n\\n<start_of_audio>`` + ``audio_soft_tokens_per_image`` (188) ``<audio_soft_token>``
+ ``<end_of_audio>\\n\\n``, as its processor writes it. The audio path is the model's own forward
up to the decoder: USM-style features, the conformer encoder, the audio embedder, the clip's
frames padded to 188 with the embedding of the last audio token.

Gemma-3n's decoder reads two inputs per position: the embedding and a per-layer input looked up
from the token id itself (``embed_tokens_per_layer``; audio and vision positions read id 0), so
an ``inputs_embeds`` path alone would lose the token identity. Here each position's input is
both, concatenated (``(T, hidden + layers * per_layer)``), taken from the model's own forward,
and split again before the decoder; so the context still runs once into the cache and the
choices run batched on it (tested equal to the model's own forward per choice). The LM head
keeps the model's final logit soft-capping.

The vision tower is not built: it needs timm (which needs a torchvision that does not load
beside the CPU torch the project pins) and never runs on audio; its weights are skipped on load.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from transformers import AutoModel, Gemma3nForConditionalGeneration
from transformers.models.gemma3n.modeling_gemma3n import (
    Gemma3nModel,
    Gemma3nMultimodalEmbedder,
    Gemma3nPreTrainedModel,
)

from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.hf_audio import HFAudioLM


class _AudioGemma3nModel(Gemma3nModel):
    """``Gemma3nModel`` without its vision tower (its ``__init__`` less that one line)."""

    def __init__(self, config) -> None:
        Gemma3nPreTrainedModel.__init__(self, config)
        self.vision_tower = None
        self.vocab_size = config.text_config.vocab_size
        self.language_model = AutoModel.from_config(config.text_config)
        self.vocab_size_per_layer_input = config.text_config.vocab_size_per_layer_input
        self.audio_tower = AutoModel.from_config(config.audio_config)
        self.embed_vision = Gemma3nMultimodalEmbedder(config.vision_config, config.text_config)
        self.embed_audio = Gemma3nMultimodalEmbedder(config.audio_config, config.text_config)
        self.post_init()


class AudioGemma3n(Gemma3nForConditionalGeneration):
    """``Gemma3nForConditionalGeneration`` for audio and text; loads any Gemma-3n checkpoint."""

    _keys_to_ignore_on_load_unexpected = [r"model\.vision_tower\."]

    def __init__(self, config) -> None:
        Gemma3nPreTrainedModel.__init__(self, config)
        self.model = _AudioGemma3nModel(config)
        self.lm_head = nn.Linear(
            config.text_config.hidden_size, config.text_config.vocab_size, bias=False
        )
        self.post_init()


class _Captured(Exception):
    pass


def decoder_inputs(model: AudioGemma3n, **inputs) -> torch.Tensor:
    """(B, T, hidden + layers * per_layer): what the model's own forward hands its decoder."""
    got = {}

    def stop(module, args, kwargs):
        got.update(kwargs)
        raise _Captured

    hook = model.model.language_model.register_forward_pre_hook(stop, with_kwargs=True)
    try:
        model.model(**inputs)
    except _Captured:
        pass
    finally:
        hook.remove()
    embeds = got["inputs_embeds"]  # a device map may have put the two lookups apart
    return torch.cat([embeds, got["per_layer_inputs"].flatten(-2).to(embeds.device)], dim=-1)


class _Inputs(nn.Module):
    """Token ids -> both decoder inputs, packed, by the model's own forward."""

    def __init__(self, model: AudioGemma3n) -> None:
        super().__init__()
        self.model = model

    @property
    def weight(self) -> torch.Tensor:  # where and in what dtype the scorers put inputs
        return self.model.model.language_model.embed_tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        batched = ids if ids.ndim == 2 else ids[None]
        packed = decoder_inputs(self.model, input_ids=batched)
        return packed if ids.ndim == 2 else packed[0]


class _PackedDecoder(nn.Module):
    """The decoder over packed inputs: split them, then run it with both."""

    def __init__(self, model: AudioGemma3n) -> None:
        super().__init__()
        self.decoder = model.model.language_model
        self.inputs = _Inputs(model)
        self.hidden = self.decoder.config.hidden_size
        self.layers = self.decoder.config.num_hidden_layers

    @property
    def config(self):
        return self.decoder.config

    def get_input_embeddings(self) -> nn.Module:
        return self.inputs

    def forward(self, inputs_embeds: torch.Tensor, **kwargs):
        embeds, per_layer = inputs_embeds.split(
            [self.hidden, inputs_embeds.shape[-1] - self.hidden], dim=-1
        )
        per_layer = per_layer.unflatten(-1, (self.layers, -1))
        return self.decoder(inputs_embeds=embeds, per_layer_inputs=per_layer, **kwargs)


class _SoftCappedHead(nn.Module):
    """The LM head and the final logit soft-capping of the model's own forward."""

    def __init__(self, model: AudioGemma3n) -> None:
        super().__init__()
        self.lm_head = model.lm_head
        self.cap = model.config.get_text_config().final_logit_softcapping

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        return logits if self.cap is None else torch.tanh(logits / self.cap) * self.cap


class Gemma3n(HFAudioLM):
    """``Gemma3nForConditionalGeneration`` (no vision tower) + tokenizer + feature extractor."""

    family = "gemma-3n"
    audio_close = ("<end_of_audio>",)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        newlines = self._ids("\n\n")  # the processor's span: "\n\n<boa>...<eoa>\n\n"
        self._open = newlines + self._token_ids(("<start_of_audio>",))
        self._close = self._close + newlines

    def load_model(self, path: str, dtype: torch.dtype) -> nn.Module:
        return self.placement.load(AudioGemma3n, path, dtype=dtype)

    def decoder_parts(self) -> tuple[nn.Module, nn.Module]:
        return _PackedDecoder(self.model), _SoftCappedHead(self.model)

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        config = self.model.config
        span = torch.full(
            (1, config.audio_soft_tokens_per_image), config.audio_token_id, device=self.input_device
        )
        out = []
        for wave in waves:
            inputs = self.feature_extractor(wave, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            packed = decoder_inputs(
                self.model,
                input_ids=span,
                input_features=inputs["input_features"].to(self.input_device, self.model.dtype),
                input_features_mask=inputs["input_features_mask"].to(self.input_device),
            )
            out.append(packed[0])
        return out
