"""A gap run in lm-evaluation-harness's output format, for the dashboards that already read it.

Beside salad's own files, a run writes ``results_<date>.json`` laid out as lm-eval 0.4's: per
task, ``results`` holds the gap, forgetting and misalignment (``<name>,none``, in the run's
headline metric, ``--metric``); each
condition is a subtask ``<task>:<condition>`` (voices averaged per item, as salad's own figures)
with ``acc,none``, ``acc_norm,none`` and their ``_stderr`` (the sample standard error lm-eval
reports), grouped under the task in ``group_subtasks``. With ``log_samples`` it also writes
``samples_<task>_<date>.jsonl``: one line per item, condition and voice, in lm-eval's sample
schema (``doc_id``, ``doc``, ``target``, ``arguments``, ``resps``, ``filtered_resps``, hashes and
the per-sample metrics), plus salad's ``condition`` and ``voice``. Generated answers appear as
lm-eval's ``generate_until`` samples: ``resps`` the replies, ``filtered_resps`` the letters the
extraction rule read (``[no answer]`` where it found none), ``acc_gen`` and ``no_answer`` beside
the accuracies in ``results``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from salad_eval.gap.records import ALL_CONDITIONS, METRICS, RATES, count
from salad_eval.home import atomic_write_text
from salad_eval.prompt import Item

DECOMPOSITION = ("gap", "forgetting", "misalignment")
NO_ANSWER = "[no answer]"  # a reply's filtered response when the rule found no letter


def _stderr(values: list[float]) -> float:
    """lm-eval's ``mean_stderr``: sample standard deviation over the square root of n."""
    n = len(values)
    if n < 2:
        return float("nan")
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def _per_item(records: list[dict], task: str, condition: str, key: str) -> list[float]:
    """Each item's score under ``condition``: the fraction of its voices (and sampled replies)
    answered correctly."""
    by_item: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for rec in records:
        if rec["task"] == task and rec["condition"] == condition:
            by_item[rec["item"]].append(count(rec, key))
    return [sum(k for k, _ in v) / sum(n for _, n in v) for v in by_item.values()]


def lm_eval_results(results: dict, records: list[dict], model_name: str) -> dict:
    """The content of ``results_<date>.json`` for one gap run."""
    manifest, setup = results["manifest"], results["manifest"]["setup"]
    out: dict = {
        "results": {},
        "groups": {},
        "group_subtasks": {},
        "configs": {},
        "versions": {},
        "n-shot": {},
        "higher_is_better": {},
        "n-samples": {},
    }
    reported = [(m, METRICS[m]) for m in results["metrics"]]
    reported += [(r, f) for r, f in RATES.items() if all(f in rec for rec in records)]
    for task in results["tasks"]:
        table = results["metrics"][results["metric"]]["tasks"][task]
        group = {"alias": task}
        for name in DECOMPOSITION:
            group[f"{name},none"] = table[name]["value"]
            group[f"{name}_stderr,none"] = "N/A"  # salad reports bootstrap CIs in results.json
        out["results"][task] = group
        out["groups"][task] = dict(group)
        subtasks = []
        for condition in ALL_CONDITIONS:
            if condition not in table["accuracy"]:
                continue
            name = f"{task}:{condition}"
            row = {"alias": f" - {condition}"}
            for metric, key in reported:
                values = _per_item(records, task, condition, key)
                row[f"{metric},none"] = sum(values) / len(values)
                row[f"{metric}_stderr,none"] = _stderr(values)
            out["results"][name] = row
            n = len(values)
            out["n-samples"][name] = {"original": n, "effective": n}
            out["higher_is_better"][name] = {m: m != "no_answer" for m, _ in reported}
            out["versions"][name] = manifest["tasks"][task]["version"]
            out["n-shot"][name] = setup["shots"]
            fingerprint = manifest["tasks"][task]["fingerprint"]
            out["configs"][name] = {
                "task": name,
                "condition": condition,
                "fingerprint": fingerprint,
            }
            subtasks.append(name)
        out["group_subtasks"][task] = subtasks
        out["higher_is_better"][task] = dict.fromkeys(DECOMPOSITION, False)
        out["versions"][task] = manifest["tasks"][task]["version"]
        out["n-shot"][task] = setup["shots"]
    out["config"] = {
        "model": "salad",
        "model_args": f"pretrained={model_name}",
        "batch_size": setup["batch_size"],
        "device": None,
        "limit": setup["limit"],
        "bootstrap_iters": setup["n_boot"],
        "random_seed": setup["seed"],
        "voices": results["voices"],
        "metric": results["metric"],  # that of gap, forgetting and misalignment
    }
    out["git_hash"] = manifest.get("git_commit")
    out["date"] = datetime.now().timestamp()
    out["model_name"] = model_name
    out["model_name_sanitized"] = re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model_name)
    out["total_evaluation_time_seconds"] = str(manifest.get("seconds"))
    out["salad_results"] = "results.json"  # every figure, CIs and controls: salad's own file
    return out


