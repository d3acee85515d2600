"""The watchdog (ets_async.watchdog) on plain processes: a coordinator SIGKILLed takes down what it
adopted or registered, with their descendants, and nothing else; on a normal exit too, and when an
adopted process died first and left its child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from ets_async import watchdog

pytestmark = pytest.mark.skipif(not watchdog.SUPPORTED, reason="the watchdog needs Linux (pidfd, /proc)")

COORDINATOR = textwrap.dedent(
    """
    import subprocess, sys, time
    from ets_async import watchdog

    sleep = ["sleep", "600"]
    before = subprocess.Popen(sleep)                  # started before the block: not adopted
    with watchdog.adopt_children():
        adopted = subprocess.Popen(["sh", "-c", "sleep 600 & wait"])  # with a grandchild
        while len(watchdog.process_tree(adopted.pid)) < 2:
            time.sleep(0.01)
    registered = subprocess.Popen(sleep)
    watchdog.watch(registered.pid)
    after = subprocess.Popen(sleep)                   # neither adopted nor registered
    print(before.pid, adopted.pid, registered.pid, after.pid, watchdog.watchdog_pid(), flush=True)
    if sys.argv[1] == "exit":
        sys.exit(0)
    time.sleep(600)
    """
)


def start_coordinator(how: str) -> tuple[subprocess.Popen, list[tuple[int, int | None]]]:
    proc = subprocess.Popen([sys.executable, "-c", COORDINATOR, how], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in proc.stdout.readline().split()]  # type: ignore[union-attr]
    assert len(pids) == 5, "the coordinator did not start its children"
    tree = [(pid, start) for pid, start, _ in watchdog.process_tree(pids[1])]  # the adopted shell and its sleep
    return proc, [watchdog.process_tree(pid)[0][:2] for pid in pids[:1] + pids[2:]] + tree


def wait_gone(processes, within_s: float) -> list:
    deadline = time.monotonic() + within_s
    while (alive := [p for p in processes if watchdog.running(*p)]) and time.monotonic() < deadline:
        time.sleep(0.02)
    return alive


@pytest.mark.parametrize("how", ["sigkill", "exit", "orphan first"])
def test_the_coordinators_engines_die_with_it_and_nothing_else(how):
    """``orphan first``: the adopted process dies before the coordinator (an EngineCore killed under
    its Worker); its child, now nobody's, still goes when the coordinator does."""
    proc, processes = start_coordinator("exit" if how == "exit" else "wait")
    before, registered, after, dog, adopted, grandchild = processes
    try:
        if how == "orphan first":
            os.kill(adopted[0], signal.SIGKILL)
            assert wait_gone([adopted], within_s=5) == [] and watchdog.running(*grandchild)
        if how != "exit":
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        assert wait_gone([adopted, grandchild, registered, dog], within_s=5) == []
        assert watchdog.running(*before) and watchdog.running(*after)  # not the watchdog's to kill
    finally:
        proc.stdout.close()  # type: ignore[union-attr]
        for pid, start in processes:
            if watchdog.running(pid, start):
                os.kill(pid, signal.SIGKILL)


def test_process_tree_and_running_tell_a_dead_process_from_a_reused_pid():
    child = subprocess.Popen(["sleep", "600"])
    deadline = time.monotonic() + 5
    while (tree := watchdog.process_tree(child.pid))[0][2] != "sleep" and time.monotonic() < deadline:
        time.sleep(0.01)  # /proc shows the new command line a moment after the exec
    ((pid, start, title),) = tree
    assert pid == child.pid and title == "sleep" and watchdog.running(pid, start)
    assert not watchdog.running(pid, (start or 0) + 1)  # another process that got the same pid
    child.kill()
    child.wait()
    assert not watchdog.running(pid, start)
