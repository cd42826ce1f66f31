"""Sentence embeddings (cached on disk) and balanced k-means over them.

Balanced clusters make the pool share ``P_pool(c)`` of every cluster (almost) equal, so the
selection weights ``P(c) ~ P_pool(c) * M(c)^gamma`` are driven by misalignment, not by how the
pool happens to be spread. Every cluster holds exactly ``floor(N/K)`` or ``ceil(N/K)`` texts.
Both steps scale to a web-sized pool: embeddings are computed in batches and cached in shards of
``CHUNK`` texts, and the clustering is near-linear in N (``balanced_kmeans``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from salad_eval import home
from salad_eval.assets import resolve
from salad_eval.errors import SaladError

CHUNK = 1024  # texts per cache file: a changed text re-embeds its chunk only
SAMPLE_PER_CLUSTER = 256  # the Lloyd iterations run on at most this many points per cluster
REFINE = 2  # balanced passes over the whole pool after the sampled iterations
CANDIDATES = 8  # nearest clusters a point competes for before it ranks them all
ROWS = 1 << 15  # points per block of the distance matrix


@functools.cache
def _embedder(path: str):
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415 - deferred: heavy sentence_transformers, loaded on this path only

    return SentenceTransformer(path, device="cpu")


@functools.cache
def embedder_fingerprint(name: str) -> str:
    """sha256 over the model files (a local dir) or the hub id, plus the library version."""
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
    path = resolve(embedder, kind="embedder")
    root = home.home() / "embeddings" / embedder_fingerprint(embedder)
    parts = []
    for start in range(0, len(texts), CHUNK):
        chunk = list(texts[start : start + CHUNK])
        key = hashlib.sha256("\0".join(chunk).encode()).hexdigest()[:24]
        parts.append(
            home.cached_entry(
                root / f"{key}.npy",
                "embedding",
                lambda chunk=chunk: (
                    _embedder(path)
                    .encode(chunk, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
                    .astype(np.float32)
                ),
                home.npy_bytes,
                lambda data, n=len(chunk): _unit_rows(home.checked_array(data, rows=n)),
            )
        )
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Cached embeddings are L2-normalized: a row of another length is a bad entry."""
    if not np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3):
        raise home.BadEntry("embeddings are not unit vectors")
    return vectors


