"""The page's items: what each item said, the clips it was heard in, and how every condition
answered it, as compact JSON the page's script renders on demand.

Two inputs per run. ``items.jsonl`` holds the answers (one record per item, condition and
voice); ``heard.jsonl`` (written by the gap run beside it, ``heard_rows``) holds each item's
context, choices and clips per voice, with the clips the shuffled-audio control played in their
place. A run written before ``heard.jsonl`` existed still shows its answers, without text or audio.

An item's outcomes, in the run's headline metric (a generated answer is right when most of its
sampled replies are, as the McNemar tests count it):

- *forgotten*: right in ``text@base``, wrong in ``text@speech``;
- *misaligned*: right in ``text@speech``, wrong in ``speech@speech``, in a voice;
- *rescued by the cascade*: wrong in ``speech@speech``, right in ``speech@cascade``, in a voice;
- *listens to silence*: right under ``speech@speech:silent``, in a voice.

The voice-dependent ones are kept per voice (a bit mask), so the page's voice and acoustic
filters narrow them to the voices chosen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from salad_eval.conditions import derangement
from salad_eval.gap.records import ALL_CONDITIONS, METRICS, count, right
from salad_eval.gap.robustness import condition as acoustic_condition
from salad_eval.prompt import Item, Speak

MISALIGNED, RESCUED, SILENCE = 1, 2, 4  # bits of an item's per-voice outcome mask
OUTCOMES = ("misaligned", "forgotten", "rescued", "silence")


def clip_id(sha256: str) -> str:
    """A clip's name on the page and in ``audio/``: its content, so runs share their copies."""
    return sha256[:16]


def heard_rows(
    items: Sequence[Item], manifest, voices: Sequence[str], seed: int, controls: bool, answer: str
) -> list[dict]:
    """``heard.jsonl``'s rows for one task and answer mode: per item its context, choices and,
    per voice, the clips it was heard in (store key, sha256, seconds, the synthesis check's
    transcript and error rates) and the clips the shuffled control put in their place (the
    same derangement ``conditions.shuffled_prompts`` draws, over the same items in order)."""
    rows = [manifest.row(item, voice) for item in items for voice in voices]
    by_item = {(row.item_id, row.voice): row for row in rows}
    donors = derangement(len(items), seed) if controls and len(items) >= 2 else None
    out = []
    for n, item in enumerate(items):
        heard = {}
        for voice in voices:
            row = by_item[item.id, voice]
            clips = [c for c in row.clips if c.path]
            entry = {
                "clips": [
                    {
                        "key": _key(c.path),
                        "sha256": c.sha256,
                        "seconds": c.seconds,
                        "transcript": c.transcript,
                        "wer": c.wer,
                        "cer": c.cer,
                    }
                    for c in clips
                ],
                "wer": row.wer,
                "cer": row.cer,
                "flagged": row.flagged,
            }
            if donors is not None:
                donor = items[donors[n]]
                given = [c for c in by_item[donor.id, voice].clips if c.path]
                played = [given[k % len(given)] for k in range(len(clips))] if given else []
                entry["shuffled"] = {
                    "item": donor.id,
                    "clips": [{"key": _key(c.path), "sha256": c.sha256} for c in played],
                }
            heard[voice] = entry
        out.append(
            {
                "task": item.task,
                "item": item.id,
                "domain": item.domain,
                "answer": answer,
                "context": [
                    ["speak" if isinstance(part, Speak) else "text", part.text]
                    for part in item.context
                ],
                "choices": list(item.choices),
                "target": item.target,
                "options": list(item.options),
                "voices": heard,
            }
        )
    return out


def _key(path: str) -> str:
    """A manifest clip's store key (its file is ``<key>.flac``)."""
    return Path(path).stem


def voice_table(voices: Iterable[str]) -> list[dict]:
    """Each voice with its speaker and acoustic condition (the page's two voice filters)."""
    table = []
    for voice in voices:
        heard = acoustic_condition(voice)
        table.append({"name": voice, "speaker": heard["speaker"], "acoustics": heard["acoustics"]})
    return table


def outcomes(records: Iterable[dict], field: str) -> tuple[bool, dict[str, int]]:
    """One item's outcomes from its records: forgotten, and a bit mask per voice."""
    ok: dict[tuple[str, str | None], bool] = {
        (r["condition"], r["voice"]): right(r, field) for r in records
    }
    forgotten = ok.get(("text@base", None)) is True and ok.get(("text@speech", None)) is False
    text_right = ok.get(("text@speech", None)) is True
    masks: dict[str, int] = {}
    for (condition, voice), _ in ok.items():
        if voice is None or condition != "speech@speech":
            continue
        mask = 0
        speech = ok[condition, voice]
        if text_right and not speech:
            mask |= MISALIGNED
        if not speech and ok.get(("speech@cascade", voice)) is True:
            mask |= RESCUED
        if ok.get(("speech@speech:silent", voice)) is True:
            mask |= SILENCE
        masks[voice] = mask
    return forgotten, masks


def count_outcome(records: Iterable[dict], outcome: str, metric: str = "acc") -> int:
    """How many items have ``outcome`` (in any voice): what the page's outcome filter counts."""
    bit = {"misaligned": MISALIGNED, "rescued": RESCUED, "silence": SILENCE}.get(outcome)
    by_item: dict[tuple[str, str], list[dict]] = {}
    for rec in records:
        by_item.setdefault((rec["task"], rec["item"]), []).append(rec)
    total = 0
    for recs in by_item.values():
        forgotten, masks = outcomes(recs, METRICS[metric])
        total += forgotten if bit is None else any(m & bit for m in masks.values())
    return total


