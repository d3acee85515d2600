"""The shared search loop and the public API, on scripted backends (fast; no engine)."""

from __future__ import annotations

import asyncio
import itertools
import threading

import pytest
from ets_async import METHODS, SearchConfig, iter_solve, solve_many
from ets_async.api import resolve_config
from ets_async.errors import ConfigError
from ets_async.testing import fake_backends

from .fakes import FakeEmbedder, FakePolicy, FakePRM

PROBLEMS = ["What is 2 + 3?", {"question": "What is 7 - 4?", "answer": "3", "id": "q2"}, "What is 6 * 7?"]


def run(problems, config, **backends):
    backends = {"policy": FakePolicy(), "prm": FakePRM(), "embedder": FakeEmbedder(), **backends}
    return asyncio.run(solve_many(problems, config, **backends)), backends


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_solves_every_problem(method):
    config = SearchConfig(method=method, width=8, max_step_tokens=32, max_tokens=256, max_depth=6)
    results, _ = run(PROBLEMS, config)
    assert [r.id for r in results] == ["0", "q2", "2"]
    for result in results:
        assert result.error is None, result.error
        assert result.method == method and result.width == 8
        assert 1 <= len(result.candidates) <= 8
        assert result.answer in {c.answer for c in result.candidates}
        metrics = result.metrics
        assert metrics.generated_tokens > 0 and metrics.policy_calls > 0
        assert metrics.prm_calls == metrics.generated_steps
        assert metrics.kv_tokens_peak >= metrics.kv_tokens_mean > 0
        assert metrics.kv_unshared_tokens_mean >= metrics.kv_tokens_mean
        # the newest layer is part of the KV; prompt + newest layer + ancestors add up to it
        assert 0 < metrics.kv_frontier_tokens_mean <= metrics.kv_tokens_mean - metrics.root_prompt_tokens
        assert 1 <= metrics.expanded_nodes_mean <= 8
        if method == "ets":
            assert 0 < metrics.cluster_ratio_mean <= 1
        else:
            assert metrics.cluster_ratio_mean == 0
    assert results[1].correct in (True, False)  # graded: it has a reference
    assert results[0].correct is None


@pytest.mark.parametrize("method", ["ets", "rebase", "best_of_n"])
def test_budget_is_conserved_each_round(method):
    """Alive trajectories equal the remaining budget: each depth's children = W - finished so far."""
    config = SearchConfig(method=method, width=8, max_depth=8)
    (result,), _ = run([PROBLEMS[0]], config)
    parents, finished = result.tree.parents, result.tree.finished
    depth = [0] * len(parents)
    for v in range(1, len(parents)):
        depth[v] = depth[parents[v]] + 1
    retired = 0
    for d in range(1, max(depth) + 1):
        layer = [v for v in range(len(parents)) if depth[v] == d]
        assert len(layer) == 8 - retired, f"depth {d}"
        retired += sum(finished[v] for v in layer)


@pytest.mark.parametrize("max_depth, max_tokens", [(4, 256), (8, 30)])
def test_ets_embeds_only_steps_that_can_reach_a_selection(max_depth, max_tokens):
    """Final answers, steps at the token cap and steps at the last depth are never candidates, so
    they are not embedded; every other step is, once."""
    embedder = FakeEmbedder()
    config = SearchConfig(method="ets", width=8, max_depth=max_depth, max_tokens=max_tokens, max_step_tokens=16)
    (result,), _ = run([PROBLEMS[0]], config, embedder=embedder)
    parents, texts, finished = result.tree.parents, result.tree.texts, result.tree.finished
    depth, tokens = [0] * len(parents), [0] * len(parents)
    for v in range(1, len(parents)):
        depth[v] = depth[parents[v]] + 1
        tokens[v] = tokens[parents[v]] + result.tree.step_tokens[v]
    selectable = [
        v for v in range(1, len(parents)) if not finished[v] and depth[v] < max_depth and tokens[v] < max_tokens
    ]
    never = [v for v in range(1, len(parents)) if v not in selectable]
    assert selectable and never  # both kinds occur, so the check below can fail either way
    assert sorted(embedder.texts) == sorted(texts[v] for v in selectable)
    assert result.metrics.embedded_steps == len(selectable)


