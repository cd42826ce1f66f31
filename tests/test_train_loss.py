"""The Stage I loss against a direct, unchunked computation on a tiny random LLM."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from numerics import assert_float32_close
from transformers import LlamaConfig, LlamaForCausalLM

from salad_train.recipe.loss import distillation_loss

# the losses sum 14 text positions x 97 vocabulary entries; chunks sum them in another order
pytestmark = pytest.mark.numerics  # losses and gradients against direct computations

LOSS_TERMS = 14 * 97


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    student, teacher = LlamaForCausalLM(cfg), LlamaForCausalLM(cfg)
    # student: [t t t A A A t t t A A t t]; positions whose next token is text are marked
    ts = 13
    student_mask = torch.zeros(2, ts, dtype=torch.bool)
    student_mask[:, [0, 1, 5, 6, 7, 10, 11]] = True
    teacher_mask = torch.zeros(2, 10, dtype=torch.bool)
    teacher_mask[:, :7] = True
    targets = torch.randint(0, 97, (2, ts))
    s_hidden = student.model(inputs_embeds=torch.randn(2, ts, 32)).last_hidden_state
    with torch.no_grad():
        t_hidden = teacher.model(input_ids=torch.randint(0, 97, (2, 10))).last_hidden_state
    return student, teacher, s_hidden, t_hidden, student_mask, teacher_mask, targets


def direct(student, teacher, s_hidden, t_hidden, s_mask, t_mask, targets, temperature=1.0):
    s_logits = student.lm_head(s_hidden)[s_mask]
    t_logits = teacher.lm_head(t_hidden)[t_mask]
    t_logp = F.log_softmax(t_logits / temperature, -1)
    s_logp = F.log_softmax(s_logits / temperature, -1)
    kl = F.kl_div(s_logp, t_logp, log_target=True, reduction="sum") * temperature**2
    nll = F.cross_entropy(student.lm_head(s_hidden)[s_mask], targets[s_mask], reduction="sum")
    return kl, nll


@pytest.mark.parametrize("chunk_size", [1, 3, 1024])
def test_alpha_one_is_exactly_the_kl_on_text_positions(setup, chunk_size):
    student, teacher, s_h, t_h, s_m, t_m, y = setup
    out = distillation_loss(
        s_h, t_h, s_m, t_m, y, student.lm_head, teacher.lm_head, alpha=1.0, chunk_size=chunk_size
    )
    kl, _ = direct(student, teacher, s_h, t_h, s_m, t_m, y)
    assert out.n_positions == 14
    assert_float32_close(out.loss, kl, terms=LOSS_TERMS)
    assert out.loss.item() > 0


def test_alpha_zero_is_exactly_the_nll(setup):
    student, teacher, s_h, t_h, s_m, t_m, y = setup
    out = distillation_loss(
        s_h, t_h, s_m, t_m, y, student.lm_head, teacher.lm_head, alpha=0.0, chunk_size=4
    )
    _, nll = direct(student, teacher, s_h, t_h, s_m, t_m, y)
    assert_float32_close(out.loss, nll, terms=LOSS_TERMS)


def test_mixture_and_temperature(setup):
    student, teacher, s_h, t_h, s_m, t_m, y = setup
    out = distillation_loss(
        s_h,
        t_h,
        s_m,
        t_m,
        y,
        student.lm_head,
        teacher.lm_head,
        alpha=0.3,
        temperature=2.0,
        chunk_size=5,
    )
    kl, nll = direct(student, teacher, s_h, t_h, s_m, t_m, y, temperature=2.0)
    assert_float32_close(out.loss, 0.3 * kl + 0.7 * nll, terms=LOSS_TERMS)


def test_audio_positions_carry_no_loss_and_gradients_match(setup):
    student, teacher, s_h, t_h, s_m, t_m, y = setup
    leaf = s_h.detach().clone().requires_grad_(True)
    out = distillation_loss(
        leaf, t_h, s_m, t_m, y, student.lm_head, teacher.lm_head, alpha=0.5, chunk_size=3
    )
    out.loss.backward()
    assert leaf.grad[~s_m].abs().max() == 0  # audio positions: no gradient
    assert leaf.grad[s_m].abs().min() > 0
    ref = leaf.detach().clone().requires_grad_(True)
    kl, nll = direct(student, teacher, ref, t_h, s_m, t_m, y)
    (0.5 * kl + 0.5 * nll).backward()
    assert_float32_close(leaf.grad, ref.grad, terms=97)  # each a sum over the vocabulary
    # changing the audio positions' hidden states leaves the loss unchanged
    moved = s_h.detach().clone()
    moved[~s_m] += 10.0
    again = distillation_loss(moved, t_h, s_m, t_m, y, student.lm_head, teacher.lm_head, alpha=0.5)
    assert_float32_close(again.loss, out.loss.detach(), terms=LOSS_TERMS)


def test_alignment_ctc_is_the_token_log_prob_for_one_frame_one_token():
    """T = L = 1: CTC's only path emits the token at the frame, so the loss is -log p(token)."""
    from salad_train.recipe.loss import alignment_ctc_loss

    torch.manual_seed(0)
    table = torch.randn(50, 16)
    frame = torch.randn(1, 16)
    loss = alignment_ctc_loss([frame], [[7]], table, blank=3, scale=30.0)
    cos = torch.nn.functional.cosine_similarity(frame, table)
    # CTC's forward pass and log_softmax sum the 50 rows' exponentials in other orders
    assert_float32_close(loss, -torch.log_softmax(30.0 * cos, -1)[7], terms=50)


