"""The HTTP backends and the fleet router against tiny local servers that mimic vLLM's completions,
pooling and health endpoints: payloads, retries with backoff, timeouts, cancellation that closes the
request, prefix affinity, failover with counted moves, health checks. Fast; no model, no engine."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from ets_async import SearchConfig, solve_many
from ets_async.backends.fleet import (
    EndpointError,
    HttpClient,
    HttpPolicy,
    HttpTransport,
    RequestRejected,
    RetryPolicy,
    Router,
    endpoints_from_env,
    parse_endpoints,
)
from ets_async.backends.fleet.policy import completion_payload, parse_completion
from ets_async.backends.fleet.router import SESSION_HEADERS
from ets_async.backends.fleet.transport import top_logprobs_by_id
from ets_async.backends.prm_kinds import LabelPRM, judge_prm, qwen_prm
from ets_async.backends.protocols import ProblemScope, Sampling, ScoreRequest, current_scope
from ets_async.config import EngineConfig
from ets_async.errors import BackendError, ConfigError

from .fakes import FakeEmbedder, FakePRM

pytestmark = pytest.mark.timeout(60)

YES, NO = 7, 8  # the byte tokenizer's ids of the judge labels " Yes" / " No" (see ByteTokenizer)
FAST = RetryPolicy(timeout_s=5.0, attempts=3, backoff_s=0.01, backoff_max_s=0.05, connect_timeout_s=1.0)


class ByteTokenizer:
    """Token ids are the UTF-8 bytes, except the two judge labels, which are single tokens."""

    chat_template = None
    labels = {" Yes": YES, " No": NO}

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        if text in self.labels:
            return [self.labels[text]]
        return list(text.encode())

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode()


class StaticTokenizer:
    """What HttpPolicy wants from a LazyTokenizer."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer

    def get(self) -> Any:
        return self.tokenizer


