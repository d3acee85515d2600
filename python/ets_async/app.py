"""The application layer under the CLI: what a run needs around the search, as plain functions that
raise errors instead of exiting, so that ``run``, ``demo`` and ``serve`` (and batch drivers) share it.

- ``BackendPlan``: which backends to start (the in-process engine, or scripted ones) and where the
  engine's output goes; ``start`` and ``open`` start them, with vLLM's output and logs in that file.
- ``RunPlan`` + ``execute``: problems, a search config and a backend plan in; one ``RunRecord`` per
  finished problem out, through a callback (the CLI writes them to a run file, the demo keeps them).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from .config import EngineConfig, SearchConfig
from .errors import EngineDiedError, EtsError
from .records import RunRecord

__all__ = ["BackendPlan", "EngineStartError", "RunPlan", "engine_log_path", "execute", "output_to", "session_id"]

log = logging.getLogger("ets_async")

_KEPT_ENGINE_LOGS = 20


class EngineStartError(EtsError, RuntimeError):
    """The engine could not start (a missing model, too little memory, ...); nothing ran. The
    message ends with where the engine's log is."""


def session_id() -> str:
    """A name for this process's session of a run: its start time (UTC) and process id."""
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{os.getpid()}"


@contextlib.contextmanager
def output_to(log_path: Path | None) -> Iterator[None]:
    """Send everything written to this process's stdout and stderr while the block runs to
    ``log_path`` (None: leave it on the terminal). Processes started inside the block (vLLM's engine
    core and worker) keep writing there for their whole life."""
    if log_path is None:
        yield
        return
    from .stdio import redirect_output

    log_path.parent.mkdir(parents=True, exist_ok=True)
    with redirect_output(log_path, stderr=True):
        yield


def engine_log_path() -> Path | None:
    """Where this session's engine output goes: a log file under the cache (the newest few are
    kept), or the terminal (None) when the ``ets_async`` logger shows INFO (``--verbose``)."""
    if log.getEffectiveLevel() <= logging.INFO:
        return None
    from .models import cache_root

    folder = cache_root() / "logs"
    for old in sorted(folder.glob("engine-*.log"), key=lambda p: p.stat().st_mtime)[: -(_KEPT_ENGINE_LOGS - 1)]:
        old.unlink(missing_ok=True)
    return folder / f"engine-{session_id()}.log"


def _keep_vllm_logs_in(log_path: Path | None) -> None:
    """Send what vLLM logs in this process from now on (its tracebacks when the engine dies, say) to
    ``log_path`` too, not to the terminal; the user sees one line from us instead.

    Also keeps one harmless vLLM error off the terminal: something in vLLM's start-up holds on to
    the engine object, so its ``AsyncLLM.__del__`` runs only at interpreter exit, after the engine
    was shut down, and fails there ("TypeError: 'NoneType' object is not callable") because module
    globals are already gone."""
    if log_path is None:
        return
    vllm_log = logging.getLogger("vllm")
    formatter = vllm_log.handlers[0].formatter if vllm_log.handlers else None
    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(formatter)
    vllm_log.handlers = [handler]
    report_unraisable = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        if not (sys.is_finalizing() and getattr(unraisable.object, "__qualname__", "") == "AsyncLLM.__del__"):
            report_unraisable(unraisable)

    sys.unraisablehook = hook


@dataclass(frozen=True)
class BackendPlan:
    """Which backends a run uses: ``vllm`` (``load_backends(engine)``: the in-process engine, or the
    servers its config names) or ``fake`` (``testing.fake_backends``: scripted, a dry run), and where
    the engine's output goes (``log``; None: the terminal)."""

    kind: Literal["vllm", "fake"] = "vllm"
    engine: EngineConfig | None = None
    fake_delay_s: float = 0.0
    log: Path | None = None

    def start(self) -> Any:
        """Start the backends; ConfigError for a bad engine config, EngineStartError otherwise."""
        if self.kind == "fake":
            from .testing import fake_backends

            return fake_backends(delay_s=self.fake_delay_s)
        from .backends import load_backends
        from .errors import ConfigError

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            with output_to(self.log):
                backends = load_backends(self.engine)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - a missing model, an engine that cannot start, ...
            where = f" (engine log: {self.log})" if self.log else ""
            raise EngineStartError(f"could not start the engine: {type(exc).__name__}: {exc}{where}") from exc
        _keep_vllm_logs_in(self.log)
        return backends

    @contextlib.contextmanager
    def open(self) -> Iterator[Any]:
        """The started backends, shut down on exit (the engine's output, to the end, in ``log``)."""
        backends = self.start()
        try:
            yield backends
        finally:
            with output_to(self.log):
                backends.shutdown()


@dataclass(frozen=True)
class RunPlan:
    """One session of a run: the problems still to do (rows as ``datasets.normalise_row`` gives them),
    how to search them and on which backends."""

    problems: list[dict[str, Any]]
    config: SearchConfig
    backends: BackendPlan
    session: str = field(default_factory=session_id)


async def execute(
    plan: RunPlan, on_record: Callable[[RunRecord], None], on_ready: Callable[[], None] = lambda: None
) -> None:
    """Search ``plan``'s problems, calling ``on_record`` with each finished problem's record.

    ``on_ready`` is called once the backends are up; the records' ``run.elapsed_s`` count from then.
    If the engine dies, the problems it failed are not recorded (a resumed run does them) and
    EngineDiedError says why.
    """
    from .api import iter_solve, resolve_config

    with plan.backends.open() as backends:  # inside the event loop: the engine binds to it
        on_ready()
        try:
            config = resolve_config(plan.config, backends.policy, backends.embedder)  # records say what ran
            started = time.perf_counter()
            results = iter_solve(
                plan.problems, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder
            )
            async with contextlib.aclosing(results):  # type: ignore[type-var]  # an async generator
                async for result in results:
                    if result.error is not None and (failure := backends.failure()) is not None:
                        raise EngineDiedError(failure)
                    on_record(
                        RunRecord.of(result, config, session=plan.session, elapsed_s=time.perf_counter() - started)
                    )
        finally:
            del backends  # the traceback behind an error message must not keep the engine alive until exit
