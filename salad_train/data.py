"""Stage I data: documents as interleaved text and speech spans, plus text-only replay.

A *document* is a tuple of ``Span``s; a speech span carries an audio file that speaks exactly its
text. The student reads speech spans as audio, the teacher reads every span as text.

- Synthetic speech (``data.corpus``, and ``data.tasks``: solved items of task training splits,
  e.g. ARC's 3,370 training questions with their answers): each document's words are cut into
  alternating text spans and speech spans (lengths drawn from ``text_span_words`` /
  ``speech_span_words``), and every speech span is synthesized on its own with
  ``salad_eval.speech``, so alignment is exact.
- Natural speech (``data.natural``): spans are whole utterances. Consecutive utterances of one
  chapter (LibriSpeech) or one ``document`` (manifest / HF dataset) form a document, and each
  utterance is heard (speech span, its own recording) or read (text span, its transcript) with
  probability 1/2. No forced alignment: an utterance is never cut inside.
- Replay (``data.replay``, default the synthetic documents' text): text-only documents, chosen
  with probability ``replay_prob`` per sample, keep the LLM's text skill while it adapts.

Sampling is a pure function of (seed, global sample index), so a resumed run sees exactly the
samples the uninterrupted run would have seen, and data-parallel ranks split one global order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.progress import Progress

from salad_eval.errors import SaladError
from salad_train.config import DataConfig


@dataclass(frozen=True)
class Span:
    text: str
    audio: str | None = None  # a clip that speaks ``text``; None: a text span


Document = tuple[Span, ...]


def read_corpus(path: str, limit: int | None = None) -> list[str]:
    """Documents of a plain-text corpus: one per non-empty line (``#`` lines are comments)."""
    lines = [ln.strip() for ln in Path(path).read_text(encoding="utf-8").splitlines()]
    docs = [ln for ln in lines if ln and not ln.startswith("#")]
    if not docs:
        raise SaladError(f"corpus {path} has no documents; put one document per line")
    return docs[:limit]


def task_documents(specs: Sequence[str], data_dir: str | None = None) -> list[str]:
    """Solved items of task splits (``"arc_easy:train"``) as documents: prompt, then the answer.

    Training on a task's training split is fair; its evaluation split is never read here.
    """
    from salad_eval.tasks import get_task, load_items

    docs = []
    for spec in specs:
        name, _, split = spec.partition(":")
        if not split or split == get_task(name).test_split:
            raise SaladError(
                f"data.tasks entry {spec!r} must name a split other than the task's evaluation "
                "split, e.g. arc_easy:train"
            )
        for item in load_items(name, split=split, data_dir=data_dir):
            prompt = "".join(part.text for part in item.context)
            docs.append(" ".join((prompt + item.choices[item.target]).split()))
    return docs


def split_spans(
    words: Sequence[str], text_words: Sequence[int], speech_words: Sequence[int], rng: random.Random
) -> list[tuple[str, bool]]:
    """Cut a document into alternating (text, is_speech) spans, starting with either modality."""
    spans, at, speech = [], 0, rng.random() < 0.5
    while at < len(words):
        low, high = speech_words if speech else text_words
        n = rng.randint(low, high)
        spans.append((" ".join(words[at : at + n]), speech))
        at += n
        speech = not speech
    return spans


def speak(text: str, voice: str) -> str:
    """A 16 kHz clip of ``text`` in ``voice`` from the content-addressed audio store (made once)."""
    from salad_eval.speech import store, tts
    from salad_eval.speech.normalize import normalize
    from salad_eval.speech.voices import parse_voice

    spec = parse_voice(voice)
    spoken = normalize(text)
    key = store.clip_key(spoken, spec, tts.engine(spec.engine).version)
    if not store.has_clip(key):
        store.write_clip(key, tts.synthesize(spoken, spec))
    return str(store.clip_path(key))


def _speak_job(job: tuple[str, str]) -> str:
    return speak(*job)


def _init_speaker(threads: int) -> None:
    from salad_eval.speech import tts

    tts.set_threads(threads)


def speak_all(jobs: list[tuple[str, str]], workers: int = 1) -> list[str]:
    """Clips of many (text, voice) jobs, in order, made by ``workers`` processes."""
    import os

    from salad_eval.workers import worker_pool

    with Progress(transient=True) as progress:
        bar = progress.add_task("synthesizing speech spans", total=len(jobs))
        if workers <= 1:
            clips = []
            for job in jobs:
                clips.append(speak(*job))
                progress.advance(bar)
            return clips
        threads = max(1, (os.cpu_count() or 1) // workers)
        with worker_pool(workers, _init_speaker, (threads,)) as pool:
            clips = []
            for clip in pool.map(_speak_job, jobs, chunksize=16):
                clips.append(clip)
                progress.advance(bar)
            return clips


def synthetic_documents(config: DataConfig, seed: int) -> list[Document]:
    """Corpus and task documents with each speech span synthesized separately (cached by the
    audio store); ``max_documents`` takes a seeded sample of them."""
    rng = random.Random(seed)
    docs = read_corpus(config.corpus) if config.corpus else []
    docs += task_documents(config.tasks)
    if config.max_documents and len(docs) > config.max_documents:
        docs = random.Random(seed).sample(docs, config.max_documents)
    plans = [
        split_spans(doc.split(), config.text_span_words, config.speech_span_words, rng)
        for doc in docs
    ]
    jobs = [(text, rng.choice(config.voices)) for plan in plans for text, speech in plan if speech]
    clips = iter(speak_all(jobs, config.workers))
    return [tuple(Span(text, next(clips) if speech else None) for text, speech in plan)
            for plan in plans]  # fmt: skip


def _librispeech(root: Path) -> list[list[tuple[str, str]]]:
    chapters = []
    for trans in sorted(root.rglob("*.trans.txt")):
        utterances = []
        for line in trans.read_text().splitlines():
            uid, _, text = line.partition(" ")
            audio = next((p for p in trans.parent.glob(f"{uid}.*") if p.suffix != ".txt"), None)
            if audio is not None and text:
                utterances.append((str(audio), text.strip().lower().capitalize()))
        chapters.append(utterances)
    return chapters


def _grouped(rows: list[dict], root: Path) -> list[list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = {}
    for i, row in enumerate(rows):
        if "audio" not in row or "text" not in row:
            raise SaladError(f"natural speech rows in {root} need 'audio' and 'text' fields")
        audio = row["audio"]["path"] if isinstance(row["audio"], dict) else row["audio"]
        key = str(row.get("document", row.get("chapter_id", i)))
        groups.setdefault(key, []).append((str(root / audio), row["text"]))
    return list(groups.values())


def _natural_groups(path: Path) -> list[list[tuple[str, str]]]:
    if path.suffix == ".jsonl":
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        return _grouped(rows, path.parent)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        import datasets

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[next(iter(dataset))]
        if isinstance(dataset.features.get("audio"), datasets.Audio):  # keep paths, skip decoding
            dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
        return _grouped(dataset.to_list(), path)
    groups = _librispeech(path)
    if not groups:
        raise SaladError(
            f"{path} is not a LibriSpeech-style dir, an HF dataset or a .jsonl manifest"
        )
    return groups


def natural_documents(config: DataConfig, seed: int) -> list[Document]:
    """Whole-utterance spans: each utterance is heard or read with probability 1/2."""
    rng = random.Random(seed)
    docs = []
    for source in config.natural:
        for group in _natural_groups(Path(source)):
            docs.append(tuple(Span(text, audio if rng.random() < 0.5 else None)
                              for audio, text in group))
    return docs[: config.max_documents] if config.max_documents else docs


class Stage1Data:
    """Speech documents and replay text, sampled by global index."""

    def __init__(self, speech: list[Document], replay: list[str], replay_prob: float, seed: int):
        if not speech:
            raise SaladError("no speech documents were built; check data.corpus / data.natural")
        self.speech, self.replay = speech, replay
        self.replay_prob, self.seed = replay_prob, seed

    def sample(self, index: int) -> Document:
        rng = random.Random(f"{self.seed}:{index}")
        if self.replay and rng.random() < self.replay_prob:
            return (Span(rng.choice(self.replay)),)
        return rng.choice(self.speech)

    @property
    def audio_clips(self) -> list[str]:
        return sorted({s.audio for doc in self.speech for s in doc if s.audio})

    @property
    def clip_texts(self) -> dict[str, str]:
        """What each clip says."""
        return {s.audio: s.text for doc in self.speech for s in doc if s.audio}


def build_data(config: DataConfig, seed: int) -> Stage1Data:
    synthetic = synthetic_documents(config, seed) if config.corpus or config.tasks else []
    speech = synthetic + natural_documents(config, seed)
    # replay defaults to the synthetic documents' own text
    replay = (read_corpus(config.replay) if config.replay
              else [" ".join(span.text for span in doc) for doc in synthetic])  # fmt: skip
    return Stage1Data(speech, replay, config.replay_prob, seed)
