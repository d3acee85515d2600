"""MicroBatcher: batches form across callers; one caller's error reaches only that caller."""

from __future__ import annotations

import asyncio

import pytest
from ets_async.batching import MicroBatcher


def test_batches_form_across_concurrent_callers_and_keep_order():
    calls = []

    async def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def main():
        async with MicroBatcher(double, max_batch=8, max_wait_s=0.01) as batcher:
            return await asyncio.gather(*(batcher.submit(i) for i in range(20)))

    assert asyncio.run(main()) == [2 * i for i in range(20)]
    assert max(len(c) for c in calls) == 8 and sum(len(c) for c in calls) == 20


def test_an_item_error_reaches_only_its_caller():
    async def fragile(items):
        return [ValueError(f"bad {x}") if x == 3 else x for x in items]

    async def main():
        async with MicroBatcher(fragile, max_batch=8, max_wait_s=0.01) as batcher:
            return await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)

    out = asyncio.run(main())
    assert out[:3] == [0, 1, 2] and out[4:] == [4, 5]
    assert isinstance(out[3], ValueError) and "bad 3" in str(out[3])


def test_a_failing_call_fails_its_batch_and_the_next_batch_still_runs():
    attempts = 0

    async def flaky(items):
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("backend down")
        return list(items)

    async def main():
        async with MicroBatcher(flaky, max_batch=4, max_wait_s=0.01) as batcher:
            with pytest.raises(RuntimeError, match="backend down"):
                await batcher.submit(1)
            return await batcher.submit(2)

    assert asyncio.run(main()) == 2


def test_submit_outside_the_context_is_an_error():
    async def main():
        batcher = MicroBatcher(lambda items: items, max_batch=2, max_wait_s=0)
        with pytest.raises(RuntimeError, match="async with"):
            await batcher.submit(1)

    asyncio.run(main())


def test_submit_many_gives_one_future_per_item_and_skips_cancelled_ones():
    calls = []

    async def double(items):
        calls.append(list(items))
        return [2 * x for x in items]

    async def main():
        async with MicroBatcher(double, max_batch=8, max_wait_s=0.01) as batcher:
            futures = batcher.submit_many([1, 2, 3])
            futures[1].cancel()  # its caller stopped waiting: the item is never sent
            return [await futures[0], await futures[2]]

    assert asyncio.run(main()) == [2, 6]
    assert calls == [[1, 3]]
