"""Spoken task specs (``tasks/*.yaml``) -> paired multiple-choice ``Item``s.

A spoken task derives from a text task of lm-evaluation-harness 0.4.13: the same dataset, split,
prompt, choices and target, so that ``Item.text_context`` is exactly lm-eval's rendering. What a
spec adds is which parts of the prompt are spoken (``speak``) and which stay text (``text``): the
concatenation of the parts is lm-eval's ``doc_to_text``. Choices are always text continuations.

Templates are Jinja, rendered like lm-eval (strict, trailing newlines kept); ``choices`` and
``target`` are Jinja expressions evaluated on the document. Besides the document's own fields,
templates see ``_config`` (the dataset config), ``_split`` and ``_index`` (row in the split).

A spec with ``configs`` (MMLU) loads one dataset config per domain and also defines one task
``<task>_<config>`` per config. ``limit`` takes the first N items of each config, as lm-eval's
``--limit`` does for the subtasks of a group.

A ``speak`` part may name its recording in the data, ``audio: <expression>`` (a column holding
a file path relative to the data file, or a Hugging Face ``Audio`` value): the voice ``recorded``
plays it (``speech/recorded.py``), TTS voices speak the text, which stays its transcript.

Specs are found in the built-in task folder (the repository's ``tasks/``, shipped in the wheel as
``salad_eval/task_specs``) and in every folder of ``--include-path`` / ``$SALAD_INCLUDE_PATH``: the
same schema, ``include`` chains (relative to the including file) and validation. A malformed
spec is refused in one line naming its file and field.

A ``generate:`` block is the task's prompt for ``--answer generate``: the item as a question with
lettered options and an answer instruction (``task_generation``); ``load_items(answer=
"generate")`` renders it, ``generation`` gives the runner its stop sequences and options mode.

Data comes from the files a spec embeds (``data_files``, relative to the spec's folder), else
from a local mirror ``<dir>/<dataset_path>/<config or "default">/<split>.jsonl`` (``data_dir``
or ``$SALAD_BENCHMARKS``), else from the hub through ``datasets.load_dataset`` as lm-eval does.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import importlib.resources
import inspect
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import yaml

from salad_eval import recordings, task_generation, task_hooks
from salad_eval.errors import SaladError
from salad_eval.home import project_root
from salad_eval.prompt import Item, Part, Speak, Text
from salad_eval.task_generation import LETTERS, GenerateSpec

MIRROR_ENV = "SALAD_BENCHMARKS"
ANSWERS = ("loglik", "generate")  # how a model answers: choice log-likelihoods, or a reply
INCLUDE_ENV = "SALAD_INCLUDE_PATH"  # folders of extra task YAMLs, separated by os.pathsep


def builtin_tasks_dir() -> Path:
    """The specs that ship with salad: the wheel's package data, else the checkout's ``tasks/``."""
    shipped = importlib.resources.files("salad_eval") / "task_specs"
    return Path(str(shipped)) if shipped.is_dir() else project_root() / "tasks"


TASKS_DIR = builtin_tasks_dir()
_included: list[Path] = []  # --include-path folders of this process, after $SALAD_INCLUDE_PATH

_env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


@dataclass(frozen=True)
class TaskSpec:
    """A resolved spoken task: everything that moves its scores, hashed into ``fingerprint``."""

    name: str
    version: int
    text_task: str
    test_split: str
    prompt: tuple[tuple[str, str], ...]  # (kind, template), kind "text" or "speak"
    choices: str
    target: str
    dataset_path: str | None = None
    dataset_name: str | None = None
    configs: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    domain: str = ""
    id: str = "{{_split}}-{{_index}}"
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_split: str | None = None
    fewshot_sampler: str = "default"  # "default" (seeded sample per item) or "first_n"
    process_docs: str | None = None
    data_files: tuple[tuple[str, str], ...] = ()  # (split, path relative to the spec's folder)
    data_note: str = ""
    recordings: tuple[tuple[int, str], ...] = ()  # (prompt part, expression of its recording)
    generate: GenerateSpec | None = None  # its generate: block; None: derived (``generation``)
    fingerprint: str = ""

    @property
    def sources(self) -> tuple[str | None, ...]:
        """The dataset configs this task loads, in order."""
        return self.configs or (self.dataset_name,)


REQUIRED = ("task", "version", "text_task", "test_split", "prompt", "choices", "target")
_FIELDS = {f.name for f in dataclasses.fields(TaskSpec)} - {"name", "fingerprint"} | {"task"}


def include_paths(paths: list[str] | tuple[str, ...] = ()) -> None:
    """Add task folders (``--include-path``) for this process; each must be a folder."""
    for path in paths:
        folder = Path(path).expanduser().resolve()
        if not folder.is_dir():
            raise SaladError(f"--include-path {path} is not a folder; pass a folder of task YAMLs")
        if folder not in _included:
            _included.append(folder)


def task_dirs() -> list[Path]:
    """Where specs are read from: the built-in folder, then $SALAD_INCLUDE_PATH, --include-path."""
    env = [
        Path(p).expanduser().resolve()
        for p in os.environ.get(INCLUDE_ENV, "").split(os.pathsep)
        if p.strip()
    ]
    for folder in env:
        if not folder.is_dir():
            raise SaladError(f"${INCLUDE_ENV} names {folder}, not a folder; fix or unset it")
    dirs = [TASKS_DIR]
    for folder in [*env, *_included]:
        if folder not in dirs:
            dirs.append(folder)
    return dirs


def _spec_error(path: Path, message: str) -> SaladError:
    return SaladError(f"task spec {path}: {message}")


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A spec file with its ``include`` chain merged in (the including file wins)."""
    if path in seen:
        raise _spec_error(path, "field include: the include chain loops back to this file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise _spec_error(path, f"cannot be read ({type(err).__name__})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise _spec_error(path, f"not valid YAML{where} ({problem}); fix the file") from None
    if not isinstance(raw, dict):
        raise _spec_error(path, "not a mapping of spec fields (task:, prompt:, ...)")
    for key in raw:  # here, so that the error names the file that holds the typo
        if key not in _FIELDS | {"include"}:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1, cutoff=0.6)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(sorted(_FIELDS))}"
            raise _spec_error(path, f"unknown field {key!r}; {hint}")
    if "include" not in raw:
        return raw
    include = raw.pop("include")
    if not isinstance(include, str) or not (path.parent / include).is_file():
        raise _spec_error(path, f"field include: {include!r} is not a spec file beside this one")
    return {**_read_yaml(path.parent / include, (*seen, path)), **raw}