@pytest.mark.parametrize("slow", ["prm", "embedder"])
def test_rounds_record_what_they_waited_for_after_generation(slow):
    """A slow PRM shows in ``score_wait_s`` (every round scores), a slow embedder in ``embed_wait_s``
    (ETS only); REBASE embeds nothing and never waits for it."""
    delay = 0.2  # far above what the other, instant backend's rounds wait (a 2 ms batching window)
    backends = {"prm": FakePRM(delay_s=delay)} if slow == "prm" else {"embedder": FakeEmbedder(delay_s=delay)}
    config = SearchConfig(width=8, max_depth=5, max_step_tokens=16)
    (ets,), _ = run([PROBLEMS[0]], config.replace(method="ets"), **backends)
    (rebase,), _ = run([PROBLEMS[0]], config.replace(method="rebase"), **backends)
    assert rebase.metrics.embed_wait_s == 0.0
    if slow == "prm":
        for result in (ets, rebase):
            assert result.metrics.score_wait_s >= delay * result.metrics.depth
    else:
        assert ets.metrics.embedded_steps > 0
        assert ets.metrics.embed_wait_s >= delay > ets.metrics.score_wait_s
        assert rebase.metrics.score_wait_s < delay


@pytest.mark.parametrize("method", ["ets", "rebase"])
def test_offloaded_selections_run_in_the_selection_pool(monkeypatch, method):
    """ETS selections leave the event loop for the pool of one thread per available core; REBASE's
    single Rust call runs inline (cheaper than a thread hop)."""
    from ets_async.search import loop

    cls = METHODS[method]
    threads = []
    allocate = cls.allocate

    def recording(self, frontier):
        threads.append(threading.current_thread())
        return allocate(self, frontier)

    monkeypatch.setattr(cls, "allocate", recording)
    run(PROBLEMS, SearchConfig(method=method, width=8, max_depth=4))
    assert threads
    if cls.offload:
        assert all(t.name.startswith("ets-select") for t in threads)
    else:
        assert all(t is threading.main_thread() for t in threads)
    assert loop.selection_pool()._max_workers == loop.available_cores()


def test_children_extend_parent_token_ids_exactly():
    policy = FakePolicy()
    config = SearchConfig(method="rebase", width=4, max_depth=4)
    run([PROBLEMS[0]], config, policy=policy)
    root = policy.prompts[0]
    assert all(p[: len(root)] == root for p in policy.prompts)
    # every non-root prompt is an earlier prompt plus one step ending in the delimiter
    seen = set(policy.prompts[:1])
    for prompt in policy.prompts[1:]:
        assert bytes(prompt).endswith(b"\n\n")
        assert any(prompt[: len(p)] == p for p in seen)
        seen.add(prompt)


def test_results_do_not_depend_on_concurrency():
    config = SearchConfig(method="ets", width=8, seed=3)
    one, _ = run(PROBLEMS, config.replace(max_concurrent_problems=1))
    many, _ = run(PROBLEMS, config.replace(max_concurrent_problems=3), policy=FakePolicy(delay_s=0.001))
    assert [r.tree for r in one] == [r.tree for r in many]
    assert [r.answer for r in one] == [r.answer for r in many]


def test_seed_changes_the_search():
    config = SearchConfig(method="rebase", width=8)
    a, _ = run([PROBLEMS[0]], config.replace(seed=1))
    b, _ = run([PROBLEMS[0]], config.replace(seed=2))
    assert a[0].tree != b[0].tree


def test_bad_problems_get_errors_and_the_batch_goes_on():
    problems = ["What is 1 + 1?", {"text": "no problem field"}, "   ", 42, "What is 2 + 2?"]
    results, _ = run(problems, SearchConfig(width=4))
    errors = [r.error for r in results]
    assert errors[0] is None and errors[4] is None
    assert "missing problem text (expected one of problem/question)" in errors[1]
    assert "empty problem text" in errors[2]
    assert "expected a string" in errors[3]


def test_engine_failure_fails_only_that_problem():
    policy = FakePolicy(fail_on="doomed")
    results, _ = run(["What is 1 + 1?", "a doomed problem", "What is 3 + 3?"], SearchConfig(width=4), policy=policy)
    assert results[0].error is None and results[2].error is None
    assert "engine failure" in results[1].error


def test_prm_none_drops_the_child():
    (result,), _ = run([PROBLEMS[0]], SearchConfig(method="rebase", width=8), prm=FakePRM(drop="+ 1 ="))
    assert result.error is None
    assert result.metrics.prm_dropped > 0


def test_prm_calls_are_batched_across_problems():
    prm = FakePRM()
    problems = [f"What is {i} + {i}?" for i in range(8)]
    run(
        problems,
        SearchConfig(method="rebase", width=4, max_concurrent_problems=8),
        prm=prm,
        policy=FakePolicy(delay_s=0.002),
    )
    assert max(prm.batches) > 4  # more children than one problem's expansion in one PRM call


def test_timeout_gives_an_error_result():
    policy = FakePolicy(delay_s=0.5)
    results, _ = run(["slow"], SearchConfig(width=4, problem_timeout_s=0.05), policy=policy)
    assert results[0].error.startswith("timed out")
    assert policy.in_flight == 0