def _sha(value: object) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _sample(index: int, item: Item, record: dict, clips: list[str], answer: str) -> dict:
    doc = {
        "id": item.id,
        "domain": item.domain,
        "context": item.text_context,
        "spoken": list(item.spoken_texts),
        "choices": list(item.choices),
    }
    if answer == "generate":  # lm-eval's generate_until: one request, the replies, the letter
        decoding = record["decoding"]
        arguments = {
            "gen_args_0": {
                "arg_0": item.text_context,
                "arg_1": {
                    "until": record.get("until", []),
                    "max_gen_toks": decoding["max_new_tokens"],
                    "temperature": decoding["temperature"],
                    "top_p": decoding["top_p"],
                    "do_sample": decoding["temperature"] > 0,
                },
            }
        }
        resps = [record["replies"]]
        filtered = [letter if letter is not None else NO_ANSWER for letter in record["letters"]]
        metrics = {"acc_gen": record["correct_gen"] / record["samples"]}
        metrics["no_answer"] = record["no_answer"] / record["samples"]
        doc["options"] = list(item.options)
    else:
        arguments = {
            f"gen_args_{n}": {"arg_0": item.text_context, "arg_1": choice}
            for n, choice in enumerate(item.choices)
        }
        filtered = [[lp, g] for lp, g in zip(record["logprobs"], record["greedy"], strict=True)]
        resps = [[response] for response in filtered]
        metrics = {m: float(record[METRICS[m]]) for m in ("acc", "acc_norm")}
    sample = {
        "doc_id": index,
        "doc": doc,
        "target": item.target,
        "arguments": arguments,
        "resps": resps,
        "filtered_resps": filtered,
        "filter": "none" if answer != "generate" else f"extract:{record['rule']}",
        "metrics": list(metrics),
        "doc_hash": _sha(doc),
        "prompt_hash": _sha(item.text_context),
        "target_hash": _sha(str(item.target)),
        "condition": record["condition"],
        "voice": record["voice"],
        **metrics,
    }
    if record["voice"] is not None:
        sample["clips"] = clips  # the audio heard (controls: what it was replaced by is derived)
    for extra in ("answer_kl", "wer", "reasoning"):
        if extra in record:
            sample[extra] = record[extra]
    return sample


def write_lm_eval(
    run_dir: Path,
    results: dict,
    records: list[dict],
    model_name: str,
    items: dict[str, dict[tuple[str, str], Item]] | None = None,
    clips: dict[str, dict[tuple[str, str, str], list[str]]] | None = None,
) -> list[Path]:
    """Write ``results_<date>.json`` (and, given ``items`` per answer mode, the per-sample JSONL:
    ``samples_<task>_<date>.jsonl``, and ``samples_<task>_generate_<date>.jsonl`` for the
    replies of ``--answer both``); their paths."""
    stamp = datetime.now().isoformat().replace(":", "-")
    path = run_dir / f"results_{stamp}.json"
    payload = lm_eval_results(results, records, model_name)
    atomic_write_text(path, json.dumps(payload, indent=2, default=str) + "\n")
    written = [path]
    if items is None:
        return written
    for answer, asked in items.items():
        suffix = "_generate" if answer == "generate" and len(items) > 1 else ""
        for task in results["tasks"]:
            order = {key: n for n, key in enumerate(k for k in asked if k[0] == task)}
            lines = []
            for rec in records:
                if rec["task"] != task:
                    continue
                key = (task, rec["item"])
                heard = (clips or {}).get(answer, {}).get((task, rec["item"], rec["voice"]), [])
                sample = _sample(order[key], asked[key], rec, heard, answer)
                lines.append(json.dumps(sample, ensure_ascii=False))
            path = run_dir / f"samples_{task}{suffix}_{stamp}.jsonl"
            atomic_write_text(path, "".join(line + "\n" for line in lines))
            written.append(path)
    return written
