"""math-verify in worker processes, each call bounded by a timeout.

math-verify's own timeouts use ``signal.alarm`` and so only work in the main thread; we switch them off
and run math-verify in worker *processes* instead (``math_verify_worker.py``), killing a worker that
overruns. That bounds every call, works from any thread and from ``asyncio.to_thread``, and cannot
leave a runaway sympy computation burning a core in the caller's process.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

__all__ = ["WORKER_COMMAND", "MathVerifyPool", "shutdown_verifier", "verify"]

logger = logging.getLogger(__name__)

WORKER_COMMAND = (sys.executable, "-P", str(Path(__file__).with_name("math_verify_worker.py")))
"""How a worker starts: this interpreter runs the worker file by path. ``-P`` keeps the file's folder
off ``sys.path``; there, this package's ``types.py`` would shadow the standard library's."""


class _Worker:
    """One worker process and its pipes. Used by one thread at a time."""

    def __init__(self, command: list[str], start_timeout_s: float) -> None:
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )
        if self._read_line(start_timeout_s) is None:
            self.kill()
            raise RuntimeError(
                "math-verify worker did not start; is math-verify installed in "
                f"{command[0]!r}? (pip install math-verify)"
            )

    def _read_line(self, timeout_s: float) -> str | None:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], max(timeout_s, 0.0))
        if not ready:
            return None
        line = self.proc.stdout.readline()
        return line or None

    def ask(self, gold: str, pred: str, timeout_s: float) -> dict[str, Any] | None:
        """The worker's reply, or None on timeout or a dead worker (the caller then kills it)."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps([gold, pred]) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            return None
        line = self._read_line(timeout_s)
        if line is None:
            return None
        try:
            reply = json.loads(line)
        except ValueError:
            return None
        return reply if isinstance(reply, dict) else None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass

    def close(self) -> None:
        """Ask the worker to exit (EOF on stdin); kill it if it does not within a second."""
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=1.0)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class MathVerifyPool:
    """A fixed number of math-verify worker processes shared by all threads.

    ``equivalent`` blocks until a worker is free, then waits at most ``timeout_s`` for its answer;
    a worker that overruns is killed and replaced lazily, so the pool never shrinks. Time spent
    waiting for a free worker is not counted in the timeout (a busy pool must not turn correct
    answers into timeouts); it is bounded by the timeouts of the calls ahead in the queue.
    ``command`` starts a worker (default ``WORKER_COMMAND``).
    """

    def __init__(
        self,
        size: int | None = None,
        *,
        command: list[str] | None = None,
        start_timeout_s: float = 120.0,
    ) -> None:
        self.size = size if size is not None else max(1, min(2, os.cpu_count() or 1))
        self.command = list(command if command is not None else WORKER_COMMAND)
        self.start_timeout_s = start_timeout_s
        self.timeouts = 0
        self._idle: queue.SimpleQueue[_Worker | None] = queue.SimpleQueue()
        for _ in range(self.size):
            self._idle.put(None)  # a slot whose worker is started on first use
        self._workers: set[_Worker] = set()
        self._lock = threading.Lock()
        self._closed = False

    def equivalent(self, gold: str, pred: str, timeout_s: float) -> bool | None:
        """math-verify's verdict, or None if it did not answer within ``timeout_s``."""
        if self._closed:
            raise RuntimeError("MathVerifyPool is closed")
        worker = self._idle.get()
        try:
            if worker is None:
                worker = _Worker(self.command, self.start_timeout_s)
                with self._lock:
                    self._workers.add(worker)
            reply = worker.ask(gold, pred, timeout_s)
            if reply is None:
                with self._lock:
                    self.timeouts += 1
                    self._workers.discard(worker)
                worker.kill()
                worker = None
                return None
            if "error" in reply:
                logger.debug("math-verify error on %r vs %r: %s", gold, pred, reply["error"])
            return bool(reply.get("eq", False))
        finally:
            self._idle.put(worker)

    def close(self) -> None:
        """Stop every worker. Calls made afterwards raise RuntimeError."""
        self._closed = True
        with self._lock:
            workers, self._workers = list(self._workers), set()
        for worker in workers:
            worker.close()


_pool: MathVerifyPool | None = None
_pool_lock = threading.Lock()


def _shared_pool() -> MathVerifyPool:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = MathVerifyPool()
        return _pool


def shutdown_verifier() -> None:
    """Stop the shared math-verify workers (also done at interpreter exit)."""
    global _pool
    with _pool_lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.close()


atexit.register(shutdown_verifier)


@functools.lru_cache(maxsize=65536)
def verify(gold: str, pred: str, timeout_s: float) -> bool:
    """math-verify's verdict from the shared pool; a timeout counts as not equivalent and is logged.

    Verdicts, timeouts included, are cached per (gold, pred, timeout_s), so a pathological pair stalls
    only once. Thread-safe and blocking.
    """
    started = time.monotonic()
    verdict = _shared_pool().equivalent(gold, pred, timeout_s)
    if verdict is None:
        logger.warning(
            "math-verify timed out after %.1fs on %r vs %r; counted as not equivalent",
            time.monotonic() - started,
            gold[:200],
            pred[:200],
        )
        return False
    return verdict
