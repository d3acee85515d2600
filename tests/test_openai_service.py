"""The service's OpenAI API with the real ``openai`` package (sync and async clients, streamed and
not) against a live server on a loopback port over scripted backends: the answer and its metadata,
the search a request names, usage, anytime answers at the deadline, the guard rails (API key, body
size, concurrent searches, bad bodies) and a client that disconnects. One test on the real engine is
in test_engine_service.py."""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time

import aiohttp
import openai
import pytest
from aiohttp import web
from ets_async import SearchConfig
from ets_async.backends import Backends
from ets_async.openai_api import ApiError, parse_request
from ets_async.service import ServiceConfig, create_app

from .fakes import FakeEmbedder, FakePolicy, FakePRM

pytestmark = pytest.mark.timeout(120)

KEY = "sk-test-key"
SEARCH = SearchConfig(method="rebase", width=4, max_step_tokens=32, max_tokens=256, max_depth=6, seed=1)
QUESTION = "What is 1 + 1?"


async def start(policy: FakePolicy | None = None, **config) -> tuple[str, web.AppRunner, FakePolicy]:
    """The service as ``ets-async serve`` runs it (handler cancellation on), on a free port."""
    policy = policy or FakePolicy()
    backends = Backends(policy, FakePRM(), FakeEmbedder())
    service = ServiceConfig(SEARCH, model_name="tiny", api_key=KEY, heartbeat_s=0.05, **config)
    runner = web.AppRunner(create_app(lambda: backends, service, backends=backends), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return f"http://127.0.0.1:{port}", runner, policy


@pytest.fixture()
async def server():
    url, runner, policy = await start()
    yield url, policy
    await runner.cleanup()


def client(url: str, key: str = KEY) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


async def test_a_chat_completion_answers_with_the_chosen_trajectory_and_its_search(server):
    url, _ = server
    async with client(url) as api:
        response = await api.chat.completions.create(
            model="tiny", messages=[{"role": "system", "content": "ignored"}, {"role": "user", "content": QUESTION}]
        )
    (choice,) = response.choices
    meta = response.model_extra["ets"]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert meta["answer"] in choice.message.content  # the chosen trajectory states the answer
    assert (meta["method"], meta["width"], meta["anytime"]) == ("rebase", 4, False)
    assert meta["stop_reason"] == "complete" and meta["votes"] and len(meta["candidates"]) >= 1
    assert sum(v["count"] for v in meta["votes"]) == sum(c["answer"] is not None for c in meta["candidates"])
    assert response.usage.completion_tokens == meta["metrics"]["generated_tokens"] > 0
    assert response.usage.prompt_tokens == meta["metrics"]["prompt_tokens"]
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


async def test_the_request_names_the_search_by_suffix_or_extra_body(server):
    url, policy = server
    async with client(url) as api:
        by_suffix = await api.chat.completions.create(
            model="tiny:best_of_n-3", messages=[{"role": "user", "content": QUESTION}]
        )
        assert (by_suffix.model_extra["ets"]["method"], by_suffix.model_extra["ets"]["width"]) == ("best_of_n", 3)
        policy.samplings.clear()
        by_body = await api.completions.create(
            model="tiny:best_of_n-3",  # the search object wins over the suffix
            prompt=QUESTION,
            extra_body={
                "search": {
                    "method": "best_of_n",
                    "width": 8,
                    "budget_tokens": 800,
                    "stop_when": "supermajority",
                    "stop_min_finished": 2,
                }
            },
        )
    meta = by_body.model_extra["ets"]
    assert (meta["method"], meta["width"]) == ("best_of_n", 8) and by_body.choices[0].text
    assert max(s.max_tokens for s in policy.samplings) <= 32  # min(max_step_tokens, 800 // 8)
    assert by_body.usage.completion_tokens <= 800
    assert meta["metrics"]["waves"] >= 1 and meta["stop_reason"] in ("settled", "complete")


async def test_streams_progress_then_the_answer_sync_and_async(server):
    url, _ = server
    messages = [{"role": "user", "content": QUESTION}]
    async with client(url) as api:
        stream = await api.chat.completions.create(
            model="tiny", messages=messages, stream=True, stream_options={"include_usage": True}
        )
        chunks = [chunk async for chunk in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    final = next(c for c in chunks if c.choices and c.choices[0].finish_reason)
    assert final.choices[0].finish_reason == "stop" and final.model_extra["ets"]["answer"] in text
    assert chunks[-1].usage.completion_tokens > 0 and chunks[-1].choices == []

    def sync_stream() -> str:  # the sync client, off the event loop that serves it
        with openai.OpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0) as api:
            return "".join(
                c.choices[0].text for c in api.completions.create(model="tiny", prompt=QUESTION, stream=True)
            )

    assert await asyncio.to_thread(sync_stream)


async def test_a_slow_search_streams_comments_while_it_runs():
    url, runner, _ = await start(FakePolicy(delay_s=0.1))
    try:
        async with aiohttp.ClientSession() as session:
            body = {"model": "tiny", "messages": [{"role": "user", "content": QUESTION}], "stream": True}
            async with session.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}
            ) as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                raw = (await r.read()).decode()
        assert raw.count(": searching") >= 2 and raw.endswith("data: [DONE]\n\n")
    finally:
        await runner.cleanup()


