"""Synthesis throughput: seconds of audio per wall-clock second, per engine, 1 and 2 workers.

Each run starts from an empty audio store (assets shared), so it measures the whole pipeline of
``salad-eval synth``: engine load, synthesis, FLAC write and the Whisper check of every clip. A
last run repeats the first on its warm store: the cost of a fully cached rerun.

    .venv/bin/python bench/synth.py [--items 12]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from salad_eval.home import home
from salad_eval.speech.synth import synthesize
from salad_eval.tasks import load_items

VOICES = ("kokoro/jf_alpha", "piper/joe", "espeak/en-us")


def _fresh_home(assets: Path) -> Path:
    path = Path(tempfile.mkdtemp(prefix="salad-bench-synth-"))
    (path / "assets").symlink_to(assets)
    os.environ["SALAD_HOME"] = str(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=12, help="demo items per run")
    args = parser.parse_args()
    assets = home() / "assets"
    items = load_items("demo", limit=args.items)
    print("| engine | workers | clips | audio s | wall s | audio s per wall s | note |")
    print("|---|---|---|---|---|---|---|")
    homes = []
    for voice in VOICES:
        for workers in (1, 2):
            homes.append(_fresh_home(assets))
            started = time.perf_counter()
            manifest = synthesize(items, voice, workers=workers, show_progress=False)
            wall = time.perf_counter() - started
            summary = manifest.voices[voice]
            print(
                f"| {voice} | {workers} | {summary.made} | {summary.seconds:.1f} | {wall:.1f} "
                f"| {summary.seconds / wall:.2f} | synth + ASR check, models loaded in the run |"
            )
        started = time.perf_counter()
        manifest = synthesize(items, voice, show_progress=False)
        wall = time.perf_counter() - started
        summary = manifest.voices[voice]
        print(
            f"| {voice} | 1 | {summary.cached} cached | {summary.seconds:.1f} | {wall:.2f} "
            f"| {summary.seconds / wall:.0f} | fully cached rerun |"
        )
    for path in homes:
        shutil.rmtree(path)


if __name__ == "__main__":
    main()
