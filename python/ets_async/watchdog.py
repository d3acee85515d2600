"""Engine processes die with the process that started them, however it dies (SIGKILL included).

vLLM's EngineCore (and through it the Worker) and a local server's process tree do not notice
that the process driving them is gone: killed with it, they stay behind as orphans holding
gigabytes. A watchdog process guards against that: one per coordinating process, started on
first use, it waits on a pidfd of the coordinator and, the moment the coordinator exits, SIGKILLs
every process registered with it together with that process's descendants. It then exits.

Registering is explicit (``watch(pid)``) or by adoption: inside ``adopt_children()`` every child
the coordinator starts is registered (the watchdog polls the coordinator's children every 50 ms),
which covers an engine whose processes are created deep inside vLLM, from the first moment of
its start-up; when the block ends, the descendants the adopted processes have by then (an engine's
workers) are registered by pid too, so they are found even after their parent died. A process is
identified by pid and start time, so a reused pid is never killed.

The watchdog is this file run as a script (``python -I -S watchdog.py COORDINATOR_PID``): the
standard library only, a few MB, in its own session so a Ctrl-C meant for the coordinator's
terminal does not stop it first. It reads one command per line on stdin: ``watch PID``,
``adopt PIDS`` (the coordinator's children when a block opens: not adopted) and ``unadopt PIDS``
(its children when the block closes), and writes one line to stderr when it kills something.
Linux only (pidfd, /proc); elsewhere ``watch`` and ``adopt_children`` do nothing.

``process_tree`` and ``running`` record a process tree and later tell which of its members died;
``vllm_engine.InProcessEngine.failure`` names the dead process that way.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import threading
from collections.abc import Iterable, Iterator

__all__ = ["adopt_children", "process_tree", "running", "watch", "watchdog_pid"]

ADOPT_POLL_S = 0.05
"""How often the watchdog looks for new children of the coordinator while adopting."""

SUPPORTED = sys.platform.startswith("linux") and hasattr(os, "pidfd_open")

# ------------------------------------------------------------------------------------------------
# The coordinator's side
# ------------------------------------------------------------------------------------------------

_lock = threading.Lock()
_state: dict[str, int] = {}  # owner (the coordinator's pid), pid (the watchdog's), fd (its stdin)
_watched: list[int] = []  # re-sent to a replacement watchdog


def watch(pid: int) -> None:
    """Kill ``pid`` and its descendants when this process exits."""
    with _lock:
        _send(f"watch {pid}")
        _watched.append(pid)


@contextlib.contextmanager
def adopt_children() -> Iterator[None]:
    """Every child process this process starts inside the block dies when this process exits.

    multiprocessing's resource tracker is started first so that it is not adopted: it must outlive
    the engine to unlink the shared memory the engine leaves behind.
    """
    if not SUPPORTED:
        yield
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    with _lock:
        before = _children(os.getpid())
        _send(" ".join(["adopt", *map(str, before)]))  # what exists now is not adopted
    try:
        yield
    finally:
        with _lock:
            after = _children(os.getpid())
            _send(" ".join(["unadopt", *map(str, after)]))
            # What the adopted children started by now (an engine's workers) is registered by pid:
            # found even after its parent died and left it to init.
            for pid in {grandchild for child in set(after) - set(before) for grandchild in _descendants(child)}:
                _send(f"watch {pid}")
                _watched.append(pid)


def watchdog_pid() -> int | None:
    """The pid of this process's watchdog, if one is running."""
    with _lock:
        return _state.get("pid") if _state.get("owner") == os.getpid() else None


def _send(line: str) -> None:
    """Write one command to the watchdog, starting (or replacing) it first if needed. Lock held."""
    if not SUPPORTED:
        return
    if _state.get("owner") != os.getpid() or not _alive(_state["pid"]):
        _start()
    try:
        os.write(_state["fd"], f"{line}\n".encode())
    except BrokenPipeError:  # it died between the check and the write: replace it
        _start()
        os.write(_state["fd"], f"{line}\n".encode())


def _alive(pid: int) -> bool:
    try:
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return False


def _start() -> None:
    """Start a watchdog for this process and hand it what is already registered. Lock held."""
    if _state.get("owner") == os.getpid():
        os.close(_state["fd"])
    else:
        _watched.clear()  # a forked child starts with its parent's list: not its own
    read, write = os.pipe()
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", os.path.abspath(__file__), str(os.getpid())],
            os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, read, 0)],
            setsid=True,
        )
    finally:
        os.close(read)
    _state.update(owner=os.getpid(), pid=pid, fd=write)
    for known in _watched:
        os.write(write, f"watch {known}\n".encode())


