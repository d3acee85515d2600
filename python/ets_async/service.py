"""An example async service: one problem per HTTP request, searched with ``solve`` on shared backends.

    ets-async serve --port 8000 [--model NAME] [--set KEY=VALUE ...]
    curl -s localhost:8000/solve -d '{"question": "What is 2 + 3?", "deadline_s": 60}'

``POST /solve`` takes one problem as a JSON object (the fields ``solve_many`` reads: ``question`` or
``problem``, optional ``id`` and ``answer``) plus an optional ``deadline_s``, and answers:

- 200 with the result (``answer``, ``correct`` when an answer was given, candidates, metrics);
- 400 for a body that is not a valid problem, or a bad deadline;
- 504 when the deadline passes first: the search is stopped and its engine requests are aborted;
- 503 when the engine died under the search: the next request starts new backends (the server
  does not answer while they start, about a minute on a CPU);
- 500 when the search failed otherwise (the error says how).

A client that disconnects cancels its search: the server runs with ``handler_cancellation`` on,
so aiohttp cancels the handler, and the cancellation aborts the search's engine requests where
they were made (``backends.vllm_engine.InProcessEngine``). ``GET /health`` answers 200 while the
backends serve, 503 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .api import solve
from .backends import Backends
from .config import SearchConfig
from .errors import ProblemError
from .supervisor import BackendsSupervisor
from .types import Problem

__all__ = ["ServiceConfig", "create_app", "serve"]

log = logging.getLogger("ets_async")


@dataclass(frozen=True)
class ServiceConfig:
    """How the service searches: one SearchConfig for every request, and the deadlines it allows."""

    search: SearchConfig = field(default_factory=SearchConfig)
    default_deadline_s: float = 120.0
    max_deadline_s: float = 600.0


_BACKENDS = web.AppKey("backends", BackendsSupervisor)  # the backends every request shares
_CONFIG = web.AppKey("config", ServiceConfig)


def create_app(
    start_backends: Callable[[], Backends], config: ServiceConfig | None = None, *, backends: Backends | None = None
) -> web.Application:
    """The service as an aiohttp application. ``start_backends`` starts the backends (on first use,
    and again after their engine died); ``backends`` may hand in ones already running."""
    app = web.Application()
    app[_BACKENDS] = BackendsSupervisor(start_backends, backends)
    app[_CONFIG] = config or ServiceConfig()
    app.router.add_post("/solve", _solve)
    app.router.add_get("/health", _health)
    return app


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _deadline(body: dict[str, Any], config: ServiceConfig) -> float:
    value = body.pop("deadline_s", config.default_deadline_s)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ProblemError(f"deadline_s must be a number of seconds > 0, got {value!r}")
    if value > config.max_deadline_s:
        raise ProblemError(f"deadline_s may be at most {config.max_deadline_s:g}, got {value:g}")
    return float(value)


async def _solve(request: web.Request) -> web.Response:
    config = request.app[_CONFIG]
    try:
        body = await request.json()
    except ValueError:
        return _error(400, "the body must be a JSON object holding one problem")
    if not isinstance(body, dict):
        return _error(400, f"the body must be a JSON object holding one problem, got {type(body).__name__}")
    try:
        deadline_s = _deadline(body, config)
        problem = Problem.coerce(body, 0)
    except ProblemError as exc:
        return _error(400, str(exc))
    backends = await request.app[_BACKENDS].get()
    try:
        async with asyncio.timeout(deadline_s):
            result = await solve(
                problem, config.search, policy=backends.policy, prm=backends.prm, embedder=backends.embedder
            )
    except TimeoutError:
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
            "candidates": [{"answer": c.answer, "text": c.text, "step_scores": c.step_scores} for c in result.candidates],
            "metrics": result.metrics.to_dict(),
        }
    )


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
        log.warning("serving on http://%s:%d (POST /solve, GET /health)", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        app[_BACKENDS].shutdown()
