"""Worker processes that never outlive their run.

Synthesis runs in pools of spawned processes. ``stop_on_signals()`` (at CLI start) turns SIGTERM
and SIGHUP into ``SystemExit`` in the main process, so ``finally`` blocks run (an atomic write
removes its temporary file) and ``worker_pool`` terminates its workers instead of waiting for
every queued job. Workers ignore SIGINT (Ctrl-C reaches the whole process group; the parent stops
them) and, on Linux, die with their parent even when it is killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

_PR_SET_PDEATHSIG = 1


def stop_on_signals() -> None:
    """SIGTERM and SIGHUP unwind the main process like an exception (exit status 128 + signal)."""

    def stop(signum: int, _frame) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, stop)


def _start_worker(parent: int, initializer: Callable[..., None] | None, args: tuple) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before the death signal was armed
        os._exit(1)
    _thread_locks_only()
    if initializer is not None:
        initializer(*args)


def _thread_locks_only() -> None:
    """tqdm (faster-whisper's progress bars) makes a multiprocessing lock per process; a worker
    stopped mid-job leaves it to the resource tracker, which then warns of a leaked semaphore.
    One worker's bars need only a thread lock."""
    with contextlib.suppress(ImportError):
        import tqdm  # noqa: PLC0415 - deferred: optional, a dependency of the ASR's

        tqdm.tqdm.set_lock(threading.RLock())


def terminate(pool: ProcessPoolExecutor, grace: float = 5.0) -> None:
    """Stop a pool now: queued jobs cancelled, running ones killed (SIGTERM, then SIGKILL)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(grace)
        if process.is_alive():
            process.kill()
            process.join()


@contextlib.contextmanager
def worker_pool(
    workers: int, initializer: Callable[..., None] | None = None, initargs: tuple = ()
) -> Iterator[ProcessPoolExecutor]:
    """A spawn ``ProcessPoolExecutor`` whose workers are terminated if the block raises (a
    signal, Ctrl-C, an error), rather than left to finish every queued job."""
    context = multiprocessing.get_context("spawn")
    start = (os.getpid(), initializer, initargs)
    pool = ProcessPoolExecutor(workers, context, _start_worker, start)
    try:
        yield pool
    except BaseException:
        terminate(pool)
        raise
    pool.shutdown(wait=True)
