"""The HTTP service of ``ets-async serve``: one search per request, on backends shared by all requests.

    ets-async serve --port 8000 [--model NAME | --endpoint URL ...] [--api-key KEY] [--set KEY=VALUE ...]

OpenAI's API (the wire format is ``openai_api``): ``POST /v1/chat/completions`` and
``/v1/completions`` search the request's problem and answer with the chosen trajectory, ``usage``
counting every token the search spent and the search's metadata in ``ets``; with ``stream`` the
answer comes as server-sent events, with a comment line every ``heartbeat_s`` while the search runs.
``GET /v1/models`` lists the served model with each method's suffix. Errors are OpenAI error objects.

``POST /solve`` (the first API, kept) takes one problem as a JSON object (the fields ``solve_many``
reads: ``question`` or ``problem``, optional ``id`` and ``answer``) plus an optional ``deadline_s``,
and answers 200 with the result, 400 for a bad problem or deadline (``{"error": message}``), 504
when the deadline passes first.

Every search has a deadline (``deadline_s``; in the OpenAI API inside the ``search`` object). Past
it the search is stopped and its engine requests are aborted; an OpenAI request then gets the
anytime answer, the vote over the trajectories finished in time, with ``finish_reason`` "length"
and ``ets.anytime`` true (504 if none finished). 503: the engine died under the search (the next
request starts new backends); 500: the search failed otherwise.

Guard rails: with ``api_key`` every route but ``/health`` wants ``Authorization: Bearer KEY`` (401
otherwise; compared in constant time); a body over ``max_body_bytes`` gets 413; past
``max_concurrent_searches`` searches in flight a request gets 429 with Retry-After. A client that
disconnects cancels its search: the server runs with ``handler_cancellation`` on, so aiohttp cancels
the handler, and the cancellation aborts the search's engine requests where they were made.
``GET /health`` answers 200 while the backends serve, 503 otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from . import openai_api
from .api import solve
from .backends import Backends
from .config import SearchConfig
from .errors import ProblemError
from .openai_api import ApiError, SearchRequest
from .supervisor import BackendsSupervisor
from .types import ErrorKind, Problem, ProblemResult

__all__ = ["ServiceConfig", "create_app", "serve"]

log = logging.getLogger("ets_async")


@dataclass(frozen=True)
class ServiceConfig:
    """How the service searches (``search``: the default of every request) and its limits."""

    search: SearchConfig = field(default_factory=SearchConfig)
    default_deadline_s: float = 120.0
    max_deadline_s: float = 600.0
    model_name: str = "ets-async"  # the model /v1/models lists
    api_key: str | None = None
    max_body_bytes: int = 1 << 20
    max_concurrent_searches: int = 64
    max_width: int = 64  # the widest search a request may ask for
    heartbeat_s: float = 1.0  # a stream's progress comment while its search runs


class _Slots:
    """The searches in flight, at most ``limit``; one more is refused at once (429), never queued."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.busy = 0

    @contextlib.contextmanager
    def take(self) -> Iterator[None]:
        if self.busy >= self.limit:
            raise ApiError(429, f"the server runs {self.limit} searches already; try again", retry_after_s=1)
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1


_BACKENDS = web.AppKey("backends", BackendsSupervisor)  # the backends every request shares
_CONFIG = web.AppKey("config", ServiceConfig)
_SLOTS = web.AppKey("slots", _Slots)


def create_app(
    start_backends: Callable[[], Backends], config: ServiceConfig | None = None, *, backends: Backends | None = None
) -> web.Application:
    """The service as an aiohttp application. ``start_backends`` starts the backends (on first use,
    and again after their engine died); ``backends`` may hand in ones already running."""
    config = config or ServiceConfig()
    app = web.Application(client_max_size=config.max_body_bytes, middlewares=[_guard])
    app[_BACKENDS] = BackendsSupervisor(start_backends, backends)
    app[_CONFIG] = config
    app[_SLOTS] = _Slots(config.max_concurrent_searches)
    app.router.add_post("/solve", _solve)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/health", _health)
    return app


def _api_error(error: ApiError) -> web.Response:
    headers = {"Retry-After": str(error.retry_after_s)} if error.retry_after_s is not None else None
    if error.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def _guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The API key, and every refusal as an OpenAI error object (413 and 404 from aiohttp too)."""
    key = request.app[_CONFIG].api_key
    try:
        if key is not None and request.path != "/health":
            sent = request.headers.get("Authorization", "")
            if not hmac.compare_digest(sent.encode(), f"Bearer {key}".encode()):
                raise ApiError(401, "missing or wrong API key (Authorization: Bearer KEY)")
        return await handler(request)
    except ApiError as exc:
        return _api_error(exc)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _api_error(ApiError(exc.status, exc.text or exc.reason))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _deadline(value: Any, config: ServiceConfig) -> float:
    """A request's deadline in seconds (None: the default); ProblemError if it is not one."""
    if value is None:
        return config.default_deadline_s
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProblemError(f"deadline_s must be a number of seconds > 0, got {value!r}")
    if value > config.max_deadline_s:
        raise ProblemError(f"deadline_s may be at most {config.max_deadline_s:g}, got {value:g}")
    return float(value)


