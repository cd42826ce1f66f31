"""A generic Hugging Face speech LLM (audio encoder -> projector -> decoder) behind ``Model``.

Every family that transformers implements natively has the same shape: a decoder with an LM head,
an audio tower whose outputs replace placeholder tokens in the input embeddings, and sequential
positions for text and audio (the Omni models' 3-D rotary positions are plain ``arange`` when
there is no image or video). So one class scores them all the same way:

- a text-only prompt (``text@speech``) is tokenized exactly as the text LLM reads it
  (``LMEvalEncoder``, lm-eval's rules), so an untouched decoder gives ``text@speech == text@base``;
- a spoken prompt is embedded segment by segment: text as token embeddings (the tokenizer's special
  prefix before the first one), each clip as the family's own span (``audio_open`` tokens, the
  clip's audio features in place of the placeholder tokens, ``audio_close`` tokens), in the order
  of the prompt; a final text segment pairs with the choices the lm-eval way (trailing spaces move
  into the continuation);
- the context runs once and the choices run batched on its cache, many requests' contexts per
  forward (``lm_scoring.score_contexts``),
  or, where a family sets ``shares_context = False``, each ``context + choice`` runs on its own.

How a family file plugs in (``qwen2_audio.py`` is the longest example, ``qwen2_5_omni.py`` the
shortest):

1. Subclass ``HFAudioLM`` and set ``family`` (a short name, the fingerprint prefix),
   ``model_class`` (the transformers class to load, by name) and ``audio_open`` /
   ``audio_close`` (the token strings around a clip's placeholders in the model's own format).
2. Override ``audio_features(waves)`` when ``model.get_audio_features`` on the feature
   extractor's output (per clip) is not the model's own audio path; it returns one
   ``(frames, hidden)`` tensor per clip, already projected into the decoder's input space.
3. Override ``load_model(path, dtype)`` or ``decoder_parts()`` when the checkpoint does not load
   with ``model_class.from_pretrained`` or keeps its decoder elsewhere than
   ``model.model.language_model`` / ``model.lm_head``. ``load_model`` loads through
   ``self.placement.load(cls, path, ...)`` (``--device-map``: the model spread over devices), and
   inputs go to ``self.input_device``, not ``model.device`` (an offloaded parameter is ``meta``).
4. Add a ``Family`` to ``registry.FAMILIES`` (or publish it from another package through the
   ``salad_eval.models`` entry-point group): its ``model_type`` values are how ``--model`` finds it.

A subclass's constructor signature stays ``(name_or_path, device, dtype, chat_template,
device_map, max_memory)``; the last two are passed only with ``--device-map``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from functools import cached_property

import numpy as np
import torch
from torch import nn

from salad_eval.assets.resolve import resolve
from salad_eval.chat import ChatFormat
from salad_eval.errors import SaladError
from salad_eval.models.digest import weights_digest
from salad_eval.models.encoder import SAMPLE_RATE
from salad_eval.models.lm_generation import end_ids, generate_replies
from salad_eval.models.lm_scoring import score_contexts, score_separately
from salad_eval.models.placement import Placement, input_device, offloaded_modules, onloaded
from salad_eval.models.speech_lm import ENCODER_BATCH, load_waveform
from salad_eval.models.text_lm import LMEvalEncoder, own_memory, torch_dtype
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Decoding,
    GenerationRequest,
    Prompt,
    Reply,
    ScoringRequest,
)

Pieces = list[list[int] | Audio]  # a context: token-id runs and clips, in prompt order


class DecoderView(nn.Module):
    """A speech LLM's decoder and LM head as a causal LM over ``inputs_embeds``."""

    def __init__(self, decoder: nn.Module, lm_head: nn.Module) -> None:
        super().__init__()
        self.decoder = decoder
        self.lm_head = lm_head

    @property
    def config(self):
        """The decoder's config (``lm_scoring`` reads its sliding window)."""
        return self.decoder.config

    def get_input_embeddings(self) -> nn.Embedding:
        return self.decoder.get_input_embeddings()

    def forward(self, inputs_embeds, logits_to_keep: int = 0, **kwargs):
        out = self.decoder(inputs_embeds=inputs_embeds, **kwargs)
        out.logits = self.lm_head(out.last_hidden_state[:, -logits_to_keep:])
        return out


