"""Audio exchange: the clips a run scored (its items' and its corpus F/M spans'), as a portable
directory, and back into a store.

Float kernels differ between processors, so the same text, voice and seed can give other bytes on
another machine, and other numbers. To score the same audio there, export it:
``DIR/clips/<key>.flac`` and ``DIR/metadata.jsonl``, one row per clip (``file_name``, ``key``,
``sha256``, ``frames`` and the clip's fields: text, engine, engine version, voice, params,
normalization, seed; for a recorded clip, engine ``recorded``, its source's sha256 and the
conversion): the layout of a Hugging Face ``audiofolder`` dataset (not read that way
here: ``datasets`` decodes audio with torchcodec, which does not load beside this torch). Import
checks every file against its sha256 and every key against its fields before it stores anything,
then puts each clip into the store under its key, replacing what is there: a later ``gap`` (with
the same engine versions) scores exactly those bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_text
from salad_eval.run_folder import check_complete
from salad_eval.speech import recorded, store, tts
from salad_eval.speech.synth import synthesize
from salad_eval.speech.voices import resolve_voices
from salad_eval.tasks import load_items

INDEX = "metadata.jsonl"


@dataclass(frozen=True)
class Exchanged:
    """What an export or import moved."""

    clips: int
    seconds: float
    replaced: int = 0  # import: store clips whose bytes differed (this machine's own synthesis)
    foreign: int = 0  # import: clips of engine versions this install does not have


def run_clips(run_dir: Path) -> dict[str, str]:
    """{key: sha256} of the clips a gap run scored (recorded in its results.json)."""
    path = Path(run_dir) / "results.json"
    check_complete(run_dir)
    try:
        clips = json.loads(path.read_text())["manifest"]["clips"]
    except FileNotFoundError:
        raise SaladError(f"{path} not found; pass a run directory of salad-eval gap") from None
    except (ValueError, KeyError, TypeError):
        raise SaladError(f"{path} records no clip digests; run salad-eval gap again") from None
    return dict(clips)


def task_clips(
    tasks: Sequence[str],
    voices: str,
    limit: int | None = None,
    shots: int = 0,
    seed: int = 1234,
    data_dir: str | None = None,
    synth_seed: int = 0,
) -> dict[str, str]:
    """{key: sha256} of every clip of the tasks' items in ``voices`` (synthesized if missing)."""
    spoken = resolve_voices(voices)
    items = [item for name in tasks for item in load_items(name, limit, shots, seed, data_dir)]
    manifest = synthesize(items, voices, seed=synth_seed)
    usable = [item for item in items if all(manifest.row(item, v).status == "ok" for v in spoken)]
    return manifest.digests(usable, spoken)


def export_clips(clips: dict[str, str], out: Path) -> Exchanged:
    """Copy ``clips`` ({key: sha256}) from the store into ``out``, with their index."""
    out = Path(out)
    rows, seconds = [], 0.0
    clips = {**_sources(clips), **clips}
    for key, sha256 in sorted(clips.items()):
        problems: list[str] = []
        stored = store.stored_clip(key, problems)
        if stored is None or stored.sha256 != sha256:
            why = problems[0] if problems else "missing" if stored is None else "other bytes"
            raise SaladError(
                f"clip {key} is not in this store as it was scored ({why}); "
                "export where the run was made (its machine and SALAD_HOME)"
            )
        file_name = f"clips/{key}.flac"
        (out / "clips").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store.clip_path(key), out / file_name)
        fields = store.sidecar(key)["clip"]
        rows.append(
            {
                "file_name": file_name,
                "key": key,
                "sha256": sha256,
                "frames": stored.frames,
                **fields,
            }
        )
        seconds += stored.seconds
    if not rows:
        raise SaladError("no clips to export")
    atomic_write_text(out / INDEX, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return Exchanged(len(rows), seconds)


_FIELDS = ("text", "engine", "engine_version", "voice", "params", "normalization", "seed")
_RECORDED_FIELDS = ("engine", "source_sha256", "conversion")  # recorded.clip_fields
# a perturbed clip (``perturb.clip_fields``): made from a clean clip, keyed by these
_PERTURBED = (
    "text",
    "base",
    "base_sha256",
    "voice",
    "acoustics",
    "donors",
    "seed",
    "perturbation",
    "libraries",
)


def _sources(clips: dict[str, str]) -> dict[str, str]:
    """The clean clips (and babble donors) that perturbed clips among ``clips`` were made from:
    exported with them, so another machine finds the very keys a run looks up."""
    found = {}
    for key in clips:
        if store.stored_clip(key, []) is None:
            continue  # export_clips says what is wrong with it
        fields = store.sidecar(key)["clip"]
        for source in [fields["base"], *fields["donors"]] if "acoustics" in fields else []:
            if stored := store.stored_clip(source, []):
                found[source] = stored.sha256
    return found


def _read_index(directory: Path) -> list[tuple[dict, dict, bytes]]:
    """(row, fields, bytes) of every clip, all verified; SaladError at the first bad one."""
    path = directory / INDEX
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        raise SaladError(f"{path} not found; pass a directory of salad-eval audio export") from None
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise SaladError(f"{path} is not a clip index ({type(err).__name__})") from None
    checked = []
    for number, row in enumerate(rows, 1):
        try:
            names = (
                _RECORDED_FIELDS
                if row.get("engine") == recorded.VOICE
                else _PERTURBED
                if "acoustics" in row
                else _FIELDS
            )
            fields = {name: row[name] for name in names}
            data = (directory / row["file_name"]).read_bytes()
            sha256, key = row["sha256"], row["key"]
        except (KeyError, TypeError, OSError) as err:
            raise SaladError(f"{path} line {number}: unusable ({type(err).__name__})") from None
        if hashlib.sha256(data).hexdigest() != sha256:
            raise SaladError(f"{row['file_name']} does not match its sha256; export it again")
        if store.key_of(fields) != key:
            raise SaladError(f"{path} line {number}: key {key} does not match the clip's fields")
        try:
            store.flac_frames(data)
        except ValueError as err:
            raise SaladError(f"{row['file_name']} is not a usable clip ({err})") from None
        checked.append((row, fields, data))
    if not checked:
        raise SaladError(f"{path} lists no clips")
    return checked


def import_clips(directory: Path) -> Exchanged:
    """Verify every clip of an export, then put each one into the store under its key."""
    checked = _read_index(Path(directory))
    engines = {fields["engine"] for _, fields, _ in checked if "engine" in fields} - {
        recorded.VOICE
    }
    versions = {engine: tts.engine(engine).version for engine in engines}
    replaced = foreign = 0
    seconds = 0.0
    for row, fields, data in checked:
        before = store.stored_clip(row["key"], [])
        stored = store.write_flac(fields, data)
        replaced += before is not None and before.sha256 != stored.sha256
        version = versions.get(fields.get("engine"))  # recordings, perturbed clips: no engine
        # a clip's version may go on to name its own files (a Coqui model, a Kokoro voice file)
        foreign += version is not None and not fields["engine_version"].startswith(version)
        seconds += stored.seconds
    return Exchanged(len(checked), seconds, replaced, foreign)