def _validate(path: Path, raw: dict) -> None:
    """One-line errors for a missing or mistyped field of a merged spec (typos: ``_read_yaml``)."""
    missing = [key for key in REQUIRED if key not in raw]
    if missing:
        needed = ", ".join(REQUIRED)
        raise _spec_error(path, f"field {missing[0]} is missing; every spec sets {needed}")
    if not isinstance(raw["task"], str) or not raw["task"].strip():
        raise _spec_error(path, "field task: a task name (a string)")
    if isinstance(raw["version"], bool) or not isinstance(raw["version"], int):
        raise _spec_error(path, f"field version: an integer, got {raw['version']!r}")
    prompt = raw["prompt"]
    if not isinstance(prompt, list) or not prompt:
        raise _spec_error(path, "field prompt: a list of `- text: ...` / `- speak: ...` parts")
    for number, part in enumerate(prompt):
        if not (
            isinstance(part, dict)
            and set(part) in ({"text"}, {"speak"}, {"speak", "audio"})
            and all(isinstance(value, str) for value in part.values())
        ):
            raise _spec_error(
                path,
                f"field prompt[{number}]: one `text:` or `speak:` string (a "
                f"`speak:` may add `audio:`, the column of its recording); "
                f"got {part!r}",
            )
        if "audio" in part:
            try:
                _env.compile_expression(part["audio"])
            except jinja2.TemplateSyntaxError as err:
                raise _spec_error(
                    path, f"field prompt[{number}].audio: bad expression ({err.message})"
                ) from None
    templates = [(f"prompt[{n}]", p.get("text", p.get("speak"))) for n, p in enumerate(prompt)]
    templates += [(key, raw[key]) for key in ("id", "description", "domain") if key in raw]
    for field, template in templates:
        try:
            _env.parse(str(template))
        except jinja2.TemplateSyntaxError as err:
            raise _spec_error(path, f"field {field}: bad template ({err.message})") from None
    for field in ("choices", "target"):
        try:
            _env.compile_expression(str(raw[field]))
        except jinja2.TemplateSyntaxError as err:
            raise _spec_error(path, f"field {field}: bad expression ({err.message})") from None
    data_files = raw.get("data_files", {})
    if not isinstance(data_files, dict):
        raise _spec_error(path, "field data_files: a mapping split -> file beside the spec")
    for split, file in data_files.items():
        if not (path.parent / str(file)).is_file():
            raise _spec_error(path, f"field data_files.{split}: {file} is not beside the spec")
    if "generate" in raw and (problem := task_generation.block_problem(raw["generate"], _env)):
        raise _spec_error(path, problem)


