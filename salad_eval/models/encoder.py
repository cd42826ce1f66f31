"""Frozen speech encoders: 16 kHz waveform -> (frames, dim) features, cached on disk.

A SALAD speech LLM trains its adapter on top of a frozen encoder, so each clip's features never
change: ``CachedEncoder`` stores them under ``home()/features/<encoder fingerprint>/`` keyed by the
audio content hash, and the encoder runs once per clip. Two families: Whisper (the embedded
``whisper-tiny.en`` by default, any Whisper by hub id or path) and Mimi (the paper's 12.5 Hz
tokenizer; its quantized latents are the features).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from salad_eval.assets.resolve import resolve
from salad_eval.errors import SaladError
from salad_eval.home import checked_array, home, npy_bytes, read_entry, write_entry
from salad_eval.models.digest import weights_digest

SAMPLE_RATE = 16_000
DEFAULT_ENCODER = "whisper-tiny.en"


@runtime_checkable
class SpeechEncoder(Protocol):
    frame_rate: float
    dim: int

    @property
    def fingerprint(self) -> str: ...

    def encode(self, waveform_16k: np.ndarray) -> torch.Tensor:
        """(frames, dim) float32 features of a mono 16 kHz clip."""
        ...


class WhisperEncoder:
    """Whisper's encoder at 50 Hz. ``context="window"`` runs Whisper as trained: clips are cut into
    30 s windows, each padded and its output truncated to the window's real length.
    ``context="clip"`` runs only the clip's own frames (Whisper's positions sliced to its length,
    like whisper.cpp's ``audio_ctx``): a 2 s clip costs ~1/15 of a window, at the price of features
    a little off Whisper's training distribution, which a trained adapter absorbs."""

    window_seconds = 30
    frame_rate = 50.0

    def __init__(self, path: str, device: str = "cpu", context: str = "window") -> None:
        from transformers import WhisperFeatureExtractor, WhisperModel  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        if context not in ("window", "clip"):
            raise SaladError(f"unknown encoder context {context!r}; use window or clip")
        model = WhisperModel.from_pretrained(path)
        self.model = model.get_encoder().to(device).eval().requires_grad_(False)
        try:
            self.extractor = WhisperFeatureExtractor.from_pretrained(path)
        except OSError:  # a bare model directory: Whisper's default features
            self.extractor = WhisperFeatureExtractor(feature_size=model.config.num_mel_bins)
        self.dim = model.config.d_model
        self.context = context
        features = self.extractor.to_json_string()
        extra = f"whisper:{features}" + (":clip" if context == "clip" else "")
        self.fingerprint = weights_digest(self.model, extra=extra)

    def encode(self, waveform_16k: np.ndarray) -> torch.Tensor:
        wave = np.asarray(waveform_16k, dtype=np.float32)
        window = self.window_seconds * SAMPLE_RATE
        chunks = [wave[i : i + window] for i in range(0, max(len(wave), 1), window)]
        param = next(self.model.parameters())
        samples_per_frame = SAMPLE_RATE / self.frame_rate
        lengths = [max(1, math.ceil(len(chunk) / samples_per_frame)) for chunk in chunks]
        with torch.no_grad():  # not inference_mode: training backprops past these
            if self.context == "clip":
                return (
                    torch.cat(
                        [
                            self._clip_forward(self._clip_mel(chunk, n).to(param))[0]
                            for chunk, n in zip(chunks, lengths, strict=True)
                        ]
                    )
                    .float()
                    .cpu()
                )
            features = self.extractor(chunks, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            hidden = self.model(features.input_features.to(param)).last_hidden_state
        return torch.cat([h[:n] for h, n in zip(hidden, lengths, strict=True)]).float().cpu()

    def encode_batch(self, waveforms: list[np.ndarray], batch_size: int = 8) -> list[torch.Tensor]:
        """``encode`` of many clips; in the window context their 30 s windows run batched."""
        if self.context == "clip":
            return [self.encode(wave) for wave in waveforms]
        window = self.window_seconds * SAMPLE_RATE
        chunks, owners = [], []
        for n, wave in enumerate(waveforms):
            wave = np.asarray(wave, dtype=np.float32)
            for i in range(0, max(len(wave), 1), window):
                chunks.append(wave[i : i + window])
                owners.append(n)
        param = next(self.model.parameters())
        samples_per_frame = SAMPLE_RATE / self.frame_rate
        parts: list[list[torch.Tensor]] = [[] for _ in waveforms]
        for start in range(0, len(chunks), batch_size):
            batch = chunks[start : start + batch_size]
            features = self.extractor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt")
            with torch.no_grad():
                inputs = features.input_features.to(param.device, param.dtype)
                hidden = self.model(inputs).last_hidden_state.float().cpu()
            for chunk, h, owner in zip(batch, hidden, owners[start:], strict=False):
                parts[owner].append(h[: max(1, math.ceil(len(chunk) / samples_per_frame))])
        return [torch.cat(p) for p in parts]

    def _clip_mel(self, chunk: np.ndarray, frames: int) -> torch.Tensor:
        """(1, mels, 2 * frames) log-mel of a chunk, the first frames of its padded 30 s window (to
        float rounding; bit for bit in practice): the STFT of a frame reads only 200 samples either
        side, the zeros after the clip are the window's own padding, and the window's maximum (the
        log-mel floor) is the clip's.
        A 30 s STFT per 2 s clip was half of the clip's encoding time."""
        tail = np.zeros(self.extractor.n_fft * 3, dtype=np.float32)
        mel = self.extractor(
            [np.concatenate([chunk, tail])],
            sampling_rate=SAMPLE_RATE,
            padding="longest",
            return_tensors="pt",
        ).input_features
        return mel[:, :, : 2 * frames]

    def _clip_forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Whisper's encoder forward on fewer than 3000 mel frames (positions sliced)."""
        enc = self.model
        hidden = nn.functional.gelu(enc.conv1(mel))
        hidden = nn.functional.gelu(enc.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + enc.embed_positions.weight[: hidden.shape[1]]
        for layer in enc.layers:
            hidden = layer(hidden, None)
        return enc.layer_norm(hidden)


class MimiEncoder:
    """Mimi's quantized latents (``hidden_size`` dims at 12.5 Hz); audio is resampled to 24 kHz."""

    def __init__(self, path: str, device: str = "cpu") -> None:
        from transformers import MimiModel  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

        self.model = MimiModel.from_pretrained(path).to(device).eval().requires_grad_(False)
        self.frame_rate = float(self.model.config.frame_rate)
        self.dim = self.model.config.hidden_size
        self.fingerprint = weights_digest(self.model, extra="mimi")

    def encode(self, waveform_16k: np.ndarray) -> torch.Tensor:
        from scipy.signal import resample_poly  # noqa: PLC0415 - deferred: heavy scipy, loaded on this path only

        rate = self.model.config.sampling_rate
        wave = resample_poly(np.asarray(waveform_16k, dtype=np.float32), rate, SAMPLE_RATE)
        param = next(self.model.parameters())
        values = torch.from_numpy(wave.astype(np.float32))[None, None].to(param.device)
        with torch.no_grad():  # not inference_mode: training backprops past these
            codes = self.model.encode(values).audio_codes
            latents = self.model.quantizer.decode(codes)
        return latents[0].T.float().cpu()


class CachedEncoder:
    """Any ``SpeechEncoder`` with its outputs stored on disk, keyed by content: sealed entries,
    checked for shape and finite values when read, re-encoded when bad."""

    def __init__(self, encoder: SpeechEncoder, root: Path | None = None) -> None:
        self.encoder = encoder
        self.frame_rate = encoder.frame_rate
        self.dim = encoder.dim
        self.root = (root or home() / "features") / encoder.fingerprint[:20]
        self.hits = 0
        self.misses = 0

    @property
    def fingerprint(self) -> str:
        return self.encoder.fingerprint

    def encode(self, waveform_16k: np.ndarray) -> torch.Tensor:
        wave = np.ascontiguousarray(waveform_16k, dtype=np.float32)
        path = self.root / f"{hashlib.sha256(wave.tobytes()).hexdigest()}.npy"
        cached = read_entry(path, "encoder feature", lambda data: checked_array(data, self.dim))
        if cached is not None:
            self.hits += 1
            return torch.from_numpy(cached)
        self.misses += 1
        features = self.encoder.encode(wave)
        write_entry(path, npy_bytes(features.numpy()))
        return features

    def encode_batch(self, waveforms: list[np.ndarray], batch_size: int = 8) -> list[torch.Tensor]:
        """``encode`` of many clips: cached ones are read, the rest encoded in batches."""
        waves = [np.ascontiguousarray(w, dtype=np.float32) for w in waveforms]
        paths = [self.root / f"{hashlib.sha256(w.tobytes()).hexdigest()}.npy" for w in waves]
        out: list[torch.Tensor | None] = []
        for path in paths:
            cached = read_entry(path, "encoder feature", lambda data: checked_array(data, self.dim))
            out.append(None if cached is None else torch.from_numpy(cached))
        todo = [i for i, features in enumerate(out) if features is None]
        self.hits += len(out) - len(todo)
        self.misses += len(todo)
        encoded = encode_batch(self.encoder, [waves[i] for i in todo], batch_size)
        for i, features in zip(todo, encoded, strict=True):
            write_entry(paths[i], npy_bytes(features.numpy()))
            out[i] = features
        return [f for f in out if f is not None]


def encode_batch(encoder, waveforms: list[np.ndarray], batch_size: int = 8) -> list[torch.Tensor]:
    """Many clips through any encoder: batched where it can, one by one where it cannot."""
    if hasattr(encoder, "encode_batch"):
        return encoder.encode_batch(waveforms, batch_size)
    return [encoder.encode(wave) for wave in waveforms]


def load_encoder(
    name: str = DEFAULT_ENCODER, cache: bool = True, device: str = "cpu", context: str = "window"
):
    """An encoder by embedded name, hub id or path; its family is read from its config."""
    path = resolve(name)
    family = _model_type(path)
    if family == "whisper":
        encoder: SpeechEncoder = WhisperEncoder(path, device, context)
    elif family == "mimi":
        encoder = MimiEncoder(path, device)
    else:
        raise SaladError(
            f"speech encoder {name!r} is a {family!r} model; pass a Whisper or Mimi model"
        )
    return CachedEncoder(encoder) if cache else encoder


def _model_type(path: str) -> str:
    config = Path(path) / "config.json"
    if config.is_file():
        return json.loads(config.read_text()).get("model_type", "unknown")
    from transformers import AutoConfig  # noqa: PLC0415 - deferred: heavy transformers, loaded on this path only

    return AutoConfig.from_pretrained(path).model_type
