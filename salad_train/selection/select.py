"""Stage II active selection: synthesize speech only where the Stage I model is misaligned.

The recipe reads top to bottom: read the text pool, embed it, cut it into balanced clusters, measure
each cluster's misalignment M(c) on a few synthesized probe texts with the Stage I checkpoint (the
very ``misalignment_kl`` that ``salad-eval gap`` reports, per token over a fixed-length
continuation; probe clips that ASR cannot read back are left out first), weight clusters by
``P(c) ~ P_pool(c) * M(c)^gamma``, sample texts, synthesize them with the voice set and drop
clips that ASR cannot read back, until the *kept* speech reaches the budget. The budget is
``select.budget_share`` (paper: 1%) of the Stage I dataset's speech hours (each clip once, not
hours seen with repeats), or ``select.budget_hours``; since it counts kept clips, a gamma = 0
(random) selection with the same budget keeps the same hours, to within one text. Outputs in
``select.out_dir``: ``selected.jsonl`` (the manifest Stage II trains on) and
``report.{md,json,png}``.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from salad_eval.divergence import text_misalignments
from salad_eval.errors import SaladError
from salad_eval.home import atomic_write_text
from salad_eval.models.speech_lm import load_speech_lm
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Item, Speak, Text
from salad_eval.speech.synth import synthesize
from salad_train.config import Config
from salad_train.recipe.data import split_spans
from salad_train.selection.cluster import balanced_kmeans, embed, embedder_fingerprint
from salad_train.selection.pool import read_pool
from salad_train.selection.report import write_report

WORDS_PER_SECOND = 2.5  # speech rate used to estimate clip length before synthesis


@dataclass(frozen=True)
class Selected:
    """One selected text: its spans (speech spans carry a clip once synthesized) and checks."""

    index: int  # position in the pool
    text: str
    cluster: int
    voice: str
    spans: tuple[tuple[str, bool], ...]  # (text, is_speech)
    est_seconds: float
    audio: tuple[str | None, ...] = ()  # one per span: the clip of a speech span, else None
    seconds: float = 0.0
    cer: float | None = None
    dropped: bool = False
    reason: str = ""


def cluster_weights(pool_share: np.ndarray, misalignment: np.ndarray, gamma: float) -> np.ndarray:
    """P(c) = P_pool(c) * M(c)^gamma / sum over clusters (computed in log space); at gamma 0
    M is not read (a random selection measures none: it may be NaN)."""
    m = np.clip(np.asarray(misalignment, dtype=np.float64), 1e-12, None)
    log = np.log(np.asarray(pool_share, dtype=np.float64))
    if gamma:
        log = log + gamma * np.log(m)
    weights = np.exp(log - log.max())
    return weights / weights.sum()


def speech_seconds(spans: Sequence[tuple[str, bool]]) -> float:
    """Estimated seconds of the speech spans, from their word counts."""
    return sum(len(text.split()) for text, speech in spans if speech) / WORDS_PER_SECOND


def sample_order(labels: np.ndarray, weights: np.ndarray, seed: int) -> Iterator[int]:
    """Text indices in selection order: draw a cluster by ``weights`` (among clusters with texts
    left), then one of its texts uniformly without replacement; until no such cluster is left."""
    rng = np.random.default_rng(seed)
    left = {c: list(rng.permutation(np.flatnonzero(labels == c))) for c in range(len(weights))}
    while open_ := [c for c, texts in left.items() if texts and weights[c] > 0]:
        p = weights[open_] / weights[open_].sum()
        yield int(left[open_[rng.choice(len(open_), p=p)]].pop())


def fill_budget(
    order: Iterator[int],
    make: Callable[[list[int]], list[Selected]],
    est_seconds: np.ndarray,
    budget: float,
) -> list[Selected]:
    """Texts from ``order``, made (synthesized and checked) by ``make`` in rounds sized by their
    estimated seconds, until the kept seconds would pass ``budget``; dropped texts are listed
    too but count nothing."""
    chosen, kept = [], 0.0
    while True:
        batch, est = [], 0.0
        for index in order:
            batch.append(index)
            est += est_seconds[index]
            if kept + est >= budget:
                break
        if not batch:
            return chosen  # the pool is spent
        for text in make(batch):
            if not text.dropped and kept + text.seconds > budget:
                return chosen
            chosen.append(text)
            kept += 0.0 if text.dropped else text.seconds


def _plan(text: str, index: int, config: Config) -> tuple[tuple[tuple[str, bool], ...], str]:
    """A text's spans (cut as Stage I cuts documents) and voice: a function of (seed, index)."""
    rng = random.Random(f"{config.select.seed}:{index}")
    spans = split_spans(
        text.split(), config.data.text_span_words, config.data.speech_span_words, rng
    )
    return tuple(spans), rng.choice(config.data.voices)