def _raw_specs() -> dict[str, tuple[dict, Path]]:
    """Every task name -> (its merged YAML fields, its file); configs expand into one task each."""
    return _specs_in(tuple(task_dirs()))


@functools.cache
def _specs_in(dirs: tuple[Path, ...]) -> dict[str, tuple[dict, Path]]:
    specs: dict[str, tuple[dict, Path]] = {}
    for folder in dirs:
        for path in sorted(folder.glob("*.yaml")):
            if path.name.startswith("_"):
                continue
            raw = _read_yaml(path)
            _validate(path, raw)
            names = [raw["task"], *(f"{raw['task']}_{c}" for c in raw.get("configs", ()))]
            for name in names:
                if name in specs:
                    raise _spec_error(
                        path,
                        f"field task: {name} is already defined by {specs[name][1]}; rename one",
                    )
            specs[raw["task"]] = (raw, path)
            for config in raw.get("configs", ()):
                name = f"{raw['task']}_{config}"
                specs[name] = (
                    {
                        **raw,
                        "task": name,
                        "text_task": f"{raw['text_task']}_{config}",
                        "configs": [config],
                    },
                    path,
                )
    return specs


def spec_file(name: str) -> Path:
    """The YAML file that defines a task; its embedded data files are read beside it."""
    get_task(name)
    return _raw_specs()[name][1]


def list_tasks() -> list[str]:
    return sorted(_raw_specs())


def _file_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def get_task(name: str) -> TaskSpec:
    """The resolved spec of a task; an unknown name names the closest matches."""
    return _resolved(name, tuple(task_dirs()))


@functools.cache
def _resolved(name: str, dirs: tuple[Path, ...]) -> TaskSpec:
    specs = _specs_in(dirs)
    if name not in specs:
        close = difflib.get_close_matches(name, specs, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(close)}?" if close else "see `salad-eval tasks`"
        raise SaladError(f"unknown task {name!r}; {hint}")
    raw = dict(specs[name][0])
    configs = tuple(raw.pop("configs", ()))
    parts = raw.pop("prompt")
    generate = raw.pop("generate", None)
    spec = TaskSpec(
        name=raw.pop("task"),
        prompt=tuple(_prompt_part(part) for part in parts),
        recordings=tuple((i, str(p["audio"])) for i, p in enumerate(parts) if "audio" in p),
        configs=configs,
        domains=tuple(raw.pop("domains", None) or configs or (name,)),
        domain=raw.pop("domain", "{{_config}}" if configs else name),
        data_files=tuple(sorted(raw.pop("data_files", {}).items())),
        generate=None if generate is None else task_generation.resolve(generate),
        **raw,
    )
    return dataclasses.replace(spec, fingerprint=_fingerprint(spec, specs[name][1].parent))


def _prompt_part(part: dict) -> tuple[str, str]:
    """``("text" | "speak", template)`` of a validated prompt part."""
    kind = "text" if "text" in part else "speak"
    return kind, part[kind]


