"""One home directory for every cache (assets, audio, encoder features, scores).

Entries are written atomically: built in a temporary sibling, marked complete, then renamed into
place. An entry without its completion marker (a process killed mid-write) is never loaded; it is
removed and rebuilt. A file lock keeps two processes from building the same entry at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

COMPLETE = ".complete"
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """``$SALAD_HOME``, else ``.salad/`` in a source checkout, else ``~/.cache/salad``."""
    if env := os.environ.get("SALAD_HOME"):
        path = Path(env).expanduser()
    elif (_PROJECT_ROOT / "pyproject.toml").exists():
        path = _PROJECT_ROOT / ".salad"
    else:
        path = Path.home() / ".cache" / "salad"
    path.mkdir(parents=True, exist_ok=True)
    return path


def project_root() -> Path:
    return _PROJECT_ROOT


def is_complete(entry: Path) -> bool:
    return (entry / COMPLETE).is_file()


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def cached_dir(entry: Path, build: Callable[[Path], dict | None]) -> Path:
    """Return ``entry``, building it first with ``build(tmp_dir)`` unless it is complete.

    ``build`` fills the temporary directory and may return metadata, stored in the marker.
    """
    if is_complete(entry):
        return entry
    with file_lock(entry.parent / f".{entry.name}.lock"):
        if is_complete(entry):  # another process finished it while we waited
            return entry
        if entry.exists():  # half-written: never trust it
            shutil.rmtree(entry)
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}.tmp-", dir=entry.parent))
        try:
            started = time.time()
            meta = build(tmp) or {}
            meta["build_seconds"] = round(time.time() - started, 3)
            (tmp / COMPLETE).write_text(json.dumps(meta, indent=1, sort_keys=True))
            os.replace(tmp, entry)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
    return entry


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either nothing or the whole content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
