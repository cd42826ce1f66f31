"""What defines a gap run: every option, recorded verbatim in the run's manifest."""

from __future__ import annotations

from dataclasses import dataclass, field

from salad_eval import corpus_divergence


@dataclass
class GapSetup:
    """Everything that defines a gap run (recorded verbatim in the manifest)."""

    tasks: list[str]
    voices: str = "default"
    limit: int | None = None
    shots: int = 0  # spoken few-shot examples per item (with shot_budget: at most this many)
    shot_budget: int | None = None  # tokens of text the context may take (tasks.load_items)
    seed: int = 1234
    synth_seed: int = 0  # the audio: the same seed, the same clips
    batch_size: int | str = 8  # rows per forward pass, or "auto"
    workers: int = 1
    n_boot: int = 1000
    metric: str = "acc"  # the headline of summary, plots and verdict; results.json has both
    data_dir: str | None = None
    exclude_items: str | None = None  # a JSON file {"exclude": {task: [item ids]}} (decontam)
    controls: bool = True
    divergences: bool = True  # corpus F and M, and the per-item answer KL diagnostic
    divergence_corpus: str | None = None  # None: the embedded held-out prose (corpus_divergence)
    divergence_docs: int = corpus_divergence.DEFAULT_DOCS
    divergence_voice: str = corpus_divergence.DEFAULT_VOICE
    divergence_span_words: list[int] = field(
        default_factory=lambda: list(corpus_divergence.SPAN_WORDS)
    )  # (text, speech) words per span
    dtype: str = "float32"  # the weights of every model (checked in run_gap)
    prompt_format: str = "raw"  # or "chat": every model's chat template (salad_eval.chat)
    log_samples: bool = False  # also lm-eval style samples_<task>_<date>.jsonl
    names: dict[str, str] = field(default_factory=dict)  # model names as the user gave them