async def test_a_deadline_gives_the_anytime_answer_or_504():
    class LateDepths(FakePolicy):  # fast until trajectories finished, then every expansion hangs
        async def expand(self, prompt_token_ids, n, sampling):
            if bytes(prompt_token_ids).decode().count(sampling.stop) >= 3:
                await asyncio.sleep(30)
            return await super().expand(prompt_token_ids, n, sampling)

    url, runner, policy = await start(LateDepths())
    try:
        async with client(url) as api:
            response = await api.chat.completions.create(
                model="tiny", messages=[{"role": "user", "content": QUESTION}],
                # width 32: each depth-3 step answers with p = 0.7 and the request id seeds them, so at width
                # 8 all of them answered before the hang in 0.7^8 = 6% of runs (a CI flake); 0.7^32 is 1e-5
                extra_body={"search": {"width": 32, "deadline_s": 1}},
            )
            meta = response.model_extra["ets"]
            assert response.choices[0].finish_reason == "length" and meta["anytime"] is True
            assert meta["stop_reason"] == "deadline" and meta["answer"] in response.choices[0].message.content
            policy.delay_s = 30  # nothing finishes in time
            with pytest.raises(openai.APIStatusError) as error:
                await api.chat.completions.create(
                    model="tiny",
                    messages=[{"role": "user", "content": QUESTION}],
                    extra_body={"search": {"deadline_s": 0.2}},
                )
            assert error.value.status_code == 504 and "deadline of 0.2s" in error.value.message
        assert policy.in_flight == 0  # the stopped searches' engine requests were aborted
    finally:
        await runner.cleanup()


async def test_bad_keys_and_bad_bodies_get_openai_errors(server):
    url, _ = server
    user = [{"role": "user", "content": QUESTION}]
    async with client(url, key="wrong") as api:
        with pytest.raises(openai.AuthenticationError):
            await api.chat.completions.create(model="tiny", messages=user)
    async with client(url) as api:
        listed = [m.id for m in (await api.models.list()).data]
        assert listed[0] == "tiny" and "tiny:ets" in listed
        for kwargs, message in [
            ({"messages": []}, "non-empty list"),
            ({"messages": [{"role": "system", "content": "x"}]}, "user message"),
            ({"messages": [{"role": "user", "content": "  "}]}, "empty problem text"),
            ({"messages": user, "model": "tiny:nosuch-4"}, "unknown search method 'nosuch'"),
            ({"messages": user, "n": 2}, "n must be 1"),
            ({"messages": user, "extra_body": {"search": {"width": 1000}}}, "at most 64"),
            ({"messages": user, "extra_body": {"search": {"width": 0}}}, "width"),
            ({"messages": user, "extra_body": {"search": {"max_concurrent_problems": 9}}}, "unknown search field"),
            ({"messages": user, "extra_body": {"search": {"budget_tokens": 2}}}, "budget_tokens must be"),
            ({"messages": user, "extra_body": {"search": {"deadline_s": -1}}}, "deadline_s must be"),
            ({"messages": user, "extra_body": {"search": {"deadline_s": 10_000}}}, "at most 600"),
        ]:
            with pytest.raises(openai.BadRequestError) as error:
                await api.chat.completions.create(**{"model": "tiny", **kwargs})
            assert message in error.value.message, (kwargs, error.value.body)
            assert error.value.body["type"] == "invalid_request_error"
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", data="not json", headers=headers) as r:
            assert r.status == 400 and (await r.json())["error"]["message"] == "the body must be JSON"
        big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * (2 << 20)}]}).encode()
        async with session.post(f"{url}/v1/chat/completions", data=io.BytesIO(big), headers=headers) as r:
            assert r.status == 413 and "Maximum request body size" in (await r.json())["error"]["message"]
        async with session.post(f"{url}/solve", json={"question": QUESTION}) as r:  # every route wants the key
            assert r.status == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        async with session.get(f"{url}/health") as r:  # but the health check
            assert r.status == 200


