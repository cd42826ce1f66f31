"""Synthesis of tasks into the audio store, with a manifest per task and voice set.

Every distinct spoken segment (few-shot examples included) is synthesized once per voice and seed;
clips already in the store are reused, so a rerun (or a run after a crash) only makes what is
missing. Every clip and transcript reused is verified first (``store.py``): a bad one is rebuilt,
and reported in one line. Each clip is checked by ASR. Each item x voice gets one manifest row,
``ok`` or ``failed`` with its reason: an item is never silently dropped.
The records (rows, clips, the manifest that turns an item and a voice into the ``Text``/``Audio``
prompt speech conditions score) are ``manifest.py``'s.

The voice ``recorded`` makes no audio: it converts each part's recording from the data into the
store (``recorded.py``) and checks it by ASR like any clip; a part without one fails its row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from salad_eval import home
from salad_eval.errors import SaladError
from salad_eval.progress import progress_bar
from salad_eval.prompt import Item, Speak
from salad_eval.speech import perturb, quality, recorded, store, tts
from salad_eval.speech.manifest import Clip, ManifestRow, SynthManifest, VoiceSummary
from salad_eval.speech.normalize import normalize, speakable
from salad_eval.speech.store import StoredClip
from salad_eval.speech.voices import VOICE_SETS, Voice, resolve_voices
from salad_eval.tasks import load_items
from salad_eval.workers import worker_pool

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Job:
    """One clip to make (or find stored) and check against the text it should say."""

    voice: Voice
    fields: dict  # what the key hashes: store.clip_fields, or recorded.clip_fields
    text: str  # the normalized text the clip says: what its ASR check compares against
    recording: str | None = None  # the source file, for the voice ``recorded``

    @property
    def key(self) -> str:
        return store.key_of(self.fields)


@dataclass(frozen=True)
class _Done:
    key: str
    made: bool
    seconds: float = 0.0
    sha256: str = ""
    transcript: str = ""
    wer: float = 1.0
    cer: float = 1.0
    error: str = ""
    problems: tuple[str, ...] = ()


def _audio(job: _Job) -> np.ndarray:
    """The clip of one spoken part in its voice: the data's recording, or the engine's speech."""
    if job.recording is not None:
        return recorded.convert(job.recording, job.fields)
    return tts.synthesize(job.fields["text"], job.voice, job.fields["seed"])


def stored_or_made(job: _Job, problems: list[str]) -> tuple[StoredClip, bool]:
    """The verified clip of ``job`` and whether it was made now (unless the store held it)."""
    stored = store.stored_clip(job.key, problems)
    if stored is not None:
        return stored, False
    audio = _audio(job)
    if audio.size < store.MIN_FRAMES:
        raise ValueError(
            "the recording is shorter than 50 ms"
            if job.recording
            else "the engine returned no audio"
        )
    return store.write_clip(job.fields, audio), True


def _plan(part: Speak, voice: Voice, versions: dict[Voice, str], seed: int) -> _Job | str:
    """The job that makes the clip of ``part`` in ``voice``, or why it has none."""
    normalized = normalize(part.text)
    if voice.engine == recorded.VOICE:
        if part.recording is None:
            return "the data has no recording of this part; use a TTS voice for it"
        return _Job(voice, recorded.clip_fields(part.recording), normalized, part.recording)
    if not speakable(normalized):
        return f"nothing to speak after normalization: {part.text!r}"
    fields = store.clip_fields(normalized, voice, versions[voice], seed)
    return _Job(voice, fields, normalized)


def ensure_clip(normalized: str, voice: Voice, seed: int = 0) -> Path:
    """A verified clip of ``normalized`` in ``voice``, made unless stored (no ASR check); with
    acoustics (babble aside: it needs other items), the clean clip perturbed."""
    if perturb.talkers(voice):
        raise SaladError(f"{voice}: babble needs other items' clips; use it in gap or synth")
    clean = voice.clean
    fields = store.clip_fields(normalized, clean, tts.voice_version(clean), seed)
    job = _Job(clean, fields, normalized)
    problems: list[str] = []
    stored, _ = stored_or_made(job, problems)
    if voice.acoustics:
        fields = perturb.clip_fields(fields, job.key, stored.sha256, voice, seed, [])
        perturb.perturbed_clip(fields, voice, problems)
    for problem in problems:
        log.info("audio store: made again: %s", problem)
    return store.clip_path(store.key_of(fields))


def _run(job: _Job) -> _Done:
    """Make the clip unless it is stored, then check it: runs in a worker (or in process)."""
    problems: list[str] = []
    try:
        stored, made = stored_or_made(job, problems)
        checked = quality.check_clip(job.key, job.text, stored.sha256, problems)
        return _Done(
            job.key,
            made,
            stored.seconds,
            stored.sha256,
            checked.transcript,
            checked.wer,
            checked.cer,
            problems=tuple(problems),
        )
    except Exception as err:  # an engine failure fails its items, never the whole run
        error = f"{type(err).__name__}: {err}".splitlines()[0]
        return _Done(job.key, False, error=error, problems=tuple(problems))


def _init_worker(threads: int) -> None:
    quality.set_threads(threads)  # the ASR check shares the cores; clips are single-threaded


def voice_set_name(spec: str) -> str:
    """A manifest-friendly name: the set's own name, else a hash of the voice list."""
    if spec in VOICE_SETS:
        return spec
    voices = ",".join(str(v) for v in resolve_voices(spec))
    return "voices-" + hashlib.sha256(voices.encode()).hexdigest()[:10]


