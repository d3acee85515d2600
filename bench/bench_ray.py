"""Batch runs on Ray: does the coordinator scale with actors, and does a killed actor cost a problem?

On a local Ray cluster of this machine (loopback, one CPU per actor, no dashboard), on the scripted
backends of ``ets_async.testing`` (zero latency: all the time is the search's own, as in
bench_overhead.py), side by side in one run:

1. the same problems on 1 actor, then on 2 actors: problems/s of each (timed from the moment every
   actor has its backends to the last result) and their ratio, ``--repeats`` times in alternation
   (a shared 2-core machine moves single figures by 10%); the median ratio is the result;
2. 2 actors again, one SIGKILLed once a third of the problems are written: every result goes through
   a ``ResultWriter`` (the driver is the only writer), then the run file is read back and the
   problems lost (not in the file), duplicated (in it twice) and ended with an error are counted.

    python bench/bench_ray.py                         # 256 problems, ETS width 64
    python bench/bench_ray.py --problems 96 --method rebase --width 16 --depth 6
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path

import ray
from ets_async import SearchConfig
from ets_async.ray_batch import RayWorkers
from ets_async.results import ResultWriter, read_lines
from ets_async.testing import fake_backends


def problems(n: int) -> list[dict[str, str]]:
    return [{"id": f"p{i}", "question": f"What is {i} + {i % 7}?", "answer": str(i + i % 7)} for i in range(n)]


async def throughput(config: SearchConfig, items: list[dict[str, str]], actors: int) -> tuple[float, float]:
    """(problems/s, the driver's CPU seconds per second) of ``actors`` actors over ``items``, from
    every actor up to the last result."""
    async with RayWorkers(config, fake_backends, actors=actors) as workers:
        started, cpu = time.perf_counter(), time.process_time()
        count = sum([1 async for _ in workers.solve(items)])
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    assert count == len(items)
    return count / elapsed, cpu / elapsed


async def killed_actor(config: SearchConfig, items: list[dict[str, str]], path: Path) -> dict[str, int]:
    """Solve ``items`` on 2 actors, SIGKILL one a third of the way in; what the run file holds."""
    refused = 0
    async with RayWorkers(config, fake_backends, actors=2) as workers:
        pid = await workers.actors[0].__ray_call__.remote(lambda actor: os.getpid())
        with ResultWriter(path) as writer:
            async for result in workers.solve(items):
                refused += not writer.write(result.to_dict())
                if len(writer.done_ids()) == len(items) // 3:
                    os.kill(pid, signal.SIGKILL)
    counts = collections.Counter(line["id"] for line in read_lines(path))
    lines = path.read_text().count("\n")
    return {
        "problems": len(items),
        "lost": sum(1 for item in items if item["id"] not in counts),
        "duplicated": lines - len(counts),
        "refused by the writer": refused,
        "errors": sum(1 for line in read_lines(path) if line["error"] is not None),
    }


async def main(args: argparse.Namespace) -> None:
    config = SearchConfig(method=args.method, width=args.width, max_step_tokens=32, max_depth=args.depth,
                          max_concurrent_problems=args.concurrency)
    items = problems(args.problems)
    print(f"{args.problems} problems, {args.method} width {args.width}, depth {args.depth}, "
          f"{args.concurrency} concurrent per actor, scripted backends, {os.cpu_count()} cores")
    ratios = []
    for repeat in range(args.repeats):
        (one, one_cpu), (two, two_cpu) = [await throughput(config, items, n) for n in (1, 2)]
        ratios.append(two / one)
        print(
            f"[{repeat + 1}/{args.repeats}] 1 actor : {one:8.2f} problems/s  (the driver used {one_cpu:.2f} of a core)"
        )
        print(
            f"[{repeat + 1}/{args.repeats}] 2 actors: {two:8.2f} problems/s  (the driver used {two_cpu:.2f} of a core)"
            f"  {two / one:.2f}x"
        )
    print(f"2 actors against 1, median of {args.repeats}: {statistics.median(ratios):.2f}x "
          f"(range {min(ratios):.2f}x-{max(ratios):.2f}x)")
    with tempfile.TemporaryDirectory() as folder:
        counts = await killed_actor(config, items, Path(folder) / "run.jsonl")
    print("an actor SIGKILLed a third of the way in: " + ", ".join(f"{k} {v}" for k, v in counts.items()))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=256)
    parser.add_argument("--method", default="ets")
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="1-actor/2-actor pairs, alternated")
    parser.add_argument("--concurrency", type=int, default=16, help="max_concurrent_problems of each actor")
    args = parser.parse_args()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    try:
        asyncio.run(main(args))
    finally:
        ray.shutdown()