def _fingerprint(spec: TaskSpec, folder: Path) -> str:
    """Hash of the resolved spec, the hook's code and the embedded data: whatever moves scores."""
    content: dict[str, Any] = dataclasses.asdict(spec)
    if not spec.recordings:  # added later: tasks without recordings keep their fingerprints
        del content["recordings"]
    if spec.generate is None:  # likewise: a task without a generate: block keeps its own
        del content["generate"]
    if spec.process_docs:
        content["hook_source"] = inspect.getsource(_hook(spec))
    content["data_sha256"] = [_file_sha(folder / path) for _, path in spec.data_files]
    blob = json.dumps(content, sort_keys=True, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _hook(spec: TaskSpec):
    try:
        return task_hooks.HOOKS[spec.process_docs]
    except KeyError:
        raise SaladError(
            f"task {spec.name}: no hook {spec.process_docs!r} in salad_eval/task_hooks.py"
        ) from None


def _read_jsonl(path: Path) -> tuple[dict, ...]:
    return tuple(row for _, row in _numbered_rows(path))


def _numbered_rows(path: Path) -> tuple[tuple[int, dict], ...]:
    """(line number, row) of a JSONL file, re-read when the file changes."""
    stat = path.stat()
    return _parse_jsonl(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _parse_jsonl(path: Path, _mtime_ns: int, _size: int) -> tuple[tuple[int, dict], ...]:
    rows = []
    try:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise SaladError(
                        f"{path} line {number} is not valid JSON ({err.msg}); fix or remove it"
                    ) from None
                if not isinstance(row, dict):
                    raise SaladError(f"{path} line {number} is not a JSON object; fix or remove it")
                rows.append((number, row))
    except UnicodeDecodeError:
        raise SaladError(f"{path} is not UTF-8 text; pass JSON lines, one row a line") from None
    return tuple(rows)


def _data_file(spec: TaskSpec, config: str | None, split: str, data_dir: str | None) -> Path | None:
    """The local JSONL file of one split (embedded or mirrored); None when it is on the hub."""
    if spec.data_files:
        files = dict(spec.data_files)
        if split not in files:
            raise SaladError(f"task {spec.name} embeds no {split!r} split; fix its data_files")
        return spec_file(spec.name).parent / files[split]
    mirror = data_dir or os.environ.get(MIRROR_ENV)
    if mirror:
        return Path(mirror) / spec.dataset_path / (config or "default") / f"{split}.jsonl"
    return None


def _data_base(spec: TaskSpec, config: str | None, split: str, data_dir: str | None) -> Path | None:
    """The folder that relative recording paths in one split start from (that of its file)."""
    path = _data_file(spec, config, split, data_dir) if split else None
    return path.parent if path else None


def _rows(spec: TaskSpec, config: str | None, split: str, data_dir: str | None) -> tuple[dict, ...]:
    """The raw documents of one split, from embedded files, the local mirror or the hub."""
    note = f" ({spec.data_note})" if spec.data_note else ""
    path = _data_file(spec, config, split, data_dir)
    if spec.data_files:
        return _read_jsonl(path)
    mirror = data_dir or os.environ.get(MIRROR_ENV)
    if mirror:
        if not path.is_file():
            raise SaladError(
                f"{path} is missing from the local mirror {mirror}; add it (hub schema JSONL) or "
                f"unset {MIRROR_ENV} and --data-dir to load {spec.dataset_path} from the hub{note}"
            )
        return _read_jsonl(path)
    return _hub_rows(spec, config, split, note)


def _hub_rows(spec: TaskSpec, config: str | None, split: str, note: str) -> tuple[dict, ...]:
    import datasets  # noqa: PLC0415 - deferred: heavy datasets, loaded on this path only

    try:
        rows = datasets.load_dataset(spec.dataset_path, config, split=split)
        for column, feature in rows.features.items():  # recordings stay bytes: no decoder needed
            if isinstance(feature, datasets.Audio):
                rows = rows.cast_column(column, datasets.Audio(decode=False))
        return tuple(rows)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SaladError(
            f"cannot load {spec.dataset_path} {config or ''} {split} from the hub ({reason}); set "
            f"{MIRROR_ENV} or pass --data-dir to a local mirror <org>/<name>/<config>/<split>.jsonl"
            f"{note}"
        ) from None


def _docs(spec: TaskSpec, config: str | None, split: str, data_dir: str | None) -> list[dict]:
    """Documents as the templates see them: the hook applied, ``_config/_split/_index`` added."""
    hook = _hook(spec) if spec.process_docs else None
    docs = []
    for index, row in enumerate(_rows(spec, config, split, data_dir)):
        doc = hook(row) if hook else dict(row)
        docs.append({**doc, "_config": config, "_split": split, "_index": index})
    return docs


@functools.cache
def _template(source: str) -> jinja2.Template:
    return _env.from_string(source)


@functools.cache
def _expression(source: str, undefined_to_none: bool = False):
    return _env.compile_expression(source, undefined_to_none=undefined_to_none)


def _render(template: str, doc: dict) -> str:
    return _template(template).render(**doc)


def _evaluate(expression: str, doc: dict) -> Any:
    return _expression(expression)(**doc)


def _turn(spec: TaskSpec, doc: dict, base: Path | None) -> list[Part]:
    """One document's prompt as parts; joined, it is lm-eval's ``doc_to_text``.

    A spoken part carries its recording when the spec names one and the document has it;
    ``base`` is the data file's folder, which relative recording paths start from."""
    return _parts(spec, spec.prompt, spec.recordings, doc, base)


def _parts(
    spec: TaskSpec,
    prompt: tuple[tuple[str, str], ...],
    recordings: tuple[tuple[int, str], ...],
    doc: dict,
    base: Path | None,
    options: tuple[str, ...] = (),
    spoken: bool = False,
) -> list[Part]:
    """A prompt's parts rendered on a document; an ``options`` part (a ``generate`` template's)
    is rendered once per option text, lettered, and joined: one spoken part if ``spoken``."""
    found = dict(recordings)
    parts: list[Part] = []
    for index, (kind, template) in enumerate(prompt):
        if kind == "options":
            text = "".join(
                _render(template, {**doc, "letter": letter, "option": option})
                for letter, option in zip(LETTERS, options, strict=False)
            )
            parts.append(Speak(text) if spoken else Text(text))
            continue
        text = _render(template, doc)
        if kind == "text":
            parts.append(Text(text))
        else:
            expression = found.get(index)
            parts.append(Speak(text, expression and _recording(spec, expression, doc, base)))
    return parts


def _recording(spec: TaskSpec, expression: str, doc: dict, base: Path | None) -> str | None:
    """The recording file that ``expression`` finds in ``doc``; None if the data has none."""
    value = _expression(expression, undefined_to_none=True)(**doc)
    try:
        return recordings.source(value, base)
    except SaladError as err:
        raise SaladError(f"task {spec.name} item {_render(spec.id, doc)}: {err}") from None


def _answer(spec: TaskSpec, doc: dict) -> tuple[list[str], int]:
    choices = [str(choice) for choice in _evaluate(spec.choices, doc)]
    return choices, int(_evaluate(spec.target, doc))


def _question(
    spec: TaskSpec, generate: GenerateSpec | None, doc: dict, base: Path | None
) -> tuple[list[Part], tuple[str, ...], tuple[str, ...], int]:
    """A document's own prompt, its choices as the item scores them, its option texts (those
    the letters stand for; none for log-likelihood) and its target.

    Log-likelihood: the task's prompt, each choice after the target delimiter. Generation: the
    ``generate`` template, the choices the letters A, B, ... of the option texts."""
    choices, target = _answer(spec, doc)
    if generate is None:
        return _turn(spec, doc, base), tuple(spec.target_delimiter + c for c in choices), (), target
    options = _option_texts(spec, generate, doc, choices)
    spoken = generate.options == "spoken"
    parts = _parts(spec, generate.prompt, generate.recordings, doc, base, options, spoken)
    return parts, tuple(LETTERS[: len(options)]), options, target


def _option_texts(
    spec: TaskSpec, generate: GenerateSpec, doc: dict, choices: list[str]
) -> tuple[str, ...]:
    """The texts the letters stand for: ``option_texts`` of the document, else the choices."""
    where = f"task {spec.name} item {_render(spec.id, doc)}"
    if generate.option_texts is None:
        texts = choices
    else:
        value = _evaluate(generate.option_texts, doc)
        if isinstance(value, (str, bytes, dict)) or not hasattr(value, "__iter__"):
            raise SaladError(
                f"{where}: generate.option_texts ({generate.option_texts}) is "
                f"{type(value).__name__}, not a list of option texts"
            )
        texts = [str(text) for text in value]
    if len(texts) != len(choices):
        raise SaladError(
            f"{where}: generate.option_texts ({generate.option_texts}) gives {len(texts)} "
            f"options for {len(choices)} choices; give one per choice"
        )
    if len(texts) > len(LETTERS):
        raise SaladError(f"{where} has {len(texts)} choices; --answer generate letters 26 (A-Z)")
    return tuple(texts)


def _joined(parts: list[Part]) -> str:
    return "".join(part.text for part in parts)


def _merge(parts: list[Part]) -> tuple[Part, ...]:
    """Drop empty parts and join neighbouring text, so a context reads as few segments."""
    merged: list[Part] = []
    for part in parts:
        if not part.text:
            continue
        if merged and isinstance(part, Text) and isinstance(merged[-1], Text):
            merged[-1] = Text(merged[-1].text + part.text)
        else:
            merged.append(part)
    return tuple(merged)


def _shots(
    spec: TaskSpec, pool: list[dict], doc: dict, n: int, seed: int, item_id: str
) -> list[dict]:
    """``n`` examples: lm-eval's first N, or a sample seeded by the item (independent of limit)."""
    same_split = spec.fewshot_split == spec.test_split
    candidates = [ex for ex in pool if not (same_split and ex["_index"] == doc["_index"])]
    if n > len(candidates):
        raise SaladError(
            f"task {spec.name} has {len(candidates)} few-shot examples; use --shots <= that"
        )
    if spec.fewshot_sampler == "first_n":
        return candidates[:n]
    return random.Random(f"{seed}:{item_id}").sample(candidates, n)


def _solved(
    spec: TaskSpec, example: dict, base: Path | None, generate: GenerateSpec | None = None
) -> tuple[int, list[Part]]:
    """A few-shot example's index and parts: its prompt (spoken as the item's), its answer:
    the right choice after the target delimiter, or (generation) a space and its letter."""
    turn, choices, _, target = _question(spec, generate, example, base)
    answer = choices[target] if generate is None else " " + choices[target]
    return example["_index"], [*turn, Text(answer + spec.fewshot_delimiter)]


def _fitting(sizes: list[int], room: int) -> int:
    """How many of the first examples (``sizes``, in order) fit together in ``room``."""
    kept = 0
    for size in sizes:
        room -= size
        if room < 0:
            break
        kept += 1
    return kept


def load_items(
    name: str,
    limit: int | None = None,
    shots: int = 0,
    seed: int = 1234,
    data_dir: str | None = None,
    split: str | None = None,
    shot_budget: int | None = None,
    length: Callable[[str], int] | None = None,
    answer: str = "loglik",
) -> list[Item]:
    """The task's items in dataset order; ``limit`` takes the first N of each config.

    ``split`` reads another split than the evaluation one (training data, say).

    With ``shots``, each context starts with that many solved examples from the few-shot split:
    their prompts spoken as the item's is, their answers as text, joined by lm-eval's delimiters.

    With ``shot_budget`` (the paper's "as many shots as fit, at most 5"), an item keeps the first
    k of the ``shots`` examples it draws, k as large as lets its context fit ``shot_budget``
    tokens: ``length(text)`` of the description and the question, plus that of each example
    (prompt and answer), sizes summed. The estimate is of the text: a spoken span counts as its
    text's tokens, not the positions its audio takes, so no model is needed (``gap`` passes the
    text LLM's tokenizer). ``Item.shots`` says how many each item kept.

    ``answer="generate"`` renders each item (and each example) with the task's generation
    template (``generation``): its choices are the letters A, B, ..., ``Item.options`` the
    texts they stand for; an example is answered by its letter. The target, id, domain and
    shots are those of ``answer="loglik"``.
    """
    if answer not in ANSWERS:
        raise SaladError(f"answer {answer!r} is not one of {', '.join(ANSWERS)}")
    spec = get_task(name)
    generate = generation(spec) if answer == "generate" else None
    if shots and not spec.fewshot_split:
        raise SaladError(f"task {name} has no few-shot split; run it with --shots 0")
    if shot_budget is not None and (not shots or length is None):
        raise SaladError(
            "--shot-budget needs --shots N, the most examples per item (the paper: "
            "5), and a token length"
        )
    split = split or spec.test_split
    items = []
    for config in spec.sources:
        docs = _docs(spec, config, split, data_dir)[:limit]
        pool = _docs(spec, config, spec.fewshot_split, data_dir) if shots else []
        if generate is not None and spec.generate is None and (problem := _labels(spec, docs)):
            raise SaladError(problem)
        heard = spec.recordings or (generate is not None and generate.recordings)
        base, pool_base = (
            _data_base(spec, config, s, data_dir) if heard else None
            for s in (split, spec.fewshot_split)
        )
        sizes: dict[int, int] = {}  # an example's length, by its index (MMLU: 5 examples in all)
        for doc in docs:
            item_id = _render(spec.id, doc)
            head: list[Part] = [Text(_render(spec.description, doc))]
            turn, choices, options, target = _question(spec, generate, doc, base)
            drawn = _shots(spec, pool, doc, shots, seed, item_id) if shots else []
            examples = [_solved(spec, example, pool_base, generate) for example in drawn]
            if shot_budget is not None:
                for index, parts in examples:
                    if index not in sizes:
                        sizes[index] = length(_joined(parts))
                room = shot_budget - length(_joined([*head, *turn]))
                examples = examples[: _fitting([sizes[index] for index, _ in examples], room)]
            context = [*head, *(part for _, parts in examples for part in parts), *turn]
            items.append(
                Item(
                    task=name,
                    id=item_id,
                    domain=_render(spec.domain, doc),
                    context=_merge(context),
                    choices=choices,
                    target=target,
                    shots=len(examples),
                    options=options,
                )
            )
    if not items:
        raise SaladError(f"task {name} has no items in split {split!r}; check the data")
    return items


def generation(spec: TaskSpec) -> GenerateSpec:
    """What ``--answer generate`` renders and stops on for a task: its ``generate:`` block, else
    one derived from its prompt (version 0). A task without a block whose choices are fixed
    letters (``choices: "['A', 'B']"``) is refused: no option texts to show."""
    if spec.generate is not None:
        return spec.generate
    fixed = _fixed_choices(spec)
    if fixed is not None and task_generation.are_labels(fixed):
        raise SaladError(task_generation.underivable(spec.name, fixed))
    return task_generation.derive(spec.prompt, spec.recordings)


def generation_problem(name: str, data_dir: str | None = None) -> str | None:
    """Why ``--answer generate`` cannot run a task (one line), or None: checked before any model
    loads. Reads the task's first local document at most; data on the hub is checked as it
    loads (``load_items``)."""
    spec = get_task(name)
    try:
        generation(spec)
    except SaladError as err:
        return str(err)
    if spec.generate is not None or not is_local(name, data_dir):
        return None
    return _labels(spec, _docs(spec, spec.sources[0], spec.test_split, data_dir)[:1])


def _fixed_choices(spec: TaskSpec) -> list[str] | None:
    """The task's choices when its expression reads no document (MMLU's letters), else None."""
    try:
        return [str(_defined(choice)) for choice in _defined(_evaluate(spec.choices, {}))]
    except Exception:  # the expression reads the document: its choices vary with it
        return None


def _labels(spec: TaskSpec, docs: list[dict]) -> str | None:
    """Why a derived template does not fit the task: the first document's choices are letters."""
    for doc in docs[:1]:  # the first decides for the task: a letter may answer one question
        choices, _ = _answer(spec, doc)
        if task_generation.are_labels(choices):
            return task_generation.underivable(spec.name, choices)
    return None


def is_local(name: str, data_dir: str | None = None, split: str | None = None) -> bool:
    """Whether a split's data is on this machine (embedded or mirrored), not only on the hub."""
    spec = get_task(name)
    split = split or spec.test_split
    if spec.data_files and split not in dict(spec.data_files):
        return False
    paths = [_data_file(spec, config, split, data_dir) for config in spec.sources]
    return all(path is not None and path.is_file() for path in paths)


def count_items(name: str, data_dir: str | None = None) -> int | None:
    """Items in a task's evaluation split, from embedded or mirrored data; None if not local."""
    if not is_local(name, data_dir):
        return None  # on the hub (counting would download it), or not mirrored here
    spec = get_task(name)
    paths = [_data_file(spec, config, spec.test_split, data_dir) for config in spec.sources]
    return sum(len(_read_jsonl(path)) for path in paths)


def check_data(
    name: str, data_dir: str | None = None, shots: int = 0, split: str | None = None
) -> frozenset[str]:
    """Every row of the task's evaluation split (or ``split``), and its few-shot split with
    ``shots``, rendered once before any model loads: a bad JSON line, a template variable the
    row lacks, a missing or out-of-range target, fewer than two choices or a repeated id is
    refused in one line that names the file, the row and the field. Returns the split's item
    ids. Cached per data file version."""
    spec = get_task(name)
    splits = [split or spec.test_split]
    if shots and spec.fewshot_split and spec.fewshot_split != splits[0]:
        splits.append(spec.fewshot_split)
    stamps = []
    for config in spec.sources:
        for split in splits:
            path = _data_file(spec, config, split, data_dir)
            found = path is not None and path.is_file()
            stamps.append((config, split, path.stat().st_mtime_ns if found else None))
    return _checked(name, tuple(task_dirs()), data_dir, tuple(splits), tuple(stamps))


@functools.cache
def _checked(name: str, dirs: tuple[Path, ...], data_dir: str | None, splits, _stamps) -> frozenset:
    spec = get_task(name)
    ids: dict[str, str] = {}  # item id -> where it was first seen
    for config in spec.sources:
        for split in splits:
            path = _data_file(spec, config, split, data_dir)
            lines = [n for n, _ in _numbered_rows(path)] if path and path.is_file() else None
            for index, doc in enumerate(_docs(spec, config, split, data_dir)):
                where = f"{path} line {lines[index]}" if lines else f"{split} row {index}"
                item_id = _checked_doc(spec, doc, where)
                if split != splits[0]:
                    continue
                if item_id in ids:
                    raise SaladError(
                        f"task {name}: {where} repeats id {item_id!r} of {ids[item_id]}; every "
                        f"row needs its own id (the spec's id: {spec.id})"
                    )
                ids[item_id] = where
    return frozenset(ids)


def _checked_doc(spec: TaskSpec, doc: dict, where: str) -> str:
    """The row's item id, once each template and expression of the spec renders on it."""
    item_id = "?"
    fields = [("id", spec.id), ("description", spec.description), ("domain", spec.domain)]
    fields += [(f"prompt[{n}]", template) for n, (_, template) in enumerate(spec.prompt)]
    field = "id"
    try:
        for field, template in fields:
            text = _render(template, doc)
            if field == "id":
                item_id = text
        field = "choices"
        choices = _defined(_evaluate(spec.choices, doc))
        field = "target"
        target = _defined(_evaluate(spec.target, doc))
    except jinja2.UndefinedError as err:
        problem = _undefined(err, doc)
    except Exception as err:  # a template that fails on this row (a filter on a wrong type)
        problem = f"cannot be rendered ({type(err).__name__}: {err})"
    else:
        field, problem = _answer_problem(choices, target)
    if problem:
        source = getattr(spec, field.split("[")[0], "")
        source = spec.prompt[int(field[7:-1])][1] if field.startswith("prompt[") else source
        raise SaladError(
            f"task {spec.name}: {where} (id {item_id}): field {field} ({source}) {problem}"
        )
    return item_id


def _defined(value: Any) -> Any:
    """``value``; an expression that names a missing field raises (``StrictUndefined``)."""
    if isinstance(value, jinja2.Undefined):
        str(value)
    return value


def _undefined(err: jinja2.UndefinedError, doc: dict) -> str:
    """What the row lacks, with the closest of its fields for a typo."""
    fields = sorted(str(key) for key in doc if not str(key).startswith("_"))
    match = re.fullmatch(r"'([^']+)' is undefined", str(err))
    if not match:
        return f"fails: {err} (the row has {', '.join(fields)})"
    missing = match.group(1)
    close = difflib.get_close_matches(missing, fields, n=1, cutoff=0.6)
    hint = f"did you mean {close[0]}?" if close else f"the row has {', '.join(fields)}"
    return f"uses {missing}, which the row lacks; {hint}"


def _answer_problem(choices: Any, target: Any) -> tuple[str, str | None]:
    """The field and why a row's choices and target make no scorable item (None: they do)."""
    if isinstance(choices, (str, bytes, dict)) or not hasattr(choices, "__len__"):
        return "choices", f"is {type(choices).__name__} {choices!r:.60}, not a list of choices"
    if len(choices) < 2:
        return "choices", f"has {len(choices)} choice(s); an item needs at least two"
    try:
        index = int(target)
    except (TypeError, ValueError):
        index = None
    exact = str(index) == target.strip() if isinstance(target, str) else index == target
    if isinstance(target, bool) or index is None or not exact:
        return "target", f"is {target!r:.60}, not the index of a choice"
    if not 0 <= index < len(choices):
        return "target", f"is {index}, out of range for {len(choices)} choices"
    return "target", None
