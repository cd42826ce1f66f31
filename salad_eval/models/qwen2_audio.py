"""Qwen2-Audio, an external speech LLM, scored by log-likelihood through the ``Model`` interface.

Each audio segment becomes ``<|audio_bos|><|AUDIO|>...<|audio_eos|>`` in the model's own format
(the processor expands the placeholder to one token per audio frame); the audio tower's outputs
replace the placeholders exactly as the model's forward does, and the merged context embeddings go
through the shared-context scorer, so the context runs once for all choices. Choices are tokenized
the lm-eval way against the prompt's final text segment.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from salad_eval.models.digest import weights_digest
from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.lm_scoring import choice_scores
from salad_eval.models.speech_lm import load_waveform
from salad_eval.models.text_lm import own_memory, torch_dtype
from salad_eval.prompt import Audio, ChoiceScore, Prompt, ScoringRequest, Text


class _TextView(nn.Module):
    """The decoder and LM head of Qwen2-Audio as a causal LM over ``inputs_embeds``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.language_model = model.model.language_model
        self.lm_head = model.lm_head

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    def forward(self, inputs_embeds, logits_to_keep: int = 0, **kwargs):
        out = self.language_model(inputs_embeds=inputs_embeds, **kwargs)
        hidden = out.last_hidden_state[:, -logits_to_keep:]
        out.logits = self.lm_head(hidden)
        return out


class Qwen2Audio:
    """``Qwen2AudioForConditionalGeneration`` + ``AutoProcessor``, by hub id or local path."""

    def __init__(
        self, name_or_path: str = "Qwen/Qwen2-Audio-7B", device: str = "cpu", dtype: str = "float32"
    ):
        from transformers import AutoProcessor, Qwen2AudioForConditionalGeneration

        from salad_eval.assets.resolve import resolve

        path = resolve(name_or_path)
        self.processor = AutoProcessor.from_pretrained(path)
        model = Qwen2AudioForConditionalGeneration.from_pretrained(path, dtype=torch_dtype(dtype))
        self.model = own_memory(model).to(device).eval()
        self.tokenizer = self.processor.tokenizer
        self.text_view = _TextView(self.model)

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def fingerprint(self) -> str:
        return (
            "qwen2-audio-"
            + weights_digest(self.model, extra=self.tokenizer.backend_tokenizer.to_str())[:32]
        )

    def tokenize(self, prompt: Prompt, choices: Sequence[str]) -> tuple[dict, list[list[int]]]:
        """Processor inputs of the context (audio expanded) and each choice's token ids."""
        audio_span = (
            f"{self.processor.audio_bos_token}{self.processor.audio_token}"
            f"{self.processor.audio_eos_token}"
        )
        texts = [seg.text if isinstance(seg, Text) else audio_span for seg in prompt]
        waves = [load_waveform(seg.path) for seg in prompt if isinstance(seg, Audio)]
        last = prompt[-1].text if isinstance(prompt[-1], Text) else ""
        context = last.rstrip()
        trailing = last[len(context) :]
        if isinstance(prompt[-1], Text):
            texts[-1] = context
        inputs = self.processor(
            text="".join(texts),
            audio=waves or None,
            sampling_rate=SAMPLE_RATE,
            return_tensors="pt",
        )
        n_context = len(self._ids(context))
        conts = [self._ids(context + trailing + choice)[n_context:] for choice in choices]
        return inputs, conts

    def context_embeds(self, inputs: dict) -> torch.Tensor:
        """(T, d) input embeddings with audio features in place of the audio tokens."""
        ids = inputs["input_ids"].to(self.model.device)
        embeds = self.text_view.get_input_embeddings()(ids)
        if "input_features" in inputs:
            audio = self._audio_features(inputs["input_features"], inputs["feature_attention_mask"])
            mask = (ids == self.model.config.audio_token_id)[..., None]
            embeds = embeds.masked_scatter(mask, audio.to(embeds.dtype))
        return embeds[0]

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        results = []
        with torch.inference_mode():
            for request in requests:
                inputs, conts = self.tokenize(request.prompt, request.choices)
                context = self.context_embeds(inputs)
                results.append(
                    choice_scores(self.text_view, context, conts, request.choices, batch_size)
                )
        return results

    def _audio_features(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Valid audio frames of every clip, concatenated: the model's own merge path."""
        from transformers.masking_utils import create_bidirectional_mask

        tower = self.model.model.audio_tower
        features = features.to(tower.device, tower.dtype)
        feat_lengths, output_lengths = tower._get_feat_extract_output_lengths(mask.sum(-1))
        frames = (features.shape[-1] - 2) // 2 + 1
        valid = torch.arange(frames)[None] < feat_lengths[:, None]
        attention = create_bidirectional_mask(
            config=tower.config,
            inputs_embeds=torch.zeros(features.shape[0], frames, 1, dtype=tower.dtype),
            attention_mask=valid.long(),
        )
        hidden = tower(features, attention_mask=attention).last_hidden_state
        projected = self.model.model.multi_modal_projector(hidden)
        keep = torch.arange(projected.shape[1])[None] < output_lengths[:, None]
        return projected[keep.to(projected.device)]

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []
