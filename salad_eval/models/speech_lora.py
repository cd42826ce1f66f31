"""Families whose checkpoint carries a LoRA over the decoder that is on only for spoken input.

Granite-Speech and Phi-4-multimodal train a LoRA with the audio path and switch it off for text
(Granite's own ``generate`` does so; Phi-4's model card sets its speech LoRA for audio): a spoken
prompt is scored with it, a text-only prompt (``text@speech``) without it, so the untouched
decoder still gives ``text@speech == text@base``. The switch is per request and covers the whole
sequence, context and choices alike, so the context cache is shared as for any family; requests
are scored in two groups by modality, in order.

The LoRA is loaded with peft itself: transformers' own adapter loading wants a newer peft than
the registry has (>= 0.22), so ``from_pretrained`` is told to look for no adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from salad_eval.errors import SaladError
from salad_eval.models.placement import refuse_offloaded
from salad_eval.prompt import Audio, ChoiceScore, Prompt, ScoringRequest

NO_ADAPTER = {"adapter_kwargs": {"subfolder": "no-adapter-here"}}  # from_pretrained: load no LoRA


def load_lora(model: nn.Module, path: str, subfolder: str = "") -> None:
    """Add the LoRA saved in ``path`` (/``subfolder``: adapter_config.json and
    adapter_model.safetensors, a local directory or a hub id) to ``model``'s modules."""
    from peft import PeftConfig, inject_adapter_in_model, set_peft_model_state_dict  # noqa: PLC0415 - deferred: heavy peft, loaded on this path only
    from safetensors.torch import load_file  # noqa: PLC0415 - deferred: heavy safetensors, loaded on this path only

    config = PeftConfig.from_pretrained(path, subfolder=subfolder or None)
    local = Path(path, subfolder, "adapter_model.safetensors")
    if not local.is_file():
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - deferred: heavy huggingface_hub, loaded on this path only

        local = hf_hub_download(path, "adapter_model.safetensors", subfolder=subfolder or None)
    weights = {k.removeprefix("base_model.model."): v for k, v in load_file(str(local)).items()}
    refuse_offloaded(model, f"{path}: the speech LoRA")
    inject_adapter_in_model(config, model)
    loaded = set_peft_model_state_dict(model, weights)
    if loaded.unexpected_keys:  # else the LoRA would stay at its no-op initialisation
        raise SaladError(
            f"{path}: LoRA weights such as {loaded.unexpected_keys[0]!r} match no "
            "module of the model; is it this family's checkpoint?"
        )


def set_lora(model: nn.Module, on: bool) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer  # noqa: PLC0415 - deferred: heavy peft, loaded on this path only

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(on)


class SpeechLoRA:
    """Mixin before ``HFAudioLM``: ``score`` with the LoRA on for spoken prompts only."""

    def use_lora_for(self, prompt: Prompt) -> None:
        """The LoRA on for a spoken prompt, off for a text-only one."""
        set_lora(self.model, _spoken(prompt))

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        results: list = [None] * len(requests)
        for spoken in (False, True):
            group = [i for i, r in enumerate(requests) if _spoken(r.prompt) == spoken]
            if group:
                self.use_lora_for(requests[group[0]].prompt)
                rows = super().score([requests[i] for i in group], batch_size)
                for i, row in zip(group, rows, strict=True):
                    results[i] = row
        return results


def _spoken(prompt: Prompt) -> bool:
    return any(isinstance(segment, Audio) for segment in prompt)
