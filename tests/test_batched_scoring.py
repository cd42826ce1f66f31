"""Cross-item batched scoring: many contexts per forward score as each does alone, in order."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from numerics import assert_float32_close, longest_reduction

from salad_eval.models.lm_scoring import choice_scores, score_contexts
from salad_eval.models.speech_lm import SpeechLM, SpeechLMConfig, load_waveform
from salad_eval.models.text_lm import TextLM
from salad_eval.prompt import Audio, ScoringRequest, Text
from salad_eval.scoring import request_key, score
from salad_eval.speech.tts import synthesize
from salad_eval.speech.voices import parse_voice

TERMS = 1536  # SmolLM2-135M's longest dot product: its MLP's down projection

SMALL = SpeechLMConfig(adapter_layers=1, adapter_width=64, adapter_heads=2)

# Mixed lengths on purpose: contexts of 1 to ~40 tokens, choices of 1 to ~8 tokens, 2 to 4 each.
ITEMS = (
    (
        "Question: Which planet is the largest in the solar system?\nAnswer:",
        (" Jupiter", " Mars", " the Earth, where we live"),
    ),
    ("The cat sat on the", (" mat", " roof of the old house")),
    ("2 + 2 =", (" 4", " 5", " twenty-two", " four")),
    (
        "Once upon a time, in a kingdom by the sea, there lived a king who had three sons and a "
        "daughter. The eldest son was brave, the second was clever, and the youngest was",
        (" kind", " the laziest of them all", " a frog"),
    ),
    ("Water boils at", (" 100 degrees Celsius at sea level", " 0 degrees")),
    ("", (" Hello there", " The")),  # an empty context: the BOS token alone
)


@pytest.fixture(scope="module")
def text_lm() -> TextLM:
    return TextLM("smollm2-135m")


def assert_same(batched, alone) -> None:
    assert len(batched) == len(alone)
    for got, ref in zip(batched, alone, strict=True):
        assert_float32_close([s.logprob for s in got], [s.logprob for s in ref], terms=TERMS)
        assert [(s.n_tokens, s.n_chars, s.is_greedy) for s in got] == [
            (s.n_tokens, s.n_chars, s.is_greedy) for s in ref
        ]


@pytest.fixture(scope="module")
def text_cases(text_lm: TextLM):
    """(contexts, continuations, choices) of ITEMS, and each one's scores alone."""
    pairs = [text_lm.encoder.encode_pair(context, choices) for context, choices in ITEMS]
    contexts = [text_lm.embed(ids) for ids, _ in pairs]
    continuations = [conts for _, conts in pairs]
    choices = [ch for _, ch in ITEMS]
    alone = [
        choice_scores(text_lm.llm, *case)
        for case in zip(contexts, continuations, choices, strict=True)
    ]
    return contexts, continuations, choices, alone


@pytest.mark.integration
@pytest.mark.numerics
@pytest.mark.parametrize("batch_size", [2, 8])
def test_score_contexts_equals_per_request(text_lm: TextLM, text_cases, batch_size: int) -> None:
    contexts, continuations, choices, alone = text_cases
    assert len({c.shape[0] for c in contexts}) >= 5 and min(c.shape[0] for c in contexts) == 1
    batched = score_contexts(text_lm.llm, contexts, continuations, choices, batch_size)
    assert_same(batched, alone)


@pytest.mark.integration
def test_text_lm_scores_batched_in_order(text_lm: TextLM) -> None:
    requests = [ScoringRequest((Text(context),), choices) for context, choices in ITEMS]
    one_by_one = [text_lm.score([r], batch_size=1)[0] for r in requests]
    assert_same(text_lm.score(requests, batch_size=4), one_by_one)
    assert_same(text_lm.score(requests[::-1], batch_size=3), one_by_one[::-1])


# -- the SALAD speech LLM: clips encoded in batches, spoken contexts batched across items --------


