"""Concurrent requests share model calls: salad's models score and generate in batches, and are
not thread-safe, so one worker thread makes one call at a time for everything queued.

A request waits in an asyncio queue; the worker takes the first one, gathers what else arrives
within ``window_s`` (up to ``max_jobs``), groups the jobs that can share a call (scoring with the
same top-k; generation with the same ``Decoding``) and makes one ``Model.score`` /
``Model.generate`` call per group. A call that fails is retried one request at a time, so one
bad request fails alone; a request whose client went away is skipped.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from salad_eval.models.lm_generation import context_lengths
from salad_eval.models.lm_scoring import per_token
from salad_eval.prompt import ChoiceScore, Decoding, GenerationRequest, Reply, ScoringRequest

log = logging.getLogger(__name__)

WINDOW_S = 0.005  # how long an idle worker waits for company before it runs a request


@dataclass
class _Job:
    key: tuple  # jobs with equal keys share a call: ("score", top_k) or ("generate", Decoding)
    item: ScoringRequest | GenerationRequest
    future: asyncio.Future = field(repr=False)


class Batcher:
    """The one way into the model while the server runs (``start`` it inside the event loop)."""

    def __init__(self, model, batch_size: int = 8, window_s: float = WINDOW_S) -> None:
        self.model = model
        self.batch_size = batch_size
        self.window_s = window_s
        self.max_jobs = max(batch_size, 1) * 4
        self.calls = 0  # model calls made: a test sees requests share them
        self._queue: asyncio.Queue[_Job] | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="salad-serve-model")

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def score(self, request: ScoringRequest, top_k: int) -> list[ChoiceScore]:
        """The request's ``ChoiceScore``s, each with its tokens' scores (``per_token``)."""
        return await self._submit(("score", top_k), request)

    async def generate(
        self, request: GenerationRequest, decoding: Decoding
    ) -> tuple[list[Reply], int | None]:
        """The request's replies, and its context's length in positions (None if unknown)."""
        return await self._submit(("generate", decoding), request)

    async def _submit(self, key: tuple, item: ScoringRequest | GenerationRequest) -> Any:
        assert self._queue is not None, "Batcher.start() first"
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Job(key, item, future))
        return await future

    async def _run(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            jobs = [await self._queue.get()]
            deadline = loop.time() + self.window_s
            while len(jobs) < self.max_jobs:
                try:
                    wait = deadline - loop.time()
                    jobs.append(
                        await asyncio.wait_for(self._queue.get(), wait)
                        if wait > 0
                        else self._queue.get_nowait()
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
            groups: dict[tuple, list[_Job]] = {}
            for job in jobs:
                groups.setdefault(job.key, []).append(job)
            for key, group in groups.items():
                await self._call(key, [job for job in group if not job.future.done()])

    async def _call(self, key: tuple, jobs: list[_Job]) -> None:
        if not jobs:
            return
        loop = asyncio.get_running_loop()
        items = [job.item for job in jobs]
        try:
            results = await loop.run_in_executor(self._executor, self._model_call, key, items)
        except Exception as err:
            if len(jobs) > 1:  # find the request that fails; the others still get answers
                for job in jobs:
                    await self._call(key, [job])
                return
            if not jobs[0].future.done():
                jobs[0].future.set_exception(err)
            return
        for job, result in zip(jobs, results, strict=True):
            if not job.future.done():
                job.future.set_result(result)

    def _model_call(self, key: tuple, items: list) -> list:
        """One model call, in the worker thread."""
        self.calls += 1
        kind, setting = key
        if kind == "score":
            with per_token(setting):
                return self.model.score(items, self.batch_size)
        with context_lengths() as lengths:
            replies = self.model.generate(items, setting, self.batch_size)
        if len(lengths) != len(items):  # a model that does not generate through lm_generation
            lengths = [None] * len(items)
        return list(zip(replies, lengths, strict=True))
