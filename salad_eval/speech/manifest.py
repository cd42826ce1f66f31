"""What synthesis records: a clip per spoken segment, a row per item and voice, the manifest.

``SynthManifest.speech_prompt`` turns an item and a voice into the ``Text``/``Audio`` prompt that
speech conditions score; ``synth.py`` writes these records, ``perturb.py`` derives acoustic
conditions' rows from them, and the gap runner reads them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.prompt import Audio, Item, Prompt, Speak
from salad_eval.speech.voices import Voice, parse_voice


@dataclass(frozen=True)
class Clip:
    """One spoken segment of an item in one voice."""

    text: str
    normalized: str
    path: str | None = None
    sha256: str | None = None  # of the FLAC bytes: what a run records of the audio it scored
    seconds: float = 0.0
    transcript: str | None = None
    wer: float | None = None
    cer: float | None = None


@dataclass(frozen=True)
class ManifestRow:
    task: str
    item_id: str
    voice: str
    status: str  # "ok" or "failed"
    clips: tuple[Clip, ...]
    seconds: float = 0.0
    wer: float | None = None
    cer: float | None = None
    flagged: bool = False
    reason: str = ""

    @classmethod
    def from_json(cls, row: dict) -> ManifestRow:
        return cls(**{**row, "clips": tuple(Clip(**clip) for clip in row["clips"])})


@dataclass
class VoiceSummary:
    made: int = 0
    cached: int = 0
    failed_clips: int = 0
    rows: int = 0
    failed_rows: int = 0
    flagged_rows: int = 0
    seconds: float = 0.0
    made_seconds: float = 0.0
    mean_wer: float | None = None
    mean_cer: float | None = None


@dataclass
class SynthManifest:
    """All rows of one synthesis run, the manifest files written, and the run summary."""

    rows: list[ManifestRow]
    paths: dict[str, Path] = field(default_factory=dict)
    voices: dict[str, VoiceSummary] = field(default_factory=dict)
    wall_seconds: float = 0.0
    synth_seconds: float = 0.0  # wall time spent making new clips (synthesis + ASR)
    repaired: list[str] = field(default_factory=list)  # bad store entries found and rebuilt

    def digests(self, items: Iterable[Item], voices: Iterable[Voice | str]) -> dict[str, str]:
        """{clip key: sha256} of every clip of ``items`` in ``voices`` (their audio, exactly)."""
        rows = (self.row(item, voice) for item in items for voice in voices)
        clips = (clip for row in rows for clip in row.clips if clip.path)
        return {Path(clip.path).stem: clip.sha256 for clip in sorted(clips, key=lambda c: c.path)}

    def row(self, item: Item, voice: Voice | str) -> ManifestRow:
        name = str(parse_voice(voice) if isinstance(voice, str) else voice)
        if (item.task, item.id, name) not in self._index:
            raise SaladError(f"no audio for {item.task}/{item.id} in {name}; run salad-eval synth")
        return self._index[(item.task, item.id, name)]

    @functools.cached_property
    def _index(self) -> dict[tuple[str, str, str], ManifestRow]:
        return {(row.task, row.item_id, row.voice): row for row in self.rows}

    def speech_prompt(self, item: Item, voice: Voice | str) -> Prompt:
        """The item with each ``Speak`` part replaced by its clip: ``Audio(path, transcript)``."""
        row = self.row(item, voice)
        if row.status != "ok":
            raise SaladError(f"{item.task}/{item.id} has no audio in {row.voice}: {row.reason}")
        clips = iter(row.clips)
        return tuple(
            Audio(next(clips).path, transcript=part.text) if isinstance(part, Speak) else part
            for part in item.context
        )

    @classmethod
    def load(cls, paths: Iterable[Path | str]) -> SynthManifest:
        """Read manifests written by ``synthesize`` (e.g. for the gap runner)."""
        rows: list[ManifestRow] = []
        tasks: dict[str, Path] = {}
        for path in map(Path, paths):
            lines = path.read_text().splitlines()
            new = [ManifestRow.from_json(json.loads(line)) for line in lines if line]
            rows += new
            tasks.update({row.task: path for row in new[:1]})
        return cls(rows=rows, paths=tasks)
