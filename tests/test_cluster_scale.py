"""Balanced clustering at scale: the sampled iterations, the candidate fill and its fallback."""

from __future__ import annotations

import numpy as np
import pytest

import salad_train.selection.cluster as cluster
from salad_train.selection.cluster import balanced_assign, balanced_kmeans


def blobs(n: int, groups: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.normal(loc=20 * g, size=(n // groups, dim)) for g in range(groups)])


@pytest.mark.parametrize(("candidates", "n", "k"), [(1, 403, 7), (2, 400, 8), (8, 1000, 16)])
def test_assignment_is_exactly_balanced(monkeypatch, candidates, n, k) -> None:
    """Few candidates force many points through the fallback; sizes stay floor/ceil(N/K)."""
    monkeypatch.setattr(cluster, "CANDIDATES", candidates)
    monkeypatch.setattr(cluster, "ROWS", 64)  # several distance blocks
    rng = np.random.default_rng(n)
    x = (rng.normal(size=(n, 6)) * np.linspace(0.1, 3, 6)).astype(np.float32)
    centroids = x[rng.choice(n, k, replace=False)]
    labels = balanced_assign(x, centroids)
    sizes = np.bincount(labels, minlength=k)
    assert set(sizes) <= {n // k, -(-n // k)} and sizes.sum() == n


def test_assignment_prefers_the_nearest_cluster() -> None:
    """With room for everyone where they are, every point joins its nearest centroid."""
    x = blobs(400, 4).astype(np.float32)
    centroids = np.stack([x[100 * g : 100 * (g + 1)].mean(0) for g in range(4)])
    labels = balanced_assign(x, centroids)
    assert np.array_equal(labels, np.repeat(np.arange(4), 100))


def test_sampled_kmeans_is_balanced_deterministic_and_finds_groups(monkeypatch) -> None:
    monkeypatch.setattr(cluster, "SAMPLE_PER_CLUSTER", 10)  # 40 of 2000 points iterate
    x = blobs(2000, 4)
    labels, centroids = balanced_kmeans(x, 4, seed=3)
    assert np.array_equal(np.bincount(labels), [500] * 4)
    for g in range(4):  # every true group lands whole in one cluster
        assert len(set(labels[500 * g : 500 * (g + 1)])) == 1
    assert centroids.shape == (4, 8)
    again, _ = balanced_kmeans(x, 4, seed=3)
    assert np.array_equal(labels, again)
