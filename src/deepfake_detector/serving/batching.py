"""Micro-batching: images from concurrent requests scored together in one model call.

A model call on 16 images costs far less than 16 calls on one, so under load the server collects
what arrives within a short window (``max_wait_s``) or until a batch is full (``max_batch_size``) and
runs one call in a worker thread, off the event loop. While that call runs, new images queue up and
form the next batch, so the window only costs latency when the server is idle.

Written here rather than taken from a library: the serving frameworks that batch (Ray Serve's
``@serve.batch``, BentoML, Triton) bring their own runtime and process model; this is ~100 lines of
asyncio over a plain callable.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class BatcherStopped(RuntimeError):
    """The batcher was stopped (server shutdown) before this item was scored."""


@dataclass
class BatchStats:
    """What the batcher has done since it started.

    Attributes:
        batches: Calls of the batch function.
        items: Items passed to those calls.
        histogram: Batch size -> number of calls of that size.
    """

    batches: int = 0
    items: int = 0
    histogram: Counter = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.histogram[size] += 1


class MicroBatcher(Generic[Item, Result]):
    """Groups items submitted by concurrent coroutines into calls of a batch function.

    Args:
        run_batch: Takes a list of items and returns one result per item, in order. Runs in
            ``executor``, never on the event loop.
        max_batch_size: Most items per call.
        max_wait_s: Longest the first item of a batch waits for more to arrive.
        executor: Where ``run_batch`` runs; one worker serialises model calls.
    """

    def __init__(
        self,
        run_batch: Callable[[list[Item]], Sequence[Result]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        executor: Executor,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.executor = executor
        self.stats = BatchStats()
        self._pending: deque[tuple[Item, asyncio.Future]] = deque()
        self._arrived: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None

    @property
    def queue_depth(self) -> int:
        """Items waiting for a batch."""
        return len(self._pending)

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def start(self) -> None:
        """Starts the worker; call from the event loop that will submit."""
        self._arrived = asyncio.Event()
        self._worker = asyncio.create_task(self._work(), name="micro-batcher")

    async def stop(self) -> None:
        """Stops the worker; items still waiting fail with `BatcherStopped`."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(BatcherStopped("the server is shutting down"))

    async def submit(self, items: Sequence[Item]) -> list[Result]:
        """Queues items and waits for their results.

        Cancelling the caller (a request timeout) drops its items that have not reached the model.

        Raises:
            BatcherStopped: The batcher is not running.
        """
        if not self.running or self._arrived is None:
            raise BatcherStopped("the batcher is not running")
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._pending.extend(zip(items, futures, strict=True))
        self._arrived.set()
        try:
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for future in futures:
                future.cancel()
            raise

    async def _next_batch(self) -> list[tuple[Item, asyncio.Future]]:
        assert self._arrived is not None
        while not self._pending:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(self._pending) < self.max_batch_size and (remaining := deadline - loop.time()) > 0:
            self._arrived.clear()
            try:
                # Waiting on an Event, not on a queue's get(): a timed-out wait can't swallow an item.
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                break
        batch = []
        while self._pending and len(batch) < self.max_batch_size:
            item, future = self._pending.popleft()
            if not future.cancelled():  # its request timed out or went away: don't spend the model on it
                batch.append((item, future))
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            items = [item for item, _ in batch]
            try:
                results = await loop.run_in_executor(self.executor, self.run_batch, items)
                if len(results) != len(items):
                    raise RuntimeError(
                        f"batch function returned {len(results)} results for {len(items)} items"
                    )
            except asyncio.CancelledError:  # stop() during a model call
                for _, future in batch:
                    if not future.done():
                        future.set_exception(BatcherStopped("the server is shutting down"))
                raise
            except Exception as error:  # one failed call fails its own items, never the worker
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            self.stats.record(len(items))
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