@pytest.fixture(scope="module")
def speech_requests(tmp_path_factory) -> list[ScoringRequest]:
    folder = tmp_path_factory.mktemp("clips")
    voice = parse_voice("espeak/en-us")
    clips = []
    for n, text in enumerate(
        (
            "The cat sat on the mat.",
            "Water boils at one hundred degrees.",
            "She bought three green apples and a loaf of bread.",
        )
    ):
        path = folder / f"{n}.wav"
        sf.write(path, synthesize(text, voice), 16_000)
        clips.append(Audio(str(path), text))
    return [
        ScoringRequest(
            (Text("Listen: "), clips[0], Text("\nWhere did the cat sit? Answer:")),
            (" mat", " on the roof of the house", " tree"),
        ),
        ScoringRequest((Text("Complete: "), clips[1]), (" yes", " no, it is wrong")),
        ScoringRequest((Text(ITEMS[0][0]),), ITEMS[0][1]),  # text only
        ScoringRequest(
            (clips[2], Text(" What did she buy? "), clips[0], Text(" Answer:")),
            (" apples", " a car", " bread and apples", " nothing"),
        ),
    ]


@pytest.fixture(scope="module")
def speech_lm(tmp_path_factory) -> SpeechLM:
    model = SpeechLM.from_config(SMALL, seed=0)
    model.encoder.root = tmp_path_factory.mktemp("features")  # every clip really encoded
    return model


@pytest.mark.integration
@pytest.mark.numerics
def test_clips_encode_in_batches_as_alone(speech_lm: SpeechLM, speech_requests) -> None:
    whisper = speech_lm.encoder.encoder  # under the on-disk cache
    waves = [
        load_waveform(seg.path)
        for r in speech_requests
        for seg in r.prompt
        if isinstance(seg, Audio)
    ]
    assert len({len(w) for w in waves}) == 3
    batched = whisper.encode_batch(waves, batch_size=3)
    for wave, features in zip(waves, batched, strict=True):
        alone = whisper.encode(wave)
        assert features.shape == alone.shape
        # a padded batch: the encoder's sums in other orders (its longest: 1536, the MLP's)
        assert_float32_close(features, alone, terms=longest_reduction(whisper.model))


@pytest.mark.integration
@pytest.mark.numerics
def test_speech_lm_batched_equals_per_request(speech_lm: SpeechLM, speech_requests) -> None:
    alone = []
    with torch.inference_mode():
        for r in speech_requests:  # each clip encoded on its own, each context alone
            pieces, conts = speech_lm.tokenize(r.prompt, r.choices)
            context = speech_lm.embed_segments(pieces).embeds
            alone.append(choice_scores(speech_lm.llm, context, conts, r.choices))
    assert_same(speech_lm.score(speech_requests, batch_size=3), alone)
    assert_same(speech_lm.score(speech_requests[::-1], batch_size=8), alone[::-1])


# -- the scoring engine: many requests per call, same cache, exact resume ------------------------


class Killed(Exception):
    pass


class Recorder:
    """A model that counts its calls and can die after ``live`` of them (a killed run)."""

    def __init__(self, inner: TextLM, live: int | None = None):
        self.inner, self.live, self.calls = inner, live, []

    @property
    def fingerprint(self) -> str:
        return self.inner.fingerprint

    def score(self, requests, batch_size=8):
        if self.live is not None and len(self.calls) == self.live:
            raise Killed
        self.calls.append(len(requests))
        return self.inner.score(requests, batch_size)


def many_requests() -> list[ScoringRequest]:
    return [
        ScoringRequest((Text(f"{context} {n}"),), choices)
        for n in range(2)
        for context, choices in ITEMS
    ]


@pytest.mark.integration
def test_many_requests_per_call_same_cache_keys(text_lm: TextLM, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SALAD_HOME", str(tmp_path))
    requests = many_requests()
    model = Recorder(text_lm)
    batched = score(model, requests, batch_size=4)
    assert model.calls == [len(requests)]  # one call: 12 requests <= 4 rows x CALL_BATCHES
    assert_same(batched, [text_lm.score([r], batch_size=1)[0] for r in requests])
    written = {p.stem for p in (tmp_path / "scores").rglob("*.json")}
    assert written == {request_key(model.fingerprint, r) for r in requests}
    assert score(model, requests[::-1], batch_size=1) == batched[::-1]  # all read, in order
    assert model.calls == [len(requests)]


@pytest.mark.integration
def test_killed_batched_run_resumes_identically(text_lm: TextLM, tmp_path, monkeypatch) -> None:
    import salad_eval.scoring as scoring

    monkeypatch.setattr(scoring, "CALL_BATCHES", 1)  # 2 requests per call: 6 calls
    requests = many_requests()
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "whole"))
    whole = score(Recorder(text_lm), requests, batch_size=2)
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "killed"))
    with pytest.raises(Killed):
        score(Recorder(text_lm, live=3), requests, batch_size=2)
    entries = sorted((tmp_path / "killed" / "scores").rglob("*.json"))
    assert len(entries) == 6
    entries[0].unlink()  # as if killed between two writes of one call
    resumed = Recorder(text_lm)
    assert score(resumed, requests, batch_size=2) == whole  # bit for bit
    assert resumed.calls == [2, 2, 2, 2]  # the part-written call and the three never made


