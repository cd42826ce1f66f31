"""report.html at scale: a run of 1,000 items x 3 voices (every condition and both controls),
built from synthetic records and clips, its page written, then opened in headless Chromium.

Prints the page's size without its audio, the size of its ``audio/`` copies (and of one
``--embed-audio`` file), the time to write the page (converting every clip, then again with the
copies in place), the time from navigation to the drawn page in Chromium (median of 3 loads),
and how long a filter and an opened item take there. The clips are 2 s of quiet noise each, about
a spoken demo question; their store lives in a scratch home.

    .venv/bin/python bench/page.py [--items 1000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from salad_eval.gap import write_report
from salad_eval.home import home
from salad_eval.page import write_run_page
from salad_eval.page.build import write_heard
from salad_eval.page.items import heard_rows
from salad_eval.prompt import Item, Speak, Text
from salad_eval.speech import store
from salad_eval.speech.manifest import Clip, ManifestRow, SynthManifest

VOICES = ("kokoro/jm_kumo", "kokoro/jf_alpha", "kokoro/jm_kumo+noise=white:snr=5")
TEXT = ("text@base", "text@speech")
SPEECH = ("speech@speech", "speech@cascade", "speech@speech:silent", "speech@speech:shuffled")
RATES = {c: p for c, p in zip(TEXT + SPEECH, (0.8, 0.75, 0.55, 0.7, 0.3, 0.3), strict=True)}
DOMAINS = ("geography", "animals", "food", "science", "sports", "music", "time", "colors")
WORDS = ("what", "which", "animal", "city", "colour", "sound", "river", "planet", "lives", "is")
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


def _mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def build_run(run_dir: Path, n_items: int, seed: int = 0) -> None:
    """items.jsonl, heard.jsonl (clips in the scratch store) and the report of a synthetic run."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    items, rows, records = [], [], []
    for i in range(n_items):
        question = " ".join(rng.choice(WORDS) for _ in range(10)).capitalize() + "?"
        choices = tuple(f" {rng.choice(WORDS)} {rng.choice(WORDS)}" for _ in range(4))
        item = Item(
            "demo",
            f"item-{i:04d}",
            DOMAINS[i % len(DOMAINS)],
            (Text("Question: "), Speak(question), Text("\nAnswer:")),
            choices,
            rng.randrange(4),
        )
        items.append(item)
        for voice in VOICES:
            fields = {"text": question, "voice": voice, "bench": seed}
            stored = store.write_clip(fields, 0.01 * noise.standard_normal(32_000))
            path = str(store.clip_path(store.key_of(fields)))
            clip = Clip(question, question, path, stored.sha256, stored.seconds, question, 0.0, 0.0)
            rows.append(ManifestRow("demo", item.id, voice, "ok", (clip,), clip.seconds, 0.0, 0.0))
        shared = {"task": "demo", "item": item.id, "domain": item.domain, "target": item.target}
        for condition in TEXT:
            records.append(_record(shared, condition, None, rng))
        for voice in VOICES:
            for condition in SPEECH:
                records.append(_record(shared, condition, voice, rng))
    run_dir.mkdir(parents=True)
    (run_dir / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    write_heard(run_dir, heard_rows(items, SynthManifest(rows), VOICES, seed, True, "loglik"))
    write_report(run_dir, records, {"command": "bench/page.py"}, n_boot=200)


def _record(shared: dict, condition: str, voice: str | None, rng: random.Random) -> dict:
    right = rng.random() < RATES[condition]
    logprobs = [round(-rng.uniform(1, 12), 3) for _ in range(4)]
    pred = shared["target"] if right else (shared["target"] + 1) % 4
    logprobs[pred] = max(logprobs) + 0.5
    rec = {
        **shared,
        "condition": condition,
        "voice": voice,
        "logprobs": logprobs,
        "pred": pred,
        "pred_norm": pred,
        "correct": right,
        "correct_norm": right,
    }
    if condition == "speech@cascade":
        rec |= {"wer": round(rng.random() / 4, 4), "transcript": "a transcript of the question"}
    return rec


def _browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1280,1000")
    return webdriver.Chrome(options=options, service=Service(DRIVER))


def measure(page: Path) -> dict[str, float]:
    """Milliseconds in Chromium: navigation to the drawn page (median of 3), one filter, one
    item opened."""
    driver = _browser()
    try:
        loads = []
        for _ in range(3):
            driver.get(page.resolve().as_uri())
            WebDriverWait(driver, 120).until(
                lambda d: d.execute_script("return document.body.getAttribute('data-ready')")
            )
            loads.append(driver.execute_script("return window.saladReadyMs"))
        timed = """
            const t = performance.now();
            const s = document.getElementById(arguments[0]);
            s.value = arguments[1];
            s.dispatchEvent(new Event('change'));
            return [performance.now() - t, document.getElementById('count').textContent];
        """
        outcome, shown = driver.execute_script(timed, "f-outcome", "misaligned")
        voice, _ = driver.execute_script(timed, "f-acoustics", "noise=white:snr=5")
        opened = driver.execute_async_script(
            """
            const done = arguments[0], t = performance.now();
            const d = document.querySelector('#list details');
            d.addEventListener('toggle', () => done(performance.now() - t), {once: true});
            d.open = true;
            """
        )
        return {
            "load": statistics.median(loads),
            "outcome": outcome,
            "voice": voice,
            "open": opened,
            "shown": shown,
        }
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1000, help="items of the synthetic run")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="salad-bench-page-"))
    (scratch / "home").mkdir()
    (scratch / "home" / "assets").symlink_to(home() / "assets")
    os.environ["SALAD_HOME"] = str(scratch / "home")
    try:
        run = scratch / "run"
        started = time.perf_counter()
        build_run(run, args.items)
        built = time.perf_counter() - started
        started = time.perf_counter()
        page = write_run_page(run)
        first = time.perf_counter() - started
        started = time.perf_counter()
        write_run_page(run)
        again = time.perf_counter() - started
        audio = sum(p.stat().st_size for p in (run / "audio").iterdir())
        n_clips = len(list((run / "audio").iterdir()))
        single = scratch / "single"
        shutil.copytree(run, single, ignore=shutil.ignore_patterns("audio", "report.html"))
        embedded = write_run_page(single, embed_audio=True).stat().st_size
        timings = measure(page)
        n = args.items
        print(f"| {n} items x {len(VOICES)} voices, every condition and both controls | value |")
        print("|---|---|")
        print(f"| report.html, without audio | {_mb(page.stat().st_size)} |")
        print(f"| audio/ ({n_clips} WAV clips of 2.0 s, 16 kHz mono) | {_mb(audio)} |")
        print(f"| one file with --embed-audio | {_mb(embedded)} |")
        print(f"| writing the page, converting every clip | {first:.1f} s |")
        print(f"| writing it again, copies in place | {again:.1f} s |")
        load = timings["load"]
        print(f"| headless Chromium: navigation to the drawn page (median of 3) | {load:.0f} ms |")
        print(
            f"| filter by outcome (misaligned: {timings['shown']}) | {timings['outcome']:.0f} ms |"
        )
        print(f"| filter by acoustic condition | {timings['voice']:.0f} ms |")
        players = 3 * len(VOICES)
        print(f"| open an item (context, answers, {players} players) | {timings['open']:.0f} ms |")
        print(f"(synthetic run built in {built:.0f} s: records, clips in a scratch store, report)")
    finally:
        shutil.rmtree(scratch)


if __name__ == "__main__":
    main()
