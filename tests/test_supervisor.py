"""``BackendsSupervisor`` over scripted backends whose engine dies when a test says so, and the
service's answers around a death."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from aiohttp.test_utils import TestClient, TestServer
from ets_async import SearchConfig
from ets_async.backends import Backends
from ets_async.service import ServiceConfig, create_app
from ets_async.supervisor import BackendsSupervisor

from .fakes import FakeEmbedder, FakePolicy, FakePRM


class Started(Backends):
    """Scripted backends whose engine dies when the test says so."""

    failure_reason: str | None = None
    shutdowns = 0

    def failure(self) -> str | None:
        return self.failure_reason

    def shutdown(self) -> None:
        self.shutdowns += 1


DEATH = "the vLLM engine died: its EngineCore process (pid 1) was killed by SIGKILL"


def starter() -> tuple[list[Started], Callable[[], Started]]:
    started: list[Started] = []

    def start() -> Started:
        started.append(Started(FakePolicy(), FakePRM(), FakeEmbedder()))
        return started[-1]

    return started, start


async def test_the_supervisor_starts_once_and_replaces_dead_backends_once():
    started, start = starter()
    supervisor = BackendsSupervisor(start)
    assert supervisor.current is None
    first = await asyncio.gather(*(supervisor.get() for _ in range(4)))
    assert len(started) == 1 and all(b is started[0] for b in first)
    started[0].failure_reason = DEATH
    again = await asyncio.gather(*(supervisor.get() for _ in range(4)))
    assert len(started) == 2 and all(b is started[1] for b in again)
    assert started[0].shutdowns == 1  # the dead ones were shut down before new ones started
    supervisor.shutdown()
    supervisor.shutdown()
    assert started[1].shutdowns == 1 and supervisor.current is None
    assert await supervisor.get() is started[2]  # started again when asked again


async def test_the_service_answers_503_for_a_dead_engine_and_restarts_on_the_next_request():
    started, start = starter()
    app = create_app(start, ServiceConfig(SearchConfig(width=2)))
    async with TestClient(TestServer(app)) as client:
        assert (await client.get("/health")).status == 503  # not started yet
        problem = {"question": "What is 1 + 1?", "answer": "2"}
        assert (await client.post("/solve", json=problem)).status == 200
        assert (await client.get("/health")).status == 200
        started[0].failure_reason = DEATH
        health = await client.get("/health")
        assert health.status == 503 and (await health.json())["error"] == DEATH
        assert (await client.post("/solve", json=problem)).status == 200  # on new backends
        assert len(started) == 2 and started[0].shutdowns == 1


async def test_the_service_says_503_when_the_engine_died_under_a_search():
    started, start = starter()

    class DyingPolicy(FakePolicy):
        async def expand(self, prompt_token_ids, n, sampling):
            started[-1].failure_reason = DEATH
            raise RuntimeError("engine request failed")

    def start_dying() -> Started:
        start()
        started[-1].policy = DyingPolicy()
        return started[-1]

    app = create_app(start_dying, ServiceConfig(SearchConfig(width=2)))
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/solve", json={"question": "What is 1 + 1?"})
        assert response.status == 503
        assert (await response.json())["error"] == f"{DEATH}; the engine is being restarted, try again"
