"""The catalogue of embedded assets and the one way to prepare them.

An asset is either *located* (its files are usable as installed, e.g. a Piper voice) or *built*
(converted once from its wheel into a cache entry under the home, e.g. SmolLM2 dequantized from
GGUF). Built entries are keyed by asset name, source package version and converter revision, so a
new wheel or converter never reuses a stale conversion.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.status import Status

from salad_eval.errors import SaladError
from salad_eval.home import cached_dir, home, is_complete

KINDS = ("llm", "asr", "tts", "embedder")
_console = Console(stderr=True)  # the live status line of a build
log = logging.getLogger(__name__)
_status: Status | None = None


@dataclass(frozen=True)
class Asset:
    """One embedded asset: where it comes from and how to turn it into a local path."""

    name: str
    kind: str  # one of KINDS
    description: str
    licence: str
    package: str  # the distribution that carries the weights
    module: str  # its import name (checked without importing it)
    locate: Callable[[], Path]  # the installed files (located) or the cache entry's path (built)
    build: Callable[[Path], dict | None] | None = None  # fills a temporary dir; None = located
    revision: int = 1  # bump when the converter changes its output
    extra: str | None = None  # the pip extra that installs ``package``, if not a default
    default: bool = True  # prepared by ``salad-eval assets prepare`` without names

    @property
    def entry(self) -> Path:
        """The cache entry of a built asset."""
        version = importlib.metadata.version(self.package)
        return home() / "assets" / f"{self.name}@{version}-r{self.revision}"


REGISTRY: dict[str, Asset] = {}


def register(asset: Asset) -> Asset:
    REGISTRY[asset.name] = asset
    return asset


def asset(name: str) -> Asset:
    """The registered asset ``name``; a SaladError naming the closest names otherwise."""
    if name in REGISTRY:
        return REGISTRY[name]
    raise unknown(name)


def unknown(name: str) -> SaladError:
    """The error for a name that is no embedded asset, naming the closest ones."""
    close = difflib.get_close_matches(name, REGISTRY, n=3, cutoff=0.4)
    hint = f"did you mean {', '.join(close)}?" if close else "see `salad-eval assets`"
    return SaladError(f"unknown asset {name!r}; {hint} (or pass a local path or a hub id)")


def is_installed(asset: Asset) -> bool:
    return importlib.util.find_spec(asset.module) is not None


def require(asset: Asset) -> None:
    """Fail with the pip command to run when the asset's package is not installed."""
    if not is_installed(asset):
        spec = f"'salad[{asset.extra}]'" if asset.extra else asset.package
        raise SaladError(f"asset {asset.name!r} needs {asset.package}; run: pip install {spec}")


def is_prepared(asset: Asset) -> bool:
    return is_installed(asset) and (asset.build is None or is_complete(asset.entry))


def prepare(name: str) -> Path:
    """The local path of asset ``name``, converting it into the cache first if needed."""
    spec = asset(name)
    require(spec)
    if spec.build is not None:
        cached_dir(spec.entry, _with_status(spec))
    return spec.locate()


def _with_status(spec: Asset) -> Callable[[Path], dict | None]:
    def build(tmp: Path) -> dict | None:
        with building(f"preparing {spec.name} ({spec.description})"):
            return spec.build(tmp)

    return build


@contextlib.contextmanager
def building(message: str) -> Iterator[None]:
    """Show a live status line on stderr while an entry builds (nested calls share one line),
    then log it done."""
    global _status
    if _status is not None:
        _status.update(message)
        yield
        return
    with _console.status(message) as status:
        _status = status
        try:
            yield
        finally:
            _status = None
    log.info("done: %s", message)


def step(message: str) -> None:
    """Say what the current build is doing now."""
    if _status is not None:
        _status.update(message)


def package_dir(module: str) -> Path:
    """An installed package's directory, found without importing it (some have heavy imports)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise SaladError(f"package {module} is not installed; run `make setup`")
    return Path(spec.submodule_search_locations[0])
