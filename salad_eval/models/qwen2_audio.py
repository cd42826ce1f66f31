"""Qwen2-Audio (``Qwen2AudioForConditionalGeneration``) on the generic HF speech-LLM base.

A clip is ``<|audio_bos|>`` + one ``<|AUDIO|>`` per audio frame + ``<|audio_eos|>``, as its
processor writes it. The audio path is the model's own: Whisper features padded to 30 s, the
encoder attending only to the clip's frames, the projector, then the clip's valid frames.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.hf_audio import HFAudioLM
from salad_eval.models.placement import input_device


class Qwen2Audio(HFAudioLM):
    """``Qwen2AudioForConditionalGeneration`` + its tokenizer and feature extractor."""

    family = "qwen2-audio"
    model_class = "Qwen2AudioForConditionalGeneration"
    audio_open = ("<|audio_bos|>",)
    audio_close = ("<|audio_eos|>",)

    def __init__(
        self,
        name_or_path: str = "Qwen/Qwen2-Audio-7B",
        device: str = "cpu",
        dtype: str = "float32",
        chat_template: bool = False,
        device_map: str | dict | None = None,
        max_memory: dict[int | str, int] | None = None,
    ):
        super().__init__(
            name_or_path,
            device=device,
            dtype=dtype,
            chat_template=chat_template,
            device_map=device_map,
            max_memory=max_memory,
        )

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Valid projected frames per clip: the model's own merge path (``padding="max_length"``
        as its processor pads, the encoder masked to the clip's frames)."""
        from transformers.masking_utils import create_bidirectional_mask  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        inputs = self.feature_extractor(
            list(waves),
            sampling_rate=SAMPLE_RATE,
            return_attention_mask=True,
            padding="max_length",
            return_tensors="pt",
        )
        tower = self.model.model.audio_tower
        device = input_device(tower)  # not tower.device: under a device map it may be offloaded
        features = inputs["input_features"].to(device, tower.dtype)
        mask = inputs["attention_mask"]
        feat_lengths, output_lengths = tower._get_feat_extract_output_lengths(mask.sum(-1))
        frames = (features.shape[-1] - 2) // 2 + 1
        valid = torch.arange(frames, device=device)[None] < feat_lengths[:, None].to(device)
        attention = create_bidirectional_mask(
            config=tower.config,
            inputs_embeds=torch.zeros(features.shape[0], frames, 1, dtype=tower.dtype),
            attention_mask=valid.long(),
        )
        hidden = tower(features, attention_mask=attention).last_hidden_state
        projected = self.model.model.multi_modal_projector(hidden)
        return [projected[i, : int(n)] for i, n in enumerate(output_lengths)]