def manifest_dir() -> Path:
    return store.root() / "manifests"


def _progress(show: bool):
    return progress_bar(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[audio]:.0f}s audio, RTF {task.fields[rtf]:.2f}"),
        disable=not show,
    )


def _execute(jobs: list[_Job], workers: int, show: bool) -> dict[str, _Done]:
    done: dict[str, _Done] = {}
    started = time.perf_counter()
    with _progress(show) as bar:
        task = bar.add_task("synthesizing", total=len(jobs), audio=0.0, rtf=0.0)
        audio = 0.0

        def record(result: _Done) -> None:
            nonlocal audio
            done[result.key] = result
            audio += result.seconds
            rtf = (time.perf_counter() - started) / audio if audio else 0.0
            bar.update(task, advance=1, audio=audio, rtf=rtf)

        if workers <= 1:
            for job in jobs:
                record(_run(job))
        else:
            threads = max(1, (os.cpu_count() or 1) // workers)
            with worker_pool(workers, _init_worker, (threads,)) as pool:
                for future in as_completed([pool.submit(_run, job) for job in jobs]):
                    record(future.result())
    return done


def _cached(job: _Job, problems: list[str]) -> _Done | None:
    """The result of a job whose clip and transcript are stored and sound (no model needed)."""
    stored = store.stored_clip(job.key, problems)
    if stored is None:
        return None
    transcript = store.read_transcript(job.key, quality.asr_id(), stored.sha256, problems)
    if transcript is None:
        return None
    wer, cer = quality.error_rates(job.text, transcript)
    return _Done(job.key, False, stored.seconds, stored.sha256, transcript, wer, cer)


def _row(item: Item, voice: Voice, plans: list, done: dict[str, _Done], threshold: float):
    texts = item.spoken_texts
    base = {"task": item.task, "item_id": item.id, "voice": str(voice)}
    clips = [Clip(text, normalize(text)) for text in texts]
    if not texts:
        return ManifestRow(**base, status="failed", clips=(), reason="the item has no spoken part")
    for plan in plans:
        if isinstance(plan, str):
            return ManifestRow(**base, status="failed", clips=tuple(clips), reason=plan)
    keys = [plan.key for plan in plans]
    for key in keys:
        if done[key].error:
            making = "recording" if voice.engine == recorded.VOICE else "synthesis"
            reason = f"{making} failed: {done[key].error}"
            return ManifestRow(**base, status="failed", clips=tuple(clips), reason=reason)
    clips = [
        Clip(
            c.text,
            c.normalized,
            str(store.clip_path(k)),
            done[k].sha256,
            done[k].seconds,
            done[k].transcript,
            done[k].wer,
            done[k].cer,
        )
        for c, k in zip(clips, keys, strict=True)
    ]
    words = [max(1, len(c.normalized.split())) for c in clips]
    return ManifestRow(
        **base,
        status="ok",
        clips=tuple(clips),
        seconds=round(sum(c.seconds for c in clips), 4),
        wer=sum(c.wer * w for c, w in zip(clips, words, strict=True)) / sum(words),
        cer=sum(c.cer * w for c, w in zip(clips, words, strict=True)) / sum(words),
        flagged=any(c.wer > threshold for c in clips),
    )


def synthesize(
    items: Sequence[Item],
    voices: str | Sequence[Voice],
    workers: int = 1,
    wer_threshold: float = quality.WER_THRESHOLD,
    out_dir: Path | None = None,
    show_progress: bool = True,
    seed: int = 0,
) -> SynthManifest:
    """Synthesize and check every spoken segment of ``items`` in every voice; write manifests.

    ``voices`` is a spec (``default``, ``kokoro/jf_alpha,piper/joe``) or a list of voices; ``seed``
    the synthesis seed (each clip's noise derives from it, its voice and its text). One manifest per
    task, ``<out_dir>/<task>.<voice set>.jsonl``, one row per item x voice.
    """
    started = time.perf_counter()
    spec = voices if isinstance(voices, str) else ",".join(str(v) for v in voices)
    voice_list = resolve_voices(spec)
    speakers = list(dict.fromkeys(v.clean for v in voice_list))  # clean clips first, then acoustics
    versions = {v: tts.voice_version(v) for v in speakers if v.engine != recorded.VOICE}
    plans: dict[tuple[int, Voice], list[_Job | str]] = {}
    jobs: dict[str, _Job] = {}
    for voice in speakers:
        for index, item in enumerate(items):
            spoken = [part for part in item.context if isinstance(part, Speak)]
            plans[(index, voice)] = [_plan(part, voice, versions, seed) for part in spoken]
            for plan in plans[(index, voice)]:
                if isinstance(plan, _Job):
                    jobs.setdefault(plan.key, plan)
    repaired: list[str] = []
    done = {key: result for key, job in jobs.items() if (result := _cached(job, repaired))}
    todo = [job for key, job in jobs.items() if key not in done]
    job_started = time.perf_counter()
    done.update(_execute(todo, workers, show_progress and bool(todo)))
    synth_seconds = time.perf_counter() - job_started
    repaired += [problem for result in done.values() for problem in result.problems]
    if repaired:
        more = f"; and {len(repaired) - 1} more" if len(repaired) > 1 else ""
        log.info("audio store: made again: %s%s", repaired[0], more)
    rows = [
        _row(item, voice, plans[(index, voice)], done, wer_threshold)
        for voice in speakers
        for index, item in enumerate(items)
    ]
    summaries = _summaries(speakers, jobs, done, rows)
    if perturbed := [v for v in voice_list if v.acoustics]:
        clean = {(row.task, row.item_id, row.voice): row for row in rows}
        more, counts = perturb.perturb_rows(items, clean, perturbed, seed)
        rows += more
        summaries |= _perturbed_summaries(counts, more)
    wanted = {str(v) for v in voice_list}  # clean rows made only for babble or as a base go
    rows = [row for row in rows if row.voice in wanted]
    manifest = SynthManifest(rows=rows, synth_seconds=synth_seconds, repaired=repaired)
    manifest.voices = {str(v): summaries[str(v)] for v in voice_list}
    directory = out_dir or manifest_dir()
    for task in dict.fromkeys(item.task for item in items):
        path = directory / f"{task}.{voice_set_name(spec)}.jsonl"
        lines = [json.dumps(asdict(row), ensure_ascii=False) for row in rows if row.task == task]
        home.atomic_write_text(path, "".join(line + "\n" for line in lines))
        manifest.paths[task] = path
    manifest.wall_seconds = time.perf_counter() - started
    return manifest


def _summaries(voices, jobs: dict[str, _Job], done: dict[str, _Done], rows) -> dict:
    summaries = {}
    for voice in voices:
        results = [done[key] for key, job in jobs.items() if job.voice == voice]
        own = [row for row in rows if row.voice == str(voice)]
        ok = [row for row in own if row.status == "ok"]
        summaries[str(voice)] = VoiceSummary(
            made=sum(r.made for r in results),
            cached=sum(not r.made and not r.error for r in results),
            failed_clips=sum(bool(r.error) for r in results),
            rows=len(own),
            failed_rows=len(own) - len(ok),
            flagged_rows=sum(row.flagged for row in ok),
            seconds=round(sum(r.seconds for r in results), 2),
            made_seconds=round(sum(r.seconds for r in results if r.made), 2),
            mean_wer=sum(row.wer for row in ok) / len(ok) if ok else None,
            mean_cer=sum(row.cer for row in ok) / len(ok) if ok else None,
        )
    return summaries


def _perturbed_summaries(counts: dict[str, tuple[int, int, int]], rows) -> dict:
    summaries = {}
    for voice, (made, cached, failed) in counts.items():
        own = [row for row in rows if row.voice == voice]
        ok = [row for row in own if row.status == "ok"]
        seconds = round(sum(row.seconds for row in ok), 2)
        summaries[voice] = VoiceSummary(
            made=made,
            cached=cached,
            failed_clips=failed,
            rows=len(own),
            failed_rows=len(own) - len(ok),
            flagged_rows=sum(row.flagged for row in ok),
            seconds=seconds,
            made_seconds=0.0,
            mean_wer=sum(row.wer for row in ok) / len(ok) if ok else None,
            mean_cer=sum(row.cer for row in ok) / len(ok) if ok else None,
        )
    return summaries


def summary_table(manifest: SynthManifest) -> Table:
    """Clips made/cached/failed, rows failed/flagged, audio seconds, RTF and WER per voice."""
    made_seconds = sum(s.made_seconds for s in manifest.voices.values())
    rtf = manifest.synth_seconds / made_seconds if made_seconds else 0.0
    table = Table(
        title=f"synthesis: {len(manifest.rows)} rows in {manifest.wall_seconds:.1f}s, "
        f"RTF {rtf:.2f} (wall / audio made); clips made, cached, failed; rows failed, flagged; "
        "mean WER/CER of the rows"
    )
    for column in (
        "voice",
        "made",
        "cached",
        "failed",
        "rows",
        "failed rows",
        "flagged",
        "audio s",
        "WER",
        "CER",
    ):
        table.add_column(column, justify="left" if column == "voice" else "right")
    for name, s in manifest.voices.items():
        table.add_row(
            name,
            str(s.made),
            str(s.cached),
            str(s.failed_clips),
            str(s.rows),
            str(s.failed_rows),
            str(s.flagged_rows),
            f"{s.seconds:.1f}",
            "-" if s.mean_wer is None else f"{s.mean_wer:.1%}",
            "-" if s.mean_cer is None else f"{s.mean_cer:.1%}",
        )
    failed = [row for row in manifest.rows if row.status != "ok"]
    table.caption = "\n".join(
        f"failed {row.task}/{row.item_id} [{row.voice}]: {row.reason}" for row in failed[:10]
    ) + (f"\n... and {len(failed) - 10} more" if len(failed) > 10 else "")
    return table


def synthesize_tasks(
    tasks: Sequence[str],
    voices: str = "default",
    limit: int | None = None,
    shots: int = 0,
    workers: int = 1,
    data_dir: str | None = None,
    wer_threshold: float = quality.WER_THRESHOLD,
    seed: int = 0,
) -> SynthManifest:
    """``salad-eval synth``: load the tasks' items, synthesize them, print the summary."""
    resolve_voices(voices)  # a bad voice fails before any task data is read
    items = [
        item
        for name in tasks
        for item in load_items(name, limit=limit, shots=shots, data_dir=data_dir)
    ]
    manifest = synthesize(items, voices, workers=workers, wer_threshold=wer_threshold, seed=seed)
    console = Console()
    console.print(summary_table(manifest))
    for task, path in manifest.paths.items():
        console.print(f"manifest {task}: {path}")
    return manifest