def _init_centroids(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++: spread initial centroids by squared distance (in float64: p must sum to 1)."""
    norms = (x.astype(np.float64) ** 2).sum(1)
    chosen = [int(rng.integers(len(x)))]

    def distance_to(i: int) -> np.ndarray:
        return np.maximum(norms - 2 * (x @ x[i]).astype(np.float64) + norms[i], 0.0)

    nearest = distance_to(chosen[0])
    for _ in range(1, k):
        total = nearest.sum()
        index = int(rng.choice(len(x), p=nearest / total) if total > 0 else rng.integers(len(x)))
        chosen.append(index)
        nearest = np.minimum(nearest, distance_to(index))
    return x[chosen].copy()


def _sq_distances(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    return (x**2).sum(1)[:, None] - 2 * x @ centroids.T + (centroids**2).sum(1)[None]


def _nearest(x: np.ndarray, centroids: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Per point, its ``m`` nearest centroids, nearest first, and their squared distances;
    computed ``ROWS`` points at a time, so memory stays ``ROWS x K`` whatever N is."""
    m = min(m, len(centroids))
    index = np.empty((len(x), m), dtype=np.int64)
    distance = np.empty((len(x), m), dtype=x.dtype)
    for start in range(0, len(x), ROWS):
        d = _sq_distances(x[start : start + ROWS], centroids)
        part = np.argpartition(d, m - 1, axis=1)[:, :m] if m < d.shape[1] else None
        if part is None:
            part = np.broadcast_to(np.arange(m), d.shape)
        near = np.take_along_axis(d, part, 1)
        order = np.argsort(near, axis=1, kind="stable")
        index[start : start + len(d)] = np.take_along_axis(part, order, 1)
        distance[start : start + len(d)] = np.take_along_axis(near, order, 1)
    return index, distance


def _fill(
    points: np.ndarray,
    index: np.ndarray,
    distance: np.ndarray,
    room: np.ndarray,
    labels: np.ndarray,
) -> np.ndarray:
    """Rounds of proposals, vectorized: each point still unassigned proposes to its next
    candidate cluster (``index[i]``, nearest first), and a cluster keeps its nearest proposers up
    to its ``room`` (updated in place). Returns the points that every candidate turned away."""
    rows = np.arange(len(points))
    for column in range(index.shape[1]):
        if not len(rows):
            break
        cluster, near = index[rows, column], distance[rows, column]
        order = np.lexsort((near, cluster))  # by cluster, nearest first; ties by point
        sorted_clusters = cluster[order]
        first = np.flatnonzero(np.r_[True, sorted_clusters[1:] != sorted_clusters[:-1]])
        rank = np.arange(len(order)) - np.repeat(first, np.diff(np.r_[first, len(order)]))
        taken = order[rank < room[sorted_clusters]]
        labels[points[rows[taken]]] = cluster[taken]
        room -= np.bincount(cluster[taken], minlength=len(room))
        rows = np.delete(rows, taken)
    return points[rows]


def balanced_assign(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Capacity-constrained assignment: every cluster gets exactly ``floor(N/K)`` points, and
    ``N mod K`` of them one more. Near-linear in N: each point first competes for its
    ``CANDIDATES`` nearest clusters (nearest proposers win); only the few it loses every one of
    rank all clusters with room left. The last ``N mod K`` points go one per cluster."""
    n, k = len(x), len(centroids)
    floor, extra = divmod(n, k)
    labels = np.full(n, -1, dtype=np.int64)
    room = np.full(k, floor, dtype=np.int64)
    left = _fill(np.arange(n), *_nearest(x, centroids, CANDIDATES), room, labels)
    open_ = np.flatnonzero(room > 0)
    if len(left) and len(open_):  # after this, every cluster holds floor(N/K) points
        index, distance = _nearest(x[left], centroids[open_], len(open_))
        left = _fill(left, open_[index], distance, room, labels)
    if extra:
        left = _fill(left, *_nearest(x[left], centroids, k), np.ones(k, np.int64), labels)
    assert not len(left) and (labels >= 0).all()
    return labels


def _means(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster means, as one sparse (K x N) @ (N x d) product."""
    from scipy.sparse import csr_matrix  # noqa: PLC0415 - deferred: heavy scipy, loaded on this path only

    counts = np.bincount(labels, minlength=k).astype(x.dtype)
    member = csr_matrix((np.ones(len(x), x.dtype), (labels, np.arange(len(x)))), shape=(k, len(x)))
    return np.asarray(member @ x) / counts[:, None]


def balanced_kmeans(
    x: np.ndarray, k: int, seed: int = 0, iterations: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (N,), centroids (K, d)): k-means whose clusters hold floor/ceil(N/K) points each.

    Near-linear in N: k-means++ and the Lloyd iterations run on a seeded sample of at most
    ``SAMPLE_PER_CLUSTER`` points per cluster (all points below that), then ``REFINE`` balanced
    passes over the whole pool move the centroids to it; every pass is ``balanced_assign``.
    """
    if not 1 <= k <= len(x):
        raise SaladError(f"cannot make {k} clusters from {len(x)} texts; set select.clusters")
    x = np.asarray(x, dtype=np.float32)
    rng = np.random.default_rng(seed)
    whole = len(x) <= SAMPLE_PER_CLUSTER * k
    sample = x if whole else x[np.sort(rng.choice(len(x), SAMPLE_PER_CLUSTER * k, replace=False))]
    centroids = _init_centroids(sample, k, rng)
    labels = np.full(len(sample), -1)
    for _ in range(iterations):
        new = balanced_assign(sample, centroids)
        if np.array_equal(new, labels):
            break
        labels = new
        centroids = _means(sample, labels, k)
    if not whole:
        for _ in range(REFINE):
            labels = balanced_assign(x, centroids)
            centroids = _means(x, labels, k)
    return labels, centroids
