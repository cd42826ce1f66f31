"""report.html: a run (or a comparison of runs) as one page a person explores and listens to.

The page is one HTML file holding its script, its style and its data (a JSON block the script
renders: the overview, then the items, each drawn only when it scrolls into the list and its
details only when opened), with the clips in ``audio/`` beside it (``audio.py``), or inside it
with ``embed_audio``. It loads nothing else: it works from ``file://``, offline, and from any
static host. The script and style are plain JavaScript and CSS shipped in this package
(``assets/``): no framework, no build step, nothing to vendor or update.
"""

from __future__ import annotations

import base64
import html
import json
import os
import sys
import webbrowser
from importlib import resources
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.gap.compare import load_run
from salad_eval.gap.paired import load_items, paired_note
from salad_eval.gap.report import CONDITION_MEANINGS
from salad_eval.home import atomic_write_text
from salad_eval.page.audio import copy_clips
from salad_eval.page.items import item_views
from salad_eval.run_folder import check_complete

PAGE = "report.html"
HEARD = "heard.jsonl"
AUDIO = "audio"
_FIGURE = ("value", "ci_low", "ci_high", "n")
_TABLE = ("gap", "forgetting", "misalignment", "cascade_gap")


def write_heard(run_dir: Path, rows: list[dict]) -> None:
    """``heard.jsonl``: each item's context, choices and clips per voice (``items.heard_rows``)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    atomic_write_text(Path(run_dir) / HEARD, text)


def read_heard(run_dir: Path) -> list[dict] | None:
    """A run's ``heard.jsonl`` (None for a run written before it existed)."""
    path = Path(run_dir) / HEARD
    if not path.is_file():
        return None
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
    except (UnicodeDecodeError, ValueError):
        raise SaladError(f"{path} is not JSON lines; rerun the gap run that wrote it") from None


def _figure(fig: dict | None) -> dict | None:
    return None if fig is None else {k: fig[k] for k in _FIGURE if k in fig}


def _table(table: dict) -> dict:
    """One decomposition table as the page shows it: accuracies and the gap's parts, with CIs."""
    out = {
        "n_items": table["n_items"],
        "accuracy": {c: _figure(f) for c, f in table["accuracy"].items()},
        **{part: _figure(table[part]) for part in _TABLE if part in table},
    }
    if "no_answer" in table:
        out["no_answer"] = {c: _figure(f) for c, f in table["no_answer"].items()}
    return out