@dataclass
class FakeServer:
    """State and behaviour of one fake inference server."""

    fail_next: int = 0  # answer 503 to this many completions requests
    reject: bool = False  # answer 400
    delay_s: float = 0.0
    healthy: bool = True
    payloads: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[int, ...]] = field(default_factory=set)  # prompts computed: the "prefix cache"
    started: int = 0
    cancelled: int = 0
    server: TestServer | None = None
    model_root: str | None = None
    step_rows_only: bool = False  # pool at step tags only, as vLLM's STEP default does
    session_headers: list[dict[str, str]] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("")).rstrip("/")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/pooling", self.pooling)
        app.router.add_get("/health", self.health)
        app.router.add_get("/v1/models", self.models)
        return app

    async def start(self, port: int | None = None) -> FakeServer:
        self.server = TestServer(self.app(), host="127.0.0.1", port=port)
        await self.server.start_server()
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "served-name", "root": self.model_root, "max_model_len": 1536}]})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self.healthy else 503)

    async def completions(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.payloads.append(payload)
        self.session_headers.append({k: v for k, v in request.headers.items() if k in SESSION_HEADERS})
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.Response(status=503, text="overloaded")
        if self.reject:
            return web.json_response({"error": {"message": "prompt too long"}}, status=400)
        self.started += 1
        try:
            await asyncio.sleep(self.delay_s)
        except asyncio.CancelledError:  # the client closed the connection
            self.cancelled += 1
            raise
        prompt = tuple(payload["prompt"])
        cached = max((len(p) for p in self.seen if prompt[: len(p)] == p), default=0)
        self.seen.add(prompt)
        if payload.get("logprobs"):
            choices = [
                {
                    "index": 0,
                    "text": " Yes",
                    "finish_reason": "length",
                    "stop_reason": None,
                    "logprobs": {
                        "top_logprobs": [{f"token_id:{YES}": -0.25, f"token_id:{NO}": -1.5, "token_id:3": -0.1}]
                    },
                }
            ]
        else:
            choices = [self._step(prompt, payload, i) for i in range(payload["n"])]
        usage = {
            "prompt_tokens": len(prompt),
            "completion_tokens": 1,
            "prompt_tokens_details": {"cached_tokens": cached},
        }
        return web.json_response({"choices": choices, "usage": usage})

    @staticmethod
    def _step(prompt: tuple[int, ...], payload: dict[str, Any], i: int) -> dict[str, Any]:
        stop = payload["stop"][0]
        depth = bytes(prompt).decode(errors="replace").count(stop)
        seed = (payload.get("seed") or 0) + i
        text = f"The answer is: {40 + seed % 3}{stop}" if depth >= 2 else f"{seed % 7} + 1 = {seed % 7 + 1}{stop}"
        ids = list(text.encode())[: payload["max_tokens"]]
        return {"index": i, "text": bytes(ids).decode(), "token_ids": ids, "finish_reason": "stop", "stop_reason": stop}

    async def pooling(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.payloads.append(payload)
        rows = [[0.3, 0.7] if t == 99 else [0.5, 0.5] for t in payload["input"] if t == 99 or not self.step_rows_only]
        return web.json_response({"data": [{"index": 0, "data": rows}], "usage": {"prompt_tokens": len(rows)}})


@pytest_asyncio.fixture
async def servers():
    started = [await FakeServer().start(), await FakeServer().start()]
    yield started
    for server in started:
        await server.stop()


def make_router(servers: list[FakeServer], retry: RetryPolicy = FAST, **kwargs: Any) -> Router:
    return Router([s.url for s in servers], HttpClient(retry), **{"health_interval_s": 0.05, **kwargs})


def sampling(seed: int = 1) -> Sampling:
    return Sampling(max_tokens=32, temperature=1.0, top_p=1.0, stop="\n\n", seed=seed)


async def expand_as(policy: HttpPolicy, scope: ProblemScope | None, prompt: list[int], n: int = 2):
    """What the search loop does: the expansion runs inside its problem's scope."""
    token = current_scope.set(scope)
    try:
        return await policy.expand(prompt, n, sampling())
    finally:
        current_scope.reset(token)


# -- payloads and parsing -----------------------------------------------------------------------


def test_completion_payload_sends_token_ids_and_keeps_the_stop_string():
    payload = completion_payload(
        [1, 2, 3], 4, Sampling(max_tokens=9, temperature=0.7, top_p=0.9, stop="\n\n", seed=11), None
    )
    assert payload["prompt"] == [1, 2, 3]
    assert (payload["n"], payload["max_tokens"], payload["seed"]) == (4, 9, 11)
    assert payload["stop"] == ["\n\n"] and payload["include_stop_str_in_output"] is True
    assert payload["return_token_ids"] is True
    assert "model" not in payload and "seed" not in completion_payload([1], 1, Sampling(9, 1.0, 1.0, "\n", None), "m")


def test_parse_completion_reads_token_ids_finish_and_cached_tokens():
    data = {
        "choices": [
            {"index": 1, "text": "b", "token_ids": [5], "finish_reason": "stop", "stop_reason": None},  # EOS: ends
            {"index": 0, "text": "a\n\n", "token_ids": [4, 10, 10], "finish_reason": "stop", "stop_reason": "\n\n"},
            {"index": 2, "text": "c", "token_ids": [6], "finish_reason": "length", "stop_reason": None},
        ],
        "usage": {"prompt_tokens": 12, "prompt_tokens_details": {"cached_tokens": 8}},
    }
    expansion = parse_completion(data, 12)
    assert [s.token_ids for s in expansion.steps] == [(4, 10, 10), (5,), (6,)]
    assert [s.finished for s in expansion.steps] == [False, True, False]
    assert (expansion.prompt_tokens, expansion.cached_tokens) == (12, 8)
    # no prompt_tokens_details (vLLM without --enable-prompt-tokens-details): 0 cached
    assert parse_completion({"choices": [], "usage": {"prompt_tokens": 3}}, 3).cached_tokens == 0
    # SGLang: no token ids (re-tokenised text), matched_stop = the EOS token id
    sglang = {"choices": [{"index": 0, "text": "ab", "finish_reason": "stop", "matched_stop": 2}], "usage": {}}
    step = parse_completion(sglang, 3, lambda text: list(text.encode())).steps[0]
    assert step.token_ids == (97, 98) and step.finished


def test_top_logprobs_are_read_by_token_id_keys_or_label_texts():
    assert top_logprobs_by_id({"token_id:7": -0.5, "token_id:8": -1.0}, {}) == {7: -0.5, 8: -1.0}
    assert top_logprobs_by_id({" Yes": -0.5, "x": -3.0}, {" Yes": 7}) == {7: -0.5}
    with pytest.raises(ValueError):
        top_logprobs_by_id({"x": -1.0}, {" Yes": 7})


def test_endpoints_are_validated_and_read_from_the_environment(monkeypatch):
    assert parse_endpoints(["http://127.0.0.1:8000/", "http://127.0.0.1:8001/v1"]) == [
        "http://127.0.0.1:8000",
        "http://127.0.0.1:8001",
    ]
    with pytest.raises(ConfigError, match="http"):
        parse_endpoints(["127.0.0.1:8000"])
    with pytest.raises(ConfigError, match="twice"):
        parse_endpoints(["http://a:1", "http://a:1/"])
    monkeypatch.setenv("ETS_ASYNC_ENDPOINTS", "http://127.0.0.1:1, http://127.0.0.1:2")
    assert endpoints_from_env() == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert EngineConfig(endpoints=["http://127.0.0.1:1"]).endpoints == ("http://127.0.0.1:1",)


# -- the client: retries, rejections, timeouts, cancellation ---------------------------------------


@pytest.mark.asyncio
async def test_5xx_is_retried_with_backoff_then_succeeds(servers):
    server = servers[0]
    server.fail_next = 2
    client = HttpClient(FAST)
    data = await client.post_json(f"{server.url}/v1/completions", completion_payload([1, 2], 1, sampling(), None))
    assert len(data["choices"]) == 1
    assert len(server.payloads) == 3 and client.retries == 2


@pytest.mark.asyncio
async def test_retries_are_bounded_and_then_the_endpoint_error_names_the_url(servers):
    server = servers[0]
    server.fail_next = 10
    client = HttpClient(FAST)
    with pytest.raises(EndpointError, match=r"HTTP 503") as info:
        await client.post_json(f"{server.url}/v1/completions", completion_payload([1], 1, sampling(), None))
    assert info.value.url.startswith(server.url)
    assert len(server.payloads) == FAST.attempts


@pytest.mark.asyncio
async def test_a_4xx_is_not_retried(servers):
    server = servers[0]
    server.reject = True
    with pytest.raises(RequestRejected, match="400"):
        await HttpClient(FAST).post_json(f"{server.url}/v1/completions", completion_payload([1], 1, sampling(), None))
    assert len(server.payloads) == 1


@pytest.mark.asyncio
async def test_connection_refused_is_an_endpoint_error(servers):
    url = servers[0].url
    await servers[0].stop()
    with pytest.raises(EndpointError):
        await HttpClient(FAST).post_json(f"{url}/v1/completions", {"prompt": [1]})


@pytest.mark.asyncio
async def test_per_request_timeout(servers):
    server = servers[0]
    server.delay_s = 30.0
    client = HttpClient(RetryPolicy(timeout_s=0.3, attempts=2, backoff_s=0.01))
    started = time.monotonic()
    with pytest.raises(EndpointError, match="Timeout"):
        await client.post_json(f"{server.url}/v1/completions", completion_payload([1], 1, sampling(), None))
    assert time.monotonic() - started < 5.0
    assert server.started == 2


@pytest.mark.asyncio
async def test_cancelling_an_expansion_closes_its_request(servers):
    server = servers[0]
    server.delay_s = 30.0
    policy = HttpPolicy(make_router([server]), StaticTokenizer(ByteTokenizer()))
    task = asyncio.create_task(expand_as(policy, ProblemScope("p"), [1, 2, 3]))
    for _ in range(200):
        if server.started:
            break
        await asyncio.sleep(0.01)
    assert server.started == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):  # the server sees the disconnect and drops the request
        if server.cancelled:
            break
        await asyncio.sleep(0.01)
    assert server.cancelled == 1
    assert policy.router.endpoints[0].outstanding == 0
    await policy.aclose()


# -- routing: prefix affinity, least outstanding work, failover -----------------------------------


@pytest.mark.asyncio
async def test_each_problem_sticks_to_one_endpoint_and_new_problems_spread(servers):
    router = make_router(servers)
    policy = HttpPolicy(router, StaticTokenizer(ByteTokenizer()))
    scopes = [ProblemScope(str(i)) for i in range(4)]
    prompts = {s.id: list(f"problem {s.id}|".encode()) for s in scopes}
    first = await asyncio.gather(*(expand_as(policy, s, prompts[s.id]) for s in scopes))
    homes = {s.id: router.endpoint_of(s) for s in scopes}
    # four problems started together: two per endpoint (least outstanding requests at first use)
    assert sorted(e.problems for e in router.endpoints) == [2, 2]
    for s, expansion in zip(scopes, first, strict=True):
        child = prompts[s.id] + list(expansion.steps[0].token_ids)
        second = await expand_as(policy, s, child)
        assert router.endpoint_of(s) is homes[s.id]
        assert second.cached_tokens == len(prompts[s.id])  # the child hit its parent's prefix there
    for server in servers:
        owners = {bytes(p["prompt"]).split(b"|")[0] for p in server.payloads}
        assert len(owners) == 2  # each server saw exactly its own two problems
    # a request outside any search goes to the least loaded endpoint and pins nothing
    await expand_as(policy, None, [1, 2])
    assert sum(e.problems for e in router.endpoints) == 4
    await policy.aclose()


@pytest.mark.asyncio
async def test_a_failed_endpoint_is_marked_down_its_problem_moves_and_it_comes_back(servers):
    router = make_router(servers)
    policy = HttpPolicy(router, StaticTokenizer(ByteTokenizer()))
    scope = ProblemScope("moving")
    await expand_as(policy, scope, [1, 2, 3])
    home = router.endpoint_of(scope)
    dead = next(s for s in servers if s.url == home.url)
    other = next(s for s in servers if s is not dead)
    dead.fail_next, dead.healthy = 100, False  # 5xx on every request; /health fails too
    expansion = await expand_as(policy, scope, [1, 2, 3, 4])
    assert len(expansion.steps) == 2
    assert router.endpoint_of(scope).url == other.url
    assert scope.endpoint_moves == 1 and router.moves == 1
    assert not home.up
    await expand_as(policy, scope, [1, 2, 3, 4, 5])  # stays on its new endpoint: no further move
    assert scope.endpoint_moves == 1
    dead.fail_next, dead.healthy = 0, True
    for _ in range(200):  # the background health check brings it back
        if home.up:
            break
        await asyncio.sleep(0.01)
    assert home.up
    assert router.endpoint_of(scope).url == other.url  # a moved problem does not move back
    await policy.aclose()


@pytest.mark.asyncio
async def test_no_live_endpoint_fails_the_request_after_the_wait(servers):
    for server in servers:
        server.fail_next, server.healthy = 100, False
    router = make_router(servers, all_down_wait_s=0.3)
    policy = HttpPolicy(router, StaticTokenizer(ByteTokenizer()))
    started = time.monotonic()
    with pytest.raises(BackendError, match="endpoint"):
        await expand_as(policy, ProblemScope("x"), [1])
    assert time.monotonic() - started < 10.0
    await policy.aclose()


@pytest.mark.asyncio
async def test_every_request_of_a_problem_carries_its_session_key_for_a_router_in_front(servers):
    router = make_router(servers[:1])
    tokenizer = ByteTokenizer()
    policy = HttpPolicy(router, StaticTokenizer(tokenizer))
    prm = judge_prm(HttpTransport(router, StaticTokenizer(tokenizer)), tokenizer, question="?")
    await expand_as(policy, ProblemScope("gsm8k-17"), [1, 2])
    await prm.score([ScoreRequest((1, 2, 3), "q", ("x",), ProblemScope("gsm8k-17"))])
    await expand_as(policy, None, [1, 2])  # outside a search: no session
    (server,) = servers[:1]
    assert [p.get("user") for p in server.payloads] == ["gsm8k-17", "gsm8k-17", None]
    assert server.session_headers == [dict.fromkeys(SESSION_HEADERS, "gsm8k-17")] * 2 + [{}]
    await policy.aclose()


# -- PRMs over HTTP -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_judge_prm_follows_its_problem_to_the_policy_endpoint(servers):
    router = make_router(servers)
    tokenizer = ByteTokenizer()
    policy = HttpPolicy(router, StaticTokenizer(tokenizer))
    prm = judge_prm(HttpTransport(router, StaticTokenizer(tokenizer)), tokenizer, question="?")
    scopes = [ProblemScope("a"), ProblemScope("b")]
    for scope in scopes:
        await expand_as(policy, scope, list(f"{scope.id}|".encode()))
    requests = [ScoreRequest(tuple(f"{s.id}|x".encode()), "q", ("x",), s) for s in scopes]
    scores = await prm.score(requests)
    expected = 1.0 / (1.0 + pow(2.718281828459045, -1.5 + 0.25))
    assert scores == pytest.approx([expected, expected])
    for scope in scopes:
        server = next(s for s in servers if s.url == router.endpoint_of(scope).url)
        judged = [p for p in server.payloads if p.get("logprobs")]
        assert [bytes(p["prompt"][:2]) for p in judged] == [f"{scope.id}|".encode()]
        assert judged[0]["allowed_token_ids"] == [YES, NO] and judged[0]["max_tokens"] == 1
        assert judged[0]["prompt"][-1] == ord("?")  # the question suffix extends the policy's token ids
    await policy.aclose()


class QwenLikeTokenizer:
    def apply_chat_template(self, messages, tokenize, add_generation_prompt):
        return "|".join(m["content"] for m in messages)

    def encode(self, text: str) -> list[int]:
        return [99 if c == "#" else ord(c) % 90 for c in text.replace("<extra_0>", "#")]

    def convert_tokens_to_ids(self, token: str) -> int:
        return 99


@pytest.mark.asyncio
async def test_pooling_prm_reads_the_newest_step_separator(servers):
    router = make_router(servers[:1])
    prm = qwen_prm(HttpTransport(router, StaticTokenizer(QwenLikeTokenizer())), QwenLikeTokenizer())
    (score,) = await prm.score([ScoreRequest((1,), "problem", ("one", "two"))])
    assert score == pytest.approx(0.7)
    assert servers[0].payloads[0]["task"] == "token_classify"
    await router.aclose()


@pytest.mark.asyncio
async def test_a_pooling_server_with_step_rows_only_is_a_clear_error(servers):
    servers[0].step_rows_only = True
    router = make_router(servers[:1])
    prm = qwen_prm(HttpTransport(router, StaticTokenizer(QwenLikeTokenizer())), QwenLikeTokenizer())
    with pytest.raises(BackendError, match="tok_pooling_type.*ALL"):
        await prm.score([ScoreRequest((1,), "problem", ("one", "two"))])
    await router.aclose()


# -- the whole search over a fleet ----------------------------------------------------------------


SMALL = SearchConfig(method="rebase", width=4, max_step_tokens=32, max_tokens=128, max_depth=4, seed=3)


@pytest.mark.asyncio
async def test_solve_many_over_two_servers_keeps_each_problem_on_one(servers):
    router = make_router(servers)
    policy = HttpPolicy(router, StaticTokenizer(ByteTokenizer()))
    problems = [{"id": f"p{i}", "question": f"question {i}"} for i in range(6)]
    results = await solve_many(problems, SMALL, policy=policy, prm=FakePRM(), embedder=FakeEmbedder())
    assert all(r.error is None and r.answer is not None for r in results), [r.error for r in results]
    assert all(r.metrics.endpoint_moves == 0 for r in results)
    for i in range(6):
        hits = [s for s in servers if any(f"question {i}".encode() in bytes(p["prompt"]) for p in s.payloads)]
        assert len(hits) == 1, f"problem {i} hit {len(hits)} servers"
    assert all(s.payloads for s in servers)  # both servers worked
    await policy.aclose()


@pytest.mark.asyncio
async def test_a_server_dying_mid_batch_loses_no_problem(servers):
    router = make_router(servers)
    policy = HttpPolicy(router, StaticTokenizer(ByteTokenizer()))
    for server in servers:
        server.delay_s = 0.02
    problems = [f"question {i}" for i in range(6)]

    async def kill_later():
        while len(servers[0].payloads) < 3:
            await asyncio.sleep(0.005)
        await servers[0].stop()  # connection refused from now on; /health too

    killer = asyncio.create_task(kill_later())
    results = await solve_many(problems, SMALL, policy=policy, prm=FakePRM(), embedder=FakeEmbedder())
    await killer
    assert all(r.error is None and r.answer is not None for r in results), [r.error for r in results]
    assert sum(r.metrics.endpoint_moves for r in results) >= 1
    assert sum(r.metrics.endpoint_moves for r in results) == router.moves
    assert not router.endpoints[0].up
    await policy.aclose()


# -- configuration: EngineConfig.endpoints -> load_backends -----------------------------------------


@pytest.mark.asyncio
async def test_load_backends_with_endpoints_builds_the_fleet(servers, tmp_path, monkeypatch):
    from ets_async import load_backends
    from ets_async.backends.fleet import LazyTokenizer

    config = EngineConfig(endpoints=[s.url for s in servers], prm="judge")
    servers[0].model_root = str(tmp_path / "not-here")
    with pytest.raises(ConfigError, match="tokenizer"):  # no local tokenizer anywhere: says how to fix it
        await asyncio.to_thread(load_backends, config)  # a thread: the loader blocks on /v1/models

    servers[0].model_root = str(tmp_path)  # the servers report a local directory: its tokenizer is used
    monkeypatch.setattr(LazyTokenizer, "get", lambda self: ByteTokenizer())
    backends = await asyncio.to_thread(load_backends, config)
    assert isinstance(backends.policy, HttpPolicy) and isinstance(backends.prm, LabelPRM)
    assert backends.policy.max_model_len == 1536 and backends.policy.model == "served-name"
    assert [e.url for e in backends.policy.router.endpoints] == [s.url for s in servers]
    assert backends.prm.transport.router is backends.policy.router  # the judge follows the policy's routing
