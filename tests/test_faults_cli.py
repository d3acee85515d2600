"""``ets-async run`` on the real engine (SmolLM2-135M), as a real subprocess, under faults: the run
SIGKILLed while its engine starts leaves no engine process behind; its engine SIGKILLed mid-run stops
the run with exit code 1 and one line saying why, and running the same command again resumes with
nothing lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from ets_async import models, watchdog
from ets_async.results import HEADER_KEY

pytestmark = pytest.mark.engine

PROBLEMS = 6
SEARCH = ["--method", "rebase", "--width", "2", "--max-concurrent", "2", "--set", "max_step_tokens=24",
          "--set", "max_tokens=48", "--set", "max_depth=2"]  # fmt: skip
ENGINE = ["--model", models.TEST_POLICY, "--engine-set", "max_model_len=1024", "--engine-set", "cpu_kv_cache_gib=1"]


def run_command(tmp_path: Path) -> list[str]:
    dataset = tmp_path / "d.jsonl"
    with dataset.open("w") as handle:
        for i in range(PROBLEMS):
            handle.write(
                json.dumps({"id": f"q{i}", "question": f"What is {i} + {i + 2}?", "answer": f"#### {2 * i + 2}"}) + "\n"
            )
    return [sys.executable, "-m", "ets_async", "run", "--dataset", str(dataset), "--out", str(tmp_path / "out.jsonl"),
            *SEARCH, *ENGINE, "--quiet"]  # fmt: skip


def records(out: Path) -> list[dict]:
    if not out.exists():
        return []
    lines = [json.loads(line) for line in out.read_bytes().splitlines(keepends=True) if line.endswith(b"\n")]
    return [line for line in lines if HEADER_KEY not in line]


def start(command: list[str], stderr_path: Path) -> subprocess.Popen:
    with stderr_path.open("wb") as stderr:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)


def wait_for(condition, proc: subprocess.Popen, stderr_path: Path, what: str, timeout_s: float = 900) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert proc.poll() is None, f"the run exited ({proc.returncode}) before {what}: {stderr_path.read_text()}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:g}s"
        time.sleep(0.05)


def descendants(pid: int) -> tuple[dict[str, int], list[tuple[int, int | None]]]:
    """The run's descendants: pids by title (VLLM::EngineCore, VLLM::Worker, ...), and all of them
    (the engine's, the watchdog, multiprocessing's resource tracker) as (pid, start time)."""
    tree = watchdog.process_tree(pid)[1:]
    return {title: member for member, _, title in tree}, [(member, start) for member, start, _ in tree]


def survivors(processes, within_s: float) -> tuple[list, float]:
    """The processes still running after ``within_s`` seconds (and how long they took to go)."""
    started = time.monotonic()
    while (alive := [p for p in processes if watchdog.running(*p)]) and time.monotonic() - started < within_s:
        time.sleep(0.05)
    return alive, time.monotonic() - started


def stop(proc: subprocess.Popen, tree) -> None:
    """Clean up after a failed test, by pid: the run (its watchdog then ends its engine) and what it started."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid, start_time in tree:
        if watchdog.running(pid, start_time):
            os.kill(pid, signal.SIGKILL)


def test_a_run_sigkilled_while_its_engine_starts_leaves_no_engine_process(tmp_path, no_shared_engine):
    """Killed at the worst moment: the engine's processes exist but the run has not heard from them yet."""
    stderr = tmp_path / "stderr"
    proc = start(run_command(tmp_path), stderr)
    tree: list = []
    try:
        wait_for(lambda: "VLLM::Worker" in descendants(proc.pid)[0], proc, stderr, "engine worker")
        titles, tree = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
        left, took = survivors(tree, within_s=15)
        assert not left, f"still running 15 s after the run was killed: {left} of {titles}"
        print(f"\nall {len(tree)} processes of the killed run gone {took:.2f}s after it: {sorted(titles)}")
    finally:
        stop(proc, tree)


def test_engine_death_stops_the_run_and_a_rerun_resumes(tmp_path, no_shared_engine):
    out, stderr = tmp_path / "out.jsonl", tmp_path / "stderr"
    command = run_command(tmp_path)
    proc = start(command, stderr)
    tree: list = []
    try:
        wait_for(lambda: bool(records(out)), proc, stderr, "finished problem")
        titles, tree = descendants(proc.pid)
        core = titles["VLLM::EngineCore"]
        os.kill(core, signal.SIGKILL)
        assert proc.wait(timeout=120) == 1
        lines = [line for line in stderr.read_text().splitlines() if line.strip()]
        assert len(lines) == 1, lines
        assert lines[0].startswith(
            f"Error: the vLLM engine died: its EngineCore process (pid {core}) was killed by SIGKILL; "
        )
        assert lines[0].endswith(f"of {PROBLEMS} problems done; run the same command again to resume")
        assert not survivors(tree, within_s=15)[0]
    finally:
        stop(proc, tree)
    written = records(out)
    assert 1 <= len(written) < PROBLEMS
    assert all(r["error"] is None for r in written)  # the problems the dead engine failed were not recorded
    before = out.read_bytes()

    rerun = subprocess.run(command, capture_output=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr.decode()
    assert out.read_bytes().startswith(before)
    final = records(out)
    assert sorted(r["id"] for r in final) == [f"q{i}" for i in range(PROBLEMS)]  # each exactly once
    assert all(r["error"] is None for r in final)
