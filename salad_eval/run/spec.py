"""What defines a gap run: every option, declared once, recorded verbatim in the run's manifest.

``RunSpec`` holds the measurement: which items (tasks, limit, shots, exclusions), how they are
spoken (voices, seeds), which companion models score them (``text_model``, ``asr``, ``dtype``,
``chat_template``) and how they are summarized (metric, bootstrap, controls, divergences). It is
the manifest's ``setup``, so two runs with equal specs (and models) give the same figures.
``CallOptions`` holds what one call needs besides: the speech model and how to find and load it
(``model``, ``model_type``, ``device``, ``device_map``, ``max_memory``, ``include_path``) and
where to write (``out``); they are not part of the measurement (the manifest records the models
by fingerprint, and where a device map put them).

Everything else is built from these fields (``salad_eval.options.option``): ``salad-eval gap``'s
options (``salad_eval.cli``), ``salad_eval.evaluate()``'s keywords and checks, and salad-train's
``run:`` section (``salad_train.config.RunConfig``: RunSpec's options and defaults, plus
``out_dir``), which the loop's gap reports run with. A new gap option is one field here.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from salad_eval.errors import SaladError
from salad_eval.options import check_value, declared, option, option_fields, typed
from salad_eval.prompt import Decoding

DTYPES = ("float32", "bfloat16", "float16")
ANSWERS = ("loglik", "generate", "both")
DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")  # accelerate's strategies
MEMORY_EXAMPLE = "0=20GiB,1=20GiB,cpu=60GiB"
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def cli_name(name: str) -> str:
    """A field as the command line spells it: ``shot_budget`` -> ``--shot-budget``."""
    return "--" + name.replace("_", "-")


def checked_values(options, spell: Callable[[str], str]) -> dict:
    """Each declared option of a dataclass instance, typed and in its range (one-line error)."""
    values = {}
    for f in option_fields(type(options)):
        name = spell(f.name)
        value = typed(getattr(options, f.name), f.type, name)
        check_value(value, declared(f), name, f"{name} {value!r}")
        values[f.name] = value
    return values


@dataclass
class CallOptions:
    """How one call finds and loads the speech model, and where it writes (not recorded)."""

    model: str = option(
        help="A SALAD checkpoint dir, or a speech LLM hub id/path (families: `salad-eval models`)."
    )
    model_type: str | None = option(None, help="Force the speech LLM's family by model_type.")
    device: str = option("cpu", help="torch device, e.g. cuda.")
    device_map: str | None = option(
        None,
        choices=DEVICE_MAPS,
        help="Spread the speech and text LLMs over the GPUs, then the CPU, then disk "
        "(accelerate's big-model loading, for models larger than one GPU; scores unchanged); "
        "--device holds the rest.",
    )
    max_memory: str | None = option(
        None,
        metavar="DEVICE=SIZE,...",
        help=f"With --device-map: the most each device holds, e.g. {MEMORY_EXAMPLE} (GPUs by "
        "index; what does not fit goes to disk).",
    )
    out: str | None = option(None, help="Run directory (default reports/<model>-<tasks>).")
    embed_audio: bool = option(
        False, help="Put the clips inside report.html (one file) instead of audio/ beside it."
    )
    include_path: list[str] = option(
        [],
        repeat=True,
        metavar="DIR",
        help="Add a folder of task YAMLs (repeatable; also $SALAD_INCLUDE_PATH).",
    )
    # models behind an endpoint: --model / --text-model openai-chat:<id> or
    # openai-completions:<id> (salad_eval.endpoint)
    base_url: list[str] = option(
        [],
        repeat=True,
        metavar="URL",
        help="The /v1 URL of the server of openai-chat:/openai-completions: models (repeatable: "
        "requests are spread over them).",
    )
    api_key_env: str | None = option(
        None,
        metavar="VAR",
        help="The environment variable holding the endpoint's API key (never the key itself).",
    )
    concurrency: int = option(8, min=1, help="Endpoint requests in flight at once.")
    request_timeout: float = option(
        120.0, above=0, metavar="SECONDS", help="Seconds before an endpoint request is retried."
    )
    prices: list[float] | None = option(
        None,
        min=0,
        pair=True,
        metavar="IN,OUT",
        help="Endpoint prices per million tokens in and out: the run reports its cost.",
    )
    max_retries: int = option(
        6,
        min=0,
        help="Retries of a failed endpoint request (429, 5xx, timeouts, bad JSON), with "
        "exponential backoff; one still failing is named and its item left out.",
    )

    def checked(self, spell: Callable[[str], str] = cli_name) -> CallOptions:
        """These options typed and in range, or a one-line ``SaladError`` (as ``RunSpec``)."""
        values = checked_values(self, spell)
        memory = parse_max_memory(values["max_memory"], spell("max_memory"))
        if memory is not None and values["device_map"] is None:
            raise SaladError(
                f"{spell('max_memory')} bounds the devices of a device map; add "
                f"{spell('device_map')} auto"
            )
        return dataclasses.replace(self, **values)

    @property
    def max_memory_bytes(self) -> dict[int | str, int] | None:
        """``max_memory`` as accelerate takes it: device (a GPU index, ``cpu``, ...) -> bytes."""
        return parse_max_memory(self.max_memory)


def parse_max_memory(text: str | None, name: str = "--max-memory") -> dict[int | str, int] | None:
    """``0=20GiB,1=20GiB,cpu=60GiB`` -> ``{0: 21474836480, 1: ..., "cpu": ...}``: a GPU by index
    (or ``cuda:N``), ``cpu``, ``mps`` or ``disk``, each with a size in bytes or with a unit (KB,
    MB, GB, TB by 1000; KiB, MiB, GiB, TiB by 1024). Bad syntax is a one-line ``SaladError``."""
    if text is None:
        return None
    memory: dict[int | str, int] = {}
    for pair in (p.strip() for p in text.split(",")):
        device, equals, size = (part.strip() for part in pair.partition("="))
        if not equals or not device or not size:
            raise SaladError(
                f"{name} {text!r}: {pair!r} is not DEVICE=SIZE; write e.g. {MEMORY_EXAMPLE}"
            )
        key: int | str = device.lower().removeprefix("cuda:")
        if key.isdigit():
            key = int(key)
        elif key not in ("cpu", "mps", "disk"):
            raise SaladError(
                f"{name} {text!r}: device {device!r} is not a GPU index (0, 1, ...), cpu, mps or "
                f"disk; write e.g. {MEMORY_EXAMPLE}"
            )
        found = _SIZE.fullmatch(size)
        if found is None:
            raise SaladError(
                f"{name} {text!r}: {size!r} is not a size such as 20GiB, 500MB or 1000000 (bytes)"
            )
        if key in memory:
            raise SaladError(f"{name} {text!r}: device {device!r} is given twice")
        memory[key] = int(float(found[1]) * _UNITS[(found[2] or "b").lower()])
    return memory


@dataclass
class RunSpec:
    """Everything that defines a gap run (recorded verbatim in the manifest)."""

    tasks: list[str] = option(["demo"], help="Comma-separated task names (see `salad-eval tasks`).")
    voices: str = option("default", help="Voice sets and/or voices, comma-separated.")
    limit: int | None = option(
        None,
        min=2,
        why="a gap needs at least 2 items (paired statistics, shuffled audio); raise {option}",
        help="Only the first N items of each task (config).",
    )
    shots: int = option(
        0,
        min=0,
        help="Spoken few-shot examples per item (with --shot-budget: at most this many; the "
        "paper: 5).",
    )
    shot_budget: int | None = option(
        None,
        min=1,
        metavar="TOKENS",
        help="Keep as many of the --shots examples as fit the context in TOKENS text tokens of "
        "the text LLM (spoken spans count as their text).",
    )
    answer: str = option(
        "loglik",
        choices=ANSWERS,
        help="How a model answers: loglik (the most likely choice, the paper's protocol), "
        "generate (a generated reply, its letter extracted by rule letter-v1), or both on the "
        "same items.",
    )
    metric: str | None = option(
        None,
        choices=("acc", "acc_norm", "acc_gen"),
        help="Headline metric of summary, plots and verdict (results.json holds all); default "
        "acc, or acc_gen with --answer generate.",
    )
    exclude_items: str | None = option(
        None,
        metavar="FILE",
        help="Drop the item ids a JSON file lists per task (salad-train decontam writes one).",
    )
    text_model: str | None = option(None, help="Text LLM for text@base (default: the base LLM).")
    asr: str = option("whisper-base", help="ASR of the cascade: asset name, hub id or path.")
    dtype: str | None = option(
        None,
        choices=DTYPES,
        help="Weights of every model (default: float32 on CPU, bfloat16 on CUDA); the manifest "
        "records the one used.",
    )
    chat_template: bool = option(
        False,
        help="Each model's chat template, as lm-eval's --apply_chat_template (default: raw "
        "prompts, the paper's protocol).",
    )
    batch_size: int | str = option(
        8,
        min=1,
        choices=("auto",),
        help="Rows (contexts or choices) per forward pass, or auto: the largest that fits the GPU.",
    )
    workers: int = option(1, min=1, help="Synthesis worker processes.")
    n_boot: int = option(1000, min=1, help="Paired bootstrap resamples.")
    seed: int = option(
        1234, min=0, help="Seed of few-shot sampling, shuffling, bootstrap and sampled replies."
    )
    synth_seed: int = option(0, min=0, help="Synthesis seed: the same seed, the same audio.")
    max_new_tokens: int = option(
        32,
        min=1,
        help="Generated reply length limit in tokens; a reply it cuts off is a no answer.",
    )
    temperature: float = option(
        0.0, min=0, help="Sampling temperature of generated replies (0: greedy, the default)."
    )
    top_p: float = option(1.0, above=0, max=1, help="Nucleus of sampled replies (1: all).")
    samples: int = option(
        1,
        min=1,
        help="Sampled replies per item and condition (needs --temperature > 0); accuracy is "
        "their mean.",
    )
    controls: bool = option(True, help="Score the silent and shuffled audio controls.")
    data_dir: str | None = option(None, help="Local benchmark mirror (default $SALAD_BENCHMARKS).")
    log_samples: bool = option(
        False, help="Also write lm-eval style per-sample samples_<task>_<date>.jsonl."
    )
    divergences: bool = option(
        True,
        help="Measure forgetting F and misalignment M on a held-out corpus (and the per-item "
        "answer KL diagnostic).",
    )
    divergence_corpus: str | None = option(
        None,
        help="Corpus of F and M, one document per line (default: the embedded held-out prose).",
    )
    # the defaults of salad_eval.corpus_divergence (DEFAULT_DOCS, DEFAULT_VOICE, SPAN_WORDS),
    # stated here so that a command line starts without torch (tests/test_run_spec.py)
    divergence_docs: int = option(32, min=1, help="Documents of that corpus (the first N).")
    divergence_voice: str = option("espeak/en-us", help="The voice of its spoken spans.")
    divergence_span_words: list[int] = option(
        [10, 10],
        min=1,
        pair=True,
        metavar="TEXT,SPEECH",
        help="Words per written and per spoken span of that corpus.",
    )
    names: dict[str, str] = field(default_factory=dict)  # model names as the user gave them
    prompt_format: str = field(init=False)  # "raw" or "chat" (salad_eval.chat), as recorded

    def __post_init__(self) -> None:
        self.prompt_format = "chat" if self.chat_template else "raw"
        if self.metric is None:  # the headline follows the answers: generated ones, acc_gen
            self.metric = "acc_gen" if self.answer == "generate" else "acc"

    def checked(self, spell: Callable[[str], str] = cli_name) -> RunSpec:
        """This spec with every option typed and in its declared range, or a one-line
        ``SaladError`` naming the option as ``spell`` writes it (``--limit 1: ...``)."""
        values = checked_values(self, spell)
        if values["metric"] == "acc_gen" and values["answer"] == "loglik":
            raise SaladError(
                f"{spell('metric')} acc_gen is the accuracy of generated replies; add "
                f"{spell('answer')} generate or both"
            )
        if values["metric"] != "acc_gen" and values["answer"] == "generate":
            raise SaladError(
                f"{spell('metric')} {values['metric']} needs log-likelihoods; with "
                f"{spell('answer')} generate the metric is acc_gen (or use {spell('answer')} both)"
            )
        if values["samples"] > 1 and values["temperature"] == 0:
            raise SaladError(
                f"{spell('samples')} {values['samples']} needs {spell('temperature')} > 0: "
                "greedy replies are all the same"
            )
        if values["shot_budget"] is not None and not values["shots"]:
            raise SaladError(
                f"{spell('shot_budget')} needs {spell('shots')} N, the most examples per item "
                "(paper: 5)"
            )
        return dataclasses.replace(self, **values)

    @property
    def answers(self) -> tuple[str, ...]:
        """The answer modes this run scores: ``("loglik",)``, ``("generate",)`` or both."""
        return ("loglik", "generate") if self.answer == "both" else (self.answer,)

    def decoding(self) -> Decoding:
        """How generated replies are decoded (``--answer generate`` or ``both``)."""
        return Decoding(self.max_new_tokens, self.temperature, self.top_p, self.samples, self.seed)
