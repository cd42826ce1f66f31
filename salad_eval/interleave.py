"""Documents as interleaved text and speech spans -> aligned student and teacher sequences.

A *document* is a tuple of ``Span``s; a speech span carries an audio file that speaks exactly its
text. The student reads speech spans as audio, the teacher reads every span as text. Stage I's
distillation (``salad_train``) and the corpus divergences F and M (``salad_eval.corpus_divergence``)
lay documents out with this one module, so the misalignment a report shows is measured on exactly
the positions training distils.

Every span is tokenized on its own (a leading space after the first span), so the teacher's
all-text sequence is the concatenation of the span tokens and each text-span token has a known
place in both sequences. The student replaces each speech span's tokens by the clip's audio
embeddings (boundaries included); ``student_inputs`` lays them out at their actual
length. A token of a text span is a loss target; the position right
before it, in either sequence, is a *text position* (in the student it may be an audio end
boundary). Planning needs no model, so the number of loss positions of a whole optimizer step is
known, on every rank, before the first forward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class Span:
    text: str
    audio: str | None = None  # a clip that speaks ``text``; None: a text span
    recorded: bool = False  # a natural utterance: heard or read is drawn anew for every sample


Document = tuple[Span, ...]

AUDIO = -1  # student_ids value at audio positions


@dataclass
class Plan:
    student_ids: Tensor  # (B, Ts) token ids, AUDIO at audio positions, 0 at padding
    student_attention: Tensor  # (B, Ts)
    student_mask: Tensor  # (B, Ts) text positions
    targets: Tensor  # (B, Ts) next token at text positions
    teacher_ids: Tensor  # (B, Tt)
    teacher_attention: Tensor  # (B, Tt)
    teacher_mask: Tensor  # (B, Tt) the same text positions in the all-text sequence
    layout: list[list[tuple[str | None, int]]]  # per row: (clip or None for text, length)
    n_tokens: int  # student positions (audio + text), padding excluded
    speech_seconds: float

    @property
    def n_text_positions(self) -> int:
        return int(self.student_mask.sum())


def span_tokens(tokenizer, doc: Document) -> list[list[int]]:
    return [
        tokenizer.encode(span.text if i == 0 else " " + span.text, add_special_tokens=False)
        for i, span in enumerate(doc)
    ]


def _pad(rows: Sequence[list], value: int | bool, dtype: torch.dtype) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], dtype=dtype)


def plan_batch(
    docs: Sequence[Document],
    tokenizer,
    audio_length: Callable[[str], tuple[int, float]],
    max_tokens: int,
) -> Plan:
    """Lay out ``docs``; ``audio_length(clip)`` gives (student positions, seconds) of a clip.

    A document is cut at the last span that fits in ``max_tokens`` student positions (the
    trainers window long documents first, ``MixedData.window``, so nothing is cut there).
    """
    rows: dict[str, list] = {k: [] for k in ("s_ids", "s_mask", "s_tgt", "t_ids", "t_mask")}
    layouts, seconds = [], 0.0
    for doc in docs:
        s_ids, s_mask, s_tgt, t_ids, t_mask, layout = [], [], [], [], [], []
        for span, ids in zip(doc, span_tokens(tokenizer, doc), strict=True):
            at = len(s_ids)
            if span.audio is not None:
                n, clip_seconds = audio_length(span.audio)
                if at and at + n > max_tokens:
                    break
                s_ids += [AUDIO] * n
                s_mask += [False] * n
                s_tgt += [0] * n
                t_ids += ids
                t_mask += [False] * len(ids)
                layout.append((span.audio, n))
                seconds += clip_seconds
                continue
            if at and at + len(ids) > max_tokens:
                break
            ids = ids[: max_tokens - at]
            t_at = len(t_ids)
            s_ids += ids
            s_mask += [False] * len(ids)
            s_tgt += [0] * len(ids)
            t_ids += ids
            t_mask += [False] * len(ids)
            for k, token in enumerate(ids):  # the position before a token predicts it
                if at + k > 0:
                    s_mask[at + k - 1] = True
                    s_tgt[at + k - 1] = token
                    t_mask[t_at + k - 1] = True
            layout.append((None, len(ids)))
        for key, value in zip(rows, (s_ids, s_mask, s_tgt, t_ids, t_mask), strict=True):
            rows[key].append(value)
        layouts.append(layout)
    return Plan(
        student_ids=_pad(rows["s_ids"], 0, torch.long),
        student_attention=_pad([[1] * len(r) for r in rows["s_ids"]], 0, torch.long),
        student_mask=_pad(rows["s_mask"], False, torch.bool),
        targets=_pad(rows["s_tgt"], 0, torch.long),
        teacher_ids=_pad(rows["t_ids"], 0, torch.long),
        teacher_attention=_pad([[1] * len(r) for r in rows["t_ids"]], 0, torch.long),
        teacher_mask=_pad(rows["t_mask"], False, torch.bool),
        layout=layouts,
        n_tokens=sum(len(r) for r in rows["s_ids"]),
        speech_seconds=seconds,
    )


class StudentInputs(NamedTuple):
    embeds: Tensor  # (B, Ts', H)
    attention: Tensor  # (B, Ts')
    mask: Tensor  # (B, Ts') text positions
    targets: Tensor  # (B, Ts')


def student_inputs(
    plan: Plan, embed_tokens: Callable[[Tensor], Tensor], embed_audio: Callable[[str], Tensor]
) -> StudentInputs:
    """The student's inputs laid out as planned, with each clip at its actual length.

    A clip may come out shorter than planned (a vocabulary adapter drops blank frames), so the
    text positions move; only the last audio position (the end boundary) can be one. Their number,
    and so the loss normalisation, stays as planned.
    """
    rows: dict[str, list[Tensor]] = {"embeds": [], "mask": [], "targets": []}
    for row, layout in enumerate(plan.layout):
        embeds, mask, targets, at = [], [], [], 0
        for clip, n in layout:
            planned = slice(at, at + n)
            if clip is None:
                embeds.append(embed_tokens(plan.student_ids[row, planned]))
                mask.append(plan.student_mask[row, planned])
                targets.append(plan.targets[row, planned])
            else:
                audio = embed_audio(clip)
                embeds.append(audio)
                last = slice(at + n - 1, at + n)
                silent = len(audio) - 1  # audio positions before the end boundary
                mask.append(
                    torch.cat([torch.zeros(silent, dtype=torch.bool), plan.student_mask[row, last]])
                )
                targets.append(
                    torch.cat([torch.zeros(silent, dtype=torch.long), plan.targets[row, last]])
                )
            at += n
        rows["embeds"].append(torch.cat(embeds))
        rows["mask"].append(torch.cat(mask))
        rows["targets"].append(torch.cat(targets))
    lengths = [len(e) for e in rows["embeds"]]
    width = max(lengths)

    def pad(row: Tensor) -> Tensor:
        return torch.cat([row, row.new_zeros((width - len(row), *row.shape[1:]))])

    return StudentInputs(
        embeds=torch.stack([pad(e) for e in rows["embeds"]]),
        attention=torch.tensor([[1] * n + [0] * (width - n) for n in lengths], dtype=torch.long),
        mask=torch.stack([pad(m) for m in rows["mask"]]),
        targets=torch.stack([pad(t) for t in rows["targets"]]),
    )
