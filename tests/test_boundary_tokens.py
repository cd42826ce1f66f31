"""Scoring tokenizes text around audio exactly as training lays the same spans out.

Training (``salad_train.recipe.batch``) tokenizes each span on its own, a leading space after
the first,
so a text span before speech never ends in a space token; scoring used to tokenize
``"Question: "`` as ``[Question, :, ' ']`` before the audio, a layout training never shows.
"""

from __future__ import annotations

import pytest

from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig
from salad_eval.prompt import Audio, Text
from salad_train.recipe.batch import AUDIO, plan_batch
from salad_train.recipe.data import Span

pytestmark = pytest.mark.integration

CLIPS = ("first.wav", "second.wav")  # never read: tokenizing needs no audio
LAYOUTS = [
    # (training document, the same layout as a scored prompt and its choice)
    (
        (
            Span("Question:"),
            Span("What is the capital of France?", CLIPS[0]),
            Span("Answer: Paris is the capital"),
        ),
        (
            Text("Question: "),
            Audio(CLIPS[0], "What is the capital of France?"),
            Text(" Answer: Paris"),
        ),
        " is the capital",
    ),
    (
        (
            Span("The cat sat on the mat."),
            Span("It was warm", CLIPS[0]),
            Span("and the rain fell on the roof"),
            Span("all night long", CLIPS[1]),
            Span("until morning came"),
        ),
        (
            Text("The cat sat on the mat. "),
            Audio(CLIPS[0], "It was warm"),
            Text(" and the rain fell on the roof  "),
            Audio(CLIPS[1], "all night long"),
            Text(" until morning"),
        ),
        " came",
    ),
]


@pytest.fixture(scope="module")
def model() -> SpeechLM:
    config = SpeechLMConfig(
        encoder="whisper-tiny.en", adapter_layers=1, adapter_width=32, adapter_heads=2
    )
    return SpeechLM.from_config(config, seed=0)


def _training_segments(model: SpeechLM, doc) -> list[list[int] | str]:
    """The student sequence training builds for ``doc``: text ids per span, clip names for audio."""
    plan = plan_batch([doc], model.tokenizer, lambda clip: (3, 1.0), max_tokens=512)
    ids, at, segments = plan.student_ids[0].tolist(), 0, []
    for clip, n in plan.layout[0]:
        segments.append(clip if clip is not None else ids[at : at + n])
        assert clip is None or ids[at : at + n] == [AUDIO] * n
        at += n
    return segments


@pytest.mark.parametrize("doc, prompt, choice", LAYOUTS)
def test_scored_prompt_ids_equal_the_training_layout(model, doc, prompt, choice):
    pieces, (continuation,) = model.tokenize(prompt, [choice])
    assert pieces[0] == model._special_prefix
    scored = [p.path if isinstance(p, Audio) else p for p in pieces[1:]]
    scored[-1] = scored[-1] + continuation  # the last span: the context, then the choice
    assert scored == _training_segments(model, doc)


def test_no_lone_space_token_before_audio(model):
    pieces, _ = model.tokenize(
        (Text("Question: "), Audio(CLIPS[0], "x"), Text("\nAnswer:")), [" yes"]
    )
    before_audio = pieces[1]
    assert before_audio == model.tokenizer.encode("Question:", add_special_tokens=False)
    assert before_audio[-1] != model.blank
