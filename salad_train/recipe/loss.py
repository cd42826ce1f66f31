"""Stage I loss: ``alpha * KL(teacher || student) + (1 - alpha) * NLL`` on text positions only.

The student reads the interleaved speech/text sequence, the teacher (the frozen base LLM) reads the
all-text version of the same document. A *text position* is a position whose next token is text;
audio frames and boundary embeddings that are followed by audio carry no loss. Masks select the
text positions of both sequences in the same order, so the i-th selected student position and the
i-th selected teacher position predict the same token.

Logits are never materialised for the whole sequence: hidden states are projected through the
LM heads ``chunk_size`` positions at a time, under activation checkpointing, so memory stays bounded
for 150k-token vocabularies and 2,048-token contexts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint


@dataclass
class LossSums:
    """Sums over text positions; divide by a global count so accumulation and DDP stay exact."""

    loss: Tensor
    kl: Tensor
    nll: Tensor
    n_positions: int


def _chunk_terms(
    student_h: Tensor,
    teacher_h: Tensor,
    targets: Tensor,
    student_head: nn.Module,
    teacher_head: nn.Module,
    temperature: float,
) -> tuple[Tensor, Tensor]:
    student_logits = student_head(student_h).float()
    with torch.no_grad():
        teacher_logits = teacher_head(teacher_h).float()
    t_logp = F.log_softmax(teacher_logits / temperature, dim=-1)
    s_logp_t = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (t_logp.exp() * (t_logp - s_logp_t)).sum() * temperature**2
    nll = F.cross_entropy(student_logits, targets, reduction="sum")
    return kl, nll


def distillation_loss(
    student_hidden: Tensor,
    teacher_hidden: Tensor,
    student_mask: Tensor,
    teacher_mask: Tensor,
    targets: Tensor,
    student_head: nn.Module,
    teacher_head: nn.Module,
    alpha: float = 1.0,
    temperature: float = 1.0,
    chunk_size: int = 1024,
) -> LossSums:
    """Summed Stage I loss over the text positions of a batch.

    ``student_hidden`` (B, Ts, H) and ``teacher_hidden`` (B, Tt, H) are final hidden states;
    ``student_mask`` (B, Ts) and ``teacher_mask`` (B, Tt) mark text positions (equal counts per
    row); ``targets`` (B, Ts) holds the next token at each student text position.
    """
    if not torch.equal(student_mask.sum(1), teacher_mask.sum(1)):
        raise ValueError("student and teacher must have the same number of text positions per row")
    s = student_hidden[student_mask]
    t = teacher_hidden[teacher_mask].detach()
    y = targets[student_mask]
    kl = s.new_zeros((), dtype=torch.float32)
    nll = s.new_zeros((), dtype=torch.float32)
    for start in range(0, len(y), chunk_size):
        part = slice(start, start + chunk_size)
        args = (s[part], t[part], y[part], student_head, teacher_head, temperature)
        if s.requires_grad:
            c_kl, c_nll = checkpoint(_chunk_terms, *args, use_reentrant=False)
        else:
            c_kl, c_nll = _chunk_terms(*args)
        kl, nll = kl + c_kl, nll + c_nll
    return LossSums(alpha * kl + (1 - alpha) * nll, kl.detach(), nll.detach(), len(y))


def alignment_ctc_loss(
    frames: list[Tensor],
    targets: list[list[int]],
    embeddings: Tensor,
    blank: int,
    scale: float = 30.0,
    vocab: Tensor | None = None,
) -> Tensor:
    """Summed CTC loss of each clip's adapter outputs against the tokens it speaks.

    A frame's logit for token v is ``scale * cos(frame, embeddings[v])``: the frame is pulled
    towards the LLM's own input embedding of the token it hears, so the frozen LLM can read it.
    ``blank`` is a token id (a lone space: a frame that adds nothing reads as whitespace).
    ``vocab`` (sorted token ids holding every target and the blank) restricts the softmax to the
    tokens the corpus speaks, which makes it several times cheaper on 50k-token vocabularies.
    An auxiliary loss for small budgets; the paper's recipe has none (``loss.ctc_weight``).
    """
    vocab = torch.arange(len(embeddings)) if vocab is None else vocab
    position = {token: i for i, token in enumerate(vocab.tolist())}  # token id -> CTC class
    keep = [[position[t] for t in ids if t != blank] for ids in targets]
    table = F.normalize(embeddings[vocab.to(embeddings.device)].float(), dim=-1)
    padded = nn.utils.rnn.pad_sequence([F.normalize(f.float(), dim=-1) for f in frames])
    log_probs = F.log_softmax(scale * padded @ table.T, dim=-1)  # (T, N, V)
    return F.ctc_loss(
        log_probs,
        torch.tensor([t for k in keep for t in k], dtype=torch.long),
        torch.tensor([len(f) for f in frames]),
        torch.tensor([len(k) for k in keep]),
        blank=position[blank],
        reduction="sum",
        zero_infinity=True,
    )