def test_alignment_ctc_prefers_frames_on_the_spoken_tokens_embeddings():
    from salad_train.recipe.loss import alignment_ctc_loss

    torch.manual_seed(0)
    table = torch.randn(50, 16)
    spoken = [5, 9, 5]
    on_tokens = torch.stack([table[5], table[3], table[9], table[3], table[5]])  # 3 is blank
    random_frames = torch.randn(5, 16)
    good = alignment_ctc_loss([on_tokens * 2.0], [spoken], table, blank=3)
    bad = alignment_ctc_loss([random_frames], [spoken], table, blank=3)
    assert good < 0.1 < bad
    # the blank never counts as a target, and clips are summed
    both = alignment_ctc_loss([on_tokens, random_frames], [spoken + [3], spoken], table, blank=3)
    assert_float32_close(both, good + bad, terms=50 * 10)  # 50 rows at each of 10 frames


def test_alignment_ctc_on_a_vocabulary_subset_is_the_subset_softmax():
    from salad_train.recipe.loss import alignment_ctc_loss

    torch.manual_seed(0)
    table = torch.randn(50, 16)
    frame = torch.randn(1, 16)
    vocab = torch.tensor([3, 7, 11, 20])
    loss = alignment_ctc_loss([frame], [[7]], table, blank=3, vocab=vocab)
    cos = torch.nn.functional.cosine_similarity(frame, table[vocab])
    assert_float32_close(loss, -torch.log_softmax(30.0 * cos, -1)[1], terms=4)  # 4 rows


def test_warmup_masking_is_seeded_and_bounded():
    """SpecAugment on warm-up features: the same (seed, step) masks the same frames, each mask at
    most its share of an axis, and share 0 leaves the features untouched."""
    import random

    from salad_train.recipe.align import masked

    features = torch.randn(100, 40) + 5  # no zero entries of its own
    first = masked(features, 0.1, random.Random("0:align:3"))
    again = masked(features, 0.1, random.Random("0:align:3"))
    assert torch.equal(first, again) and not torch.equal(first, features)
    zero_frames = int((first == 0).all(dim=1).sum())
    zero_dims = int((first == 0).all(dim=0).sum())
    assert zero_frames <= 2 * 10 and zero_dims <= 2 * 4
    assert ((first == 0) | (first == features)).all()  # masking only zeroes
    assert masked(features, 0.0, random.Random(0)) is features
