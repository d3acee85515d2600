"""Batch runs on a Ray cluster: one set of backends per actor, the driver the only writer.

    async for result in solve_on_ray(problems, config, engine=EngineConfig(...), actors=4, address="auto"):
        ...

Why actors fed by the driver rather than Ray Data's ``map_batches``: a problem is a multi-round tree
search, one long async task whose rounds share the engine with every other live problem (PRM and
embedding calls are micro-batched across problems). ``map_batches`` runs a batch to its end: the
batch's slowest problem holds its actor's other slots idle, and a retried batch searches its finished
problems again. Here each actor is an async Ray actor that starts its backends once (an in-process
engine on its GPU or CPU, or a client of endpoints) and runs one ``iter_solve`` over every problem it
is handed; the driver keeps at most ``in_flight`` problems on each actor and hands the next problem to
the least loaded live actor as soon as one finishes, so slow and fast machines balance themselves.

Exactly once: the driver is the only writer (``ets-async run --ray`` appends what ``RayWorkers.solve``
yields to its run file through ``ResultWriter``, which refuses ids already written and resumes by id
after the driver is killed). Each problem id is yielded once: a repeated input id is skipped, and a
late second answer is dropped. Actors restart after they die (``max_restarts``) and the problems they
held go to a live actor; a problem tried ``max_attempts`` times ends with an ``ErrorKind.WORKER_DIED``
(or ``INTERNAL``) result instead of sinking the run. Every problem in flight on an actor that dies
counts that try, the one that killed it or not. An actor whose engine dies ends its process, so that
Ray starts it again with new backends, and the problems it failed are tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .api import failed, iter_solve, rejected, resolve_config
from .app import RunPlan
from .backends import Backends, load_backends
from .config import EngineConfig, SearchConfig
from .errors import ConfigError, EngineDiedError, EtsError
from .records import RunRecord
from .types import ErrorKind, Problem, ProblemResult

__all__ = ["LOCAL", "RayWorkers", "SearchActor", "record_on_ray", "solve_on_ray"]

log = logging.getLogger("ets_async")

LOCAL = "local"
"""The address that starts a Ray cluster of this machine alone, on the loopback interface."""

_STOP_TIMEOUT_S = 60.0


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError("running on Ray needs the optional 'ray' package: pip install 'ets-async[ray]'") from None
    return ray


class SearchActor:
    """What each Ray actor runs: its backends, started once, and one ``iter_solve`` fed by ``solve``."""

    def __init__(self, make_backends: Callable[[], Backends], config: SearchConfig) -> None:
        self._make_backends = make_backends
        self._config = config
        self._backends: Backends | None = None
        self._search: asyncio.Task[None] | None = None
        self._queue: asyncio.Queue[Problem] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[ProblemResult]] = {}

    async def start(self) -> SearchConfig:
        """Start the backends (once, in the actor's event loop: an engine binds to it) and return the
        config with what the models measured filled in (``resolve_config``)."""
        if self._backends is None:
            self._backends = self._make_backends()
            self._config = resolve_config(self._config, self._backends.policy, self._backends.embedder)
            self._search = asyncio.create_task(self._search_all(self._backends))
        return self._config

    async def solve(self, problem: Problem) -> ProblemResult:
        """Search one problem beside the others in flight here; the same id twice is searched once."""
        await self.start()
        if (future := self._waiting.get(problem.id)) is None:
            future = self._waiting[problem.id] = asyncio.get_running_loop().create_future()
            self._queue.put_nowait(problem)
        return await asyncio.shield(future)

    async def stop(self) -> None:
        """Stop searching and shut the backends down."""
        if self._search is not None:
            self._search.cancel()
            await asyncio.gather(self._search, return_exceptions=True)
        if self._backends is not None:
            self._backends.shutdown()
            self._backends = None

    async def _search_all(self, backends: Backends) -> None:
        async def queued() -> AsyncIterator[Problem]:
            while True:
                yield await self._queue.get()

        results = iter_solve(
            queued(), self._config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder
        )
        try:
            async for result in results:
                if result.error is not None and (failure := backends.failure()) is not None:
                    _exit(f"{failure}; this actor exits so that Ray starts it again with new backends")
                if (future := self._waiting.pop(result.id, None)) is not None and not future.done():
                    future.set_result(result)
        except asyncio.CancelledError:
            raise
        except BaseException:  # noqa: BLE001 - a bug: a fresh actor is the only sure way on
            log.exception("the search loop of this actor failed")
            _exit("the search loop failed; this actor exits so that Ray starts it again")


def _exit(why: str) -> None:
    """End this actor's process at once, as a crash: Ray restarts it and the driver retries its problems."""
    log.error(why)
    logging.shutdown()
    os._exit(1)


@dataclass(eq=False)
class _Actor:
    """One actor as the driver sees it."""

    handle: Any
    in_flight: int = 0
    usable: bool = True  # False while a probe finds out whether it is gone for good (then for ever)
    failing: bool = False  # a call failed since the last one that succeeded (said once)


class RayWorkers:
    """``actors`` Ray actors, each with its own backends from ``make_backends`` (called in the actor;
    it must pickle, e.g. ``functools.partial(load_backends, engine_config)``), that search the
    problems ``solve`` streams through them.

    An async context manager: entering joins the Ray cluster at ``address`` (``LOCAL`` or None: start
    one of this machine alone, on the loopback; ``"auto"``, ``"HOST:PORT"`` or ``"ray://HOST:PORT"``:
    join that one; a Ray already initialised in this process is used as it is), starts the actors
    and waits until every one has its backends (``config`` is then the config with what the models
    measured); leaving stops them, and Ray if it was started here. ``actor_options`` go to Ray's
    ``.options`` (``num_cpus``, default 1; ``num_gpus``: 1 for an engine per GPU; ``runtime_env``).
    """

    def __init__(
        self,
        config: SearchConfig,
        make_backends: Callable[[], Backends],
        *,
        actors: int = 2,
        address: str | None = None,
        actor_options: Mapping[str, Any] | None = None,
        in_flight: int | None = None,
        max_attempts: int = 3,
        max_restarts: int = 3,
    ) -> None:
        if actors < 1:
            raise ConfigError(f"actors must be at least 1, got {actors}")
        if max_attempts < 1:
            raise ConfigError(f"max_attempts must be at least 1, got {max_attempts}")
        if in_flight is not None and in_flight < 1:
            raise ConfigError(f"in_flight must be at least 1, got {in_flight}")
        self.config = config
        self.make_backends = make_backends
        self.address = address
        self.actor_options = {"num_cpus": 1, **(actor_options or {})}
        self.in_flight = in_flight or 2 * config.max_concurrent_problems
        self.max_attempts = max_attempts
        self.max_restarts = max_restarts
        self.count = actors
        self.actors: list[Any] = []  # the actor handles, once entered
        self._ray = _ray()
        self._owns_ray = False

    async def __aenter__(self) -> RayWorkers:
        ray = self._ray
        if not ray.is_initialized():
            self._join()
            self._owns_ray = True
        try:
            remote = ray.remote(SearchActor).options(
                max_restarts=self.max_restarts, max_task_retries=0, max_concurrency=max(1000, 4 * self.in_flight),
                **self.actor_options,
            )
            self.actors = [remote.remote(self.make_backends, self.config) for _ in range(self.count)]
            configs = await asyncio.gather(*(actor.start.remote() for actor in self.actors))
        except BaseException as exc:
            await self.__aexit__(None, None, None)
            if isinstance(exc, ray.exceptions.RayError):
                raise EngineDiedError(f"a Ray actor could not start its backends: {exc}") from None
            raise
        self.config = configs[0]
        return self

    async def __aexit__(self, *exc: object) -> None:
        ray = self._ray
        with contextlib.suppress(Exception):  # stopped gracefully if they can be: engines release their memory
            await asyncio.wait_for(
                asyncio.gather(*(a.stop.remote() for a in self.actors), return_exceptions=True), _STOP_TIMEOUT_S
            )
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        if self._owns_ray:
            ray.shutdown()
            self._owns_ray = False

    def _join(self) -> None:
        common = {"log_to_driver": log.isEnabledFor(logging.INFO), "configure_logging": False}
        if self.address in (None, LOCAL):
            cpus = self.count * self.actor_options["num_cpus"]
            gpus = self.count * self.actor_options.get("num_gpus", 0)
            self._ray.init(
                address="local",
                num_cpus=cpus,
                num_gpus=gpus,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                **common,
            )
        else:
            self._ray.init(address=self.address, **common)

    async def solve(self, problems: Iterable[Any]) -> AsyncIterator[ProblemResult]:
        """One result per problem id, as problems finish (close it early to stop). Inputs are what
        ``solve_many`` takes; a malformed one yields its error result, a repeated id is skipped."""
        if not self.actors:
            raise RuntimeError("RayWorkers.solve runs inside 'async with RayWorkers(...)'")
        actors = [_Actor(handle) for handle in self.actors]
        source = _problems(problems, self.config)
        retries: deque[Problem] = deque()
        tries: Counter[str] = Counter()
        last_actor: dict[str, _Actor] = {}
        calls: dict[asyncio.Future[Any], tuple[_Actor, Problem | None]] = {}  # None: a probe
        yielded: set[str] = set()
        exhausted = False
        try:
            while True:
                while (retries or not exhausted) and (actor := self._pick(actors, None)) is not None:
                    if retries:
                        problem = retries.popleft()
                    elif (item := next(source, None)) is None:
                        exhausted = True
                        break
                    elif isinstance(item, ProblemResult):
                        yield item
                        continue
                    else:
                        problem = item
                    actor = self._pick(actors, last_actor.get(problem.id)) or actor
                    actor.in_flight += 1
                    last_actor[problem.id] = actor
                    calls[asyncio.ensure_future(actor.handle.solve.remote(problem))] = (actor, problem)
                if not calls:
                    if retries or not exhausted:
                        raise EngineDiedError(
                            f"every Ray actor is gone (each died more than max_restarts={self.max_restarts} times)"
                        )
                    return
                done, _ = await asyncio.wait(calls, return_when=asyncio.FIRST_COMPLETED)
                for call in done:
                    actor, asked = calls.pop(call)
                    if asked is None:
                        self._probed(actor, call)
                        continue
                    problem = asked
                    actor.in_flight -= 1
                    if (error := call.exception()) is None:
                        actor.failing = False
                        result: ProblemResult = call.result()
                        if result.id not in yielded:
                            yielded.add(result.id)
                            yield result
                        continue
                    if not isinstance(error, self._ray.exceptions.RayError):
                        raise error
                    if isinstance(error, self._ray.exceptions.ActorDiedError) and actor.usable:
                        actor.usable = False  # gone for good, or restarting: ask it
                        calls[asyncio.ensure_future(actor.handle.start.remote())] = (actor, None)
                    tries[problem.id] += 1
                    if tries[problem.id] >= self.max_attempts:
                        yielded.add(problem.id)
                        yield _gave_up(problem, self.config, tries[problem.id], error)
                    else:
                        if not actor.failing:
                            log.warning("a Ray actor failed (%s); its problems are tried again", type(error).__name__)
                        log.info("problem %s: try %d of %d", problem.id, tries[problem.id] + 1, self.max_attempts)
                        retries.append(problem)
                    actor.failing = True
        finally:
            for call in calls:
                call.cancel()

    def _pick(self, actors: list[_Actor], avoid: _Actor | None) -> _Actor | None:
        """The least loaded usable actor with room for one more problem (``avoid`` last), or None."""
        free = [a for a in actors if a.usable and a.in_flight < self.in_flight]
        return min(free, key=lambda a: (a is avoid, a.in_flight), default=None)

    def _probed(self, actor: _Actor, probe: asyncio.Future[Any]) -> None:
        if (error := probe.exception()) is None:
            actor.usable = True
        elif isinstance(error, self._ray.exceptions.RayActorError):
            log.error("a Ray actor is gone for good: %s", (str(error).splitlines() or [""])[0])
        else:  # restarted, but its backends did not start
            log.error("a restarted Ray actor could not start its backends: %s", error)


def _problems(items: Iterable[Any], config: SearchConfig) -> Iterator[Problem | ProblemResult]:
    """Each input as a Problem, or as its error result if it is not one; a repeated id is skipped."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        try:
            problem = Problem.coerce(item, index)
        except EtsError as exc:
            yield rejected(item, index, exc, config)
            continue
        if problem.id in seen:
            log.warning("problem id %r is repeated in the input; searching it once", problem.id)
            continue
        seen.add(problem.id)
        yield problem


def _gave_up(problem: Problem, config: SearchConfig, tries: int, error: BaseException) -> ProblemResult:
    kind = ErrorKind.WORKER_DIED if isinstance(error, _ray().exceptions.RayActorError) else ErrorKind.INTERNAL
    why = f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
    return failed(problem, config, f"gave up after {tries} tries: {why}", kind)


async def solve_on_ray(
    problems: Iterable[Any],
    config: SearchConfig | None = None,
    *,
    engine: EngineConfig | None = None,
    make_backends: Callable[[], Backends] | None = None,
    **workers_options: Any,
) -> AsyncIterator[ProblemResult]:
    """``iter_solve`` on a Ray cluster: one result per problem id, as problems finish, searched by
    actors that each start their own backends: ``load_backends(engine)``, or ``make_backends()`` (one
    of the two). ``workers_options`` are ``RayWorkers``'s (``actors``, ``address``, ...)."""
    if engine is not None and make_backends is not None:
        raise ConfigError("give solve_on_ray an engine config or make_backends, not both")
    workers = RayWorkers(
        config or SearchConfig(), make_backends or functools.partial(load_backends, engine), **workers_options
    )
    async with workers:
        async with contextlib.aclosing(workers.solve(problems)) as results:  # type: ignore[type-var]
            async for result in results:
                yield result


async def record_on_ray(
    workers: RayWorkers,
    plan: RunPlan,
    on_record: Callable[[RunRecord], Any],
    on_ready: Callable[[], None] = lambda: None,
) -> None:
    """``app.execute`` on Ray, what ``ets-async run --ray`` does: search ``plan``'s problems with
    ``workers`` (whose actors start the backends, not ``plan``) and call ``on_record`` with each
    one's run-file record (the caller writes it: the only writer). ``on_ready`` is called once every
    actor has its backends; the records' ``run.elapsed_s`` count from then."""
    async with workers:
        on_ready()
        started = time.perf_counter()
        async with contextlib.aclosing(workers.solve(plan.problems)) as results:  # type: ignore[type-var]
            async for result in results:
                on_record(
                    RunRecord.of(result, workers.config, session=plan.session, elapsed_s=time.perf_counter() - started)
                )