def stage1_speech_hours(checkpoint: Path) -> float:
    """Speech hours of the Stage I dataset (each clip once), from the checkpoint's record."""
    record = checkpoint / "training.json"
    try:
        return float(json.loads(record.read_text())["dataset_speech_hours"])
    except (OSError, ValueError, KeyError):
        raise SaladError(
            f"{record} does not say how much speech Stage I had to take a budget "
            "share of; set select.budget_hours"
        ) from None


def _checkpoint(config: Config) -> Path:
    path = Path(config.select.checkpoint or Path(config.train.out_dir) / "model")
    if not (path / "config.json").is_file():
        raise SaladError(
            f"no Stage I checkpoint at {path}; run `salad-train stage1` or set select.checkpoint"
        )
    return path


def probe_misalignment(
    texts: Sequence[str], config: Config, checkpoint: Path, out: Path
) -> list[float]:
    """Per-token misalignment KL of each probe text over the voices whose clip ASR reads back
    within ``select.max_cer`` (``salad-eval gap``'s M; with ``select.signal=distillation``, the
    base LLM reading the text is the reference, as in Stage I's loss); NaN where no clip is
    readable. Clips are synthesized with ``data.synth_seed``, as the selected speech is."""
    speech_lm = load_speech_lm(checkpoint)
    speech_lm.eval()
    distillation = config.select.signal == "distillation"
    rows = text_misalignments(
        speech_lm,
        texts,
        config.data.voices,
        span_words=config.select.probe_span_words,
        workers=config.select.workers,
        out_dir=out / "probe",
        max_cer=config.select.max_cer,
        seed=config.data.synth_seed,
        teacher=TextLM(speech_lm.config.llm) if distillation else None,
    )
    if len(rows) != len(texts):
        raise SaladError("a probe text is too short to speak; raise select.min_words")
    return [float("nan") if row["M"] is None else row["M"] for row in rows]


def cluster_misalignment(
    pool: Sequence[str], labels: np.ndarray, config: Config, checkpoint: Path, out: Path
) -> tuple[np.ndarray, dict[int, list[float]]]:
    """(M(c) per cluster, the readable probes' values per cluster) from ``select.probe_texts``
    seeded texts of each cluster."""
    s = config.select
    rng = np.random.default_rng(s.seed)
    probes = {
        c: sorted(
            rng.choice(
                np.flatnonzero(labels == c),
                min(s.probe_texts, int((labels == c).sum())),
                replace=False,
            )
        )
        for c in range(s.clusters)
    }
    flat = [(c, int(i)) for c, indices in probes.items() for i in indices]
    values = probe_misalignment([pool[i] for _, i in flat], config, checkpoint, out)
    measured = {
        c: [v for (c2, _), v in zip(flat, values, strict=True) if c2 == c and not np.isnan(v)]
        for c in range(s.clusters)
    }
    if not any(measured.values()):
        raise SaladError(
            "no probe clip was readable by ASR within select.max_cer; check the "
            "voices or raise select.max_cer"
        )
    # a cluster without a readable probe gets the mean M of the others: no evidence either way
    fallback = float(np.mean([v for vs in measured.values() for v in vs]))
    m = np.array([np.mean(measured[c]) if measured[c] else fallback for c in range(s.clusters)])
    return m, measured


