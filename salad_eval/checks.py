"""Checks that run before any work: the names, paths and values a command takes, resolved without
loading a model, preparing an asset or making audio, so that a mistake costs a second, not a model
load. (Numbers are range-checked where their options are declared: ``salad_eval.options``,
``RunSpec.checked`` for a gap run.) Each failure is a ``SaladError`` that says what to do.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from salad_eval.assets.resolve import resolve
from salad_eval.endpoint.protocol import endpoint_name
from salad_eval.errors import SaladError
from salad_eval.home import home
from salad_eval.models.load import speech_model_kind
from salad_eval.models.registry import family_for
from salad_eval.speech import perturb
from salad_eval.speech.tts import kokoro_voice_file
from salad_eval.speech.voices import KOKORO_ENGLISH, RECORDED, parse_voice, resolve_voices
from salad_eval.tasks import check_data, generation_problem, get_task, load_items


def task_names(spec: str) -> list[str]:
    """The tasks of ``--tasks a,b``, each a known task."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    if not names:
        raise SaladError(f"--tasks {spec!r} names no task; see `salad-eval tasks`")
    for name in names:
        get_task(name)
    return names


def _text(path: str, what: str) -> str:
    file = Path(path)
    if not file.is_file():
        raise SaladError(f"{what} {path} not found; pass a text file with one document per line")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = "\0"
    if "\0" in text:
        raise SaladError(f"{what} {path} is not UTF-8 text; pass a text file, one document a line")
    return text


def text_lines(path: str, what: str) -> list[str]:
    """The lines of a UTF-8 text file; a missing, binary or empty file is refused."""
    lines = [line.strip() for line in _text(path, what).splitlines()]
    if not any(line and not line.startswith("#") for line in lines):
        raise SaladError(f"{what} {path} has no documents; put one document per line")
    return lines


