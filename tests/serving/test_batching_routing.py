"""Micro-batching and sticky routing, on their own (no model, no HTTP)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from functools import partial

import pytest

from tasks.core.errors import BatcherClosed
from tasks.core.serving.batcher import MicroBatcher
from tasks.core.serving.models import torch_threads
from tasks.core.serving.routing import bucket, to_challenger


def run(coro):
    return asyncio.run(coro)


def echo_recording(calls: list):
    def predict(texts):
        calls.append(list(texts))
        if "boom" in texts:
            raise ValueError("boom")
        return [(t.upper(), 1.0) for t in texts]

    return predict


def test_concurrent_texts_share_one_forward_pass_in_order():
    calls = []

    async def main():
        batcher = MicroBatcher(echo_recording(calls), max_batch=8, max_wait_s=0.2).start()
        results = await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(5)))
        pair = await batcher.submit(["a", "b"])
        await batcher.close()
        return results, pair

    results, pair = run(main())
    assert [r[0][0] for r in results] == ["T0", "T1", "T2", "T3", "T4"]
    assert pair == [("A", 1.0), ("B", 1.0)]
    assert calls[0] == ["t0", "t1", "t2", "t3", "t4"]  # one pass for the five


def test_max_batch_splits_and_a_request_stays_whole():
    calls = []

    async def main():
        batcher = MicroBatcher(echo_recording(calls), max_batch=4, max_wait_s=0.2).start()
        await asyncio.gather(*(batcher.submit([f"x{i}", f"y{i}", f"z{i}"]) for i in range(3)))
        await batcher.close()

    run(main())
    assert [len(c) for c in calls] == [3, 3, 3]  # 3 + 3 > 4: the next request waits its turn


def test_a_lone_text_waits_no_longer_than_max_wait():
    async def main():
        batcher = MicroBatcher(echo_recording([]), max_batch=64, max_wait_s=0.05).start()
        started = time.perf_counter()
        await batcher.submit(["only"])
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    assert run(main()) < 1.0


def test_a_lone_text_is_dispatched_at_once_and_waits_only_while_another_batch_runs():
    calls, release = [], threading.Event()

    def predict(texts):
        calls.append(list(texts))
        if texts == ["first"]:
            release.wait(10)  # keeps the first batch in flight
        return [(t, 1.0) for t in texts]

    async def main():
        batcher = MicroBatcher(predict, max_batch=8, max_wait_s=2.0, workers=2).start()
        started = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(["first"]))
        while not calls:
            await asyncio.sleep(0.005)
        alone = time.perf_counter() - started  # nothing else queued or in flight: no wait
        rest = [asyncio.ensure_future(batcher.submit([t])) for t in ("second", "third")]
        await asyncio.gather(*rest)  # gathered together while 'first' was being scored
        release.set()
        await first
        await batcher.close()
        return alone

    assert run(main()) < 1.0  # far below max_wait (2 s)
    assert calls == [["first"], ["second", "third"]]


def test_texts_queued_while_a_batch_is_scored_form_the_next_batch_without_a_timer():
    # Continuous batching, one worker: a lone text is scored at once (max_wait is 5 s and is
    # never waited); the 40 texts that queue meanwhile form the next batches, up to max_batch,
    # as soon as the worker is free again.
    calls, release = [], threading.Event()

    def predict(texts):
        calls.append(list(texts))
        if texts == ["first"]:
            release.wait(10)
        return [(t, 1.0) for t in texts]

    async def main():
        batcher = MicroBatcher(predict, max_batch=32, max_wait_s=5.0, workers=1).start()
        started = time.perf_counter()
        first = asyncio.ensure_future(batcher.submit(["first"]))
        while not calls:
            await asyncio.sleep(0.001)
        alone = time.perf_counter() - started
        queued = [asyncio.ensure_future(batcher.submit([f"t{i}"])) for i in range(40)]
        await asyncio.sleep(0.05)  # all 40 queued behind the running batch
        assert len(calls) == 1
        release.set()
        released = time.perf_counter()
        await asyncio.gather(first, *queued)
        drained = time.perf_counter() - released
        await batcher.close()
        return alone, drained, [q.result()[0][0] for q in queued]

    alone, drained, answers = run(main())
    assert alone < 1.0 and drained < 1.0  # neither waited for max_wait
    assert [len(c) for c in calls] == [1, 32, 8]
    assert calls[1] + calls[2] == [f"t{i}" for i in range(40)] == answers


def test_a_lone_request_after_a_burst_is_not_held_back():
    calls = []

    async def main():
        batcher = MicroBatcher(echo_recording(calls), max_batch=32, max_wait_s=5.0).start()
        await asyncio.gather(*(batcher.submit([f"b{i}"]) for i in range(6)))
        started = time.perf_counter()
        await batcher.submit(["late"])
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    assert run(main()) < 1.0
    assert calls == [[f"b{i}" for i in range(6)], ["late"]]


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="no per-thread priorities")
def test_predict_threads_run_below_the_event_loop_priority():
    seen = []

    def predict(texts):
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        return [(t, 1.0) for t in texts]

    async def main():
        setup = partial(torch_threads, 0, 5)
        batcher = MicroBatcher(predict, 8, 0.0, initializer=setup, workers=2).start()
        await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(4)))
        await batcher.close()
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    loop_nice = run(main())
    assert seen and set(seen) == {min(19, loop_nice + 5)}  # the loop's own stays as it was


def test_a_failing_batch_fails_its_requests_only_and_close_refuses_new_ones():
    calls = []

    async def main():
        batcher = MicroBatcher(echo_recording(calls), max_batch=8, max_wait_s=0.05).start()
        bad = await asyncio.gather(
            batcher.submit(["boom"]), batcher.submit(["fine"]), return_exceptions=True
        )
        good = await batcher.submit(["later"])
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit(["after close"])
        return bad, good

    bad, good = run(main())
    assert all(isinstance(r, ValueError) for r in bad)  # same batch, same failure
    assert good == [("LATER", 1.0)]


def test_close_answers_queued_texts_first():
    release = threading.Event()

    def slow(texts):
        release.wait(5)
        return [(t, 1.0) for t in texts]

    async def main():
        batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0).start()
        pending = [asyncio.ensure_future(batcher.submit([f"q{i}"])) for i in range(3)]
        await asyncio.sleep(0.05)
        closing = asyncio.ensure_future(batcher.close())
        release.set()
        await closing
        return [p.result() for p in pending]

    assert run(main()) == [[("q0", 1.0)], [("q1", 1.0)], [("q2", 1.0)]]


def test_workers_score_batches_side_by_side():
    def slow(texts):
        time.sleep(0.3)
        return [(t, 1.0) for t in texts]

    async def main(workers):
        batcher = MicroBatcher(slow, max_batch=1, max_wait_s=0, workers=workers).start()
        started = time.perf_counter()
        await asyncio.gather(*(batcher.submit([f"t{i}"]) for i in range(4)))
        elapsed = time.perf_counter() - started
        await batcher.close()
        return elapsed

    assert run(main(4)) < 0.9 < run(main(1))  # 4 x 0.3 s one after another, or side by side


def test_routing_is_sticky_monotone_and_proportional():
    keys = [f"user-{i}" for i in range(5000)]
    assert [bucket(k) for k in keys[:50]] == [bucket(k) for k in keys[:50]]
    at = {p: {k for k in keys if to_challenger(k, p)} for p in (0, 10, 50, 100)}
    assert at[0] == set() and at[100] == set(keys)
    assert at[10] <= at[50]  # raising the weight only adds keys
    assert 400 <= len(at[10]) <= 600 and 2300 <= len(at[50]) <= 2700