async def test_past_the_concurrent_searches_a_request_gets_429():
    url, runner, policy = await start(FakePolicy(delay_s=0.5), max_concurrent_searches=2)
    try:
        async with client(url) as api:
            async def ask() -> object:
                return await api.chat.completions.create(model="tiny", messages=[{"role": "user", "content": QUESTION}])

            first = [asyncio.create_task(ask()) for _ in range(2)]
            while policy.in_flight == 0:
                await asyncio.sleep(0.01)
            with pytest.raises(openai.RateLimitError) as error:
                await ask()
            assert error.value.response.headers["Retry-After"] == "1"
            await asyncio.gather(*first)  # the two in flight are answered
    finally:
        await runner.cleanup()


async def test_a_client_that_disconnects_cancels_its_search_and_aborts_its_engine_requests():
    url, runner, policy = await start(FakePolicy(delay_s=30))
    user = [{"role": "user", "content": QUESTION}]

    async def engine_requests_aborted(before: int) -> bool:
        for _ in range(200):
            if policy.in_flight == 0 and policy.cancelled > before:
                return True
            await asyncio.sleep(0.01)
        return False

    try:
        async with openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=KEY, max_retries=0, timeout=0.5) as api:
            with pytest.raises(openai.APITimeoutError):  # gives up waiting: the connection closes
                await api.chat.completions.create(model="tiny", messages=user)
            assert await engine_requests_aborted(0)
            cancelled = policy.cancelled
            stream = await api.chat.completions.create(model="tiny", messages=user, stream=True)
            first = await stream.__anext__()  # the opening chunk; the search is running
            assert first.choices[0].delta.role == "assistant"
            while not policy.in_flight:
                await asyncio.sleep(0.01)
            await stream.close()  # leaves mid-search
            assert await engine_requests_aborted(cancelled)
    finally:
        await runner.cleanup()


def test_parse_request_reads_the_problem_and_maps_the_openai_fields():
    request = parse_request(
        {"model": "m:ets-8", "messages": [{"role": "user", "content": [{"type": "text", "text": "Q?"}]}],
         "max_tokens": 64, "temperature": 0.5, "seed": 7, "search": {"budget_tokens": 256}},
        "chat", SEARCH, 64,
    )
    config = request.config
    assert request.problem.text == "Q?" and request.problem.id == request.id
    assert (config.method, config.width, config.temperature, config.seed) == ("ets", 8, 0.5, 7)
    assert (config.max_tokens, config.max_step_tokens) == (32, 32)  # min(64, 256 // 8); a step fits
    with pytest.raises(ApiError, match="one string"):
        parse_request({"model": "m", "prompt": ["a", "b"]}, "completion", SEARCH, 64)


def test_ets_async_serve_answers_openai_clients(tmp_path):
    """The command as users start it (scripted backends), its API key from the environment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "ETS_ASYNC_API_KEY": KEY}
    command = [sys.executable, "-m", "ets_async", "serve", "--backend", "fake", "--port", str(port), "--max-width", "8"]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0)
        for _ in range(300):
            try:
                listed = api.models.list()
                break
            except openai.APIConnectionError:
                assert server.poll() is None
                time.sleep(0.1)
        assert listed.data[0].id == "fake"
        response = api.chat.completions.create(model="fake:ets-8", messages=[{"role": "user", "content": QUESTION}])
        assert response.model_extra["ets"]["method"] == "ets" and response.choices[0].message.content
        with pytest.raises(openai.BadRequestError, match="at most 8"):
            api.chat.completions.create(model="fake:ets-16", messages=[{"role": "user", "content": QUESTION}])
        api.close()
    finally:
        server.terminate()
        server.wait(timeout=30)