def json_lines(path: str, what: str) -> list[dict]:
    """The rows of a UTF-8 JSON-lines file (a manifest); binary or malformed lines are refused."""
    rows = []
    for number, line in enumerate(_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise SaladError(f"{what} {path} line {number} is not a JSON object; fix the file")
        rows.append(row)
    return rows


def writable(path: Path, what: str, directory: bool = True) -> None:
    """``path`` is (or can be created as) a folder, or a file, that this process can write."""
    if path.exists() and path.is_dir() != directory:
        kind = "a directory" if directory else "a file"
        raise SaladError(f"{what} {path} exists and is not {kind}; pass another path")
    parent = next(p for p in [path, *path.parents] if p.exists())
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise SaladError(f"{what} {path} cannot be written ({parent} is not writable)")


def inputs(
    *,
    tasks: list[str] | None = None,
    shots: int = 0,
    data_dir: str | None = None,
    voices: str | None = None,
    speech_model: str | None = None,
    text_model: str | None = None,
    asr: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    out_dir: str | None = None,
    out_file: str | None = None,
    model_type: str | None = None,
) -> None:
    """Check whichever of a command's inputs are given; nothing is loaded or built."""
    home()  # the cache home is a writable folder
    if data_dir is not None and not Path(data_dir).is_dir():
        raise SaladError(
            f"--data-dir {data_dir} is not a directory; pass the local benchmark mirror "
            "(<org>/<name>/<config>/<split>.jsonl)"
        )
    if voices is not None:
        for voice in resolve_voices(voices):
            if voice.engine == "kokoro" and voice.name in KOKORO_ENGLISH:
                kokoro_voice_file(voice.name)  # a paper voice whose file is nowhere: say so now
    if device is not None:
        _device(device)
    if dtype is not None:
        from salad_eval.models.text_lm import torch_dtype  # noqa: PLC0415 - deferred: loads torch

        torch_dtype(dtype)
    if speech_model is not None and endpoint_name(speech_model) is None:  # endpoints: probed
        speech_model_kind(speech_model, model_type)
    for name, kind in ((text_model, "llm"), (asr, "asr")):
        if name is not None and (kind == "asr" or endpoint_name(name) is None):
            resolve(name, kind=kind, build=False)
    if out_dir is not None:
        writable(Path(out_dir), "--out", directory=True)
    if out_file is not None:
        writable(Path(out_file), "--out", directory=False)
    for name in tasks or []:  # last: it reads the task data (a mirror file, an embedded set)
        check_data(name, data_dir, shots)
        load_items(name, limit=1, shots=shots, data_dir=data_dir)
        if voices is not None and not get_task(name).recordings and _recorded(voices):
            raise SaladError(
                f"task {name} has no recordings (no `audio:` on its spoken parts); "
                "score it with TTS voices, and the voice recorded on tasks that have "
                "them"
            )


def divergence_inputs(
    corpus: str | None, voice: str, voice_option: str = "--divergence-voice"
) -> None:
    """``--divergence-corpus`` (None: the embedded held-out prose) is text with documents, and
    ``voice_option`` is one TTS voice that can speak any span (no babble, no recording)."""
    if corpus is not None:
        text_lines(corpus, "--divergence-corpus")
    parsed = parse_voice(voice)
    if parsed.engine == RECORDED or perturb.talkers(parsed):
        raise SaladError(
            f"{voice_option} {voice}: pass one TTS voice, e.g. espeak/en-us "
            "(spans are synthesized; a recording or babble cannot speak them)"
        )
    inputs(voices=voice)


def _recorded(voices: str) -> bool:
    return any(voice.engine == RECORDED for voice in resolve_voices(voices))


def _device(name: str) -> None:
    import torch  # noqa: PLC0415 - deferred: heavy torch, loaded on this path only

    try:
        device = torch.device(name)
    except RuntimeError:
        raise SaladError(f"--device {name!r} is not a torch device; use cpu or cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SaladError(f"--device {name} but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SaladError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible")


def placement_inputs(device_map: str | None, max_memory: dict[int | str, int] | None) -> None:
    """``--device-map`` / ``--max-memory`` (syntax checked by ``CallOptions.checked``): the GPUs
    it names are visible, and one process holds the model (under ``accelerate launch``, each
    process would spread its own copy over every GPU)."""
    if device_map is None:
        return
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise SaladError(
            "--device-map spreads one model over the GPUs of one process; run it without "
            "accelerate launch (which shards items over processes, one GPU each)"
        )
    gpus = [key for key in max_memory or {} if isinstance(key, int)]
    if gpus:
        import torch  # noqa: PLC0415 - deferred: heavy torch, loaded on this path only

        visible = torch.cuda.device_count()
        if max(gpus) >= visible:
            raise SaladError(
                f"--max-memory names GPU {max(gpus)} but {visible} GPU(s) are visible; name "
                f"GPUs 0 to {visible - 1}, cpu or disk"
                if visible
                else f"--max-memory names GPU {max(gpus)} but no GPU is visible; name cpu or disk"
            )


def generation_inputs(
    task_names: list[str], data_dir: str | None, model: str, model_type: str | None = None
) -> None:
    """``--answer generate``: each task has (or derives) a multiple-choice template, and the
    speech model's adapter can generate; checked before any model loads."""
    for name in task_names:
        if problem := generation_problem(name, data_dir):
            raise SaladError(problem)
    if endpoint_name(model) is not None:  # every endpoint generates (chat completions)
        return
    kind = speech_model_kind(model, model_type)
    if kind != "salad":
        adapter = family_for(kind).load_adapter()
        if not callable(getattr(adapter, "generate", None)):
            raise SaladError(
                f"--answer generate: {model} is a {kind} model whose adapter "
                f"({adapter.__name__}) only scores; use --answer loglik, or give the adapter a "
                "generate(requests, decoding, batch_size) method (CONTRIBUTING.md: a model family)"
            )
