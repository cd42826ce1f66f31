"""Coqui TTS from salad's side: its interpreter, its models' speakers and languages, its worker.

coqui-tts' VITS imports torchaudio, and every torchaudio wheel on the registry is a CUDA build that
does not load beside the CPU torch of ``requirements.lock``. So Coqui runs in its own environment
(``make coqui`` builds ``.venv-coqui`` from ``requirements-coqui.lock``) and salad drives it
through one long-lived worker process (``coqui_worker.py``) per engine, over pipes.

A voice is checked here before any model loads: a local model folder's speakers and languages come
from its ``config.json`` and the files it names, a zoo name from the ``.models.json`` that ships in
the TTS package (found without importing it).
"""

from __future__ import annotations

import difflib
import functools
import importlib.util
import json
import os
import subprocess
import sys
import threading
import weakref
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from salad_eval.errors import SaladError

CHECKOUT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("coqui_worker.py")
# What the Coqui interpreter says of itself without importing TTS (which imports torch).
_PROBE = (
    "import importlib.metadata as m, importlib.util as u, json, os; "
    "print(json.dumps([m.version('coqui-tts'), os.path.dirname(u.find_spec('TTS').origin)]))"
)


@functools.cache
def python() -> str:
    """The interpreter that runs Coqui: $SALAD_COQUI_PYTHON, the checkout's .venv-coqui, or this
    one where TTS is installed beside a torch that pairs with torchaudio."""
    if chosen := os.environ.get("SALAD_COQUI_PYTHON"):
        return chosen
    built = CHECKOUT / ".venv-coqui" / "bin" / "python"
    if built.is_file():
        return str(built)
    if importlib.util.find_spec("TTS") is not None:
        return sys.executable
    raise SaladError(
        "Coqui TTS has no environment: run `make coqui` (builds .venv-coqui) or set "
        "SALAD_COQUI_PYTHON to a Python that has coqui-tts"
    )


@functools.cache
def _probe() -> tuple[str, Path]:
    """(coqui-tts version, the TTS package folder) of the Coqui interpreter."""
    done = subprocess.run([python(), "-c", _PROBE], capture_output=True, text=True, check=False)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["it did not start"])[-1]
        raise SaladError(f"Coqui's Python {python()} has no coqui-tts ({last}); run `make coqui`")
    version, package = json.loads(done.stdout)
    return version, Path(package)


def package_version() -> str:
    return _probe()[0]


@functools.cache
def zoo_names() -> tuple[str, ...]:
    """Every TTS model of Coqui's model zoo (``tts_models/<language>/<dataset>/<model>``)."""
    zoo = json.loads((_probe()[1] / ".models.json").read_text())["tts_models"]
    return tuple(
        f"tts_models/{lang}/{data}/{model}"
        for lang, sets in zoo.items()
        for data, models in sets.items()
        for model in models
    )


def _is_fairseq(name: str) -> bool:  # Coqui builds these from the language code alone
    parts = name.split("/")
    return len(parts) == 4 and parts[0] == "tts_models" and parts[2:] == ["fairseq", "vits"]


def zoo_folder(name: str) -> Path:
    """Where Coqui downloads zoo model ``name`` (its ``get_user_data_dir("tts")``)."""
    root = os.environ.get("TTS_HOME") or os.environ.get("XDG_DATA_HOME")
    base = Path(root).expanduser() if root else Path.home() / ".local" / "share"
    return base / "tts" / name.replace("/", "--")


def model_folder(name: str) -> Path | None:
    """The local folder of model ``name``, if it is one or the zoo model is downloaded."""
    if Path(name).is_dir():
        return Path(name)
    folder = zoo_folder(name)
    return folder if (folder / "config.json").is_file() else None


def _setting(config: dict, key: str):
    """A setting from ``model_args``, else the config (Coqui's get_from_config_or_model_args)."""
    args = config.get("model_args") or {}
    return args[key] if key in args else config.get(key)


def _names_in(folder: Path, file: str | None) -> list[str] | None:
    """The names of a speakers/languages json a config points at (absolute, or in the folder)."""
    if not file:
        return None
    path = Path(file) if Path(file).is_file() else folder / Path(file).name
    if path.suffix != ".json" or not path.is_file():
        return None  # a .pth of embeddings: only the model knows; its worker says so at load
    return sorted(json.loads(path.read_text()))


