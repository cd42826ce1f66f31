"""Stage I data: documents as interleaved text and speech spans, plus text-only replay.

A *document* is a tuple of ``Span``s (``salad_eval.interleave``, shared with the corpus
divergences); a speech span carries an audio file that speaks exactly its text. The student reads
speech spans as audio, the teacher reads every span as text.

- Synthetic speech (``data.corpus``, and ``data.tasks``: solved items of task training splits,
  e.g. ARC's 3,370 training questions with their answers): each document's words are cut into
  alternating text spans and speech spans (lengths drawn from ``text_span_words`` /
  ``speech_span_words``), and every speech span is synthesized on its own with
  ``salad_eval.speech``, so alignment is exact.
- Natural speech (``data.natural``): spans are whole recorded utterances, never cut inside (no
  forced alignment). Consecutive utterances of one document form a document: a chapter of a
  LibriSpeech-style dir; in a manifest or HF dataset the rows of one ``document`` value, else of
  one (``speaker``/``speaker_id``, ``chapter``/``chapter_id``) pair, in row order (Emilia-style
  rows with only a speaker become one document per speaker). Rows with none of these fields are
  refused: a one-utterance document would hold either audio or text, never both. Every sample
  draws anew whether each utterance is heard (its recording) or read (its transcript), with
  probability 1/2, so over a run every utterance is both heard and read.
- Replay (``data.replay``, default the synthetic documents' text): text-only documents, chosen
  with probability ``replay_prob`` per sample, keep the LLM's text skill while it adapts. With
  ``replay_prob > 0`` and no replay text the config is refused before any work starts.

A document longer than ``max_tokens`` student positions is cut into consecutive windows at span
boundaries (``MixedData.window``, sized for the longer of each span's audio and text layout; a
text span too long alone, such as a long replay document, at words), so all of its text is used,
each span in exactly one window.

Sampling is a pure function of (seed, global sample index), so a resumed run sees exactly the
samples the uninterrupted run would have seen, data-parallel ranks split one global order, and
what a run drew can be recounted afterwards (``MixedData.drawn``, recorded in ``training.json``).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_bytes, home
from salad_eval.interleave import Document, Span
from salad_eval.progress import progress_bar
from salad_eval.speech.normalize import normalize
from salad_eval.speech.synth import ensure_clip
from salad_eval.speech.voices import parse_voice
from salad_eval.tasks import get_task, load_items
from salad_eval.workers import worker_pool
from salad_train.config import DataConfig


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


def speak(text: str, voice: str, seed: int = 0) -> str:
    """A 16 kHz clip of ``text`` in ``voice`` (synthesis ``seed``) from the audio store (made
    once, verified)."""
    return str(ensure_clip(normalize(text), parse_voice(voice), seed))


def _speak_job(job: tuple[str, str, int]) -> str:
    return speak(*job)


def speak_all(jobs: list[tuple[str, str, int]], workers: int = 1) -> list[str]:
    """Clips of many (text, voice, seed) jobs, in order, made by ``workers`` processes."""

    with progress_bar(transient=True) as progress:
        bar = progress.add_task("synthesizing speech spans", total=len(jobs))
        if workers <= 1:
            clips = []
            for job in jobs:
                clips.append(speak(*job))
                progress.advance(bar)
            return clips
        with worker_pool(workers) as pool:
            clips = []
            for clip in pool.map(_speak_job, jobs, chunksize=16):
                clips.append(clip)
                progress.advance(bar)
            return clips


def synthetic_texts(config: DataConfig, seed: int) -> list[str]:
    """The texts of the synthetic documents: corpus and task documents, ``max_documents`` of
    them in a seeded sample (what Stage I speaks and, by default, replays)."""
    docs = read_corpus(config.corpus) if config.corpus else []
    docs += task_documents(config.tasks)
    if config.max_documents and len(docs) > config.max_documents:
        docs = random.Random(seed).sample(docs, config.max_documents)
    return docs


def synthetic_documents(config: DataConfig, seed: int) -> list[Document]:
    """Corpus and task documents with each speech span synthesized separately (cached by the
    audio store); ``max_documents`` takes a seeded sample of them."""
    rng = random.Random(seed)
    docs = synthetic_texts(config, seed)
    plans = [
        split_spans(doc.split(), config.text_span_words, config.speech_span_words, rng)
        for doc in docs
    ]
    jobs = [
        (text, rng.choice(config.voices), config.synth_seed)
        for plan in plans
        for text, speech in plan
        if speech
    ]
    clips = iter(speak_all(jobs, config.workers))
    return [
        tuple(Span(text, next(clips) if speech else None) for text, speech in plan)
        for plan in plans
    ]


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


def _document_key(row: dict) -> str | None:
    """Which document a row belongs to: ``document``, else its speaker and chapter."""
    if "document" in row:
        return str(row["document"])
    speaker = row.get("speaker", row.get("speaker_id"))
    chapter = row.get("chapter", row.get("chapter_id"))
    return None if speaker is None and chapter is None else f"{speaker}/{chapter}"


def _grouped(rows: Iterable[dict], root: Path) -> list[list[tuple[str, str]]]:
    groups: dict[str, list[tuple[str, str]]] = {}
    for row in rows:
        if "audio" not in row or "text" not in row:
            raise SaladError(f"natural speech rows in {root} need 'audio' and 'text' fields")
        key = _document_key(row)
        if key is None:
            raise SaladError(
                f"natural speech rows in {root} need a 'document', 'speaker' or 'chapter_id' "
                "field to group utterances into documents (in row order)"
            )
        groups.setdefault(key, []).append((_audio_file(row["audio"], root), row["text"]))
    return list(groups.values())


def _audio_file(audio: str | dict, root: Path) -> str:
    """A row's clip as a file: its path (relative to ``root``), or, for an HF Audio value that
    holds the bytes (``save_to_disk`` embeds them), a copy in the cache home named by content."""
    if isinstance(audio, str) or not audio.get("bytes"):
        return str(root / (audio if isinstance(audio, str) else audio["path"]))
    data = audio["bytes"]
    suffix = Path(audio.get("path") or "clip.wav").suffix or ".wav"
    digest = hashlib.sha256(data).hexdigest()
    path = home() / "natural" / digest[:2] / f"{digest}{suffix}"
    if not path.is_file():
        atomic_write_bytes(path, data)
    return str(path)


def _natural_groups(path: Path) -> list[list[tuple[str, str]]]:
    if path.suffix == ".jsonl":
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        return _grouped(rows, path.parent)
    if (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file():
        import datasets  # noqa: PLC0415 - deferred: heavy datasets, loaded on this path only

        dataset = datasets.load_from_disk(str(path))
        if isinstance(dataset, datasets.DatasetDict):
            dataset = dataset[next(iter(dataset))]
        if isinstance(dataset.features.get("audio"), datasets.Audio):  # keep paths, skip decoding
            dataset = dataset.cast_column("audio", datasets.Audio(decode=False))
        return _grouped(dataset, path)  # row by row: the bytes of one clip at a time
    groups = _librispeech(path)
    if not groups:
        raise SaladError(
            f"{path} is not a LibriSpeech-style dir, an HF dataset or a .jsonl manifest"
        )
    return groups


def natural_documents(config: DataConfig) -> list[Document]:
    """Documents of recorded utterances, each heard or read as every sample draws it."""
    docs = [
        tuple(Span(text, audio, recorded=True) for audio, text in group)
        for source in config.natural
        for group in _natural_groups(Path(source))
    ]
    return docs[: config.max_documents] if config.max_documents else docs


def draw(doc: Document, rng: random.Random) -> Document:
    """The document as one sample lays it out: each recorded utterance heard with probability 1/2
    (it keeps its clip), else read."""
    return tuple(
        Span(s.text, s.audio if rng.random() < 0.5 else None) if s.recorded else s for s in doc
    )


def _fitted(span: Span, length: Callable[[Span], int], max_tokens: int) -> list[Span]:
    """A text span longer than ``max_tokens`` cut in halves at words until each part fits (a
    long replay document); a clip is never cut."""
    words = span.text.split()
    if span.audio or len(words) < 2 or length(span) <= max_tokens:
        return [span]
    half = len(words) // 2
    return [
        part
        for piece in (words[:half], words[half:])
        for part in _fitted(Span(" ".join(piece)), length, max_tokens)
    ]


def windows(doc: Document, length: Callable[[Span], int], max_tokens: int) -> list[Document]:
    """Consecutive runs of ``doc``'s spans of at most ``max_tokens`` positions by ``length``;
    every span lands in exactly one (a text span too long for one is cut at words first, a clip
    too long for one is a window of its own)."""
    out: list[Document] = []
    window: list[Span] = []
    used = 0
    for span in (part for whole in doc for part in _fitted(whole, length, max_tokens)):
        n = length(span)
        if window and used + n > max_tokens:
            out.append(tuple(window))
            window, used = [], 0
        window.append(span)
        used += n
    return [*out, tuple(window)] if window else out


class MixedData:
    """Documents from named sources, each drawn with its share, sampled by global index.

    Stage I mixes ``speech`` and ``replay`` (``data.replay_prob``); Stage II ``natural``,
    ``selected`` and ``replay`` (``stage2.*_share``).
    """

    def __init__(
        self,
        sources: dict[str, list[Document]],
        shares: dict[str, float],
        seed: int,
        where: str = "stage2",
    ):
        live = {name: share for name, share in shares.items() if share > 0}
        if not live:
            raise SaladError(f"every {where} share is 0; give some source a share")
        for name in live:
            if not sources.get(name):
                raise SaladError(f"{where} has no {name} documents; add some or set its share to 0")
        total = sum(live.values())
        self.sources, self.seed = sources, seed
        self.shares = {name: share / total for name, share in live.items()}

    def source(self, index: int) -> str:
        """Which source sample ``index`` comes from."""
        u, at = random.Random(f"{self.seed}:{index}").random(), 0.0
        for name, share in self.shares.items():
            at += share
            if u < at:
                return name
        return name

    def sample(self, index: int) -> Document:
        rng = random.Random(f"{self.seed}:{index}")
        rng.random()  # the draw that picked the source
        return draw(rng.choice(self.sources[self.source(index)]), rng)

    def drawn(self, samples: int) -> dict[str, float]:
        """The share of each source among samples ``[0, samples)``: what a run actually drew."""
        counts = dict.fromkeys(self.shares, 0)
        for index in range(samples):
            counts[self.source(index)] += 1
        return {name: count / max(samples, 1) for name, count in counts.items()}

    def window(self, length: Callable[[Span], int], max_tokens: int) -> None:
        """Cut every document into windows that fit ``max_tokens`` (see ``windows``)."""
        self.sources = {
            name: [w for doc in docs for w in windows(doc, length, max_tokens)]
            for name, docs in self.sources.items()
        }

    @property
    def audio_clips(self) -> list[str]:
        return sorted(self.clip_texts)

    @property
    def clip_texts(self) -> dict[str, str]:
        """What each clip of the drawn sources says."""
        return {
            s.audio: s.text
            for name in self.shares
            for doc in self.sources[name]
            for s in doc
            if s.audio
        }


def build_data(config: DataConfig, seed: int) -> MixedData:
    """Stage I's mix: speech documents (synthetic, then natural) and text replay."""
    synthetic = synthetic_documents(config, seed) if config.corpus or config.tasks else []
    speech = synthetic + natural_documents(config)
    if not speech:
        raise SaladError("no speech documents were built; check data.corpus / data.natural")
    # replay defaults to the synthetic documents' own text
    replay = (
        read_corpus(config.replay)
        if config.replay
        else [" ".join(span.text for span in doc) for doc in synthetic]
    )
    return MixedData(
        {"speech": speech, "replay": [(Span(text),) for text in replay]},
        {"speech": 1 - config.replay_prob, "replay": config.replay_prob},
        seed,
        where="Stage I data",
    )