class HFAudioLM:
    """One HF speech LLM by hub id or local path; subclasses name the family's specifics."""

    family: str = ""
    model_class: str = ""
    audio_open: tuple[str, ...] = ()
    audio_close: tuple[str, ...] = ()
    shares_context: bool = True  # False: every context + choice runs on its own (exact, slower)

    def __init__(
        self,
        name_or_path: str,
        device: str = "cpu",
        dtype: str = "float32",
        chat_template: bool = False,
        device_map: str | dict | None = None,
        max_memory: dict[int | str, int] | None = None,
    ):
        self.name = name_or_path
        self.placement = Placement(device_map, max_memory)  # where the weights go, else device
        path = resolve(name_or_path)
        model = own_memory(self.load_model(path, torch_dtype(dtype)))
        if not self.placement.spread:
            model.to(device)
        self.model = model.eval().requires_grad_(False)  # frozen, as TextLM's
        self.tokenizer = self.load_tokenizer(path)
        self.feature_extractor = self.load_feature_extractor(path)
        self.decoder = DecoderView(*self.decoder_parts())
        self.text = LMEvalEncoder(self.tokenizer)
        plain = self.tokenizer.encode("a", add_special_tokens=False)
        full = self.tokenizer.encode("a")
        self._special_prefix = (
            full[: len(full) - len(plain)] if full[-len(plain) :] == plain else []
        )
        self._open = self._token_ids(self.audio_open)
        self._close = self._token_ids(self.audio_close)
        self.chat = None
        if chat_template:
            self.chat = ChatFormat.of(self.tokenizer, self.name, self._template_processor(path))

    # -- what a family may override ------------------------------------------------------------

    def load_model(self, path: str, dtype: torch.dtype) -> nn.Module:
        import transformers  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        return self.placement.load(getattr(transformers, self.model_class), path, dtype=dtype)

    def load_tokenizer(self, path: str):
        from transformers import AutoTokenizer  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        return AutoTokenizer.from_pretrained(path)

    def load_feature_extractor(self, path: str):
        from transformers import AutoFeatureExtractor  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        return AutoFeatureExtractor.from_pretrained(path)

    def decoder_parts(self) -> tuple[nn.Module, nn.Module]:
        return self.model.model.language_model, self.model.lm_head

    def audio_features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """Per clip, its (frames, hidden) embeddings in the decoder's input space."""
        out = []
        for wave in waves:
            inputs = self.feature_extractor(
                wave, sampling_rate=SAMPLE_RATE, return_attention_mask=True, return_tensors="pt"
            )
            features = inputs["input_features"].to(self.input_device, self.model.dtype)
            mask = inputs["attention_mask"].to(self.input_device)
            hidden = self.model.get_audio_features(features, feature_attention_mask=mask)
            out.append(hidden.last_hidden_state)
        return out

    # -- the Model interface -------------------------------------------------------------------

    @property
    def dtype(self) -> str:
        return str(self.model.dtype).removeprefix("torch.")

    @property
    def device_map(self) -> dict[str, str] | None:
        """Module -> device of a model spread by ``--device-map`` (the manifest records it)."""
        return self.placement.record(self.model)

    @cached_property
    def input_device(self) -> torch.device:
        """Where the audio path's inputs go: the model's device, or under a device map its
        first (execution) device; the hooks carry activations on from there."""
        return input_device(self.model)

    @cached_property
    def fingerprint(self) -> str:
        """Config, tokenizer, feature extractor, prompt format and every weight's bytes."""
        config = {k: v for k, v in self.model.config.to_dict().items() if k != "_name_or_path"}
        extractor = self.feature_extractor.to_dict() if self.feature_extractor else {}
        extra = json.dumps([config, extractor], sort_keys=True, default=str)
        extra += _tokenizer_text(self.tokenizer)
        if self.chat is not None:
            extra += "|chat|" + self.chat.template
        return f"{self.family}-{weights_digest(self.model, extra=extra)[:32]}"

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        """Any number of requests, answered in order; their clips are encoded together,
        ``ENCODER_BATCH`` per ``audio_features`` call."""
        with torch.inference_mode():
            tokenized = [self.tokenize(r.prompt, r.choices) for r in requests]
            clips = [p for pieces, _ in tokenized for p in pieces if isinstance(p, Audio)]
            features = []
            for start in range(0, len(clips), ENCODER_BATCH):
                chunk = clips[start : start + ENCODER_BATCH]
                features += self._features([load_waveform(c.path) for c in chunk])
            encoded = iter(features)
            prepared = [
                (self.embed(pieces, encoded), conts, r.choices)
                for (pieces, conts), r in zip(tokenized, requests, strict=True)
            ]
            return self._score_prepared(prepared, batch_size)

    def generate(
        self, requests: Sequence[GenerationRequest], decoding: Decoding, batch_size: int = 8
    ) -> list[list[Reply]]:
        """Replies to the requests' prompts, each embedded in the family's own format as
        ``score`` embeds a context (its clips encoded ``ENCODER_BATCH`` per call)."""
        with torch.inference_mode():
            pieces = [self.tokenize(r.prompt, ())[0] for r in requests]
            clips = [p for run in pieces for p in run if isinstance(p, Audio)]
            features = []
            for start in range(0, len(clips), ENCODER_BATCH):
                chunk = clips[start : start + ENCODER_BATCH]
                features += self._features([load_waveform(c.path) for c in chunk])
            encoded = iter(features)
            contexts = [self.embed(run, encoded) for run in pieces]
        return generate_replies(
            self.decoder,
            self.tokenizer,
            end_ids(self.tokenizer, self.model),
            contexts,
            requests,
            decoding,
            batch_size,
        )

    # -- the shared machinery ------------------------------------------------------------------

    def tokenize(self, prompt: Prompt, choices: Sequence[str]) -> tuple[Pieces, list[list[int]]]:
        """The context as token-id runs and clips, and each choice's token ids."""
        if self.chat is not None:
            prompt, choices = self.chat.apply(prompt, choices)
        if not any(isinstance(seg, Audio) for seg in prompt):
            context, conts = self.text.encode_pair("".join(s.text for s in prompt), choices)
            return [context], conts
        pieces: Pieces = [list(self._special_prefix)] if self._special_prefix else []
        for segment in prompt[:-1]:
            pieces.append(segment if isinstance(segment, Audio) else self._ids(segment.text))
        last = prompt[-1]
        if isinstance(last, Audio):
            return [*pieces, last], [self._ids(choice) for choice in choices]
        context = last.text.rstrip()
        trailing = last.text[len(context) :]
        context_ids = self._ids(context)
        conts = [self._ids(context + trailing + c)[len(context_ids) :] for c in choices]
        return [*pieces, context_ids], conts

    def embed(self, pieces: Pieces, features: Iterator[torch.Tensor] | None = None) -> torch.Tensor:
        """(T, d) context embeddings: token embeddings, each clip as its span in the model's
        own format with its audio features in place of the placeholders. ``features``: the
        clips' ``audio_features`` already computed, in order (else they are computed here)."""
        table = self.decoder.get_input_embeddings()
        device = input_device(table)
        if features is None:
            clips = [p for p in pieces if isinstance(p, Audio)]
            features = iter(self._features([load_waveform(c.path) for c in clips]) if clips else [])
        parts = []
        for piece in pieces:
            if isinstance(piece, Audio):
                opening, closing = (
                    torch.tensor(ids, dtype=torch.long, device=device)
                    for ids in (self._open, self._close)
                )
                audio = next(features).to(device, table.weight.dtype)
                parts += [table(opening), audio, table(closing)]
            elif piece:
                parts.append(table(torch.tensor(piece, dtype=torch.long, device=device)))
        return torch.cat(parts)

    def _features(self, waves: Sequence[np.ndarray]) -> list[torch.Tensor]:
        """``audio_features``, with the audio path's weights loaded where a device map offloaded
        them: audio encoders read some weights without calling their modules (Whisper's
        positions), which would find only ``meta`` placeholders."""
        with onloaded(*self._audio_offloaded):
            return self.audio_features(waves)

    @cached_property
    def _audio_offloaded(self) -> list[nn.Module]:
        """The offloaded modules of the model outside its decoder (none without a device map)."""
        return offloaded_modules(self.model, but=self.decoder) if self.placement.spread else []

    def _score_prepared(
        self, prepared: list[tuple[torch.Tensor, list[list[int]], Sequence[str]]], batch_size: int
    ) -> list[list[ChoiceScore]]:
        """The one place requests meet the scorer: cross-request batches, as ``TextLM`` scores
        (``lm_scoring.score_contexts``); the same path keeps ``text@speech == text@base`` bit
        for bit in bf16."""
        if not self.shares_context:
            return [
                _separate_scores(self.decoder, ctx, conts, choices)
                for ctx, conts, choices in prepared
            ]
        contexts, continuations, choices = zip(*prepared, strict=True) if prepared else ((), (), ())
        return score_contexts(self.decoder, contexts, continuations, choices, batch_size)

    def _template_processor(self, path: str):
        """The processor, where the chat template lives with it rather than with the tokenizer
        (some audio checkpoints keep it in the processor's files); None when none loads."""
        if getattr(self.tokenizer, "chat_template", None):
            return None
        from transformers import AutoProcessor  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        try:
            return AutoProcessor.from_pretrained(path)
        except Exception:  # no processor files, or one that needs a missing extra
            return None

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []

    def _token_ids(self, tokens: Sequence[str]) -> list[int]:
        ids = [self.tokenizer.convert_tokens_to_ids(t) for t in tokens]
        unknown = self.tokenizer.unk_token_id
        missing = [t for t, i in zip(tokens, ids, strict=True) if i is None or i == unknown]
        if missing:
            raise SaladError(
                f"{self.name}: its tokenizer lacks the audio tokens {missing}; "
                f"is it a {self.family} checkpoint? (--model-type)"
            )
        return ids


def _separate_scores(decoder, context, conts, choices) -> list[ChoiceScore]:
    scored = score_separately(decoder, context, conts)
    return [
        ChoiceScore(logprob=lp, n_tokens=len(c), n_chars=len(ch), is_greedy=g)
        for (lp, g), c, ch in zip(scored, conts, choices, strict=True)
    ]


def _tokenizer_text(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return backend.to_str()
    return json.dumps(sorted(tokenizer.get_vocab().items()))
