"""The public entry points: solve_many / iter_solve / solve, and a synchronous wrapper.

Problems run concurrently (at most ``max_concurrent_problems`` live trees), PRM and embedding
calls are micro-batched across them, and every problem ends with exactly one result.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any

import numpy as np

from .backends import (
    PRM,
    Embedder,
    Policy,
    PRMLike,
    ScoreRequest,
    as_prm,
    load_backends,
    sentence_embedder,
)
from .batching import MicroBatcher
from .config import EngineConfig, SearchConfig
from .errors import ConfigError, EngineDiedError, EtsError
from .grading import grade
from .metrics import MetricsSummary
from .search import METHODS
from .search.loop import ProblemSearch, SearchContext
from .supervisor import BackendsSupervisor
from .types import ErrorKind, Problem, ProblemResult

log = logging.getLogger("ets_async")

_default_backends = BackendsSupervisor(load_backends)
"""The process-wide default backends (one engine per process), for callers that bring no policy or
no PRM: started on first use, and started again if their engine died."""
_default_embedder: Embedder | None = None


def default_embedder() -> Embedder:
    """The default sentence embedder, loaded once per process (for callers that bring their own
    policy and PRM to a method that embeds steps)."""
    global _default_embedder
    if _default_embedder is None:
        _default_embedder = sentence_embedder(EngineConfig())
    return _default_embedder


def shutdown_default_backends() -> None:
    """Stop the default backends and the default embedder (they start again when next needed)."""
    global _default_embedder
    _default_backends.shutdown()
    if (close := getattr(_default_embedder, "close", None)) is not None:
        close()
    _default_embedder = None


async def iter_solve(
    problems: Iterable[Any] | AsyncIterable[Any],
    config: SearchConfig | None = None,
    *,
    policy: Policy | None = None,
    prm: PRMLike | None = None,
    embedder: Embedder | None = None,
) -> AsyncIterator[ProblemResult]:
    """Yield one result per problem as problems finish.

    Problems are pulled from ``problems`` only as slots free up, so a huge (or endless) input never
    becomes more than ``config.max_concurrent_problems`` live searches. Closing the iterator early
    cancels the searches in flight and aborts their engine requests.
    """
    async for _, result in _iter_indexed(problems, config, policy, prm, embedder):
        yield result


async def solve_many(
    problems: Iterable[Any] | AsyncIterable[Any],
    config: SearchConfig | None = None,
    *,
    policy: Policy | None = None,
    prm: PRMLike | None = None,
    embedder: Embedder | None = None,
) -> list[ProblemResult]:
    """Search every problem; results in input order. A bad problem yields a result with ``error``."""
    results: dict[int, ProblemResult] = {}
    async for index, result in _iter_indexed(problems, config, policy, prm, embedder):
        results[index] = result
    return [results[i] for i in range(len(results))]


async def solve(problem: Any, config: SearchConfig | None = None, **backends: Any) -> ProblemResult:
    """Search one problem."""
    (result,) = await solve_many([problem], config, **backends)
    return result


def solve_many_sync(
    problems: Iterable[Any], config: SearchConfig | None = None, **backends: Any
) -> list[ProblemResult]:
    """``solve_many`` for scripts without an event loop."""
    return asyncio.run(solve_many(problems, config, **backends))


async def _iter_indexed(
    problems: Iterable[Any] | AsyncIterable[Any],
    config: SearchConfig | None,
    policy: Policy | None,
    prm: PRMLike | None,
    embedder: Embedder | None,
) -> AsyncIterator[tuple[int, ProblemResult]]:
    config = config or SearchConfig()
    if not isinstance(config, SearchConfig):
        raise ConfigError(f"config must be a SearchConfig, got {type(config).__name__}")
    scorer = None if prm is None else as_prm(prm)
    if policy is None or scorer is None:
        defaults = await _default_backends.get()
        policy = policy or defaults.policy
        scorer = scorer or defaults.prm
        embedder = embedder or defaults.embedder
    elif embedder is None and METHODS[config.method](config).needs_embeddings:
        embedder = default_embedder()  # the default embedder alone: no default engine beside the caller's
    config = resolve_config(config, policy, embedder)
    max_model_len = getattr(policy, "max_model_len", None)
    step_logprobs = bool(getattr(scorer, "needs_step_logprobs", False))
    if config.request_rate_limit is not None:
        from asyncio_throttle import Throttler

        # Throttler counts whole requests per period: r requests/s = n requests per n/r seconds.
        slots = max(1, round(config.request_rate_limit))
        throttler = Throttler(rate_limit=slots, period=slots / config.request_rate_limit)
        policy, scorer = _ThrottledPolicy(policy, throttler), _ThrottledPRM(scorer, throttler)

    async with contextlib.AsyncExitStack() as stack:
        score_batcher = await stack.enter_async_context(
            MicroBatcher(scorer.score, max_batch=64, max_wait_s=0.002, max_in_flight=4)
        )
        embed = None
        if embedder is not None:
            embed_batcher = await stack.enter_async_context(
                MicroBatcher(_embed_rows(embedder), max_batch=128, max_wait_s=0.002, max_in_flight=1)
            )
            embed = embed_batcher.submit_many
        ctx = SearchContext(config, policy, score_batcher.submit_many, embed, max_model_len, step_logprobs)
        pending: set[asyncio.Task[tuple[int, ProblemResult]]] = set()
        items: AsyncIterator[tuple[int, Any]] | None = _aenumerate(problems)
        next_item: asyncio.Task[tuple[int, Any] | None] | None = None
        try:
            while True:
                # the next input is awaited beside the searches: a slow stream holds no finished result back
                if next_item is None and items is not None and len(pending) < config.max_concurrent_problems:
                    next_item = asyncio.ensure_future(anext(items, None))
                if not pending and next_item is None:
                    return
                done, _ = await asyncio.wait(
                    {*pending, *([next_item] if next_item else [])}, return_when=asyncio.FIRST_COMPLETED
                )
                for task in pending & done:
                    pending.discard(task)
                    yield task.result()
                if next_item is not None and next_item in done:
                    if (got := next_item.result()) is None:
                        items = None
                    else:
                        index, item = got
                        pending.add(asyncio.create_task(_solve_one(index, item, ctx), name=f"ets-problem-{index}"))
                    next_item = None
        finally:
            unfinished: list[asyncio.Future[Any]] = [*pending, *([next_item] if next_item else [])]
            for future in unfinished:
                future.cancel()
            await asyncio.gather(*unfinished, return_exceptions=True)


def resolve_config(config: SearchConfig, policy: Policy, embedder: Embedder | None) -> SearchConfig:
    """Fill the settings a config leaves to the models: the policy's measured sampling temperature
    (``policy.temperature``) and the embedder's calibrated clustering cut (``embedder.cluster_threshold``)."""
    measured = {
        "temperature": getattr(policy, "temperature", None),
        "cluster_threshold": getattr(embedder, "cluster_threshold", None),
    }
    changes = {key: value for key, value in measured.items() if value is not None and getattr(config, key) is None}
    return config.replace(**changes) if changes else config


