"""Model adapters behind the ``salad_eval.prompt.Model`` interface, and shared-context scoring.

Submodules load lazily, so ``import salad_eval.models.lm_scoring`` does not pull in Whisper.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from salad_eval.models.cascade import Cascade
    from salad_eval.models.hf_audio import HFAudioLM
    from salad_eval.models.lm_scoring import score_continuations
    from salad_eval.models.qwen2_audio import Qwen2Audio
    from salad_eval.models.speech_lm import SpeechLM
    from salad_eval.models.text_lm import TextLM

_HOMES = {
    "Cascade": "salad_eval.models.cascade",
    "HFAudioLM": "salad_eval.models.hf_audio",
    "TextLM": "salad_eval.models.text_lm",
    "Qwen2Audio": "salad_eval.models.qwen2_audio",
    "SpeechLM": "salad_eval.models.speech_lm",
    "score_continuations": "salad_eval.models.lm_scoring",
}
__all__ = ["Cascade", "HFAudioLM", "Qwen2Audio", "SpeechLM", "TextLM", "score_continuations"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'salad_eval.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_HOMES[name]), name)
