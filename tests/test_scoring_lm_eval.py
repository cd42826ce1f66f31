"""``text@base`` with the embedded SmolLM2 equals lm-eval's own ``hf`` model, item by item."""

from __future__ import annotations

from collections import defaultdict

import pytest
from lm_eval.models.huggingface import HFLM
from lm_eval_local import lm_eval_task
from numerics import assert_float32_close, longest_reduction

from salad_eval.assets import llm_path
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import ScoringRequest, text_prompt
from salad_eval.scoring import item_metrics
from salad_eval.tasks import load_items

pytestmark = pytest.mark.integration

# (salad task == lm-eval task, items): 100 items, a few hundred lm-eval requests (4 choices each)
CASES = [("arc_easy", 60), ("hellaswag", 40)]


@pytest.fixture(scope="module")
def lm_eval_hf() -> HFLM:
    return HFLM(pretrained=llm_path(), device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def text_lm() -> TextLM:
    return TextLM("smollm2-135m")


@pytest.mark.slow
@pytest.mark.parametrize(("task", "n"), CASES)
def test_text_base_equals_lm_eval_hf(task, n, benchmarks_dir, lm_eval_hf, text_lm) -> None:
    reference = lm_eval_task(task, benchmarks_dir)
    reference.build_all_requests(limit=n)
    responses = lm_eval_hf.loglikelihood(reference.instances, disable_tqdm=True)
    by_doc = defaultdict(list)
    for instance, response in zip(reference.instances, responses, strict=True):
        by_doc[instance.doc_id].append((instance.idx, instance, response))
    expected = []
    for doc_id in sorted(by_doc):
        rows = sorted(by_doc[doc_id], key=lambda row: row[0])
        doc = rows[0][1].doc
        expected.append(
            (rows[0][1].args[0], reference.process_results(doc, [r for _, _, r in rows]), rows)
        )

    items = load_items(task, limit=n, data_dir=str(benchmarks_dir))
    assert len(items) == len(expected) == n
    totals = defaultdict(float)
    # salad's own cross-item batches, as a gap run scores them
    scored = text_lm.score([ScoringRequest(text_prompt(item), item.choices) for item in items])
    for item, scores, (context, want, rows) in zip(items, scored, expected, strict=True):
        assert item.text_context == context
        assert item.choices == tuple(r[1].args[1] for r in rows)
        for score, (_, _, (ll, greedy)) in zip(scores, rows, strict=True):
            # lm-eval's own forwards: other batches and shapes, the same sums in other orders
            assert_float32_close(score.logprob, ll, terms=longest_reduction(text_lm.llm))
            assert score.is_greedy == greedy
        got = item_metrics(scores, item.target, item.choices)
        assert got == {"acc": want["acc"], "acc_norm": want["acc_norm"]}, item.id
        for metric in got:
            totals[metric] += got[metric] / n
    # well above chance on ARC-Easy: the comparison means something
    assert totals["acc"] > (0.45 if task == "arc_easy" else 0.3)
    print(f"{task}: n={n} acc={totals['acc']:.3f} acc_norm={totals['acc_norm']:.3f} = lm-eval hf")
