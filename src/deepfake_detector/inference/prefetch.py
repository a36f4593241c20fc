"""Run a function over a stream in worker threads, ahead of the consumer, keeping input order.

Used to decode and preprocess images while the model scores the previous batch. Threads rather than
processes: Pillow's decoders and resizers and NumPy release the GIL, and threads share the loaded
processor without pickling anything. The window bounds how far ahead the workers run, so memory stays
flat however long the stream is (no queue of every input, no list of every result).
``concurrent.futures.Executor.map`` would submit the whole stream at once, which is why this exists.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def map_ordered(function: Callable[[T], R], items: Iterable[T], *, workers: int, window: int) -> Iterator[R]:
    """Yields ``function(item)`` for each item, in input order, computed by ``workers`` threads.

    Args:
        function: Called once per item in a worker thread. It should turn failures into values
            (error records): an exception it raises is re-raised here and ends the stream.
        items: Consumed lazily, in the calling thread.
        workers: Worker threads; 0 calls ``function`` in the calling thread, one item at a time.
        window: At most this many items are submitted and not yet yielded.

    Raises:
        ValueError: ``workers`` is negative or ``window`` is below 1.
    """
    if workers < 0:
        raise ValueError(f"workers must be 0 or more, got {workers}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    if workers == 0:
        yield from map(function, items)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deepfake-detector-prefetch")
    pending: deque[Future[R]] = deque()
    try:
        for item in items:
            pending.append(pool.submit(function, item))
            if len(pending) >= window:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        # Reached on exhaustion, on an error, and when the consumer drops the generator early: drop
        # the queued work and wait only for what is running.
        pool.shutdown(wait=True, cancel_futures=True)
