"""``InProcessEngine.failure`` and ``shutdown`` without a real engine: a stand-in for vLLM's AsyncLLM
whose EngineCore and Worker are real processes (``sh`` and its ``sleep``)."""

from __future__ import annotations

import subprocess
import time
from types import SimpleNamespace

import pytest
from ets_async import watchdog
from ets_async.backends.vllm_engine import InProcessEngine


class FakeCore:
    """A multiprocessing handle's view of a process: name, pid, exit code (-N: killed by signal N)."""

    name = "EngineCore"

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.pid = process.pid

    @property
    def exitcode(self) -> int | None:
        return self.process.poll()


class FakeLLM:
    """What InProcessEngine reads of an AsyncLLM: ``errored``, its EngineCore processes, ``shutdown``."""

    def __init__(self, cores: list[FakeCore]) -> None:
        self.cores = cores
        self.engine_core = SimpleNamespace(resources=SimpleNamespace(engine_manager=SimpleNamespace(processes=cores)))
        self.errored = False
        self.shutdowns = 0

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.errored = True


@pytest.fixture()
def engine():
    """An InProcessEngine whose EngineCore is a shell and whose Worker is the shell's ``sleep``."""
    core = subprocess.Popen(["sh", "-c", "sleep 60 & wait"])
    deadline = time.monotonic() + 5
    while len(watchdog.process_tree(core.pid)) < 2:
        assert time.monotonic() < deadline, "the shell never started its child"
        time.sleep(0.01)
    handle = InProcessEngine(FakeLLM([FakeCore(core)]), preemptions=None)  # type: ignore[arg-type]
    yield handle
    for pid, start, _ in handle.processes:
        if watchdog.running(pid, start):
            subprocess.run(["kill", "-9", str(pid)], check=False)
    core.wait()


def wait_until_gone(pid: int, start: int | None) -> None:
    deadline = time.monotonic() + 5
    while watchdog.running(pid, start):
        assert time.monotonic() < deadline, f"process {pid} still runs"
        time.sleep(0.01)


def test_a_killed_engine_core_is_named_and_what_is_left_of_the_engine_is_killed(engine):
    (core_pid, _, _), (worker_pid, worker_start, _) = engine.processes
    assert engine.failure() is None
    subprocess.run(["kill", "-9", str(core_pid)], check=True)
    engine.llm.cores[0].process.wait()
    engine.llm.errored = True
    expected = f"the vLLM engine died: its EngineCore process (pid {core_pid}) was killed by SIGKILL"
    assert engine.failure() == expected
    wait_until_gone(worker_pid, worker_start)  # the orphaned Worker is SIGKILLed once the cause is known
    engine.shutdown()
    assert engine.failure() == expected  # the first cause stays, shutdown does not replace it


def test_a_dead_worker_is_named_when_the_engine_core_did_not_die_of_a_signal(engine):
    _, (worker_pid, worker_start, title) = engine.processes
    subprocess.run(["kill", "-9", str(worker_pid)], check=True)
    wait_until_gone(worker_pid, worker_start)
    engine.llm.errored = True
    assert engine.failure() == f"the vLLM engine died: its {title} process (pid {worker_pid}) died"


def test_shutdown_is_idempotent_and_says_the_engine_was_shut_down(engine):
    engine.shutdown()
    engine.shutdown()
    assert engine.llm.shutdowns == 1
    assert engine.failure() == "the vLLM engine was shut down"