def test_cancelling_solve_many_cancels_every_request():
    policy = FakePolicy(delay_s=10.0)

    async def main():
        task = asyncio.create_task(
            solve_many(PROBLEMS, SearchConfig(width=4), policy=policy, prm=FakePRM(), embedder=FakeEmbedder())
        )
        await asyncio.sleep(0.05)
        assert policy.in_flight > 0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert policy.in_flight == 0 and policy.cancelled > 0


def test_iter_solve_bounds_live_searches():
    """An endless problem stream never becomes more live searches than max_concurrent_problems."""
    policy = FakePolicy(delay_s=0.001)
    config = SearchConfig(method="rebase", width=2, max_concurrent_problems=3)
    peak = 0

    async def main():
        nonlocal peak
        endless = (f"What is {i} + 1?" for i in itertools.count())
        got = 0
        stream = iter_solve(endless, config, policy=policy, prm=FakePRM(), embedder=FakeEmbedder())
        async for _ in stream:
            peak = max(peak, policy.in_flight)
            got += 1
            if got == 10:
                break
        await stream.aclose()

    asyncio.run(main())
    assert 0 < peak <= 3
    assert policy.in_flight == 0


def test_a_slow_stream_holds_no_finished_result_back():
    """A result is yielded when its problem finishes, not when the next problem arrives: a stream that
    waits for the first result before it gives its second problem (a Ray actor's queue) goes on."""
    config = SearchConfig(method="rebase", width=2, max_concurrent_problems=3)

    async def main():
        first_result = asyncio.Event()

        async def stream():
            yield "What is 1 + 1?"
            await first_result.wait()
            yield "What is 2 + 2?"

        ids = []
        async for result in iter_solve(stream(), config, policy=FakePolicy(), prm=FakePRM(), embedder=FakeEmbedder()):
            ids.append(result.id)
            first_result.set()
        return ids

    assert asyncio.run(asyncio.wait_for(main(), 30)) == ["0", "1"]


def test_streamed_problems_leave_no_memory_behind():
    """Memory is bounded by the live searches, not by how many problems went through: the Python heap
    after 1,500 streamed problems is what it was after 300 (measured: 10,000 problems through
    ``fake_backends`` keep the process at 72-74 MiB RSS)."""
    import gc
    import tracemalloc

    backends = fake_backends()
    config = SearchConfig(
        method="ets", width=2, max_step_tokens=16, max_tokens=64, max_depth=4, max_concurrent_problems=8
    )
    heap: dict[int, int] = {}

    async def main():
        stream = iter_solve((f"What is {i} + 1?" for i in range(1500)), config, policy=backends.policy,
                            prm=backends.prm, embedder=backends.embedder)  # fmt: skip
        done = 0
        async for _ in stream:
            done += 1
            if done in (300, 1500):
                gc.collect()
                heap[done] = tracemalloc.get_traced_memory()[0]

    tracemalloc.start()
    try:
        asyncio.run(main())
    finally:
        tracemalloc.stop()
    assert heap[1500] - heap[300] < 256 * 1024, f"the heap grew by {(heap[1500] - heap[300]) / 1024:.0f} KiB"


def test_default_backends_start_again_after_their_engine_died(monkeypatch):
    """solve_many without backends uses the process's default ones; a dead engine is replaced."""
    from ets_async import api
    from ets_async.backends import Backends
    from ets_async.supervisor import BackendsSupervisor

    class Started(Backends):
        failure_reason: str | None = None

        def failure(self) -> str | None:
            return self.failure_reason

    started: list[Started] = []

    def load(config=None):
        started.append(Started(FakePolicy(), FakePRM(), FakeEmbedder()))
        return started[-1]

    monkeypatch.setattr(api, "_default_backends", BackendsSupervisor(load))
    (first,) = asyncio.run(solve_many(["What is 1 + 1?"], SearchConfig(width=2)))
    assert first.error is None and len(started) == 1
    asyncio.run(solve_many(["What is 1 + 2?"], SearchConfig(width=2)))
    assert len(started) == 1  # shared while it serves
    started[0].failure_reason = "the vLLM engine died: its EngineCore process (pid 1) was killed by SIGKILL"
    (again,) = asyncio.run(solve_many(["What is 1 + 3?"], SearchConfig(width=2)))
    assert again.error is None and len(started) == 2 and api._default_backends.current is started[1]
    api.shutdown_default_backends()
    assert api._default_backends.current is None


