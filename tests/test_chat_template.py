"""``--chat-template`` equals lm-eval's ``--apply_chat_template``: the same rendered contexts and
continuations, and the same log-likelihoods from lm-eval's own ``hf`` model (embedded SmolLM2,
which ships a chat template), on demo items."""

from __future__ import annotations

import pytest
from lm_eval.models.huggingface import HFLM
from lm_eval_local import lm_eval_task
from numerics import assert_float32_close, longest_reduction

from salad_eval.assets import llm_path
from salad_eval.chat import ChatFormat
from salad_eval.errors import SaladError
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, ScoringRequest, Text, text_prompt
from salad_eval.tasks import load_items

N_ITEMS = 3


@pytest.fixture(scope="module")
def lm_eval_chat(benchmarks_dir):
    """lm-eval's requests for the demo task with the chat template, and their log-likelihoods."""
    hf = HFLM(pretrained=llm_path(), device="cpu", batch_size=8)
    task = lm_eval_task("salad_demo", benchmarks_dir)
    task.build_all_requests(
        limit=N_ITEMS, apply_chat_template=True, chat_template=hf.apply_chat_template
    )
    instances = sorted(task.instances, key=lambda i: (i.doc_id, i.idx))
    return instances, hf.loglikelihood(instances, disable_tqdm=True)


@pytest.mark.integration
def test_text_prompts_render_and_score_as_lm_eval(lm_eval_chat):
    instances, responses = lm_eval_chat
    model = TextLM("smollm2-135m", chat_template=True)
    raw = TextLM("smollm2-135m")
    assert model.fingerprint != raw.fingerprint  # chat scores never reuse raw cache entries
    items = load_items("demo", limit=N_ITEMS)
    for item in items:
        rows = [
            (inst, resp)
            for inst, resp in zip(instances, responses, strict=True)
            if inst.doc_id == items.index(item)
        ]
        (rendered,), choices = model.chat.apply(text_prompt(item), item.choices)
        assert rendered.text == rows[0][0].args[0]  # the context, template and all
        assert choices == tuple(inst.args[1] for inst, _ in rows)  # target delimiter dropped
        scores = model.score([ScoringRequest(text_prompt(item), item.choices)])[0]
        # lm-eval's own forwards: other batches and shapes, the same sums in other orders
        assert_float32_close(
            [s.logprob for s in scores], [r[0] for _, r in rows], terms=longest_reduction(model.llm)
        )
        assert [s.is_greedy for s in scores] == [r[1] for _, r in rows]
        plain = raw.score([ScoringRequest(text_prompt(item), item.choices)])[0]
        assert [s.logprob for s in plain] != [s.logprob for s in scores]


def test_clips_stay_where_the_prompt_puts_them():
    from transformers import AutoTokenizer

    chat = ChatFormat.of(AutoTokenizer.from_pretrained(llm_path()), "smollm2-135m")
    clip, other = Audio("a.wav", "first"), Audio("b.wav", "second")
    prompt, choices = chat.apply((Text("Q: "), clip, Text(" or "), other, Text("?\nA:")), (" x",))
    assert choices == ("x",)
    assert [type(s) for s in prompt] == [Text, Audio, Text, Audio, Text]
    assert prompt[1] is clip and prompt[3] is other and prompt[2] == Text(" or ")
    rendered = chat.render("Q: first or second?\nA:")
    assert "".join(s.text if isinstance(s, Text) else s.transcript for s in prompt) == rendered


def test_a_model_without_a_template_is_a_one_line_error(tiny_qwen2):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen2)
    tokenizer.chat_template = None
    with pytest.raises(SaladError, match="has no chat template; drop --chat-template"):
        ChatFormat.of(tokenizer, "tiny")
