"""Routing over a fleet of inference servers: one endpoint per problem (prefix affinity), least
outstanding work for new problems, and failover of a failed endpoint's problems to a live one.

A problem is identified by its ``ProblemScope`` (set by the search loop; see ``protocols.py``).
Every request of a scope goes to the endpoint it was pinned to, so the server's prefix cache holds
the problem's tree. When that endpoint fails (``EndpointError``: connection errors, timeouts, 5xx
after the client's retries), it is marked down and health-checked in the background (``GET
/health`` until it answers), and the request is sent again on another live endpoint, where the
problem stays pinned from then on. The search keeps its tree client-side, so nothing is lost; the
move is counted in ``scope.endpoint_moves``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import weakref
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ...errors import BackendError, ConfigError
from ..protocols import ProblemScope
from .client import EndpointError, HttpClient

log = logging.getLogger("ets_async")

T = TypeVar("T")

ENDPOINTS_ENV = "ETS_ASYNC_ENDPOINTS"

SESSION_HEADERS = ("X-Session-ID", "X-SMG-Routing-Key")
"""Where standard routers read a session key: vllm-router's consistent_hash and sticky policies take
``X-Session-ID`` first (then ``session_params.session_id``, then the body's ``user``, which every
request also carries); the SGLang model gateway's sticky sessions take ``X-SMG-Routing-Key``."""


def session_headers(key: str | None) -> dict[str, str]:
    """The headers that carry a problem's session key (none for requests outside a search)."""
    return {} if key is None else dict.fromkeys(SESSION_HEADERS, key)


def parse_endpoints(urls: Sequence[str] | str) -> list[str]:
    """Validated base URLs (``http://host:port``, optionally with a path prefix), without the trailing
    ``/`` and without a trailing ``/v1``. A string is split on commas and whitespace."""
    if isinstance(urls, str):
        urls = urls.replace(",", " ").split()
    result: list[str] = []
    for url in urls:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"endpoint {url!r} must be an http(s) URL such as http://127.0.0.1:8000")
        base = url.strip().rstrip("/")
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        if base in result:
            raise ConfigError(f"endpoint {base} is listed twice")
        result.append(base)
    return result


def endpoints_from_env() -> list[str]:
    """Endpoints from ``$ETS_ASYNC_ENDPOINTS`` (comma or space separated); empty when unset."""
    return parse_endpoints(os.environ.get(ENDPOINTS_ENV, ""))


@dataclass(eq=False)
class Endpoint:
    """One server and the router's view of it."""

    url: str
    up: bool = True
    outstanding: int = 0
    problems: int = 0  # scopes pinned here now
    requests: int = 0
    failures: int = 0
    health_task: asyncio.Task[None] | None = field(default=None, repr=False)


