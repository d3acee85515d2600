"""The example service (ets_async.service) on the shared real engine, with real HTTP clients on
loopback: 50 concurrent requests of which 10 disconnect midway, deadlines, bad bodies.

The disconnecting clients ask for problems whose engine requests would run for thousands of tokens,
so only aborts can leave the engine idle after they leave."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from aiohttp import web
from ets_async import SearchConfig
from ets_async.backends.protocols import current_scope
from ets_async.backends.vllm_policy import VllmPolicy
from ets_async.service import ServiceConfig, create_app

from .engine_probe import engine_idle

pytestmark = pytest.mark.engine

ANSWERED, DISCONNECTING = 40, 10
SEARCH = SearchConfig(method="rebase", width=2, max_step_tokens=24, max_tokens=48, max_depth=2, seed=1)


class HangingPolicy(VllmPolicy):
    """The real policy, except that problems whose id starts with "hang" never stop generating
    (as many tokens as the context allows, end-of-sequence ignored)."""

    def __init__(self, backends) -> None:
        super().__init__(backends.policy.engine, backends.policy.tokenizer)

    def sampling_params(self, prompt_token_ids, n, sampling):
        params = super().sampling_params(prompt_token_ids, n, sampling)
        scope = current_scope.get()
        if scope is not None and scope.id.startswith("hang"):
            params.max_tokens = params.min_tokens = self.max_model_len - len(prompt_token_ids)
            params.ignore_eos, params.stop = True, []
        return params


@pytest.fixture()
async def service(backends):
    """The service on a free loopback port, over the shared engine, as ``ets-async serve`` runs it."""
    hanging = type(backends)(HangingPolicy(backends), backends.prm, backends.embedder, backends.engines)
    app = create_app(lambda: pytest.fail("the backends should not restart"), ServiceConfig(SEARCH), backends=hanging)
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


def problem(i: int) -> dict:
    return {"id": f"q{i}", "question": f"Tom has {i} apples and buys 2 more. How many apples?", "answer": str(i + 2)}


async def test_disconnected_clients_abort_their_search_and_the_rest_are_answered(service, engine):
    async def answered(session: aiohttp.ClientSession, i: int) -> dict:
        async with session.post(f"{service}/solve", json=problem(i)) as response:
            assert response.status == 200, await response.text()
            return await response.json()

    async def disconnecting(i: int) -> None:
        async with aiohttp.ClientSession() as own:  # its own connection, closed when it gives up
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(3.0):  # midway: its search is still generating
                    await own.post(f"{service}/solve", json={**problem(i), "id": f"hang{i}"})

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(
            *(answered(session, i) for i in range(ANSWERED)),
            *(disconnecting(i) for i in range(DISCONNECTING)),
        )
        bodies = results[:ANSWERED]
        assert [b["id"] for b in bodies] == [f"q{i}" for i in range(ANSWERED)]
        assert all(b["metrics"]["generated_tokens"] > 0 and b["correct"] in (True, False) for b in bodies)
        assert await engine_idle(engine, settle_s=10.0)  # the hanging searches were aborted on the engine

        async with session.get(f"{service}/health") as health:  # and the server keeps serving
            assert health.status == 200
        assert (await answered(session, 99))["id"] == "q99"


async def test_deadlines_and_bad_requests(service, engine):
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{service}/solve", json={**problem(1), "id": "hang", "deadline_s": 2}) as response:
            assert response.status == 504
            assert "deadline of 2s" in (await response.json())["error"]
        assert await engine_idle(engine, settle_s=5.0)
        for body, message in [
            ("not json", "JSON object"),
            ([1, 2], "got list"),
            ({"answer": "3"}, "missing problem text"),
            ({"question": "What is \ud800?"}, "lone surrogate"),
            ({"question": "ok", "deadline_s": -1}, "deadline_s must be a number"),
            ({"question": "ok", "deadline_s": 10_000}, "at most 600"),
        ]:
            kwargs = {"data": body} if isinstance(body, str) else {"json": body}
            async with session.post(f"{service}/solve", **kwargs) as response:
                assert response.status == 400
                assert message in (await response.json())["error"]


async def test_openai_clients_get_searched_answers_from_the_engine(service, engine):
    import openai

    async with openai.AsyncOpenAI(base_url=f"{service}/v1", api_key="unused", max_retries=0) as api:
        messages = [{"role": "user", "content": problem(3)["question"]}]
        response = await api.chat.completions.create(model="smollm2:rebase-2", messages=messages)
        meta = response.model_extra["ets"]
        (choice,) = response.choices  # the tiny search may end before any trajectory finished: then "length"
        assert (choice.finish_reason, bool(choice.message.content)) in (("stop", True), ("length", False))
        assert (meta["method"], meta["width"]) == ("rebase", 2) and meta["anytime"] is False
        assert bool(meta["candidates"]) == (choice.finish_reason == "stop")
        assert response.usage.completion_tokens == meta["metrics"]["generated_tokens"] > 0
        stream = await api.completions.create(model="smollm2", prompt=problem(4)["question"], stream=True)
        chunks = [chunk async for chunk in stream]
        text = "".join(c.choices[0].text for c in chunks if c.choices)
        assert chunks[-1].model_extra["ets"]["metrics"]["generated_tokens"] > 0
        assert bool(text) == (chunks[-1].choices[0].finish_reason == "stop")
    assert await engine_idle(engine, settle_s=10.0)