def _data_uri(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _plots(paths: list[Path]) -> list[dict]:
    return [{"name": p.stem.replace("_", " "), "src": _data_uri(p, "image/png")} for p in paths]


def run_overview(name: str, results: dict, plots: list[Path]) -> dict:
    """What the overview shows of one run: its figures in the headline metric, the controls
    verdict, by task, domain, voice and acoustic condition, no-answer rates, corpus F and M."""
    metric = results["metric"]
    tables = results["metrics"][metric]
    manifest = results.get("manifest") or {}
    generated = results["metrics"].get("acc_gen", {}).get("overall", {})
    return {
        "name": name,
        "metric": metric,
        "ci_level": results.get("ci_level", 0.95),
        "n_items": results["n_items"],
        "tasks": results["tasks"],
        "voices": results["voices"],
        "overall": _table(tables["overall"]),
        "by": {
            "task": {k: _table(t) for k, t in tables["tasks"].items()},
            "domain": {k: _table(t) for k, t in tables["domains"].items()},
            "voice": {k: _table(t) for k, t in tables["voices"].items()},
        },
        "controls": results.get("controls", {}).get("sentence"),
        "robustness": [
            {
                "voice": r["voice"],
                "speaker": r["speaker"],
                "acoustics": r["acoustics"],
                "n_items": r["n_items"],
                **{k: _figure(r.get(k)) for k in ("speech@speech", "speech@cascade", "gap")},
                "cascade_wer": _figure(r.get("cascade_wer")),
                "listens": r.get("listens"),
            }
            for r in results.get("robustness") or []
        ],
        "no_answer": {c: _figure(f) for c, f in generated.get("no_answer", {}).items()},
        "corpus": {k: _figure(v) for k, v in (results.get("corpus_divergence") or {}).items()},
        "exposure": results.get("voice_exposure"),
        "models": {role: m.get("name") for role, m in (manifest.get("models") or {}).items() if m},
        "created": manifest.get("created"),
        "plots": _plots(plots),
    }


def _page_data(
    kind: str,
    title: str,
    overviews: list[dict],
    runs: list[tuple[list[dict], list[dict] | None, str]],
    audio_dir: Path | None,
    comparison: dict | None = None,
) -> dict:
    items, conditions, voices, clips = item_views(runs)
    audio = copy_clips(clips, audio_dir, AUDIO)
    reasons = sorted({a["missing"] for a in audio.values() if "missing" in a})
    for entry in audio.values():  # each reason once on the page, whatever the clips it holds
        if "missing" in entry:
            entry["missing"] = reasons.index(entry["missing"])
    return {
        "kind": kind,
        "title": title,
        "runs": overviews,
        "conditions": conditions,
        "meanings": {c: CONDITION_MEANINGS[c] for c in conditions},
        "voices": voices,
        "items": items,
        "audio": audio,
        "missing": reasons,
        "comparison": comparison,
    }


def write_run_page(run_dir: Path, embed_audio: bool = False) -> Path:
    """Write ``report.html`` (and ``audio/``, unless ``embed_audio``) into a gap run's folder
    from its files; the gap run calls it as it writes its last output."""
    run_dir = Path(run_dir)
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    records = load_items(run_dir)
    if records is None:
        raise SaladError(f"{run_dir} has no items.jsonl; pass a run written by `salad-eval gap`")
    name = run_dir.resolve().name
    overview = run_overview(name, results, sorted(run_dir.glob("*.png")))
    runs = [(records, read_heard(run_dir), results["metric"])]
    audio_dir = None if embed_audio else run_dir / AUDIO
    data = _page_data("run", name, [overview], runs, audio_dir)
    return _write(run_dir / PAGE, data)


def rebuild_run_page(run_dir: Path, embed_audio: bool = False) -> Path:
    """``salad-eval view --rebuild``: the page of a finished run written again (its clips
    copied from the store as it is now)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SaladError(
            f"{run_dir} is not a folder; pass a run folder written by `salad-eval gap`"
        )
    if not (run_dir / "results.json").is_file() and (run_dir / "comparison.json").is_file():
        raise SaladError(f"{run_dir} is a comparison: `salad-eval report` writes its page again")
    load_run(run_dir)  # complete, and a gap report: else one line says what is wrong
    return write_run_page(run_dir, embed_audio)


def write_comparison_page(
    run_dirs: list[Path], names: list[str], out: Path, comparison: dict, embed_audio: bool = False
) -> Path:
    """``report.html`` of ``salad-eval report``: the runs side by side, item by item, with the
    flips between them and ``comparison`` (what ``compare_runs`` returned: the side-by-side
    table, the paired statistics and the plots, in ``out``)."""
    out = Path(out)
    overviews, runs = [], []
    for run_dir, name in zip(map(Path, run_dirs), names, strict=True):
        results = load_run(run_dir)
        overviews.append(run_overview(name, results, []))
        runs.append((load_items(run_dir) or [], read_heard(run_dir), results["metric"]))
    extra = {
        "rows": comparison["rows"],
        "paired": comparison["paired"],
        "notes": comparison["paired_notes"],
        "note": paired_note(),
        "plots": _plots([out / p for p in comparison["plots"]]),
    }
    title = " vs ".join(names)
    data = _page_data(
        "comparison", title, overviews, runs, None if embed_audio else out / AUDIO, extra
    )
    return _write(out / PAGE, data)


def _asset(name: str) -> str:
    return (resources.files("salad_eval.page") / "assets" / name).read_text(encoding="utf-8")


def render(data: dict) -> str:
    """The page: the template with its style, script and data (``<`` escaped inside the JSON,
    so no text of an item can close its script block)."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")
    page = _asset("report.html")
    page = page.replace("__TITLE__", html.escape(f"salad · {data['title']}"))
    page = page.replace("__STYLE__", _asset("report.css")).replace(
        "__SCRIPT__", _asset("report.js")
    )
    return page.replace("__DATA__", payload)  # last: the data may hold any text


def _write(path: Path, data: dict) -> Path:
    atomic_write_text(path, render(data))
    return path


def find_page(path: Path) -> Path:
    """The page of a run or comparison folder (or the file itself); one line when there is none."""
    path = Path(path)
    if path.is_file() and path.suffix == ".html":
        return path
    if not path.is_dir():
        raise SaladError(f"{path} is not a folder; pass a run folder written by `salad-eval gap`")
    check_complete(path)
    page = path / PAGE
    if not page.is_file():
        raise SaladError(
            f"{path} has no {PAGE}; `salad-eval view --rebuild {path}` writes it for a gap run "
            "(`salad-eval report` for a comparison)"
        )
    return page


def open_page(page: Path) -> bool:
    """Open the page in the default browser when there is a display (False when there is none)."""
    has_display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform not in ("darwin", "win32") and not has_display:
        return False
    try:
        return webbrowser.open(Path(page).resolve().as_uri())
    except webbrowser.Error:
        return False
