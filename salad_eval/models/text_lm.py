"""A text LLM (any HF causal LM) behind the ``Model`` interface: the ``text@base`` condition.

Tokenization follows lm-eval's ``HFLM`` exactly, so ``text@base`` accuracy equals lm-eval's own
``hf`` model on the same items: trailing spaces of the context move to the continuation, and a
continuation's tokens are ``encode(context + continuation)[len(encode(context)):]``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import cached_property

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from salad_eval.assets.resolve import resolve
from salad_eval.chat import ChatFormat
from salad_eval.errors import SaladError
from salad_eval.models.digest import weights_digest
from salad_eval.models.lm_generation import end_ids, generate_replies
from salad_eval.models.lm_scoring import find_batch_size, score_contexts
from salad_eval.models.placement import Placement, forget_stale_tied_pointers, input_device
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Decoding,
    GenerationRequest,
    Reply,
    ScoringRequest,
    Text,
)


def torch_dtype(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32``, with a message a user can act on."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise SaladError(f"unknown dtype {name!r}; use float32, bfloat16 or float16")
    return dtype


def default_dtype(device: str) -> str:
    """One dtype for every model of a run: bfloat16 on CUDA, float32 elsewhere."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"


def load_llm(name_or_path: str, dtype: str = "float32", placement: Placement = Placement()):
    """(causal LM, tokenizer) with weights in ``dtype``, whatever dtype the checkpoint stores
    (transformers would otherwise keep a bf16 checkpoint in bf16), spread over devices by
    ``placement`` when it has a device map (else on the CPU, for the caller to move)."""
    path = resolve(name_or_path, kind="llm")
    llm = placement.load(AutoModelForCausalLM, path, dtype=torch_dtype(dtype))
    return own_memory(llm), AutoTokenizer.from_pretrained(path)


def own_memory(model: torch.nn.Module) -> torch.nn.Module:
    """Move weights still mapped from a safetensors file into their own aligned allocations.

    A mapped tensor sits at its byte offset in the file; CPU kernels take other SIMD paths on
    unaligned data and round differently, so the same weights saved in two files would score
    apart in the last bit (a checkpoint's copy of its base LLM against the base itself).
    Weights offloaded by a device map (``meta`` here) are read for each forward as stored; the
    addresses freed here leave the device map's tied-weight keys, where they would be mistaken
    for a weight read later at the same address (``forget_stale_tied_pointers``).
    """
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.data_ptr() % 64:
                tensor.data = tensor.data.clone()
    forget_stale_tied_pointers(model)
    return model


class LMEvalEncoder:
    """Encodes (context, continuation) pairs the way lm-eval's ``hf`` model does."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase):
        self.tokenizer = tokenizer
        prefix = tokenizer.bos_token_id
        self.prefix_token_id: int = prefix if prefix is not None else tokenizer.eos_token_id
        self._prefix_text = tokenizer.decode(self.prefix_token_id)

    def encode(self, text: str) -> list[int]:
        """lm-eval's ``tok_encode``: tokenizer defaults, minus a BOS already spelled out in text."""
        if text.startswith(self._prefix_text):
            return self.tokenizer.encode(text, add_special_tokens=False)
        return self.tokenizer.encode(text)

    def encode_pair(
        self, context: str, continuations: Sequence[str]
    ) -> tuple[list[int], list[list[int]]]:
        """Context tokens (shared by all choices) and each continuation's tokens."""
        if not context:  # lm-eval scores after the BOS (or EOS) token alone
            conts = [self.tokenizer.encode(c, add_special_tokens=False) for c in continuations]
            if any(cont and cont[0] == self.prefix_token_id for cont in conts):
                raise SaladError("a choice starts with the BOS token after an empty context")
            return [self.prefix_token_id], conts
        n_spaces = len(context) - len(context.rstrip())
        trailing = context[len(context) - n_spaces :]
        context = context[: len(context) - n_spaces]
        context_ids = self.encode(context)
        conts = [self.encode(context + trailing + c)[len(context_ids) :] for c in continuations]
        return context_ids, conts


