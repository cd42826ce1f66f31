"""The speech-LLM families salad scores: ``model_type`` -> adapter, and each one's text backbone.

``--model`` finds a family from the ``model_type`` in its ``config.json`` (``--model-type``
forces one). Each family knows the text LLMs its published checkpoints were trained from, so
``--text-model`` defaults to the right one; a local copy is recognised by its decoder's shape.

Other installed packages add families through the ``salad_eval.models`` entry-point group: each
entry point names a ``Family`` object (see the README, "Write your own adapter").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata

from rich.console import Console
from rich.table import Table

from salad_eval.errors import SaladError

ENTRY_POINT_GROUP = "salad_eval.models"


@dataclass(frozen=True)
class Backbone:
    """A published speech LLM and the text LLM it was trained from."""

    speech_model: str  # its hub id
    text_model: str | None  # the text LLM's hub id; None where its weights are not published
    source: str  # where the pairing is stated
    hidden_size: int  # the decoder's shape, to recognise a local copy
    num_layers: int


@dataclass(frozen=True)
class Family:
    """One family of speech LLMs behind one adapter class."""

    name: str
    model_types: tuple[str, ...]
    adapter: str  # "package.module:Class", a subclass of hf_audio.HFAudioLM or any Model
    backbones: tuple[Backbone, ...] = ()
    tested: bool = False  # a tiny random model of it passes tests/test_family_<name>.py

    def load_adapter(self) -> type:
        module, _, name = self.adapter.partition(":")
        return getattr(importlib.import_module(module), name)

    def text_backbone(self, name_or_path: str, text_config) -> Backbone | None:
        """The backbone of this hub id, else of a decoder of this shape (a local copy)."""
        for backbone in self.backbones:
            if backbone.speech_model.lower() == name_or_path.rstrip("/").lower():
                return backbone
        shape = (
            getattr(text_config, "hidden_size", None),
            getattr(text_config, "num_hidden_layers", None),
        )
        for backbone in self.backbones:
            if (backbone.hidden_size, backbone.num_layers) == shape:
                return backbone
        return None


_QWEN2_AUDIO = "Qwen2-Audio technical report, arXiv 2407.10759, (its LLM is Qwen-7B)"
_QWEN25_OMNI = "Qwen2.5-Omni technical report, arXiv 2503.20215 (Thinker initialised from Qwen2.5)"
_QWEN3_OMNI = "Qwen3-Omni technical report, arXiv 2509.17765 (Thinker initialised from Qwen3)"
_VOXTRAL = (
    "Voxtral technical report, arXiv 2507.13264 (Voxtral Mini is built on Ministral 3B, "
    "whose weights are not published)"
)
_VOXTRAL_SMALL = (
    "Voxtral technical report, arXiv 2507.13264 (Voxtral Small is built on Mistral Small 3.1 "
    "24B; its language model extends Mistral Small 3 2501, the nearest one published as a text "
    "LLM: 3.1 ships only as a vision-language model)"
)
_GRANITE_SPEECH = (
    "Granite-Speech report, arXiv 2505.08699 (3.3-2b/8b: granite-3.3-2b/8b-instruct "
    "aligned to speech)"
)
_PHI4_MM = (
    "Phi-4-Mini technical report, arXiv 2503.01743 (Phi-4-multimodal keeps Phi-4-Mini's "
    "language model frozen and adds modality LoRAs)"
)
_GEMMA3N = (
    "Gemma 3n model card, ai.google.dev/gemma/docs/gemma-3n (one model trained with its "
    "audio and vision encoders; no text-only release)"
)
_AUDIO_FLAMINGO3 = "Audio Flamingo 3 paper, arXiv 2507.08128 (its LLM is Qwen2.5-7B)"

FAMILIES: tuple[Family, ...] = (
    Family(
        "Qwen2-Audio",
        ("qwen2_audio",),
        "salad_eval.models.qwen2_audio:Qwen2Audio",
        (
            Backbone("Qwen/Qwen2-Audio-7B", "Qwen/Qwen-7B", _QWEN2_AUDIO, 4096, 32),
            Backbone("Qwen/Qwen2-Audio-7B-Instruct", "Qwen/Qwen-7B", _QWEN2_AUDIO, 4096, 32),
        ),
        tested=True,
    ),
    Family(
        "Qwen2.5-Omni",
        ("qwen2_5_omni", "qwen2_5_omni_thinker"),
        "salad_eval.models.qwen2_5_omni:Qwen25Omni",
        (
            Backbone("Qwen/Qwen2.5-Omni-7B", "Qwen/Qwen2.5-7B", _QWEN25_OMNI, 3584, 28),
            Backbone("Qwen/Qwen2.5-Omni-3B", "Qwen/Qwen2.5-3B", _QWEN25_OMNI, 2048, 36),
        ),
        tested=True,
    ),
    Family(
        "Qwen3-Omni",
        ("qwen3_omni_moe", "qwen3_omni_moe_thinker"),
        "salad_eval.models.qwen3_omni:Qwen3Omni",
        (
            Backbone(
                "Qwen/Qwen3-Omni-30B-A3B-Instruct", "Qwen/Qwen3-30B-A3B-Base", _QWEN3_OMNI, 2048, 48
            ),
            Backbone(
                "Qwen/Qwen3-Omni-30B-A3B-Thinking", "Qwen/Qwen3-30B-A3B-Base", _QWEN3_OMNI, 2048, 48
            ),
            Backbone(
                "Qwen/Qwen3-Omni-30B-A3B-Captioner",
                "Qwen/Qwen3-30B-A3B-Base",
                _QWEN3_OMNI,
                2048,
                48,
            ),
        ),
        tested=True,
    ),
    Family(
        "Voxtral",
        ("voxtral",),
        "salad_eval.models.voxtral:Voxtral",
        (
            Backbone("mistralai/Voxtral-Mini-3B-2507", None, _VOXTRAL, 3072, 30),
            Backbone(
                "mistralai/Voxtral-Small-24B-2507",
                "mistralai/Mistral-Small-24B-Base-2501",
                _VOXTRAL_SMALL,
                5120,
                40,
            ),
        ),
        tested=True,
    ),
    Family(
        "Granite-Speech",
        ("granite_speech",),
        "salad_eval.models.granite_speech:GraniteSpeech",
        (
            Backbone(
                "ibm-granite/granite-speech-3.3-2b",
                "ibm-granite/granite-3.3-2b-instruct",
                _GRANITE_SPEECH,
                2048,
                40,
            ),
            Backbone(
                "ibm-granite/granite-speech-3.3-8b",
                "ibm-granite/granite-3.3-8b-instruct",
                _GRANITE_SPEECH,
                4096,
                40,
            ),
        ),
        tested=True,
    ),
    Family(
        "Phi-4-multimodal",
        ("phi4_multimodal",),
        "salad_eval.models.phi4_multimodal:Phi4Multimodal",
        (
            Backbone(
                "microsoft/Phi-4-multimodal-instruct",
                "microsoft/Phi-4-mini-instruct",
                _PHI4_MM,
                3072,
                32,
            ),
        ),
        tested=True,
    ),
    Family(
        "Gemma-3n",
        ("gemma3n",),
        "salad_eval.models.gemma3n:Gemma3n",
        (
            Backbone("google/gemma-3n-E4B-it", None, _GEMMA3N, 2048, 35),
            Backbone("google/gemma-3n-E4B", None, _GEMMA3N, 2048, 35),
            Backbone("google/gemma-3n-E2B-it", None, _GEMMA3N, 2048, 30),
            Backbone("google/gemma-3n-E2B", None, _GEMMA3N, 2048, 30),
        ),
        tested=True,
    ),
    Family(
        "Audio Flamingo 3",
        ("audioflamingo3",),
        "salad_eval.models.audio_flamingo3:AudioFlamingo3",
        (Backbone("nvidia/audio-flamingo-3-hf", "Qwen/Qwen2.5-7B", _AUDIO_FLAMINGO3, 3584, 28),),
        tested=True,
    ),
)


def families() -> list[Family]:
    """The built-in families, then those installed packages register (entry points)."""
    found = list(FAMILIES)
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            family = entry.load()
        except Exception as error:  # a broken plugin must not hide the others
            raise SaladError(
                f"model plugin {entry.name!r} ({entry.value}) does not load: "
                f"{error}; fix or uninstall its package"
            ) from None
        if not isinstance(family, Family):
            raise SaladError(
                f"model plugin {entry.name!r} ({entry.value}) is not a "
                "salad_eval.models.registry.Family"
            )
        found.append(family)
    return found


def family_for(model_type: str) -> Family:
    """The family of a ``model_type``; a one-line error that lists them all otherwise."""
    for family in reversed(families()):  # a plugin may take over a built-in model_type
        if model_type in family.model_types:
            return family
    raise SaladError(
        f"model type {model_type!r} is not supported; supported families: "
        f"{supported()} (or install an adapter plugin, see the README)"
    )


def supported() -> str:
    """``Family (model_type, ...)`` for every family, on one line."""
    return "; ".join(f"{f.name} ({', '.join(f.model_types)})" for f in families())


def show_families(console=None) -> None:
    """``salad-eval models``: every family, its model types, published checkpoints with their
    text backbones (and where each pairing is stated), whether it is tested, where it comes from."""

    console = console or Console()
    table = Table(title="speech LLM families (--model finds them by config.json model_type)")
    for column in (
        "family",
        "model_type",
        "checkpoint -> text backbone",
        "source",
        "tested",
        "adapter",
    ):
        table.add_column(column, overflow="fold")
    for family in families():
        pairs = (
            "\n".join(
                f"{b.speech_model} -> {b.text_model or 'not published: --text-model'}"
                for b in family.backbones
            )
            or "-"
        )
        sources = "\n".join(dict.fromkeys(b.source for b in family.backbones)) or "-"
        table.add_row(
            family.name,
            ", ".join(family.model_types),
            pairs,
            sources,
            "yes" if family.tested else "no",
            family.adapter,
        )
    console.print(table)
