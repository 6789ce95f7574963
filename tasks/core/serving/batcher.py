"""Dynamic micro-batching: texts that arrive close together share one forward pass.

Under concurrent load the first queued text waits at most ``max_wait`` for others to join, up
to ``max_batch`` texts, then they are scored together on one of the model's ``workers``
threads (the event loop keeps accepting requests meanwhile). It waits only while another batch
of this model is being scored: when nothing else is queued or in flight, a text is dispatched
at once, so a lone request pays no batching delay (no latency tax at low load).
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
        self._loops: list[asyncio.Task] = []
        self._busy = 0  # batches being gathered or scored
        self._gathering = asyncio.Lock()
        self.closed = False

    def start(self) -> MicroBatcher:
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._run()) for _ in range(self.workers)]
        return self

    async def submit(self, texts: list[str]) -> list[Prediction]:
        """Predictions for ``texts`` in order; raises whatever the model raised."""
        if self.closed:
            raise BatcherClosed("model retired")
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(list(texts), future))
        return await future

    async def _next_batch(self) -> list[_Item]:
        loop = asyncio.get_running_loop()
        first = self._carry or await self._queue.get()
        self._carry = None
        self._busy += 1  # held texts count as work until answered
        items, size = [first], len(first.texts)
        deadline = loop.time() + self.max_wait_s
        while size < self.max_batch:
            if self._queue.empty():
                if self._busy == 1:  # nothing else in flight: waiting would only add latency
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            else:
                item = self._queue.get_nowait()
            if size + len(item.texts) > self.max_batch:
                self._carry = item
                break
            items.append(item)
            size += len(item.texts)
        return items

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            async with self._gathering:  # one batch fills at a time; scoring overlaps
                items = await self._next_batch()
            texts = [t for item in items for t in item.texts]
            try:
                outputs = await loop.run_in_executor(self._executor, self.predict, texts)
                if len(outputs) != len(texts):
                    raise RuntimeError(f"model returned {len(outputs)} rows for {len(texts)}")
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
                self._busy -= 1

    def idle(self) -> bool:
        return self._carry is None and self._queue.empty() and self._busy == 0

    async def close(self, drain_timeout_s: float = 60.0) -> None:
        """Stop taking texts, finish the queued ones, then stop the worker and its thread."""
        self.closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout_s
        while not self.idle() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        for task in self._loops:
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
