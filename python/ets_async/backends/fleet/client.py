"""Async JSON-over-HTTP transport to inference servers: pooled connections, per-request timeouts,
retries with backoff, and cancellation that closes the request (the server then aborts it).

Errors say what the caller may do next:

* ``EndpointError``: the endpoint failed (connection error, timeout, 5xx or 429) even after the
  retries. Recoverable elsewhere: the fleet router marks the endpoint down and sends the request to
  another one.
* ``RequestRejected``: the server refused the request itself (any other 4xx, e.g. a prompt longer
  than the model's context). Not retried: the same request would fail on every endpoint.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import BackendError

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class EndpointError(BackendError):
    """An endpoint did not answer usefully after the retries. Recoverable on another endpoint."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url = url
        self.reason = reason


class RequestRejected(BackendError):
    """The server answered 4xx: the request itself is bad. The problem fails; the batch goes on."""

    def __init__(self, url: str, status: int, body: str) -> None:
        super().__init__(f"{url} rejected the request (HTTP {status}): {body[:500]}")
        self.url = url
        self.status = status


@dataclass(frozen=True)
class RetryPolicy:
    """How long one request may take and how often a failed one is tried again on the same endpoint.

    The delay before retry ``i`` (0-based) is uniform in ``[0, min(backoff_max_s, backoff_s * 2**i)]``
    ("full jitter"), so clients that failed together do not retry together.
    """

    timeout_s: float = 600.0
    attempts: int = 3
    backoff_s: float = 0.2
    backoff_max_s: float = 5.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.timeout_s <= 0 or self.connect_timeout_s <= 0:
            raise ValueError("RetryPolicy timeouts must be positive")

    def delay(self, retry: int) -> float:
        return random.uniform(0.0, min(self.backoff_max_s, self.backoff_s * 2**retry))


class HttpClient:
    """One pooled ``aiohttp`` session per event loop (``solve_many_sync`` may run several loops).

    ``post_json`` is the only request path; it owns retries. Cancelling the awaiting task closes the
    connection, which vLLM and SGLang take as an abort of the request.
    """

    def __init__(self, retry: RetryPolicy | None = None, *, max_connections: int = 256) -> None:
        self.retry = retry or RetryPolicy()
        self.max_connections = max_connections
        self._session: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: AsyncGenerator[None, None] | None = None
        self.requests = 0
        self.retries = 0

    async def _get_session(self) -> Any:
        import aiohttp

        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.max_connections, limit_per_host=self.max_connections)
            # No total timeout on the session: each request sets its own.
            self._session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))
            self._loop = loop
            self._keeper = _close_at_loop_end(self._session)
            await anext(self._keeper)
            _KEEPERS.difference_update([k for k in _KEEPERS if getattr(k, "ag_frame", None) is None])  # finished
            _KEEPERS.add(self._keeper)
        return self._session

    async def post_json(
        self,
        url: str,
        payload: dict[str, Any],
        *,
        timeout_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST ``payload`` as JSON and return the decoded JSON answer, retrying endpoint failures."""
        import aiohttp

        session = await self._get_session()
        retry = self.retry
        timeout = aiohttp.ClientTimeout(
            total=timeout_s or retry.timeout_s, sock_connect=retry.connect_timeout_s
        )
        body = json.dumps(payload)
        headers = {"Content-Type": "application/json", **(headers or {})}
        reason = "no attempt made"
        for attempt in range(retry.attempts):
            if attempt:
                self.retries += 1
                await asyncio.sleep(retry.delay(attempt - 1))
            self.requests += 1
            try:
                # Leaving this block early (cancellation, timeout) closes the connection instead of
                # returning it to the pool: the server sees the disconnect and aborts the request.
                async with session.post(url, data=body, headers=headers, timeout=timeout) as response:
                    text = await response.text()
                    if response.status < 300:
                        try:
                            return json.loads(text)
                        except json.JSONDecodeError:
                            reason = f"HTTP {response.status} with a body that is not JSON: {text[:200]!r}"
                            continue
                    if response.status in RETRY_STATUSES:
                        reason = f"HTTP {response.status}: {text[:200]}"
                        continue
                    raise RequestRejected(url, response.status, text)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # ClientError covers refused/reset connections and server disconnects; TimeoutError
                # (asyncio.TimeoutError is the same class on 3.11) covers connect and total timeouts.
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        raise EndpointError(url, f"failed {retry.attempts} attempt(s); last: {reason}")

    async def get_ok(self, url: str, *, timeout_s: float = 2.0) -> bool:
        """One GET without retries: True when it answers 2xx within ``timeout_s`` (health checks)."""
        import aiohttp

        session = await self._get_session()
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                await response.read()
                return response.status < 300
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def aclose(self) -> None:
        """Close the pooled connections now (otherwise they close when the event loop shuts down)."""
        keeper, self._keeper, self._session = self._keeper, None, None
        if keeper is not None and self._loop is asyncio.get_running_loop():
            _KEEPERS.discard(keeper)
            await keeper.aclose()


# Strong references to the live keepers: a client dropped mid-loop (or caught in a garbage cycle)
# keeps its session open until the loop shuts down, rather than being finalised unclosed.
_KEEPERS: set[AsyncGenerator[None, None]] = set()


async def _close_at_loop_end(session: Any) -> AsyncGenerator[None, None]:
    """Holds ``session`` open until closed: ``asyncio.run`` (and pytest-asyncio) finalize live async
    generators before closing the loop, so the session never outlives its loop unclosed."""
    try:
        yield
        await asyncio.Future()  # pragma: no cover - never resumed
    finally:
        await session.close()
