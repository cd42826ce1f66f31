"""Sentence embeddings (cached on disk) and balanced k-means over them.

Balanced clusters make the pool share ``P_pool(c)`` of every cluster (almost) equal, so the
selection weights ``P(c) ~ P_pool(c) * M(c)^gamma`` are driven by misalignment, not by how the
pool happens to be spread. Every cluster holds exactly ``floor(N/K)`` or ``ceil(N/K)`` texts.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from salad_eval import home
from salad_eval.errors import SaladError

CHUNK = 1024  # texts per cache file: a changed text re-embeds its chunk only


@functools.cache
def _embedder(path: str):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu")


@functools.cache
def embedder_fingerprint(name: str) -> str:
    """sha256 over the model files (a local dir) or the hub id, plus the library version."""
    from salad_eval.assets import resolve

    path = Path(resolve(name, kind="embedder"))
    digest = hashlib.sha256(importlib.metadata.version("sentence-transformers").encode())
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode())
            digest.update(file.read_bytes())
    else:
        digest.update(str(path).encode())
    return digest.hexdigest()[:20]


def embed(texts: Sequence[str], embedder: str = "all-minilm-l6-v2") -> np.ndarray:
    """L2-normalized embeddings (N, d), cached by (embedder fingerprint, hash of each chunk);
    each cached chunk is sealed and checked (shape, unit rows) when read, re-embedded when bad."""
    from salad_eval.assets import resolve

    path = resolve(embedder, kind="embedder")
    root = home.home() / "embeddings" / embedder_fingerprint(embedder)
    parts = []
    for start in range(0, len(texts), CHUNK):
        chunk = list(texts[start : start + CHUNK])
        key = hashlib.sha256("\0".join(chunk).encode()).hexdigest()[:24]
        parts.append(home.cached_entry(
            root / f"{key}.npy", "embedding",
            lambda chunk=chunk: _embedder(path).encode(
                chunk, batch_size=64, normalize_embeddings=True, convert_to_numpy=True
            ).astype(np.float32),
            home.npy_bytes, lambda data, n=len(chunk): _unit_rows(home.checked_array(data, rows=n)),
        ))  # fmt: skip
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Cached embeddings are L2-normalized: a row of another length is a bad entry."""
    if not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
        raise home.BadEntry("embeddings are not unit vectors")
    return vectors


def _init_centroids(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: spread initial centroids by squared distance."""
    centroids = [x[rng.integers(len(x))]]
    nearest = ((x - centroids[0]) ** 2).sum(1)
    for _ in range(1, k):
        total = nearest.sum()
        index = rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x))
        centroids.append(x[index])
        nearest = np.minimum(nearest, ((x - x[index]) ** 2).sum(1))
    return np.stack(centroids)


def balanced_assign(distances: np.ndarray) -> np.ndarray:
    """Greedy capacity-constrained assignment: nearest (point, cluster) pairs first.

    Capacities are ``floor(N/K)``, and the first ``N mod K`` clusters to fill up take one more.
    """
    n, k = distances.shape
    floor, extra = divmod(n, k)
    sizes = np.zeros(k, dtype=np.int64)
    labels = np.full(n, -1, dtype=np.int64)
    assigned = 0
    for flat in np.argsort(distances, axis=None, kind="stable"):
        point, cluster = divmod(int(flat), k)
        if labels[point] >= 0:
            continue
        if sizes[cluster] == floor:
            if extra == 0:
                continue
            extra -= 1
        elif sizes[cluster] > floor:
            continue
        labels[point] = cluster
        sizes[cluster] += 1
        assigned += 1
        if assigned == n:
            break
    return labels


def balanced_kmeans(
    x: np.ndarray, k: int, seed: int = 0, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), centroids (K, d)): k-means whose clusters hold floor/ceil(N/K) points each."""
    if not 1 <= k <= len(x):
        raise SaladError(f"cannot make {k} clusters from {len(x)} texts; set select.clusters")
    x = np.asarray(x, dtype=np.float64)
    centroids = _init_centroids(x, k, np.random.default_rng(seed))
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        distances = (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None]
        new = balanced_assign(distances)
        if np.array_equal(new, labels):
            break
        labels = new
        centroids = np.stack([x[labels == c].mean(0) for c in range(k)])
    return labels, centroids