class TextLM:
    """An HF causal LM reading all-text prompts (embedded name, hub id or local path)."""

    def __init__(
        self,
        name_or_path: str = "smollm2-135m",
        dtype: str = "float32",
        device: str = "cpu",
        chat_template: bool = False,
        device_map: str | dict | None = None,
        max_memory: dict[int | str, int] | None = None,
    ):
        self.name = name_or_path
        self.placement = Placement(device_map, max_memory)  # where the weights go, else device
        self.llm, self.tokenizer = load_llm(name_or_path, dtype, self.placement)
        if not self.placement.spread:
            self.llm.to(device)
        # frozen, as a frozen speech LLM's: CPU kernels for padded batches take another path
        # when weights require grad, and text@speech == text@base must hold bit for bit
        self.llm.eval().requires_grad_(False)
        self.encoder = LMEvalEncoder(self.tokenizer)
        self.chat = None  # raw prompts; else the tokenizer's chat template (salad_eval.chat)
        if chat_template:
            self.chat = ChatFormat.of(self.tokenizer, name_or_path)

    @property
    def dtype(self) -> str:
        return str(self.llm.dtype).removeprefix("torch.")

    @property
    def device_map(self) -> dict[str, str] | None:
        """Module -> device of a model spread by ``--device-map`` (the manifest records it)."""
        return self.placement.record(self.llm)

    @cached_property
    def fingerprint(self) -> str:
        """Hash of config, tokenizer and every weight's bytes: a changed model misses the cache.

        Where the weights were loaded from is left out, so a copy elsewhere hits the same cache.
        """
        config = {k: v for k, v in self.llm.config.to_dict().items() if k != "_name_or_path"}
        extra = json.dumps(config, sort_keys=True, default=str)
        extra += self.tokenizer.backend_tokenizer.to_str()
        if self.chat is not None:
            extra += "|chat|" + self.chat.template
        return f"text-lm-{weights_digest(self.llm, extra=extra)[:32]}"

    def embed(self, ids: list[int]) -> torch.Tensor:
        """Input embeddings (T, d) of token ids, as the LLM's first layer sees them."""
        weight = self.llm.get_input_embeddings()
        with torch.inference_mode():
            return weight(torch.tensor(ids, dtype=torch.long, device=input_device(weight)))

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        return self.score_texts(
            [_text_of(r) for r in requests], [r.choices for r in requests], batch_size
        )

    def generate(
        self, requests: Sequence[GenerationRequest], decoding: Decoding, batch_size: int = 8
    ) -> list[list[Reply]]:
        return self.generate_texts([_text_of(r) for r in requests], requests, decoding, batch_size)

    def generate_texts(
        self,
        contexts: Sequence[str],
        requests: Sequence[GenerationRequest],
        decoding: Decoding,
        batch_size: int = 8,
    ) -> list[list[Reply]]:
        """Replies to all-text contexts (one per request: a cascade's transcripts, say)."""
        embeds = [self.embed(self._context_ids(context)) for context in contexts]
        return generate_replies(
            self.llm,
            self.tokenizer,
            end_ids(self.tokenizer, self.llm),
            embeds,
            requests,
            decoding,
            batch_size,
        )

    def _context_ids(self, context: str) -> list[int]:
        """A generation context's tokens, as lm-eval's ``generate_until`` encodes it (in the
        chat template with its generation prompt, if any)."""
        if self.chat is not None:
            (rendered,), _ = self.chat.apply((Text(context),), ())
            context = rendered.text
        return self.encoder.encode(context) if context else [self.encoder.prefix_token_id]

    def auto_batch_size(self, requests: Sequence[ScoringRequest]) -> int:
        """``--batch-size auto``: the largest batch of the longest of ``requests`` that fits."""
        return self.auto_batch_size_of(
            [_text_of(r) for r in requests], [r.choices for r in requests]
        )

    def auto_batch_size_of(self, contexts: Sequence[str], choices: Sequence[Sequence[str]]) -> int:
        pairs, _ = self._encoded(contexts, choices)
        return find_batch_size(
            self.llm,
            max(len(ids) for ids, _ in pairs),
            max((len(c) for _, conts in pairs for c in conts), default=1),
            max(len(conts) for _, conts in pairs),
        )

    def score_texts(
        self, contexts: Sequence[str], choices: Sequence[Sequence[str]], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        """Many all-text contexts, scored in cross-item batches, in input order."""
        pairs, choices = self._encoded(contexts, choices)
        embeds = [self.embed(context_ids) for context_ids, _ in pairs]
        return score_contexts(self.llm, embeds, [conts for _, conts in pairs], choices, batch_size)

    def score_text(
        self, context: str, choices: Sequence[str], batch_size: int = 8
    ) -> list[ChoiceScore]:
        """Score the choices as continuations of an all-text context."""
        return self.score_texts([context], [choices], batch_size)[0]

    def _encoded(
        self, contexts: Sequence[str], choices: Sequence[Sequence[str]]
    ) -> tuple[list[tuple[list[int], list[list[int]]]], list[Sequence[str]]]:
        """Per context, its tokens and its choices' (in the chat template, if any), and the
        choices as scored (the chat template drops the target delimiter)."""
        pairs, scored = [], []
        for context, options in zip(contexts, choices, strict=True):
            if self.chat is not None:
                (rendered,), options = self.chat.apply((Text(context),), options)
                context = rendered.text
            pairs.append(self.encoder.encode_pair(context, options))
            scored.append(options)
        return pairs, scored


def _text_of(request: ScoringRequest | GenerationRequest) -> str:
    if any(isinstance(seg, Audio) for seg in request.prompt):
        raise SaladError(
            "a text model got an audio prompt; score speech with a speech LLM or a Cascade"
        )
    return "".join(seg.text for seg in request.prompt if isinstance(seg, Text))