def _synthesize(chosen: list[Selected], config: Config, out: Path) -> list[Selected]:
    """Synthesize each text's speech spans in its voice; drop failed or unreadable ones."""
    done = {}
    for voice in dict.fromkeys(s.voice for s in chosen):
        own = [s for s in chosen if s.voice == voice]
        items = [
            Item(
                "select",
                str(s.index),
                f"c{s.cluster}",
                tuple(Speak(t) if speech else Text(t) for t, speech in s.spans),
                ("",),
                0,
            )
            for s in own
        ]
        manifest = synthesize(
            items,
            [voice],
            workers=config.select.workers,
            out_dir=out / "synth",
            seed=config.data.synth_seed,
        )
        for s, item in zip(own, items, strict=True):
            done[s.index] = (s, manifest.row(item, voice))
    result = []
    for s in chosen:
        _, row = done[s.index]
        if row.status != "ok":
            result.append(Selected(**{**asdict(s), "dropped": True, "reason": row.reason}))
            continue
        clips = iter(row.clips)
        audio = tuple(next(clips).path if speech else None for _, speech in s.spans)
        dropped = row.cer > config.select.max_cer
        reason = f"CER {row.cer:.1%} > select.max_cer {config.select.max_cer:.0%}" * dropped
        result.append(
            Selected(
                **{
                    **asdict(s),
                    "audio": audio,
                    "seconds": row.seconds,
                    "cer": row.cer,
                    "dropped": dropped,
                    "reason": reason,
                }
            )
        )
    return result


def select_key(config: Config, pool: Sequence[str], checkpoint: Path) -> str:
    """Changes whenever anything that moves the selection changes (pool, settings, model)."""
    model_files = sorted(p for p in checkpoint.rglob("*") if p.is_file())
    digest = hashlib.sha256(
        json.dumps(
            [
                asdict(config.select),
                config.data.voices,
                config.data.synth_seed,
                config.data.text_span_words,
                config.data.speech_span_words,
                embedder_fingerprint(config.select.embedder),
            ],
            sort_keys=True,
            default=str,
        ).encode()
    )
    for text in pool:
        digest.update(text.encode() + b"\0")
    for file in model_files:
        digest.update(file.read_bytes())
    return digest.hexdigest()[:20]


def run_select(config: Config) -> Path:
    """``salad-train select``: the whole selection; returns the output directory."""
    s = config.select
    out = Path(s.out_dir)
    checkpoint = _checkpoint(config)
    pool = read_pool(s)
    budget_hours = s.budget_hours
    if budget_hours is None:
        budget_hours = s.budget_share * stage1_speech_hours(checkpoint)
    labels, _ = balanced_kmeans(embed(pool, s.embedder), s.clusters, seed=s.seed)
    if s.gamma == 0:  # M(c)^0 = 1: the weights are the pool shares whatever M is: measure none
        m, measured = np.full(s.clusters, np.nan), {c: [] for c in range(s.clusters)}
    else:
        m, measured = cluster_misalignment(pool, labels, config, checkpoint, out)
    sizes = np.bincount(labels, minlength=s.clusters)
    weights = cluster_weights(sizes / sizes.sum(), m, s.gamma)
    plans = [_plan(text, index, config) for index, text in enumerate(pool)]
    seconds = np.array([speech_seconds(spans) for spans, _ in plans])
    speakable = np.where(seconds > 0, labels, -1)  # a text too short for a speech span: skip

    def make(indices: list[int]) -> list[Selected]:
        return _synthesize(
            [
                Selected(i, pool[i], int(labels[i]), plans[i][1], plans[i][0], float(seconds[i]))
                for i in indices
            ],
            config,
            out,
        )

    chosen = fill_budget(
        sample_order(speakable, weights, s.seed), make, seconds, budget_hours * 3600
    )
    atomic_write_text(
        out / "selected.jsonl",
        "".join(json.dumps(asdict(c), ensure_ascii=False) + "\n" for c in chosen),
    )
    write_report(
        out,
        pool=pool,
        labels=labels,
        misalignment=m,
        weights=weights,
        chosen=chosen,
        probes={c: len(v) for c, v in measured.items()},
        budget_hours=budget_hours,
        config=config,
        key=select_key(config, pool, checkpoint),
    )
    return out