class Router:
    """Pins problems to endpoints and moves them off failed ones.

    ``call(scope, send)`` runs ``send(endpoint_url)`` on the scope's endpoint and fails over on
    ``EndpointError``. A request with no scope (a caller outside the search loop) goes to the least
    loaded endpoint and is not pinned.
    """

    def __init__(
        self,
        urls: Sequence[str],
        client: HttpClient,
        *,
        health_interval_s: float = 1.0,
        all_down_wait_s: float = 30.0,
    ) -> None:
        self.endpoints = [Endpoint(u) for u in parse_endpoints(urls)]
        if not self.endpoints:
            raise ConfigError(f"a fleet needs at least one endpoint (--endpoint URL or ${ENDPOINTS_ENV})")
        self.client = client
        self.health_interval_s = health_interval_s
        self.all_down_wait_s = all_down_wait_s
        # Weak keys: a finished search's scope disappears from the table by itself.
        self._pins: weakref.WeakKeyDictionary[ProblemScope, _Pin] = weakref.WeakKeyDictionary()
        self.moves = 0

    def endpoint_of(self, scope: ProblemScope) -> Endpoint | None:
        """The endpoint a scope is pinned to, if any."""
        pin = self._pins.get(scope)
        return None if pin is None else pin.endpoint

    def _least_loaded(self) -> Endpoint | None:
        live = [e for e in self.endpoints if e.up]
        if not live:
            return None
        # Least outstanding requests, then fewest pinned problems; list order breaks ties.
        return min(live, key=lambda e: (e.outstanding, e.problems))

    def _pick(self, scope: ProblemScope | None) -> Endpoint | None:
        if scope is None:
            return self._least_loaded()
        pin = self._pins.get(scope)
        if pin is not None and pin.endpoint.up:
            return pin.endpoint
        chosen = self._least_loaded()
        if chosen is None:
            return None
        if pin is None:
            pin = self._pins[scope] = _Pin(chosen)
            weakref.finalize(scope, pin.release)  # the pin ends with the search
        else:
            log.info("problem %s moves from %s to %s", scope.id, pin.endpoint.url, chosen.url)
            pin.endpoint.problems -= 1
            pin.endpoint = chosen
            scope.endpoint_moves += 1
            self.moves += 1
        chosen.problems += 1
        return chosen

    async def post(self, scope: ProblemScope | None, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST ``payload`` to ``path`` on the scope's endpoint (``call``), carrying the problem's
        session key (``session_key``) so that a router in front of the servers keeps it on one too."""
        key = None if scope is None else scope.id
        if key is not None:
            payload = {**payload, "user": key}
        headers = session_headers(key)

        async def send(url: str) -> dict[str, Any]:
            return await self.client.post_json(f"{url}{path}", payload, headers=headers)

        return await self.call(scope, send)

    async def call(self, scope: ProblemScope | None, send: Callable[[str], Awaitable[T]]) -> T:
        """``send(url)`` on the scope's endpoint; on ``EndpointError`` mark it down and try another.

        Raises ``BackendError`` when no endpoint is live for ``all_down_wait_s``, or after every
        endpoint failed twice for this one request.
        """
        failures = 0
        while True:
            endpoint = await self._wait_for_endpoint(scope)
            endpoint.outstanding += 1
            endpoint.requests += 1
            try:
                return await send(endpoint.url)
            except EndpointError as exc:
                failures += 1
                endpoint.failures += 1
                self.mark_down(endpoint, str(exc))
                if failures >= 2 * len(self.endpoints):
                    raise BackendError(f"request failed on every endpoint; last: {exc}") from exc
            finally:
                endpoint.outstanding -= 1

    async def _wait_for_endpoint(self, scope: ProblemScope | None) -> Endpoint:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.all_down_wait_s
        while True:
            endpoint = self._pick(scope)
            if endpoint is not None:
                return endpoint
            for down in self.endpoints:
                self._ensure_health_check(down)
            if loop.time() >= deadline:
                raise BackendError(
                    f"no live endpoint for {self.all_down_wait_s:g}s: " + ", ".join(e.url for e in self.endpoints)
                )
            await asyncio.sleep(min(self.health_interval_s, 0.2))

    def mark_down(self, endpoint: Endpoint, reason: str = "") -> None:
        """Take an endpoint out of rotation until its health check passes."""
        if endpoint.up:
            log.warning("endpoint %s is down: %s", endpoint.url, reason)
        endpoint.up = False
        self._ensure_health_check(endpoint)

    def _ensure_health_check(self, endpoint: Endpoint) -> None:
        if endpoint.up:
            return
        task = endpoint.health_task
        loop = asyncio.get_running_loop()
        if task is None or task.done() or task.get_loop() is not loop:
            endpoint.health_task = loop.create_task(self._health_check(endpoint), name=f"health {endpoint.url}")

    async def _health_check(self, endpoint: Endpoint) -> None:
        while not endpoint.up:
            await asyncio.sleep(self.health_interval_s)
            if await self.client.get_ok(f"{endpoint.url}/health", timeout_s=max(1.0, self.health_interval_s)):
                endpoint.up = True
                log.info("endpoint %s is up again", endpoint.url)

    async def aclose(self) -> None:
        """Stop the health checks of the current loop."""
        loop = asyncio.get_running_loop()
        tasks = [
            e.health_task for e in self.endpoints if e.health_task is not None and e.health_task.get_loop() is loop
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for endpoint in self.endpoints:
            endpoint.health_task = None


class _Pin:
    """A scope's current endpoint; releases its slot when the scope is garbage-collected."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint

    def release(self) -> None:
        self.endpoint.problems -= 1


@dataclass(frozen=True)
class ServedModel:
    """What an endpoint's ``GET /v1/models`` says about the model it serves."""

    name: str
    root: str | None
    max_model_len: int | None


def discover_model(urls: Sequence[str], timeout_s: float = 5.0) -> ServedModel | None:
    """The model of the first endpoint that answers ``/v1/models`` (a blocking call, for loaders)."""
    import json
    import urllib.request

    for url in urls:
        try:
            with urllib.request.urlopen(f"{url}/v1/models", timeout=timeout_s) as response:
                data = json.load(response)["data"][0]
        except (OSError, ValueError, KeyError, IndexError) as exc:
            log.warning("endpoint %s: no model listing (%s)", url, exc)
            continue
        return ServedModel(str(data["id"]), data.get("root"), data.get("max_model_len"))
    return None
