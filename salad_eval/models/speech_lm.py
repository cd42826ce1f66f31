"""The SALAD speech LLM: frozen encoder -> frame stacking -> Transformer adapter -> the LLM.

Audio spans enter the LLM as adapter outputs between two learned boundary embeddings (audio start,
audio end); text spans enter as the LLM's own token embeddings, tokenized exactly as ``TextLM``
does, so an untouched LLM reading a text-only prompt (``text@speech``) scores like ``text@base``.
A checkpoint is a self-describing directory (``save`` / ``load_speech_lm``): its ``config.json``
names the encoder, the adapter shape and the LLM, stored as full weights, as a peft LoRA adapter
over a named base, or not at all (a frozen base). Training imports this class and calls
``embed_segments``, which returns embeddings with gradients and which positions are text.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import soundfile as sf
import torch
from torch import nn

from salad_eval.errors import SaladError
from salad_eval.models.digest import weights_digest
from salad_eval.models.encoder import DEFAULT_ENCODER, SAMPLE_RATE, encode_batch, load_encoder
from salad_eval.models.lm_generation import end_ids, generate_replies
from salad_eval.models.lm_scoring import find_batch_size, score_contexts
from salad_eval.models.placement import Placement, input_device, onloaded, refuse_offloaded
from salad_eval.models.text_lm import LMEvalEncoder, load_llm
from salad_eval.options import option
from salad_eval.prompt import (
    Audio,
    ChoiceScore,
    Decoding,
    GenerationRequest,
    Prompt,
    Reply,
    ScoringRequest,
    Text,
)
from salad_eval.scoring import request_size

CHECKPOINT_KEY = "salad_checkpoint"
CHECKPOINT_FORMAT = 2  # 2: the adapter's output norm
PROMPT_LAYOUT = 2  # in the fingerprint: 2 = no stray space token before audio (as training lays it)
ADAPTER_FILE = "adapter.safetensors"
ENCODER_BATCH = 8  # clips per encoder pass, whatever the LLM's batch: 32 Whisper windows of 1500
# frames ran the CPU bench at half the speed of one clip at a time
LLMMode = Literal["full", "lora", "frozen"]
AdapterOutput = Literal["embedding", "vocabulary"]


@dataclass(frozen=True)
class SpeechLMConfig:
    """What to build. ``llm_mode``: train all LLM weights, a LoRA over them, or none.

    ``adapter_output``: ``embedding`` (the paper: each frame is a free vector) or ``vocabulary``
    (each frame is a distribution over the LLM's tokens, ``SpeechLM.read_vocabulary``).
    """

    encoder: str = DEFAULT_ENCODER
    encoder_context: str = option(
        "window",
        choices=("window", "clip"),
        help='Whisper: "window" (30 s, as trained) or "clip" (faster)',
    )
    stack: int = option(4, min=1, help="50 Hz Whisper frames -> 12.5 Hz, Mimi's rate")
    adapter_layers: int = option(2, min=0)
    adapter_width: int = option(256, min=1)
    adapter_heads: int = option(4, min=1)
    llm: str = "smollm2-135m"
    llm_mode: LLMMode = "frozen"
    lora_r: int = option(16, min=1)
    lora_alpha: int = option(32, above=0)
    lora_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    adapter_output: AdapterOutput = "embedding"
    readout_scale: float = option(
        300.0, above=0, help="vocabulary output: sharpness of the cosine softmax"
    )

    def __post_init__(self) -> None:
        if self.llm_mode not in ("full", "lora", "frozen"):
            raise SaladError(f"unknown llm_mode {self.llm_mode!r}; use full, lora or frozen")
        if self.adapter_output not in ("embedding", "vocabulary"):
            raise SaladError(
                f"unknown adapter_output {self.adapter_output!r}; use embedding or vocabulary"
            )
        if self.stack < 1 or self.adapter_width % self.adapter_heads:
            raise SaladError("stack must be >= 1 and adapter_width divisible by adapter_heads")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> SpeechLMConfig:
        return cls(**{**data, "lora_targets": tuple(data.get("lora_targets", cls.lora_targets))})


class Adapter(nn.Module):
    """Stacked encoder frames -> one unit direction per frame, plus the audio boundary embeddings.

    No positional encoding: Whisper and Mimi features already carry position. ``SpeechLM.adapt``
    turns directions into LLM inputs: for the ``embedding`` output, a direction times one learned
    norm (initialised to the LLM's mean token-embedding norm, so audio enters at the scale of the
    LLM's own token embeddings); for the ``vocabulary`` output, ``SpeechLM.read_vocabulary``.
    """

    def __init__(
        self, in_dim: int, width: int, layers: int, heads: int, out_dim: int, out_norm: float = 1.0
    ):
        super().__init__()
        self.proj_in = nn.Linear(in_dim, width)
        layer = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, batch_first=True, norm_first=True
        )
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.proj_out = nn.Linear(width, out_dim)
        self.out_norm = nn.Parameter(torch.tensor(float(out_norm)))
        self.audio_start = nn.Parameter(torch.randn(out_dim) * 0.02)
        self.audio_end = nn.Parameter(torch.randn(out_dim) * 0.02)

    def forward(self, stacked: torch.Tensor) -> torch.Tensor:
        """(frames, in_dim) -> (frames, out_dim) unit directions; ``out_norm`` scales them."""
        hidden = self.proj_out(self.layers(self.proj_in(stacked)[None]))[0]
        return nn.functional.normalize(hidden, dim=-1)

    def bounded(self, frames: torch.Tensor) -> torch.Tensor:
        """LLM inputs of one clip: audio start, ``frames``, audio end."""
        return torch.cat([self.audio_start[None], frames, self.audio_end[None]])


def stack_frames(features: torch.Tensor, stack: int) -> torch.Tensor:
    """(frames, dim) -> (ceil(frames / stack), dim * stack); the last group is zero-padded."""
    pad = -features.shape[0] % stack
    if pad:
        features = torch.cat([features, features.new_zeros(pad, features.shape[1])])
    return features.reshape(-1, stack * features.shape[1])


def load_waveform(path: str) -> np.ndarray:
    """A 16 kHz mono clip as float32 (channels averaged)."""
    wave, rate = sf.read(path, dtype="float32", always_2d=True)
    if rate != SAMPLE_RATE:
        raise SaladError(f"{path} is {rate} Hz; speech prompts need 16 kHz clips (resynthesize)")
    return wave.mean(axis=1)


class PromptEmbeddings(NamedTuple):
    """A prompt as LLM input: ``embeds`` (T, d) and ``token_ids`` (T,), -1 at audio positions."""

    embeds: torch.Tensor
    token_ids: torch.Tensor

    @property
    def is_text(self) -> torch.Tensor:
        return self.token_ids >= 0


class SpeechLM(nn.Module):
    """A SALAD speech LLM behind the ``Model`` interface (``text@speech``, ``speech@speech``)."""

    def __init__(self, config: SpeechLMConfig, encoder, adapter: Adapter, llm, tokenizer):
        super().__init__()
        self.config = config
        self.encoder = encoder
        self.adapter = adapter
        self.llm = llm
        self.tokenizer = tokenizer
        self.placement = Placement()  # the LLM's: on the model's device, or a device map's
        self.text = LMEvalEncoder(tokenizer)
        self.blank = tokenizer.encode(" ", add_special_tokens=False)[-1]  # a lone space
        plain = tokenizer.encode("a", add_special_tokens=False)
        full = tokenizer.encode("a")
        self._special_prefix = full[: len(full) - len(plain)]  # e.g. a BOS token

    @classmethod
    def from_config(
        cls, config: SpeechLMConfig, seed: int = 0, device: str = "cpu", dtype: str = "float32"
    ) -> SpeechLM:
        """A randomly initialised adapter (seeded) over the named encoder and LLM.

        The LLM's weights are in ``dtype`` (training keeps float32 master weights and computes
        under bf16 autocast); the adapter and encoder stay float32.
        """
        encoder = load_encoder(config.encoder, device=device, context=config.encoder_context)
        llm, tokenizer = load_llm(config.llm, dtype)
        if config.llm_mode == "lora":
            from peft import LoraConfig, get_peft_model  # noqa: PLC0415 - deferred: heavy peft, loaded on this path only

            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                target_modules=list(config.lora_targets),
                lora_dropout=0.0,
            )
            with _peft_wrapping():
                llm = get_peft_model(llm, lora)
        torch.manual_seed(seed)
        table = llm.get_input_embeddings().weight
        adapter = _build_adapter(
            config, encoder.dim, table.shape[1], out_norm=table.detach().norm(dim=-1).mean().item()
        )
        return cls._assemble(config, encoder, adapter, llm, tokenizer, device)

    @classmethod
    def _assemble(
        cls, config, encoder, adapter, llm, tokenizer, device, placement: Placement = Placement()
    ) -> SpeechLM:
        """The parts as one model on ``device``; an LLM spread by a device map stays where it
        is (the encoder and adapter go to ``device``, their outputs to the LLM's inputs)."""
        if config.llm_mode == "frozen":
            llm.requires_grad_(False)
        model = cls(config, encoder, adapter, llm, tokenizer)
        model.placement = placement
        if not placement.spread:
            return model.to(device).eval()
        for name, child in model.named_children():
            if name != "llm":
                child.to(device)
        return model.eval()

    # -- the embedding path (shared by scoring and training) ------------------------------------

    def audio_embeds(self, waveform_16k: np.ndarray) -> torch.Tensor:
        """One clip -> (n + 2, d) LLM inputs: start boundary, adapter outputs, end boundary."""
        return self.adapt(self.encoder.encode(waveform_16k))[0]

    def directions(self, features: torch.Tensor) -> torch.Tensor:
        """Encoder features of one clip -> the adapter's unit direction per stacked frame (what
        the CTC alignment loss reads)."""
        weight = self.adapter.proj_in.weight
        return self.adapter(
            stack_frames(features.to(weight.device, weight.dtype), self.config.stack)
        )

    def adapt(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder features of one clip -> (LLM inputs, boundaries included; its directions)."""
        directions = self.directions(features)
        if self.config.adapter_output == "vocabulary":
            frames = self.read_vocabulary(directions)
        else:
            frames = directions * self.adapter.out_norm
        return self.adapter.bounded(frames).to(self._embedding().weight.dtype), directions

    def read_vocabulary(self, directions: torch.Tensor) -> torch.Tensor:
        """Frames as expected token embeddings, CTC-compressed: one input per spoken token.

        A frame's distribution over the vocabulary is the softmax of ``readout_scale`` times its
        cosine with each token embedding (the logits the CTC warm-up trains, sharpened); its input
        is that distribution's mean embedding, so the frozen LLM reads what it reads for text.
        Frames whose likeliest token is the blank are dropped and a run of frames on one token
        becomes their mean (CTC compression: Gaido et al. 2021; Speech-LLaMA's CTC compressor).
        Gradients flow through the kept frames' distributions.
        """
        embedding = self._embedding()
        with onloaded(embedding):  # its weights, even where a device map offloads them
            table = embedding.weight.to(directions.device)
        unit = nn.functional.normalize(table.float(), dim=-1)
        logits = self.config.readout_scale * directions.float() @ unit.T
        tokens = logits.argmax(-1)
        embeds = logits.softmax(-1).to(table.dtype) @ table
        keep = tokens != self.blank
        previous = torch.cat([tokens.new_full((1,), -1), tokens[:-1]])
        previous_kept = torch.cat([keep.new_zeros(1), keep[:-1]])
        starts = keep & ~(previous_kept & (tokens == previous))
        group = (torch.cumsum(starts.long(), 0) - 1)[keep]
        count = int(starts.sum())
        sums = embeds.new_zeros(count, embeds.shape[1]).index_add(0, group, embeds[keep])
        sizes = torch.bincount(group, minlength=count).clamp(min=1)
        return sums / sizes[:, None].to(sums.dtype)

    def embed_segments(
        self,
        segments: Sequence[Text | Audio | list[int]],
        audio_inputs: Mapping[str, torch.Tensor] | None = None,
    ) -> PromptEmbeddings:
        """Interleave token embeddings (``list[int]`` or ``Text``) and audio embeddings.

        ``audio_inputs``: LLM inputs of clips already encoded (``audio_inputs_of``), by path.
        """
        table = self._embedding()
        device = input_device(table)  # the LLM's inputs' (the adapter's, but for a device map)
        embeds, ids = [], []
        for segment in segments:
            if isinstance(segment, Audio):
                if audio_inputs is not None and segment.path in audio_inputs:
                    audio = audio_inputs[segment.path]
                else:
                    audio = self.audio_embeds(load_waveform(segment.path))
                embeds.append(audio.to(device))
                ids.append(torch.full((audio.shape[0],), -1, dtype=torch.long))
                continue
            tokens = self._text_ids(segment.text) if isinstance(segment, Text) else segment
            if tokens:
                token_ids = torch.tensor(tokens, dtype=torch.long)
                embeds.append(table(token_ids.to(device)))
                ids.append(token_ids)
        return PromptEmbeddings(torch.cat(embeds), torch.cat(ids).to(device))

    def embed_prompt(self, prompt: Prompt) -> torch.Tensor:
        """(T, d) input embeddings of a prompt, tokenized as its scoring context."""
        return self.embed_segments(self.tokenize(prompt, ())[0]).embeds

    def tokenize(
        self, prompt: Prompt, choices: Sequence[str]
    ) -> tuple[list[Audio | list[int]], list[list[int]]]:
        """The context as token-id and audio segments, and each choice's token ids.

        A text-only prompt goes through ``TextLM``'s encoder unchanged. Otherwise the first
        segment gets the tokenizer's special prefix (if any), and a final text segment is paired
        with the choices the lm-eval way (trailing spaces move into the continuation). Around
        audio, text is tokenized as training lays spans out (``salad_eval.interleave.span_tokens``):
        each segment on its own, and a text right before audio loses its trailing spaces, which
        training folds into the spoken span (``"Question: "`` would end in a lone space token).
        """
        if not any(isinstance(seg, Audio) for seg in prompt):
            context, conts = self.text.encode_pair("".join(s.text for s in prompt), choices)
            return [context], conts
        pieces: list[Audio | list[int]] = [list(self._special_prefix)]
        for segment, after in zip(prompt[:-1], prompt[1:], strict=True):
            if isinstance(segment, Audio):
                pieces.append(segment)
                continue
            text = segment.text.rstrip(" ") if isinstance(after, Audio) else segment.text
            pieces.append(self._text_ids(text))
        last = prompt[-1]
        if isinstance(last, Audio):
            pieces.append(last)
            return pieces, [self._text_ids(choice) for choice in choices]
        context = last.text.rstrip()
        trailing = last.text[len(context) :]
        context_ids = self._text_ids(context)
        pieces.append(context_ids)
        conts = [self._text_ids(context + trailing + c)[len(context_ids) :] for c in choices]
        return pieces, conts

    # -- the Model interface ----------------------------------------------------------------------

    def score(
        self, requests: Sequence[ScoringRequest], batch_size: int = 8
    ) -> list[list[ChoiceScore]]:
        """The requests' clips are encoded in batches, each once; every context runs once for all
        its choices, many contexts per forward (``score_contexts``)."""
        with torch.inference_mode():
            audio = self.audio_inputs_of(
                [seg for r in requests for seg in r.prompt if isinstance(seg, Audio)], batch_size
            )
            contexts, continuations = [], []
            for request in requests:
                pieces, conts = self.tokenize(request.prompt, request.choices)
                contexts.append(self.embed_segments(pieces, audio).embeds)
                continuations.append(conts)
            return score_contexts(
                self.llm, contexts, continuations, [r.choices for r in requests], batch_size
            )

    def generate(
        self, requests: Sequence[GenerationRequest], decoding: Decoding, batch_size: int = 8
    ) -> list[list[Reply]]:
        """Replies to the requests' prompts, embedded as ``score`` embeds a context."""
        with torch.inference_mode():
            audio = self.audio_inputs_of(
                [seg for r in requests for seg in r.prompt if isinstance(seg, Audio)], batch_size
            )
            contexts = [
                self.embed_segments(self.tokenize(r.prompt, ())[0], audio).embeds for r in requests
            ]
        return generate_replies(
            self.llm,
            self.tokenizer,
            end_ids(self.tokenizer, self.llm),
            contexts,
            requests,
            decoding,
            batch_size,
        )

    def auto_batch_size(self, requests: Sequence[ScoringRequest]) -> int:
        """``--batch-size auto``: the largest batch of the longest of ``requests`` that fits
        (longest by ``request_size``; only its clips are encoded to measure it)."""
        longest = max(requests, key=request_size)
        with torch.inference_mode():
            context = self.embed_segments(self.tokenize(longest.prompt, ())[0]).embeds
        conts = [self.tokenize(r.prompt, r.choices)[1] for r in requests]
        return find_batch_size(
            self.llm,
            context.shape[0],
            max((len(c) for row in conts for c in row), default=1),
            max(len(row) for row in conts),
        )

    def audio_inputs_of(
        self, clips: Sequence[Audio], batch_size: int = 8
    ) -> dict[str, torch.Tensor]:
        """LLM inputs (boundaries included) of each distinct clip, the encoder run in batches."""
        paths = list(dict.fromkeys(clip.path for clip in clips))
        waves = [load_waveform(p) for p in paths]
        features = encode_batch(self.encoder, waves, min(batch_size, ENCODER_BATCH))
        return {p: self.adapt(f)[0] for p, f in zip(paths, features, strict=True)}

    @property
    def fingerprint(self) -> str:
        """Config, encoder, adapter and LLM weights; recomputed per call, as training moves them."""
        config = json.dumps(self.config.to_dict(), sort_keys=True)
        extra = (
            f"{config}|layout-{PROMPT_LAYOUT}|{self.encoder.fingerprint}|"
            f"{self.tokenizer.backend_tokenizer.to_str()}"
        )
        return f"salad-{weights_digest(self.adapter, self.llm, extra=extra)[:32]}"

    # -- checkpoints ------------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """A directory that ``load_speech_lm`` loads with nothing else (config.json says what)."""
        from safetensors.torch import save_file  # noqa: PLC0415 - deferred: heavy safetensors, loaded on this path only

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        mode = self.config.llm_mode
        if mode == "full":
            self.llm.save_pretrained(out / "llm")
            self.tokenizer.save_pretrained(out / "llm")
        elif mode == "lora":
            self.llm.save_pretrained(out / "lora")
        state = {k: v.detach().cpu().contiguous() for k, v in self.adapter.state_dict().items()}
        save_file(state, out / ADAPTER_FILE)
        section = {
            "format": CHECKPOINT_FORMAT,
            "config": self.config.to_dict(),
            "encoder": {"name": self.config.encoder, "fingerprint": self.encoder.fingerprint},
            "adapter": {
                "weights": ADAPTER_FILE,
                "in_dim": self.adapter.proj_in.in_features,
                "out_dim": self.adapter.proj_out.out_features,
            },
            "llm": {
                "base": self.config.llm,
                "mode": mode,
                "weights": {"full": "llm", "lora": "lora", "frozen": None}[mode],
            },
        }
        (out / "config.json").write_text(json.dumps({CHECKPOINT_KEY: section}, indent=2))
        return out

    @property
    def dtype(self) -> str:
        """The LLM's weight dtype, e.g. ``"float32"`` (what a gap manifest records)."""
        return str(self._embedding().weight.dtype).removeprefix("torch.")

    @property
    def device_map(self) -> dict[str, str] | None:
        """Module -> device of an LLM spread by ``--device-map`` (the manifest records it)."""
        return self.placement.record(self.llm)

    def _embedding(self) -> nn.Embedding:
        return self.llm.get_input_embeddings()

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []


def load_speech_lm(
    directory: str | Path,
    device: str = "cpu",
    dtype: str = "float32",
    device_map: str | dict | None = None,
    max_memory: dict[int | str, int] | None = None,
) -> SpeechLM:
    """Load a SALAD checkpoint of any LLM mode, its LLM in ``dtype`` (spread over devices by
    ``device_map`` within ``max_memory``, if given; the encoder and adapter on ``device``); a
    directory that is not one is a SaladError."""
    path = Path(directory)
    section = _checkpoint_section(path)
    config = SpeechLMConfig.from_dict(section["config"])
    mode = section["llm"]["mode"]
    weights = str(path / section["llm"]["weights"]) if mode == "full" else section["llm"]["base"]
    placement = Placement(device_map, max_memory)
    llm, tokenizer = load_llm(weights, dtype, placement)
    if mode == "lora":
        refuse_offloaded(llm, f"{path}: the checkpoint's LoRA")
        from peft import PeftModel  # noqa: PLC0415 - deferred: heavy peft, loaded on this path only

        with _peft_wrapping():
            llm = PeftModel.from_pretrained(
                llm, path / section["llm"]["weights"], is_trainable=True
            )
    encoder = load_encoder(config.encoder, device=device, context=config.encoder_context)
    adapter = _build_adapter(
        config, section["adapter"]["in_dim"] // config.stack, section["adapter"]["out_dim"]
    )
    from safetensors.torch import load_file  # noqa: PLC0415 - deferred: heavy safetensors, loaded on this path only

    adapter.load_state_dict(load_file(path / section["adapter"]["weights"]))
    return SpeechLM._assemble(config, encoder, adapter, llm, tokenizer, device, placement)


@contextmanager
def _peft_wrapping() -> Iterator[None]:
    """Around peft's ``PeftModel(...)``: its constructor reads transformers' deprecated
    ``model.is_gradient_checkpointing`` (peft 0.21, transformers 5), a FutureWarning at the start
    of every LoRA run that salad cannot act on; only that warning is ignored, only here."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning
        )
        yield


def is_speech_lm_checkpoint(directory: str | Path) -> bool:
    try:
        _checkpoint_section(Path(directory))
    except SaladError:
        return False
    return True


def _checkpoint_section(path: Path) -> dict:
    try:
        section = json.loads((path / "config.json").read_text())[CHECKPOINT_KEY]
    except (OSError, ValueError, KeyError, TypeError):
        raise SaladError(
            f"{path} is not a SALAD checkpoint (no config.json with a {CHECKPOINT_KEY!r} section); "
            "pass a directory written by SpeechLM.save"
        ) from None
    if section.get("format") != CHECKPOINT_FORMAT:
        raise SaladError(
            f"{path} is a SALAD checkpoint of format {section.get('format')}, this salad reads "
            f"format {CHECKPOINT_FORMAT}; upgrade salad"
        )
    return section


def _build_adapter(
    config: SpeechLMConfig, encoder_dim: int, llm_dim: int, out_norm: float = 1.0
) -> Adapter:
    return Adapter(
        encoder_dim * config.stack,
        config.adapter_width,
        config.adapter_layers,
        config.adapter_heads,
        llm_dim,
        out_norm,
    )