async def _search(
    request: web.Request, problem: Problem, search: SearchConfig, deadline_s: float
) -> tuple[ProblemResult, Backends]:
    """One search, stopped at its deadline (its result then holds the anytime answer)."""
    backends = await request.app[_BACKENDS].get()
    config = search.replace(problem_timeout_s=deadline_s)
    result = await solve(problem, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder)
    return result, backends


async def _solve(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be a JSON object holding one problem")
    if not isinstance(body, dict):
        return _error(400, f"the body must be a JSON object holding one problem, got {type(body).__name__}")
    try:
        deadline_s = _deadline(body.pop("deadline_s", None), config)
        problem = Problem.coerce(body, 0)
    except ProblemError as exc:
        return _error(400, str(exc))
    with request.app[_SLOTS].take():
        result, backends = await _search(request, problem, config.search, deadline_s)
    if result.error_kind == ErrorKind.TIMEOUT:
        return _error(504, f"no answer within the deadline of {deadline_s:g}s; the search was stopped")
    if result.error is not None:
        if (failure := backends.failure()) is not None:
            return _error(503, f"{failure}; the engine is being restarted, try again")
        return _error(500, result.error)
    return web.json_response(
        {
            "id": result.id,
            "answer": result.answer,
            "correct": result.correct,
            "candidates": [
                {"answer": c.answer, "text": c.text, "step_scores": c.step_scores} for c in result.candidates
            ],
            "metrics": result.metrics.to_dict(),
        }
    )


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, "chat")


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _openai(request, "completion")


async def _openai(request: web.Request, kind: openai_api.Kind) -> web.StreamResponse:
    config = request.app[_CONFIG]
    try:
        body = await request.json()
    except ValueError:
        raise ApiError(400, "the body must be JSON") from None
    search = openai_api.parse_request(body, kind, config.search, config.max_width)
    try:
        deadline_s = _deadline(search.deadline_s, config)
    except ProblemError as exc:
        raise ApiError(400, str(exc), param="search") from None
    with request.app[_SLOTS].take():
        if search.stream:
            return await _stream(request, search, deadline_s)
        result, backends = await _search(request, search.problem, search.config, deadline_s)
        meta = await _answered(result, backends, search, deadline_s)
    return web.json_response(openai_api.response_body(search, result, meta))


async def _answered(
    result: ProblemResult, backends: Backends, search: SearchRequest, deadline_s: float
) -> dict[str, Any]:
    """The ``ets`` metadata of a result that answers (a finished search, or an anytime answer);
    ApiError for one that does not."""
    if result.error_kind == ErrorKind.TIMEOUT and result.answer is None:
        raise ApiError(504, f"no trajectory finished within the deadline of {deadline_s:g}s; the search was stopped")
    if result.error is not None and result.error_kind != ErrorKind.TIMEOUT:
        if (failure := backends.failure()) is not None:
            raise ApiError(503, f"{failure}; the engine is being restarted, try again")
        raise ApiError(400 if result.error_kind == ErrorKind.PROBLEM else 500, result.error)
    return await asyncio.to_thread(openai_api.metadata, result, search.config)


async def _stream(request: web.Request, search: SearchRequest, deadline_s: float) -> web.StreamResponse:
    """Server-sent events: the opening chunk, a comment every ``heartbeat_s`` while the search runs,
    then the answer's chunks (or an error object) and ``[DONE]``."""
    heartbeat_s = request.app[_CONFIG].heartbeat_s
    task = asyncio.create_task(_search(request, search.problem, search.config, deadline_s))
    try:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        await _send(response, openai_api.opening_chunk(search))
        started = time.monotonic()
        while not (await asyncio.wait({task}, timeout=heartbeat_s))[0]:
            await response.write(f": searching, {time.monotonic() - started:.0f}s\n\n".encode())
        try:
            result, backends = task.result()
            meta = await _answered(result, backends, search, deadline_s)
            chunks = openai_api.answer_chunks(search, result, meta)
        except ApiError as exc:
            chunks = [exc.body()]
        for chunk in chunks:
            await _send(response, chunk)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
    finally:  # a client that left (the handler is cancelled) stops its search
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _send(response: web.StreamResponse, data: dict[str, Any]) -> None:
    await response.write(f"data: {json.dumps(data)}\n\n".encode())


async def _models(request: web.Request) -> web.Response:
    return web.json_response(openai_api.models_list(request.app[_CONFIG].model_name))


async def _health(request: web.Request) -> web.Response:
    backends = request.app[_BACKENDS].current
    if backends is None:
        return _error(503, "the backends are not started yet")
    if (failure := backends.failure()) is not None:
        return _error(503, failure)
    return web.json_response({"status": "ok"})


async def serve(start_backends: Callable[[], Backends], config: ServiceConfig, host: str, port: int) -> None:
    """Run the service until cancelled (Ctrl-C); the backends start before the first request."""
    app = create_app(start_backends, config)
    await app[_BACKENDS].get()
    runner = web.AppRunner(app, handler_cancellation=True)  # a client that disconnects cancels its search
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.warning(
            "serving %s on http://%s:%d (POST /v1/chat/completions, /v1/completions, /solve; GET /v1/models, /health)",
            config.model_name,
            host,
            port,
        )
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        app[_BACKENDS].shutdown()
