"""Cache homes for tests that compare runs: each its own scores and replies, shared assets."""

from __future__ import annotations

from pathlib import Path

from salad_eval.home import home


def bare_home(root: Path) -> Path:
    """A cache home with the prepared assets and nothing else: every clip is made anew."""
    root.mkdir(parents=True)
    (home() / "assets").mkdir(parents=True, exist_ok=True)
    (root / "assets").symlink_to(home() / "assets")
    return root


def scoreless_home(root: Path) -> Path:
    """A cache home sharing the prepared assets, audio and encoder features, with no scores
    and no replies."""
    root.mkdir(parents=True)
    for shared in ("assets", "audio", "features"):
        (home() / shared).mkdir(parents=True, exist_ok=True)
        (root / shared).symlink_to(home() / shared)
    return root
