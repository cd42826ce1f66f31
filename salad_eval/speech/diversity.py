"""How different a run's voices really are: speaker-embedding distances between its voices.

A gap measured on five voices means more if they sound like five speakers than like one. Each
voice's clips are embedded with resemblyzer's GE2E speaker encoder (its weights ship in its
PyPI wheel, so this works offline); a voice is the mean of its clips' unit embeddings, and the
report shows the cosine distance between every pair of voices beside each voice's own spread
(the mean distance of its clips to their voice), so a distance reads against within-voice
variation. Embeddings are cached per clip (by its bytes' sha256), sealed and checked when read.
"""

from __future__ import annotations

import functools
import importlib.metadata
from pathlib import Path

import numpy as np
import soundfile as sf

from salad_eval.figures import plt, save
from salad_eval.home import BadEntry, cached_entry, home

PER_VOICE = 12  # clips embedded per voice: enough for a stable mean, cheap on a CPU


def _unavailable() -> str | None:
    try:
        import resemblyzer  # noqa: F401, PLC0415 - deferred: optional resemblyzer, an availability check
    except ImportError as err:
        return (
            f"resemblyzer is not installed ({err}); pip install 'salad[diversity]' "
            "for the voice-diversity figure"
        )
    return None


@functools.cache
def _encoder():
    from resemblyzer import VoiceEncoder  # noqa: PLC0415 - deferred: optional resemblyzer, loaded on this path only

    return VoiceEncoder("cpu", verbose=False)


def _parse(data: bytes) -> np.ndarray:
    vector = np.frombuffer(data, dtype=np.float32)
    if vector.shape != (256,) or not np.all(np.isfinite(vector)):
        raise BadEntry(f"not a 256-d embedding ({vector.size} values)")
    if abs(float(np.linalg.norm(vector)) - 1.0) > 1e-3:
        raise BadEntry("not a unit vector")
    return vector


def embed(path: str, sha256: str) -> np.ndarray:
    """The unit speaker embedding of one clip (cached by the clip's sha256)."""
    version = importlib.metadata.version("resemblyzer")
    entry = home() / "speaker-embeddings" / f"resemblyzer-{version}" / sha256[:2] / f"{sha256}.f32"

    def build() -> np.ndarray:
        from resemblyzer import preprocess_wav  # noqa: PLC0415 - deferred: optional resemblyzer, loaded on this path only

        audio, rate = sf.read(path, dtype="float32")
        vector = _encoder().embed_utterance(preprocess_wav(audio, source_sr=rate))
        return (vector / np.linalg.norm(vector)).astype(np.float32)

    return cached_entry(entry, "speaker embedding", build, lambda v: v.tobytes(), _parse)


def voice_diversity(clips: dict[str, list[tuple[str, str]]]) -> dict:
    """``{voice: [(clip path, sha256), ...]}`` -> distances between voices and their spreads
    (cosine distance of mean unit embeddings); says why where no encoder is installed."""
    why = _unavailable()
    if why:
        return {"available": False, "why": why}
    voices = [v for v, found in clips.items() if found]
    centroids, spread = [], {}
    for voice in voices:
        vectors = np.stack([embed(path, sha) for path, sha in clips[voice][:PER_VOICE]])
        centroid = vectors.mean(axis=0)
        centroid /= np.linalg.norm(centroid)
        centroids.append(centroid)
        spread[voice] = round(float(np.mean(1 - vectors @ centroid)), 4)
    matrix = 1 - np.stack(centroids) @ np.stack(centroids).T if centroids else np.zeros((0, 0))
    return {
        "available": True,
        "encoder": f"resemblyzer=={importlib.metadata.version('resemblyzer')} (GE2E, 256-d)",
        "clips_per_voice": {v: min(PER_VOICE, len(clips[v])) for v in voices},
        "voices": voices,
        "distances": np.round(matrix.clip(min=0), 4).tolist(),
        "spread": spread,
    }


def run_clips(manifest, items, voices: list[str]) -> dict[str, list[tuple[str, str]]]:
    """The first clip of each usable item, per voice, from a synthesis manifest."""
    found: dict[str, list[tuple[str, str]]] = {v: [] for v in voices}
    for voice in voices:
        for item in items:
            row = manifest.row(item, voice)
            if row.status == "ok" and len(found[voice]) < PER_VOICE:
                clip = row.clips[-1]  # the item's own question (few-shot examples come first)
                found[voice].append((clip.path, clip.sha256))
    return found


def summary_lines(diversity: dict) -> list[str]:
    """The voice-diversity section of summary.md."""
    lines = ["## Voice diversity", ""]
    if not diversity.get("available"):
        return lines + [f"Not measured: {diversity.get('why')}.", ""]
    voices = diversity["voices"]
    if len(voices) < 2:
        return lines + ["One voice only: nothing to compare.", ""]
    d = np.array(diversity["distances"])
    off = d[~np.eye(len(voices), dtype=bool)]
    lines += [
        f"Speaker-embedding cosine distance between voices ({diversity['encoder']}; mean of "
        f"up to {max(diversity['clips_per_voice'].values())} clips per voice): mean "
        f"{off.mean():.3f}, min {off.min():.3f}, max {off.max():.3f}; a voice's own clips lie "
        f"{np.mean(list(diversity['spread'].values())):.3f} from their mean on average. "
        "Distances near the within-voice spread mean the voices sound alike.",
        "",
        "| voice | spread | nearest other voice | distance |",
        "|---|---|---|---|",
    ]
    for i, voice in enumerate(voices):
        others = [j for j in range(len(voices)) if j != i]
        j = min(others, key=lambda k: d[i, k])
        lines.append(
            f"| `{voice}` | {diversity['spread'][voice]:.3f} | `{voices[j]}` | {d[i, j]:.3f} |"
        )
    return lines + [""]


def plot_diversity(diversity: dict, run_dir: Path) -> str:
    """voice_diversity.png: the distance matrix as a heat map."""
    voices, d = diversity["voices"], np.array(diversity["distances"])
    fig, ax = plt.subplots(figsize=(1.0 * len(voices) + 3.5, 0.8 * len(voices) + 2.5))
    image = ax.imshow(d, cmap="viridis", vmin=0)
    ax.set_xticks(range(len(voices)), voices, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(voices)), voices, fontsize=7)
    for i in range(len(voices)):
        for j in range(len(voices)):
            ax.text(j, i, f"{d[i, j]:.2f}", ha="center", va="center", color="white", fontsize=7)
    fig.colorbar(image, ax=ax, label="cosine distance (speaker embeddings)")
    ax.set_title("Voice diversity: how different the voices sound")
    return save(fig, run_dir / "voice_diversity.png")