@pytest.mark.integration
def test_batch_size_auto_and_bad_values(text_lm: TextLM) -> None:
    from salad_eval.errors import SaladError
    from salad_eval.models.lm_scoring import CPU_BATCH_SIZE
    from salad_eval.run.spec import RunSpec
    from salad_eval.scoring import DEFAULT_BATCH_SIZE, resolve_batch_size

    requests = many_requests()
    assert resolve_batch_size(text_lm, requests, "auto") == CPU_BATCH_SIZE  # no GPU to fill
    assert resolve_batch_size(object(), requests, "auto") == DEFAULT_BATCH_SIZE  # no finder
    assert resolve_batch_size(text_lm, requests, 5) == 5
    for bad in (0, -2, "many", True, 2.5):
        with pytest.raises(SaladError, match="batch size"):
            resolve_batch_size(text_lm, requests, bad)
    # the option as every front end declares it (RunSpec): an integer >= 1, or auto
    assert RunSpec(batch_size="auto").checked().batch_size == "auto"
    assert RunSpec(batch_size=16).checked().batch_size == 16
    for bad in (0, -2, "many"):
        with pytest.raises(SaladError, match="--batch-size .* >= 1 or auto"):
            RunSpec(batch_size=bad).checked()


def test_largest_batch_halves_until_it_fits() -> None:
    from salad_eval.models.lm_scoring import MAX_AUTO_BATCH, largest_batch

    tried = []
    assert largest_batch(lambda size: tried.append(size) or size <= 40) == 32
    assert tried == [MAX_AUTO_BATCH // 2**i for i in range(len(tried))]
    assert largest_batch(lambda size: False) == 0


@pytest.mark.integration
def test_shards_score_whole_calls_as_one_process(text_lm: TextLM, tmp_path, monkeypatch) -> None:
    import salad_eval.scoring as scoring

    monkeypatch.setattr(scoring, "CALL_BATCHES", 1)  # 2 requests per call: 6 calls
    requests = many_requests()
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "one"))
    whole = score(Recorder(text_lm), requests, batch_size=2)
    monkeypatch.setenv("SALAD_HOME", str(tmp_path / "two"))
    ranks = [Recorder(text_lm), Recorder(text_lm)]
    for rank, model in enumerate(ranks):
        scoring.fill_shard(model, requests, 2, rank, 2)
    assert [m.calls for m in ranks] == [[2, 2, 2], [2, 2, 2]]
    reader = Recorder(text_lm)
    assert score(reader, requests, batch_size=2) == whole and reader.calls == []  # bit for bit


@pytest.mark.numerics
def test_sliding_window_contexts_score_as_alone() -> None:
    """A sliding-window decoder (Gemma-3's local layers, Mistral): padding slots would push real
    tokens out of the window, so requests longer than it are scored alone; shorter ones batch."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from salad_eval.models.lm_scoring import context_batches, sliding_window

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        sliding_window=8,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=256,
    )
    llm = Gemma3ForCausalLM(config).eval().requires_grad_(False)
    assert sliding_window(llm) == 8
    generator = torch.Generator().manual_seed(1)
    lengths = (30, 22, 12, 5, 3, 2, 17)
    contexts = [
        llm.get_input_embeddings()(torch.randint(0, 64, (n,), generator=generator)) for n in lengths
    ]
    continuations = [
        [torch.randint(0, 64, (k,), generator=generator).tolist() for k in (1, 3)] for _ in lengths
    ]
    choices = [["a", "b"]] * len(lengths)
    alone = [
        choice_scores(llm, *case) for case in zip(contexts, continuations, choices, strict=True)
    ]
    assert_same(score_contexts(llm, contexts, continuations, choices, batch_size=8), alone)
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches = context_batches(order, list(lengths), [3] * len(lengths), 8, 8)
    assert [[lengths[i] for i in b] for b in batches] == [[30], [22], [17], [12], [5, 3, 2]]
    assert len(context_batches(order, list(lengths), [3] * len(lengths), 8, None)) == 1
