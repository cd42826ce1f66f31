"""One home directory for every cache (assets, audio, encoder features, scores).

Entries are written atomically: built in a temporary sibling, marked complete, then renamed into
place. An entry without its completion marker (a process killed mid-write) is never loaded; it is
removed and rebuilt. A file lock keeps two processes from building the same entry at once.

File entries (scores, divergences, transcripts, features, embeddings) are *sealed*: a checksum
line follows their bytes, so a truncation that still parses (``0.982`` from ``0.98298``) is caught.
``cached_entry`` reads an entry through its checksum and a parse that validates type, shape and
range; a bad one is counted in ``REBUILT``, rebuilt and replaced, never used and never fatal.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import numpy as np

from salad_eval.errors import SaladError

COMPLETE = ".complete"
SEAL = b"\n#salad-blake2b:"  # starts the checksum line after a sealed entry's bytes
REBUILT: Counter[str] = Counter()  # bad entries rebuilt in this process, by kind
T = TypeVar("T")
_PROJECT_ROOT = Path(__file__).resolve().parents[1]


def home() -> Path:
    """``$SALAD_HOME``, else ``.salad/`` in a source checkout, else ``~/.cache/salad``."""
    if env := os.environ.get("SALAD_HOME"):
        path = Path(env).expanduser()
    elif in_checkout():
        path = _PROJECT_ROOT / ".salad"
    else:
        path = Path.home() / ".cache" / "salad"
    return _made(path)


def _made(path: Path) -> Path:
    """The home folder, created; a file or a read-only place is refused in one line."""
    where = f"SALAD_HOME {path}" if os.environ.get("SALAD_HOME") else f"the cache home {path}"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise SaladError(f"{where} is a file, not a folder; point SALAD_HOME at a folder") from None
    except OSError as err:
        raise SaladError(
            f"{where} cannot be created ({err.strerror}); point SALAD_HOME at a writable folder"
        ) from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise SaladError(f"{where} is not writable; point SALAD_HOME at a writable folder")
    return path


def project_root() -> Path:
    return _PROJECT_ROOT


def in_checkout() -> bool:
    """Whether salad runs from a source checkout (editable install), not an installed wheel."""
    return (_PROJECT_ROOT / "pyproject.toml").exists()


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


DISK_FULL = (errno.ENOSPC, errno.EROFS, errno.EDQUOT)


def disk_error(err: OSError, path: Path | str | None = None, size: int | None = None) -> SaladError:
    """A full, over-quota or read-only disk as one line naming the path (and the bytes needed)."""
    where = path or err.filename or "a file"
    need = f" ({size / 1e6:.1f} MB needed)" if size else ""
    if err.errno == errno.EROFS:
        return SaladError(f"cannot write {where}: the disk is read-only; write elsewhere")
    return SaladError(
        f"cannot write {where}{need}: {err.strerror or 'no space left'}; free space and rerun "
        "the same command (it resumes)"
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that readers see either nothing or the whole content; its mode follows
    the user's umask, as a plain write would (not the 0600 of a temporary file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise disk_error(err, path, len(data)) from None
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o666 & ~_umask())
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL:
            raise disk_error(err, path, len(data)) from None
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


class BadEntry(ValueError):
    """A cache entry that is present but unusable (truncated, altered, out of range)."""


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).hexdigest().encode()


def seal(data: bytes) -> bytes:
    """``data`` followed by a line holding its checksum."""
    return data + SEAL + _digest(data) + b"\n"


def unseal(blob: bytes) -> bytes:
    """The bytes of a sealed entry; ``BadEntry`` if it is empty, truncated or altered."""
    data, sep, tail = blob.rpartition(SEAL)
    if not sep or tail != _digest(data) + b"\n":
        raise BadEntry("checksum mismatch")
    return data


def read_entry(path: Path, kind: str, parse: Callable[[bytes], T], sealed: bool = True) -> T | None:
    """The valid value stored at ``path``, or None: missing, or bad (counted in ``REBUILT``).

    ``parse`` turns the entry's bytes back into the value and raises ``ValueError`` (or
    ``TypeError``, ``KeyError``) when they are not a valid one. ``sealed=False`` is for files
    other code reads as they are (audio): then ``parse`` alone decides.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return parse(unseal(data) if sealed else data)
    except (OSError, EOFError, ValueError, TypeError, KeyError):
        REBUILT[kind] += 1
        return None


def write_entry(path: Path, data: bytes, sealed: bool = True) -> None:
    atomic_write_bytes(path, seal(data) if sealed else data)


def cached_entry(
    path: Path,
    kind: str,
    build: Callable[[], T],
    dump: Callable[[T], bytes],
    parse: Callable[[bytes], T],
    sealed: bool = True,
) -> T:
    """The valid value stored at ``path`` (``read_entry``), else ``build()``, stored there."""
    value = read_entry(path, kind, parse, sealed)
    if value is None:
        value = build()
        write_entry(path, dump(value), sealed)
    return value


def json_bytes(value: object) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def checked_float(value: object, low: float = -float("inf")) -> float:
    """``value`` as a finite float of at least ``low``; ``BadEntry`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadEntry(f"not a number: {value!r}")
    if not low <= float(value) < float("inf"):
        raise BadEntry(f"out of range: {value!r}")
    return float(value)


def rebuilt_report() -> list[str]:
    """One plain line per kind of bad entry rebuilt in this process."""
    return [
        f"rebuilt {n} bad {kind} entr{'y' if n == 1 else 'ies'}"
        for kind, n in sorted(REBUILT.items())
    ]


def npy_bytes(array) -> bytes:

    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def checked_array(data: bytes, columns: int | None = None, rows: int | None = None):
    """A float32 (rows, columns) array of finite values from ``npy_bytes``; ``BadEntry`` else."""

    array = np.load(io.BytesIO(data), allow_pickle=False)
    if array.dtype != np.float32 or array.ndim != 2 or not array.shape[0] or not array.shape[1]:
        raise BadEntry(f"not a 2-D float32 array: {array.dtype} {array.shape}")
    if (columns is not None and array.shape[1] != columns) or (
        rows is not None and array.shape[0] != rows
    ):
        raise BadEntry(f"shape {array.shape}, expected ({rows}, {columns})")
    if not np.isfinite(array).all():
        raise BadEntry("non-finite values")
    return array


def parts_key(*parts: object) -> str:
    """A content key of JSON-able parts (blake2b, 160 bits): the cache key of a computed value."""
    payload = json.dumps(parts, default=str, ensure_ascii=False)
    return hashlib.blake2b(payload.encode(), digest_size=20).hexdigest()