async def _solve_one(index: int, item: Any, ctx: SearchContext) -> tuple[int, ProblemResult]:
    """One problem to one result: errors become the result's ``error``; only cancellation propagates."""
    config = ctx.config
    try:
        problem = Problem.coerce(item, index)
    except EtsError as exc:
        return index, rejected(item, index, exc, config)
    search = ProblemSearch(problem, ctx)
    try:
        async with asyncio.timeout(config.problem_timeout_s):
            result = await search.run()
    except TimeoutError:  # an error, with the anytime answer: the vote over what finished in time
        result = dataclasses.replace(
            await search.result_so_far(),
            error=f"timed out after {config.problem_timeout_s:g}s",
            error_kind=ErrorKind.TIMEOUT,
        )
    except Exception as exc:  # noqa: BLE001 - one problem's failure must not sink the batch
        error = _first_error(exc)
        level = logging.INFO if isinstance(error, EngineDiedError) else logging.WARNING  # one cause, many problems
        log.log(level, "problem %s failed: %s: %s", problem.id, type(error).__name__, error)
        result = failed(
            problem, config, f"{type(error).__name__}: {error}", ErrorKind.of(error), search.metrics.summary()
        )
    if result.error is None and problem.reference is not None:
        result.correct = await asyncio.to_thread(grade, result.answer, problem.reference)
    return index, result


def rejected(item: Any, index: int, error: EtsError, config: SearchConfig) -> ProblemResult:
    """The result of an input that is not a problem (``Problem.coerce`` refused it): its id is its index."""
    return ProblemResult(
        id=str(index), problem=_preview(item), method=config.method, width=config.width,
        error=str(error), error_kind=ErrorKind.of(error),
    )


def _first_error(exc: BaseException) -> BaseException:
    """The first underlying error of a TaskGroup failure (sibling tasks were cancelled because of it)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def failed(
    problem: Problem, config: SearchConfig, error: str, kind: ErrorKind, metrics: MetricsSummary | None = None
) -> ProblemResult:
    """The result of a problem whose search failed: ``error`` says why, ``metrics`` what it had done."""
    return ProblemResult(
        id=problem.id,
        problem=problem.text,
        method=config.method,
        width=config.width,
        reference=problem.reference,
        error=error,
        error_kind=kind,
        metrics=metrics or MetricsSummary(),
    )


def _preview(item: Any) -> str:
    """The start of a rejected problem, as valid text whatever it held."""
    text = item if isinstance(item, str) else repr(item)
    return text[:200].encode("utf-8", "backslashreplace").decode()


def _embed_rows(embedder: Embedder):
    async def embed(texts: list[str]) -> list[np.ndarray]:
        return list(await embedder.embed(texts))

    return embed


async def _aenumerate(items: Iterable[Any] | AsyncIterable[Any]) -> AsyncIterator[tuple[int, Any]]:
    index = 0
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield index, item
            index += 1
    else:
        for item in items:
            yield index, item
            index += 1


class _ThrottledPRM:
    """Wraps a PRM so each scored trajectory (one engine request) waits for a rate-limit slot."""

    def __init__(self, prm: PRM, throttler: Any) -> None:
        self._prm = prm
        self._throttler = throttler

    async def score(self, requests: Any) -> list[float | None]:
        for _ in requests:
            async with self._throttler:
                pass
        return await self._prm.score(requests)


class _ThrottledPolicy:
    """Wraps a policy so every expansion first waits for a slot under the request rate limit."""

    def __init__(self, policy: Policy, throttler: Any) -> None:
        self._policy = policy
        self._throttler = throttler

    def render(self, problem: str, system_prompt: str | None, template: str) -> list[int]:
        return self._policy.render(problem, system_prompt, template)

    async def expand(self, prompt_token_ids: Any, n: int, sampling: Any) -> Any:
        async with self._throttler:  # waits for a slot; nothing to release on exit
            pass
        return await self._policy.expand(prompt_token_ids, n, sampling)


__all__ = [
    "failed",
    "iter_solve",
    "rejected",
    "resolve_config",
    "solve",
    "solve_many",
    "solve_many_sync",
    "ScoreRequest",
]
