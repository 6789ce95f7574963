"""Continuous micro-batching: texts that queue while the model is busy share one forward pass.

A batch is gathered when one of the model's ``workers`` predict threads is free, and it takes
every text queued at that moment, up to ``max_batch`` (a request's texts stay together). Under
load the texts that arrived while the previous batch was being scored form the next batch, so
batches grow with the load by themselves, with no timer; a lone request finds a free worker
and an empty queue and is scored at once (no latency tax at low load). Only with several
workers, when a free one finds fewer than ``max_batch`` texts queued while another batch is
still being scored, does it wait up to ``max_wait`` for more (the cores are busy anyway).
The event loop keeps accepting requests while batches are scored on the worker threads.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from tasks.core.errors import BatcherClosed

Prediction = tuple[str, float]  # (label, score)
PredictFn = Callable[[list[str]], Sequence[Prediction]]


@dataclass
class _Item:
    texts: list[str]
    future: asyncio.Future


class MicroBatcher:
    def __init__(
        self,
        predict: PredictFn,
        max_batch: int,
        max_wait_s: float,
        name: str = "model",
        on_batch: Callable[[int], None] | None = None,
        initializer: Callable[[], None] | None = None,
        workers: int = 1,
    ):
        self.predict, self.max_batch, self.max_wait_s = predict, max_batch, max_wait_s
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._carry: _Item | None = None  # an item that did not fit the previous batch
        self._executor = ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"predict-{name}", initializer=initializer
        )
        self.workers = workers
        self._gatherer: asyncio.Task | None = None
        self._free: asyncio.Semaphore | None = None  # predict threads not scoring a batch
        self._scoring: set[asyncio.Task] = set()
        self._busy = 0  # batches being scored
        self._gathered = 0  # texts taken from the queue and not answered yet
        self.closed = False

    def start(self) -> MicroBatcher:
        loop = asyncio.get_running_loop()
        self._free = asyncio.Semaphore(self.workers)
        self._gatherer = loop.create_task(self._run())
        return self

    async def submit(self, texts: list[str]) -> list[Prediction]:
        """Predictions for ``texts`` in order; raises whatever the model raised."""
        if self.closed:
            raise BatcherClosed("model retired")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(list(texts), future))
        return await future

    def _take(self, items: list[_Item], size: int) -> int:
        """Move queued items into the batch without waiting; the new size."""
        while size < self.max_batch and not self._queue.empty():
            item = self._queue.get_nowait()
            if size + len(item.texts) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            size += len(item.texts)
        return size

    async def _next_batch(self) -> list[_Item]:
        """Everything queued now (at least one item, waiting for it if need be)."""
        first = self._carry or await self._queue.get()
        self._carry = None
        items = [first]
        size = self._take(items, len(first.texts))
        if size >= self.max_batch or self._carry is not None or not self._busy:
            return items  # full, or no other batch in flight: waiting would only add latency
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch and self._carry is None and self._busy:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except TimeoutError:
                break
            if size + len(item.texts) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            size = self._take(items, size + len(item.texts))
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._free.acquire()
            try:
                items = await self._next_batch()
            except BaseException:
                self._free.release()
                raise
            self._gathered += sum(len(item.texts) for item in items)
            self._busy += 1
            task = loop.create_task(self._score(items))
            self._scoring.add(task)
            task.add_done_callback(self._scoring.discard)

    async def _score(self, items: list[_Item]) -> None:
        texts = [t for item in items for t in item.texts]
        try:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(self._executor, self.predict, texts)
            if len(outputs) != len(texts):
                raise RuntimeError(f"model returned {len(outputs)} rows for {len(texts)}")
        except asyncio.CancelledError:  # closed before the batch was answered
            for item in items:
                if not item.future.done():
                    item.future.set_exception(BatcherClosed("model retired"))
            raise
        except Exception as exc:  # the model's failure belongs to these requests only
            for item in items:
                if not item.future.done():
                    item.future.set_exception(exc)
        else:
            if self.on_batch:
                self.on_batch(len(texts))
            start = 0
            for item in items:
                end = start + len(item.texts)
                if not item.future.done():
                    item.future.set_result(list(outputs[start:end]))
                start = end
        finally:
            self._gathered -= len(texts)
            self._busy -= 1
            self._free.release()

    def idle(self) -> bool:
        return self._carry is None and self._queue.empty() and not self._gathered

    async def close(self, drain_timeout_s: float = 60.0) -> None:
        """Stop taking texts, finish the queued ones, then stop the workers and their threads."""
        self.closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        while not self.idle() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for task in [self._gatherer, *self._scoring]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for item in [self._carry, *_drain(self._queue)]:
            if item is not None and not item.future.done():
                item.future.set_exception(BatcherClosed("model retired"))
        self._executor.shutdown(wait=False)


def _drain(queue: asyncio.Queue) -> list[_Item]:
    items = []
    while not queue.empty():
        items.append(queue.get_nowait())
    return items