def speakers_and_languages(folder: Path) -> tuple[list[str] | None, list[str] | None]:
    """A model folder's speaker and language names (None: unknown without loading it; [] none)."""
    config = json.loads((folder / "config.json").read_text())
    speakers: list[str] | None = []
    if _setting(config, "use_speaker_embedding"):
        speakers = config.get("speakers") or _names_in(
            folder, _setting(config, "speaker_file") or _setting(config, "speakers_file")
        )
    elif _setting(config, "use_d_vector_file"):
        speakers = None
    languages: list[str] | None = list(config.get("languages") or [])
    if not languages and _setting(config, "use_language_embedding"):
        languages = _names_in(folder, _setting(config, "language_ids_file"))
    return speakers, languages


def _check_name(value: str | None, names: list[str] | None, what: str, voice: str) -> None:
    if value is None or names is None:
        return
    if not names:
        raise SaladError(f"voice {voice!r}: the model has one {what} and takes no {what}=")
    if value not in names:
        close = difflib.get_close_matches(value, names, n=5, cutoff=0.4) or names[:5]
        raise SaladError(f"voice {voice!r}: no {what} {value!r}; closest: {', '.join(close)}")


@functools.cache
def check_voice(name: str, speaker: str | None, language: str | None, voice: str) -> None:
    """A one-line SaladError unless ``name`` is a model folder or zoo name that has ``speaker``
    and ``language``; nothing loads (a zoo model not yet downloaded is checked by name only)."""
    folder = Path(name)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise SaladError(f"voice {voice!r}: {name} is a folder without a Coqui config.json")
    elif name not in zoo_names() and not _is_fairseq(name):
        close = ", ".join(difflib.get_close_matches(name, zoo_names(), n=3, cutoff=0.0))
        raise SaladError(
            f"voice {voice!r}: {name} is neither a model folder nor a Coqui model; closest: {close}"
        )
    if (found := model_folder(name)) is not None:
        speakers, languages = speakers_and_languages(found)
        _check_name(speaker, speakers, "speaker", voice)
        _check_name(language, languages, "language", voice)


def show_models(models: list[str]) -> None:
    """Print the speakers and languages of each model, from its files (``assets --voices``)."""
    if not models:
        raise SaladError("only Coqui models have speakers to list: --voices coqui/<model>")
    table = Table(title="Coqui models: speakers and languages")
    for column in ("model", "speakers", "languages"):
        table.add_column(column, overflow="fold")
    for model in dict.fromkeys(models):
        folder = model_folder(model)
        if folder is None:
            table.add_row(escape(model), "not downloaded yet: its first clip fetches it", "")
            continue
        speakers, languages = (
            "only the model knows" if names is None else ", ".join(names) or "one"
            for names in speakers_and_languages(folder)
        )
        table.add_row(escape(model), escape(speakers), escape(languages))
    Console().print(table)


class Worker:
    """One ``coqui_worker.py`` process and its pipes; requests are one at a time (a lock)."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()

    def _started(self) -> subprocess.Popen:
        if self._process is None or self._process.poll() is not None:
            self._process = subprocess.Popen(
                [python(), str(WORKER)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,  # its reasons come back in the protocol
                start_new_session=True,  # Ctrl-C reaches salad, which closes the pipe
            )
            # the worker exits when its stdin closes: with this object, or with this process
            weakref.finalize(self, _stop, self._process)
        return self._process

    def request(self, **fields) -> tuple[dict, np.ndarray | None]:
        """The worker's answer to one request (and a clip's samples); a SaladError if it failed."""
        with self._lock:
            process = self._started()
            try:
                process.stdin.write(json.dumps(fields).encode() + b"\n")
                process.stdin.flush()
                header = json.loads(process.stdout.readline() or b"null")
            except (BrokenPipeError, json.JSONDecodeError):
                header = None
            if header is None:
                process.kill()
                raise SaladError(f"the Coqui worker ({python()}) died; run `make coqui`")
            if not header["ok"]:
                raise SaladError(f"Coqui: {header['error']}")
            samples = None
            if "samples" in header:
                raw = process.stdout.read(4 * header["samples"])
                samples = np.frombuffer(raw, dtype=np.float32).copy()
            return header, samples


def _stop(process: subprocess.Popen) -> None:
    if process.stdin:
        process.stdin.close()  # EOF: the worker exits at once, even mid-clip
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
