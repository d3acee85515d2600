"""Micro-batching of PRM and embedding calls across concurrently searched problems.

Callers ``await batcher.submit(item)``, or take one future per item from ``submit_many(items)``;
one pump task gathers what arrived within a short window (or up to ``max_batch`` items) into a
single backend call and resolves each caller's future.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Out = TypeVar("Out")


class MicroBatcher(Generic[Item, Out]):
    """Batches single-item submissions into calls of ``fn(list_of_items) -> list_of_outputs``.

    ``fn`` may return an Exception instance in place of an output: only that caller sees it.
    If ``fn`` raises, every caller of that batch gets the error; later batches are unaffected.
    Use as an async context manager so the pump task is always stopped.
    """

    def __init__(
        self,
        fn: Callable[[list[Item]], Awaitable[Sequence[Out | BaseException]]],
        *,
        max_batch: int,
        max_wait_s: float,
        max_in_flight: int = 2,
    ) -> None:
        self._fn = fn
        self._max_batch = max_batch
        self._max_wait_s = max_wait_s
        self._queue: deque[tuple[Item, asyncio.Future[Out]]] = deque()
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(max_in_flight)
        self._pump: asyncio.Task[None] | None = None
        self._calls: set[asyncio.Task[None]] = set()
        self.batches = 0
        self.items = 0

    async def __aenter__(self) -> MicroBatcher[Item, Out]:
        self._pump = asyncio.create_task(self._run(), name="ets-microbatcher")
        return self

    async def __aexit__(self, *exc: object) -> None:
        tasks = [t for t in (self._pump, *self._calls) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        while self._queue:
            _, future = self._queue.popleft()
            future.cancel()

    def submit_many(self, items: Sequence[Item]) -> list[asyncio.Future[Out]]:
        """Queue items; one future per item, in order (no task per item, unlike gathering
        ``submit`` calls). A caller that stops waiting should cancel the futures it leaves."""
        if self._pump is None or self._pump.done():
            raise RuntimeError("MicroBatcher is not running; use it as 'async with'")
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Out]] = [loop.create_future() for _ in items]
        self._queue.extend(zip(items, futures, strict=True))
        self._arrived.set()
        return futures

    async def submit(self, item: Item) -> Out:
        (future,) = self.submit_many([item])
        return await future

    async def _run(self) -> None:
        """The only loop over submissions: collect a batch, hand it to a call task, repeat."""
        queue = self._queue
        while True:
            if not queue:
                self._arrived.clear()
                await self._arrived.wait()
            if len(queue) < self._max_batch and self._max_wait_s > 0:
                await asyncio.sleep(self._max_wait_s)  # let other problems' submissions arrive
            taken = [queue.popleft() for _ in range(min(len(queue), self._max_batch))]
            batch = [(item, fut) for item, fut in taken if not fut.cancelled()]
            if not batch:
                continue
            await self._slots.acquire()
            task = asyncio.create_task(self._call(batch))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _call(self, batch: list[tuple[Item, asyncio.Future[Out]]]) -> None:
        try:
            self.batches += 1
            self.items += len(batch)
            try:
                outputs = await self._fn([item for item, _ in batch])
                if len(outputs) != len(batch):
                    raise RuntimeError(f"batched call returned {len(outputs)} outputs for {len(batch)} inputs")
            except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                outputs = [exc] * len(batch)
            for (_, future), out in zip(batch, outputs, strict=True):
                if future.done():
                    continue
                if isinstance(out, BaseException):
                    future.set_exception(out)
                else:
                    future.set_result(out)
        finally:
            self._slots.release()