@pytest.mark.parametrize(("method", "embeds"), [("best_of_n", False), ("rebase", False), ("ets", True)])
def test_own_policy_and_prm_start_no_default_engine(monkeypatch, method, embeds):
    """A caller's policy and PRM with no embedder: nothing is loaded for a method that does not embed,
    and only the default embedder (never the default engine) for one that does."""
    from ets_async import api
    from ets_async.supervisor import BackendsSupervisor

    def no_engine(config=None):
        raise AssertionError("the default backends were started")

    loaded: list[FakeEmbedder] = []

    def embedder(config):
        loaded.append(FakeEmbedder())
        return loaded[-1]

    monkeypatch.setattr(api, "_default_backends", BackendsSupervisor(no_engine))
    monkeypatch.setattr(api, "sentence_embedder", embedder)
    monkeypatch.setattr(api, "_default_embedder", None)
    config = SearchConfig(method=method, width=4)
    for _ in range(2):
        (result,) = asyncio.run(solve_many(["What is 1 + 1?"], config, policy=FakePolicy(), prm=FakePRM()))
        assert result.error is None
    assert len(loaded) == (1 if embeds else 0)  # loaded once, then shared
    api.shutdown_default_backends()
    assert api._default_embedder is None


def test_bad_config_is_rejected_with_the_field_named():
    with pytest.raises(ConfigError, match="width"):
        SearchConfig(width=0)
    with pytest.raises(ConfigError, match="method"):
        SearchConfig(method="mcts")
    with pytest.raises(ConfigError, match="max_step_tokens"):
        SearchConfig(max_step_tokens=2048, max_tokens=1024)
    with pytest.raises(ConfigError, match="not_a_field"):
        SearchConfig(not_a_field=1)


def test_engine_cpu_cores_become_vllm_binding_only_while_the_engine_starts(monkeypatch):
    import os

    from ets_async.backends.vllm_engine import _engine_environment, cpu_binding
    from ets_async.config import EngineConfig

    assert cpu_binding("all") == ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))
    assert cpu_binding("0-3,6") == "0-3,6"
    with pytest.raises(ConfigError, match="cpu_cores"):
        EngineConfig(cpu_cores="0-")
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND", raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")  # set by the user: kept
    with _engine_environment(EngineConfig(cpu_cores="1", cpu_kv_cache_gib=3), on_cpu=True):
        assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "1"
        assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"
    assert "VLLM_CPU_OMP_THREADS_BIND" not in os.environ
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7"


def test_request_rate_limit_spaces_engine_requests():
    """20 requests/s: the first 20 may go at once, every later one waits its turn (a lower bound only)."""
    import time

    policy = FakePolicy()
    config = SearchConfig(method="best_of_n", width=6, max_depth=3, request_rate_limit=20.0, max_concurrent_problems=4)
    started = time.perf_counter()
    run([f"What is {i} + 1?" for i in range(4)], config, policy=policy)
    elapsed = time.perf_counter() - started
    requests = len(policy.prompts)
    assert requests > 30
    assert elapsed >= (requests - 20) / 20.0 * 0.9


def test_settings_left_to_the_models_are_filled_from_them():
    """An unset temperature is the policy's measured one (else the paper's 1.0); an unset clustering
    cut is the embedder's calibrated one (else the paper's 0.05)."""
    config = SearchConfig(method="ets", width=4, max_depth=3)
    policy, embedder = FakePolicy(), FakeEmbedder()
    asyncio.run(solve_many(["What is 1 + 1?"], config, policy=policy, prm=FakePRM(), embedder=embedder))
    assert {s.temperature for s in policy.samplings} == {1.0}
    policy.temperature, embedder.cluster_threshold = 0.3, 2.0  # type: ignore[attr-defined]
    resolved = resolve_config(config, policy, embedder)
    assert (resolved.temperature, resolved.cluster_threshold) == (0.3, 2.0)
    asyncio.run(solve_many(["What is 1 + 1?"], config, policy=policy, prm=FakePRM(), embedder=embedder))
    assert 0.3 in {s.temperature for s in policy.samplings}
    # explicit settings win over the models'
    assert resolve_config(config.replace(temperature=0.9, cluster_threshold=0.1), policy, embedder) == config.replace(
        temperature=0.9, cluster_threshold=0.1
    )


def test_a_timed_out_search_keeps_the_vote_over_what_finished_in_time():
    class SlowDeepPolicy(FakePolicy):
        """Fast until some trajectories finished, then every expansion hangs."""

        async def expand(self, prompt_token_ids, n, sampling):
            if bytes(prompt_token_ids).decode().count(sampling.stop) >= 3:
                await asyncio.sleep(10.0)
            return await super().expand(prompt_token_ids, n, sampling)

    config = SearchConfig(method="rebase", width=8, problem_timeout_s=1.0, max_depth=8, seed=2)
    (result,), _ = run(["slow"], config, policy=SlowDeepPolicy())
    assert result.error == "timed out after 1s" and result.metrics.stop_reason == "deadline"
    assert result.candidates and result.answer in {c.answer for c in result.candidates}
    assert result.correct is None  # an error result is not graded

    (empty,), _ = run(["slow"], SearchConfig(width=4, problem_timeout_s=0.05), policy=FakePolicy(delay_s=0.5))
    assert empty.answer is None and not empty.candidates and empty.metrics.stop_reason == "deadline"