def _answer(rec: dict, field: str, conditions: list[str], voices: dict[str, int]) -> dict:
    """One record as the page shows it: condition and voice (indices), right or wrong, the
    chosen choice and each choice's log-prob, or the replies and letters read from them."""
    row: dict = {
        "c": conditions.index(rec["condition"]),
        "v": -1 if rec["voice"] is None else voices[rec["voice"]],
        "ok": int(right(rec, field)),
    }
    if "logprobs" in rec:
        row["p"] = rec["pred"]
        row["lp"] = [round(x, 3) for x in rec["logprobs"]]
    if "replies" in rec:
        right_samples, samples = count(rec, "correct_gen")
        row["gen"] = {
            "replies": rec["replies"],
            "letters": rec["letters"],
            "right": right_samples,
            "samples": samples,
            "no_answer": rec.get("no_answer", 0),
        }
    for key, short in (("transcript", "tr"), ("wer", "wer")):
        if rec.get(key) is not None:
            row[short] = round(rec[key], 4) if key == "wer" else rec[key]
    return row


def _heard(entry: dict, voices: dict[str, int], clips: dict[str, tuple[str, str]]) -> dict:
    """An item's clips per voice as the page plays them (clip ids; keys and digests collected)."""
    shown = {}
    for voice, heard in entry["voices"].items():
        if voice not in voices:
            continue
        ids = []
        for clip in heard["clips"]:
            ids.append(clip_id(clip["sha256"]))
            clips[ids[-1]] = (clip["key"], clip["sha256"])
        view = {
            "clips": ids,
            "sec": [round(c["seconds"], 4) for c in heard["clips"]],
            "asr": [c.get("transcript") for c in heard["clips"]],
            "wer": heard.get("wer"),
            "cer": heard.get("cer"),
            "flag": bool(heard.get("flagged")),
        }
        shuffled = heard.get("shuffled")
        if shuffled is not None:
            played = []
            for clip in shuffled["clips"]:
                played.append(clip_id(clip["sha256"]))
                clips[played[-1]] = (clip["key"], clip["sha256"])
            view["shuf"] = {"item": shuffled["item"], "clips": played}
        shown[str(voices[voice])] = view
    return shown


def item_views(
    runs: Sequence[tuple[list[dict], list[dict] | None, str]],
) -> tuple[list[dict], list[str], list[dict], dict[str, tuple[str, str]]]:
    """The page's items, conditions, voices and clips from each run's (records, heard rows,
    headline metric); items in the first run's order, then any new in the next runs'.

    Returns (items, conditions, voices, {clip id: (store key, sha256)}). With several runs each
    item lists, beside each run's answers, its flips: every (run, condition, voice) where that
    run's right or wrong differs from the first run's.
    """
    present = {r["condition"] for records, _, _ in runs for r in records}
    conditions = [c for c in ALL_CONDITIONS if c in present]
    names: list[str] = []
    for records, _, _ in runs:
        names += [r["voice"] for r in records if r["voice"] is not None and r["voice"] not in names]
    voices = {name: n for n, name in enumerate(sorted(set(names)))}
    order: dict[tuple[str, str], dict] = {}
    clips: dict[str, tuple[str, str]] = {}
    for run, (records, heard, metric) in enumerate(runs):
        field = METRICS[metric]
        grouped: dict[tuple[str, str], list[dict]] = {}
        for rec in records:
            grouped.setdefault((rec["task"], rec["item"]), []).append(rec)
        said = {}
        for entry in heard or []:  # the lead answer mode's text; every mode's clips
            key = (entry["task"], entry["item"])
            said.setdefault(key, {"entry": entry, "voices": {}})["voices"].update(
                _heard(entry, voices, clips)
            )
        for key, recs in grouped.items():
            item = order.get(key)
            if item is None:
                first = recs[0]
                item = order[key] = {
                    "task": key[0],
                    "id": key[1],
                    "domain": first["domain"],
                    "target": first.get("target"),
                    "context": None,
                    "choices": None,
                    "runs": [None] * len(runs),
                }
            if key in said and item["context"] is None:
                entry = said[key]["entry"]
                item["context"] = [[int(kind == "speak"), text] for kind, text in entry["context"]]
                item["choices"] = entry["choices"]
                if entry.get("options"):
                    item["options"] = entry["options"]
            forgotten, masks = outcomes(recs, field)
            item["runs"][run] = {
                "rows": [_answer(r, field, conditions, voices) for r in recs],
                "heard": said.get(key, {}).get("voices", {}),
                "forgotten": int(forgotten),
                "masks": {str(voices[v]): m for v, m in masks.items()},
            }
    items = list(order.values())
    if len(runs) > 1:
        for item in items:
            item["flips"] = flips(item["runs"])
    return items, conditions, voice_table(voices), clips


def flips(runs: list[dict | None]) -> list[list[int]]:
    """[run, condition, voice, right in the first run, right in this run] wherever they differ."""
    if runs[0] is None:
        return []
    first = {(row["c"], row["v"]): row["ok"] for row in runs[0]["rows"]}
    found = []
    for n, run in enumerate(runs[1:], 1):
        for row in (run or {}).get("rows", []):
            before = first.get((row["c"], row["v"]))
            if before is not None and before != row["ok"]:
                found.append([n, row["c"], row["v"], before, row["ok"]])
    return found