# ------------------------------------------------------------------------------------------------
# The watchdog process
# ------------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[bytes] | None:
    """/proc/PID/stat from field 3 (the state) on, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read()
    except OSError:
        return None
    return stat[stat.rindex(b")") + 2 :].split()  # the command name in parentheses may hold spaces


def _start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22), or None."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def running(pid: int, start_time: int | None) -> bool:
    """Whether the process that had this pid and start time still runs (a zombie does not)."""
    fields = _stat(pid)
    return fields is not None and int(fields[19]) == start_time and fields[0] != b"Z"


def process_tree(pid: int) -> list[tuple[int, int | None, str]]:
    """``(pid, start time, title)`` of a process and of all its descendants: a record that
    ``running`` can later check against reused pids. Linux only; elsewhere just ``pid``."""
    if not SUPPORTED:
        return [(pid, None, "")]
    tree = []
    for member in [pid, *_descendants(pid)]:
        try:
            with open(f"/proc/{member}/cmdline", "rb") as handle:
                title = handle.read().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        tree.append((member, _start_time(member), title))
    return tree


def _remember(registry: dict[int, int], pids: Iterable[int]) -> None:
    for pid in pids:
        start = _start_time(pid)
        if start is not None:
            registry[pid] = start


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as handle:
                found.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        children = _children(todo.pop())
        found.extend(children)
        todo.extend(children)
    return found


class _Watchdog:
    def __init__(self, coordinator: int) -> None:
        self.coordinator = coordinator
        self.watched: dict[int, int] = {}  # registered by pid: pid -> start time
        self.adopted: dict[int, int] = {}  # children started inside adopt_children blocks
        self.adopting = 0
        self.not_adopted: set[int] = set()
        self.pending = b""

    def handle(self, line: str) -> None:
        command, _, argument = line.strip().partition(" ")
        pids = [int(pid) for pid in argument.split()]
        if command == "watch":
            _remember(self.watched, pids)
        elif command == "adopt":  # pids: the children that existed before the block
            if not self.adopting:
                self.not_adopted = {os.getpid(), *pids}
            self.adopting += 1
        elif command == "unadopt":  # pids: the children when the block ended
            self.adopting = max(0, self.adopting - 1)
            if not self.adopting:  # exactly those started inside the blocks (polling may see later ones)
                inside = set(pids) - self.not_adopted
                self.adopted = {pid: start for pid, start in self.adopted.items() if pid in inside}
                _remember(self.adopted, inside - set(self.adopted))

    def adopt_new(self) -> None:
        """While a block is open: children not there when it opened are adopted (provisionally,
        until the block's end says which children it left)."""
        new = [pid for pid in _children(self.coordinator) if pid not in self.not_adopted and pid not in self.adopted]
        _remember(self.adopted, new)

    def read_commands(self) -> bool:
        """Handle the complete lines waiting on stdin; False once the coordinator closed it."""
        try:
            data = os.read(0, 65536)
        except BlockingIOError:
            return True
        if not data:
            return False
        lines = (self.pending + data).split(b"\n")
        self.pending = lines.pop()
        for line in lines:
            self.handle(line.decode())
        return True

    def kill_all(self) -> list[int]:
        """SIGKILL every watched process that is still the same process, and its descendants."""
        victims: list[int] = []
        for pid, start in {**self.adopted, **self.watched}.items():
            if _start_time(pid) == start:
                victims.extend([pid, *_descendants(pid)])
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return victims

    def run(self) -> None:
        os.set_blocking(0, False)
        stdin_open = True
        try:
            pidfd = os.pidfd_open(self.coordinator)
        except ProcessLookupError:  # it died while this process started: kill what it registered
            pidfd = -1
        if os.getppid() != self.coordinator:  # gone already (its pid may even be another process now)
            pidfd = -1
        while pidfd >= 0:
            inputs = [pidfd, 0] if stdin_open else [pidfd]
            ready, _, _ = select.select(inputs, [], [], ADOPT_POLL_S if self.adopting else None)
            if 0 in ready:
                stdin_open = self.read_commands()
            if pidfd in ready:
                break
            if self.adopting:
                self.adopt_new()
        while stdin_open:  # commands written just before the coordinator died still count
            ready, _, _ = select.select([0], [], [], 0)
            stdin_open = bool(ready) and self.read_commands()
        victims = self.kill_all()
        if victims:
            sys.stderr.write(
                f"ets_async watchdog: process {self.coordinator} exited; "
                f"killed the engine processes it left: {' '.join(map(str, victims))}\n"
            )


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _Watchdog(int(sys.argv[1])).run()
