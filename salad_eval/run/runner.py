"""``salad-eval gap``: score the four conditions and both controls on identical items, then report.

The flow: items (per task) -> synthesis of whatever audio is missing -> prompts per condition ->
scores (cached on disk per request, so a killed run resumes and a rerun recomputes nothing) ->
per-item records -> ``reports/<run>/`` (``items.jsonl``, ``results.json``, ``summary.md``, plots,
and ``report.html`` with its clips in ``audio/``).

Under ``accelerate launch`` each process scores an interleaved shard of the requests into the
shared cache; then the main process assembles every record from the cache. The records, and so
``results.json``, are identical to a one-process run by construction.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from salad_eval import corpus_divergence, divergence, extraction, generation, run_folder, tasks
from salad_eval.conditions import shuffled_prompts, silent_prompt
from salad_eval.errors import SaladError
from salad_eval.gap.lm_eval_output import write_lm_eval
from salad_eval.gap.report import write_report
from salad_eval.home import atomic_write_text, in_checkout, project_root
from salad_eval.page.build import write_heard, write_run_page
from salad_eval.page.items import heard_rows
from salad_eval.prompt import (
    ChoiceScore,
    Failed,
    GenerationRequest,
    Item,
    Model,
    Prompt,
    Reply,
    ScoringRequest,
    text_prompt,
)
from salad_eval.run import provenance
from salad_eval.run.spec import RunSpec
from salad_eval.scoring import Shard, fill_shard, item_metrics, score
from salad_eval.speech import diversity
from salad_eval.speech.synth import manifest_dir, synthesize
from salad_eval.speech.voices import resolve_voices

log = logging.getLogger(__name__)


@dataclass
class Models:
    speech: Model
    text: Model
    cascade: Model | None = None


def _identity(item: Item, condition: str, voice: str | None) -> dict:
    """The fields that pair a record across conditions, answer modes and runs."""
    return {
        "task": item.task,
        "item": item.id,
        "domain": item.domain,
        "condition": condition,
        "voice": voice,
        "target": item.target,
    }


def _record(item: Item, condition: str, voice: str | None, scores: list[ChoiceScore]) -> dict:
    metrics = item_metrics(scores, item.target, item.choices)
    lls = np.array([s.logprob for s in scores])
    norm = lls / np.array([float(len(c.removeprefix(" "))) or 1.0 for c in item.choices])
    return {
        **_identity(item, condition, voice),
        "logprobs": [s.logprob for s in scores],
        "n_chars": [s.n_chars for s in scores],
        "n_tokens": [s.n_tokens for s in scores],
        "greedy": [s.is_greedy for s in scores],
        "pred": int(np.argmax(lls)),
        "pred_norm": int(np.argmax(norm)),
        "correct": bool(metrics["acc"]),
        "correct_norm": bool(metrics["acc_norm"]),
    }


def _score_all(
    model: Model, requests: list[ScoringRequest], shard: Shard, setup: RunSpec, label: str
) -> list[list[ChoiceScore]]:
    """Every process fills the cache for its shard; then all scores are read back in order."""
    if shard.size > 1:
        log.info(
            "%s: scoring every %sth call of %s requests (rank %s)",
            label,
            shard.size,
            len(requests),
            shard.rank,
        )
        fill_shard(model, requests, setup.batch_size, shard.rank, shard.size)
        shard.wait()
    else:
        log.info("%s: %s requests", label, len(requests))
    return score(model, requests, batch_size=setup.batch_size)


def _clip_quality(summary) -> dict:
    """What the clips are like (not how long this run took to make them: that is not a result)."""
    keep = ("rows", "failed_rows", "flagged_rows", "mean_wer", "mean_cer")
    return {k: v for k, v in asdict(summary).items() if k in keep}


def _speech_items(items: list[Item], manifest, voices) -> tuple[list[Item], list[dict]]:
    """Items with audio in every voice; the others are excluded from every condition, and listed."""
    kept, excluded = [], []
    for item in items:
        rows = [manifest.row(item, voice) for voice in voices]
        bad = [row for row in rows if row.status != "ok"]
        if bad:
            excluded.append({"task": item.task, "item": item.id, "reason": bad[0].reason})
        else:
            kept.append(item)
    return kept, excluded


def run_gap(
    setup: RunSpec,
    models: Models,
    run_dir: Path,
    training: dict | None = None,
    embed_audio: bool = False,
) -> dict:
    """Score every condition on the same items and write the report; returns results.json.

    ``embed_audio``: report.html holds its clips (one file) instead of ``audio/`` beside it."""
    dtypes = sorted(  # of the models in this process (an endpoint's is the server's)
        {m.dtype for m in (models.speech, models.text, models.cascade) if m and m.dtype}
    )
    dtype = setup.dtype or next(iter(dtypes), None)  # None: the models' one dtype, recorded
    if dtypes and dtypes != [dtype]:  # a precision difference would read as forgetting
        raise SaladError(
            f"the models' weights are {', '.join(dtypes)} but the run is "
            f"{dtype}; load every model with one dtype (--dtype)"
        )
    setup = replace(setup, dtype=dtype)
    if "generate" in setup.answers:  # before any audio is made: a model that only scores
        for role, model in (("speech model", models.speech), ("text model", models.text)):
            generation.check_generates(model, role)
        if models.cascade is not None:
            generation.check_generates(models.cascade, "cascade")
    started = time.time()
    shard = Shard()
    voices = [str(v) for v in resolve_voices(setup.voices)]
    records: list[dict] = []
    task_info, excluded_all, synth_info, clips = {}, [], {}, {}
    # for --log-samples, per answer mode: each item and the clips heard
    scored: dict[str, dict[tuple[str, str], Item]] = {}
    heard: dict[str, dict[tuple[str, str, str], list[str]]] = {}
    voice_clips: dict[str, list[tuple[str, str]]] = {}  # per voice: its diversity
    said: list[dict] = []  # heard.jsonl: each item's text and the clips it was heard in
    # load every task first: a missing dataset fails in seconds, not after an hour of scoring
    length = None if setup.shot_budget is None else text_length(models.text)
    loaded = {
        t: {
            answer: tasks.load_items(
                t,
                setup.limit,
                setup.shots,
                setup.seed,
                setup.data_dir,
                shot_budget=setup.shot_budget,
                length=length,
                answer=answer,
            )
            for answer in setup.answers
        }
        for t in setup.tasks
    }
    dropped = read_exclusions(setup.exclude_items) if setup.exclude_items else {}
    for task, asked in loaded.items():
        items = next(iter(asked.values()))  # the lead mode's items: the same ids in each mode
        spec = tasks.get_task(task)
        fingerprint = spec.fingerprint  # a chat-templated run scores other prompts: marked
        if setup.prompt_format != "raw":
            fingerprint += f"+{setup.prompt_format}"
        task_info[task] = {
            "version": spec.version,
            "fingerprint": fingerprint,
            "prompt_format": setup.prompt_format,
        }
        listed = dropped.get(task, set())
        excluded_all += [
            {
                "task": task,
                "item": item.id,
                "reason": f"listed in --exclude-items {setup.exclude_items}",
            }
            for item in items
            if item.id in listed
        ]
        if "generate" in setup.answers:
            template = tasks.generation(spec)
            task_info[task]["generate"] = {
                "version": template.version,
                "options": template.options,  # spoken or written
                "until": list(template.until),
                "rule": extraction.RULE,
            }
        asked = {a: [i for i in found if i.id not in listed] for a, found in asked.items()}
        items = next(iter(asked.values()))
        if setup.shots and items:  # how many examples the items kept (--shot-budget)
            counts = [item.shots for item in items]
            task_info[task]["shots"] = {
                "mean": round(sum(counts) / len(counts), 3),
                "min": min(counts),
                "max": max(counts),
            }
        spoken = {  # generation prompts have their own clips (their options, say): own manifests
            answer: synthesize(
                found,
                setup.voices,
                workers=setup.workers,
                show_progress=shard.main,
                seed=setup.synth_seed,
                out_dir=None if answer == "loglik" else manifest_dir() / answer,
            )
            for answer, found in asked.items()
        }
        manifest = next(iter(spoken.values()))
        synth_info[task] = {v: _clip_quality(s) for v, s in manifest.voices.items()}
        if "generate" in spoken and "loglik" in spoken:
            synth_info[task + ":generate"] = {
                v: _clip_quality(s) for v, s in spoken["generate"].voices.items()
            }
        excluded: dict[str, dict] = {}  # an item without audio in any mode leaves every mode
        for answer, found in asked.items():
            for row in _speech_items(found, spoken[answer], voices)[1]:
                excluded.setdefault(row["item"], row)
        asked = {a: [i for i in found if i.id not in excluded] for a, found in asked.items()}
        excluded = list(excluded.values())
        excluded_all += excluded
        items = next(iter(asked.values()))
        for answer, found in asked.items():  # the bytes scored: see `salad-eval audio`
            clips.update(spoken[answer].digests(found, voices))
        for voice, found in diversity.run_clips(manifest, items, voices).items():
            voice_clips.setdefault(voice, []).extend(found)
        if len(items) < 2:
            raise SaladError(
                f"task {task} has {len(items)} usable item(s) after --limit, --exclude-items "
                "and synthesis; a gap needs at least 2 (raise --limit)"
            )
        answered, failed = _answered(
            _task_records(task, asked, spoken, voices, models, setup, shard)
        )
        records += answered
        if shard.main:
            kept = {r["item"] for r in answered}
            for answer, found in asked.items():
                rows = heard_rows(found, spoken[answer], voices, setup.seed, setup.controls, answer)
                said += [row for row in rows if row["item"] in kept]
        excluded_all += failed
        if failed:  # an endpoint that never answered an item: it leaves every condition
            log.warning(
                "%s: %s item(s) failed at the endpoint; rerun to ask again", task, len(failed)
            )
            gone = {row["item"] for row in failed}
            asked = {a: [i for i in found if i.id not in gone] for a, found in asked.items()}
            if len(next(iter(asked.values()))) < 2:
                raise SaladError(
                    f"task {task}: the endpoint failed on all but "
                    f"{len(next(iter(asked.values())))} item(s) ({failed[0]['reason']}); "
                    "rerun to ask again"
                )
        for answer, found in asked.items():
            for item in found:
                scored.setdefault(answer, {})[(task, item.id)] = item
                for voice in voices:
                    row = spoken[answer].row(item, voice)
                    clips_heard = [Path(c.path).stem for c in row.clips if c.path]
                    heard.setdefault(answer, {})[(task, item.id, voice)] = clips_heard
    corpus = None
    if setup.divergences and divergence.supports_divergence(models.speech):
        corpus = corpus_divergence.gap_figures(
            models.speech,
            models.text,
            corpus=setup.divergence_corpus,
            documents=setup.divergence_docs,
            voice=setup.divergence_voice,
            span_words=setup.divergence_span_words,
            synth_seed=setup.synth_seed,
            n_boot=setup.n_boot,
            seed=setup.seed,
            shard=shard,
        )
        clips.update(corpus.pop("clips"))  # the spans' audio travels with the run's
    if not shard.main:
        return {}
    with run_folder.writing(run_dir):  # a reader refuses the run until its last file is in
        atomic_write_text(
            run_dir / "items.jsonl",
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records),
        )
        write_heard(run_dir, said)
        manifest = provenance.manifest(
            setup, models, task_info, voices, synth_info, excluded_all, training
        )
        manifest["seconds"] = round(time.time() - started, 1)
        manifest["clips"] = dict(sorted(clips.items()))
        manifest["acoustics"] = {  # every setting of each acoustic condition (clips: sidecars)
            str(v): [{"name": p.name, "kind": p.kind, **p.settings} for p in v.acoustics]
            for v in resolve_voices(setup.voices)
            if v.acoustics
        }
        if len(voices) > 1:
            manifest["voice_diversity"] = diversity.voice_diversity(voice_clips)
        if corpus is not None:
            manifest["corpus_divergence"] = corpus["setup"]
        results = write_report(
            run_dir, records, manifest, setup.metric, setup.n_boot, setup.seed, corpus
        )
        write_lm_eval(
            run_dir,
            results,
            records,
            setup.names.get("speech") or "model",
            scored if setup.log_samples else None,
            heard,
        )
        write_run_page(run_dir, embed_audio)  # last: it reads every file above
        return results


def text_length(model: Model) -> Callable[[str], int]:
    """Tokens of a text as the text LLM reads it (``--shot-budget``'s estimate; no model pass)."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise SaladError(
            "--shot-budget counts tokens with the text LLM's tokenizer, and this text "
            "model has none; run without --shot-budget"
        )
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def read_exclusions(path: str) -> dict[str, set[str]]:
    """``--exclude-items``: the item ids per task a gap run drops (``salad-train decontam``
    writes them), from a JSON file ``{"exclude": {"<task>": ["<item id>", ...]}}``."""
    try:
        listed = json.loads(Path(path).read_text(encoding="utf-8"))["exclude"]
        if not isinstance(listed, dict) or not all(isinstance(v, list) for v in listed.values()):
            raise TypeError
        return {str(task): {str(item) for item in ids} for task, ids in listed.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        raise SaladError(
            f"--exclude-items {path} is not a JSON file holding "
            '{"exclude": {"<task>": ["<item id>", ...]}}; pass the file '
            "`salad-train decontam` writes"
        ) from None


def check_exclusions(path: str, names: Sequence[str], data_dir: str | None = None) -> None:
    """Every task and item id ``--exclude-items`` lists is in the run: a stale file (another
    task set, an edited data file) is refused, not silently ignored."""
    for task, ids in read_exclusions(path).items():
        if task not in names:
            raise SaladError(
                f"--exclude-items {path} lists task {task}, which this run does not score "
                f"({', '.join(names)}); pass the file written for these tasks"
            )
        unknown = sorted(ids - tasks.check_data(task, data_dir))
        if unknown:
            more = f" and {len(unknown) - 1} more" if len(unknown) > 1 else ""
            raise SaladError(
                f"--exclude-items {path}: task {task} has no item {unknown[0]!r}{more}; "
                "pass the file written for this task's data"
            )


def _task_records(
    task: str,
    asked: dict[str, list[Item]],
    spoken: dict,
    voices,
    models: Models,
    setup: RunSpec,
    shard: Shard,
) -> list[dict]:
    """One record per item x condition x voice, each holding its answer in every mode asked
    (log-likelihood fields, generation fields, or both) in the lead mode's order."""
    records: list[dict] = []
    if "loglik" in asked:
        records = _loglik_records(
            task, asked["loglik"], spoken["loglik"], voices, models, setup, shard
        )
    if "generate" in asked:
        generated = _generated_records(
            task, asked["generate"], spoken["generate"], voices, models, setup, shard
        )
        if not records:
            return generated
        by_key = {(r["item"], r["condition"], r["voice"]): r for r in records}
        letters = {i.id: i.choices for i in asked["generate"]}  # the loglik argmax, as a letter
        for row in generated:
            record = by_key[row["item"], row["condition"], row["voice"]]
            record.update({k: v for k, v in row.items() if k not in record})
            offered = letters[row["item"]]
            record["agrees"] = sum(letter == offered[record["pred"]] for letter in row["letters"])
    return records


def _answered(records: list[dict]) -> tuple[list[dict], list[dict]]:
    """The records of items answered in every condition, and an exclusion row per item with a
    failed request (the first failure is its reason)."""
    failed: dict[str, dict] = {}
    for r in records:
        if "failed" in r and r["item"] not in failed:
            where = r["condition"] + (f" {r['voice']}" if r["voice"] else "")
            reason = f"request failed at the endpoint ({where}): {r['failed']}"
            failed[r["item"]] = {"task": r["task"], "item": r["item"], "reason": reason}
    return [r for r in records if r["item"] not in failed], list(failed.values())


def _failure(item: Item, condition: str, voice: str | None, failed: Failed) -> dict:
    return {**_identity(item, condition, voice), "failed": failed.reason}


def _condition_prompts(
    items: list[Item], manifest, voices, models: Models, setup: RunSpec
) -> list[tuple[str, str | None, Model | None, list[Prompt]]]:
    """(condition, voice, model, one prompt per item) of every condition and control."""
    text = [text_prompt(i) for i in items]
    runs: list[tuple[str, str | None, Model | None, list[Prompt]]] = [
        ("text@base", None, models.text, text),
        ("text@speech", None, models.speech, text),
    ]
    for voice in voices:
        spoken = [manifest.speech_prompt(i, voice) for i in items]
        runs += [
            ("speech@speech", voice, models.speech, spoken),
            ("speech@cascade", voice, models.cascade, spoken),
        ]
        if setup.controls:
            runs += [
                ("speech@speech:silent", voice, models.speech, [silent_prompt(p) for p in spoken]),
                (
                    "speech@speech:shuffled",
                    voice,
                    models.speech,
                    shuffled_prompts(spoken, setup.seed),
                ),
            ]
    return [run for run in runs if run[2] is not None]


def _generated_records(
    task: str, items: list[Item], manifest, voices, models: Models, setup: RunSpec, shard: Shard
) -> list[dict]:
    """Every condition's replies to the items' multiple-choice prompts, letters extracted."""
    decoding = setup.decoding()
    until = tasks.generation(tasks.get_task(task)).until
    records = []
    for condition, voice, model, prompts in _condition_prompts(
        items, manifest, voices, models, setup
    ):
        requests = [GenerationRequest(p, until) for p in prompts]
        label = f"{task} {condition}" + (f" {voice}" if voice else "")
        if shard.size > 1:
            generation.fill_shard(
                model, requests, decoding, setup.batch_size, shard.rank, shard.size
            )
            shard.wait()
        log.info("%s: %s replies", label, len(requests) * decoding.samples)
        replies = generation.generate(model, requests, decoding, setup.batch_size)
        for item, prompt, sampled in zip(items, prompts, replies, strict=True):
            if isinstance(sampled, Failed):
                records.append(_failure(item, condition, voice, sampled))
                continue
            row = {
                **_identity(item, condition, voice),
                **_generated(item, sampled, decoding),
                "until": list(until),
            }
            if condition == "speech@cascade" and hasattr(model, "transcript_wer"):
                row |= _heard_by_asr(model, prompt)
            records.append(row)
    return records


def _generated(item: Item, replies: list[Reply], decoding) -> dict:
    """A record's generation fields: each sample's reply, what the rule read and its letter."""
    read = [extraction.extract(r.text, item.choices, item.options, r.truncated) for r in replies]
    letters = [e.letter for e in read]
    fields = {
        "replies": [r.text for r in replies],
        "read": [e.reply for e in read],
        "letters": letters,
        "shapes": [e.shape for e in read],
        "reply_tokens": [r.n_tokens for r in replies],
        "truncated": [r.truncated for r in replies],
        "samples": len(replies),
        "correct_gen": sum(letter == item.choices[item.target] for letter in letters),
        "no_answer": sum(letter is None for letter in letters),
        "rule": extraction.RULE,
        "decoding": asdict(decoding),
    }
    if any(e.reasoning for e in read):
        fields["reasoning"] = [list(e.reasoning) for e in read]
    return fields


def _loglik_records(
    task: str, items: list[Item], manifest, voices, models: Models, setup: RunSpec, shard: Shard
) -> list[dict]:
    """Every condition's scores of the items' choices, with the per-item answer KLs."""
    kls = setup.divergences and divergence.supports_divergence(models.speech, models.text)
    records = []
    for condition, voice, model, prompts in _condition_prompts(
        items, manifest, voices, models, setup
    ):
        requests = [ScoringRequest(p, i.choices) for p, i in zip(prompts, items, strict=True)]
        label = f"{task} {condition}" + (f" {voice}" if voice else "")
        scores = _score_all(model, requests, shard, setup, label)
        rows = [
            _failure(i, condition, voice, s)
            if isinstance(s, Failed)
            else _record(i, condition, voice, s)
            for i, s in zip(items, scores, strict=True)
        ]
        if kls and condition == "text@speech":
            values = divergence.answer_kls(
                "F",
                items,
                shard,
                lambda i: divergence.forgetting_kl(models.text, models.speech, i),
                [models.text.fingerprint, models.speech.fingerprint],
            )
            for row, value in zip(rows, values, strict=True):
                row["answer_kl"] = value
        if kls and condition == "speech@speech":
            pairs = dict(zip((i.id for i in items), prompts, strict=True))
            values = divergence.answer_kls(
                "M",
                items,
                shard,
                lambda i, pairs=pairs: divergence.misalignment_kl(models.speech, i, pairs[i.id]),
                [models.speech.fingerprint, voice],
                pairs,
            )
            for row, value in zip(rows, values, strict=True):
                row["answer_kl"] = value
        if condition == "speech@cascade" and hasattr(model, "transcript_wer"):
            for row, prompt in zip(rows, prompts, strict=True):
                row |= _heard_by_asr(model, prompt)
        records += rows
    return records


def _heard_by_asr(cascade, prompt: Prompt) -> dict:
    """A cascade record's WER of its clips and what its ASR heard (report.html shows both)."""
    return {
        "wer": cascade.transcript_wer(prompt),
        "transcript": " ".join(cascade.transcripts(prompt)),
    }


def default_run_dir(model: str, task_names: Sequence[str]) -> Path:
    """``reports/<model>-<tasks>`` (in the checkout, else the current folder): the same command
    writes (and resumes) the same run."""
    stem = Path(model.rstrip("/")).name or "model"
    reports = project_root() / "reports" if in_checkout() else Path("reports")
    return reports / f"{stem}-{'+'.join(task_names)}"
