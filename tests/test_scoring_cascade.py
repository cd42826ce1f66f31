"""The cascade transcribes real Kokoro speech with Whisper and scores it with the text LLM."""

from __future__ import annotations

import pytest
import soundfile as sf

from salad_eval.models.cascade import Cascade
from salad_eval.prompt import Audio, ScoringRequest, Text
from salad_eval.scoring import score
from salad_eval.speech import tts
from salad_eval.speech.voices import parse_voice

pytestmark = pytest.mark.integration

QUESTION = "What do bees make from the nectar of flowers?"
CHOICES = (" honey", " milk", " bread", " glass")


@pytest.fixture(scope="module")
def cascade() -> Cascade:
    return Cascade(asr="whisper-tiny.en", text_model="smollm2-135m")


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Audio:
    wave = tts.synthesize(QUESTION, parse_voice("kokoro/jf_alpha"))
    path = tmp_path_factory.mktemp("clips") / "question.flac"
    sf.write(path, wave, 16_000)
    return Audio(str(path), QUESTION)


def test_cascade_transcribes_and_scores(cascade: Cascade, clip: Audio, tmp_path, monkeypatch):
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    prompt = (Text("Question: "), clip, Text("\nAnswer:"))
    transcript = cascade.transcribe(clip)
    assert "nectar" in transcript.lower() and "bees" in transcript.lower()
    assert cascade.transcript_wer(prompt) < 0.3
    assert cascade.transcribed(prompt) == f"Question: {transcript}\nAnswer:"

    scores = score(cascade, [ScoringRequest(prompt, CHOICES)])[0]
    text = cascade.text.score_text(f"Question: {transcript}\nAnswer:", CHOICES)
    assert scores == text  # the cascade is exactly the text LLM on the transcript
    assert max(range(4), key=lambda i: scores[i].logprob) == 0  # honey

    def no_asr(wave):
        raise AssertionError("transcribed twice")

    monkeypatch.setattr(cascade, "_run_asr", no_asr)
    assert cascade.transcribe(clip) == transcript  # read back from the transcript cache
    assert cascade.fingerprint != cascade.text.fingerprint


def test_clip_that_ends_the_prompt_loses_its_final_period(
    cascade: Cascade, clip: Audio, tmp_path, monkeypatch
):
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    monkeypatch.setattr(cascade, "_run_asr", lambda wave: "A man sits on a roof. He.")
    assert cascade.transcribed((Text("Roofing: "), clip)) == "Roofing: A man sits on a roof. He"
    assert cascade.transcribed((clip, Text(" Then"))) == "A man sits on a roof. He. Then"
