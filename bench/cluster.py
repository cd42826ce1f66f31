"""Balanced clustering at pool scale: time and cluster-size spread for N = 10^4, 10^5, 10^6.

Synthetic unit embeddings (384 dims, as all-MiniLM-L6-v2's, drawn around 64 uneven centres so
plain k-means would be unbalanced) cut into K = 128 clusters by ``balanced_kmeans``, the Stage II
clustering. Prints each N's seconds and sizes (min, max, and the largest deviation from N/K in
percent of N/K), then the growth exponent: the slope of log time against log N (1.0 is linear).
Run it with OMP_NUM_THREADS=1 on a shared machine.

    .venv/bin/python bench/cluster.py [--sizes 10000,100000,1000000] [--clusters 128]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from salad_train.selection.cluster import balanced_kmeans

DIM = 384


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    """(n, DIM) float32 unit rows, made in blocks so a million never needs float64 memory."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(64, DIM)).astype(np.float32)
    weights = rng.dirichlet(np.full(64, 0.5))  # uneven: some centres hold many more points
    x = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, 1 << 16):
        rows = min(1 << 16, n - start)
        block = centres[rng.choice(64, rows, p=weights)]
        block += rng.standard_normal((rows, DIM), dtype=np.float32)
        x[start : start + rows] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--clusters", type=int, default=128)
    args = parser.parse_args()
    k = args.clusters
    sizes, seconds = [], []
    print(f"balanced_kmeans, K = {k}, {DIM}-dim synthetic embeddings:")
    for n in (int(s) for s in args.sizes.split(",")):
        x = embeddings(n)
        started = time.perf_counter()
        labels, _ = balanced_kmeans(x, k, seed=0)
        elapsed = time.perf_counter() - started
        counts = np.bincount(labels, minlength=k)
        spread = np.abs(counts - n / k).max() / (n / k)
        print(
            f"  N = {n:>9,}  {elapsed:8.1f} s  sizes {counts.min()}..{counts.max()}  "
            f"max deviation from N/K {spread:.3%}"
        )
        sizes.append(n)
        seconds.append(elapsed)
        del x
    if len(sizes) > 1:
        slope = np.polyfit(np.log(sizes), np.log(seconds), 1)[0]
        print(f"  growth exponent (log time / log N): {slope:.2f}")


if __name__ == "__main__":
    main()
