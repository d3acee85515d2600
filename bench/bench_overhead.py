"""Coordinator capacity: how many steps/s one search process sustains when the engine costs nothing.

``solve_many`` runs with the scripted backends of ``ets_async.testing`` (zero latency: every policy,
PRM and embedding call returns at once), so all the time is the coordinator's own: the search loop,
micro-batching, the Rust core, HiGHS, asyncio, and the scripted backends themselves (reported
apart in the profile). Usage:

    python bench/bench_overhead.py                    # ETS and REBASE, W=64, 256 concurrent, one core
    python bench/bench_overhead.py --full             # widths 16/64/256 x 64/256 concurrent problems
    python bench/bench_overhead.py --widths 16 64 --concurrency 64 256 --methods ets rebase

Per run it prints generated steps/s and tokens/s (wall clock), CPU time per step (this process, all
threads) and the steps one fully used core would sustain (1 / CPU per step: what the wall rate
would be on an idle core), the wall time a problem waits for each selection (queueing included),
and memory per live problem
(peak RSS above the starting RSS, divided by the concurrent problems: an upper bound, as it also
holds fixed costs such as a selection thread's malloc arena and HiGHS). ``--cores 1`` (default)
pins the process to one CPU, so "one coordinator on one core" is measured as such. Then one
profiled run (``--profile-width``/``--profile-concurrency``) prints where the CPU time goes,
grouped by area, and the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import time
from dataclasses import dataclass

from ets_async import SearchConfig, solve_many
from ets_async.search import loop
from ets_async.testing import fake_backends

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


@dataclass
class Run:
    method: str
    width: int
    concurrency: int
    problems: int
    steps: int
    tokens: int
    selections: int
    wall_s: float
    cpu_s: float
    selection_s: float
    peak_rss_delta: int


def config_for(method: str, width: int, concurrency: int) -> SearchConfig:
    # Scripted steps are 10-24 tokens; answers come from depth 4 on (fake_backends(answer_depth=4)).
    return SearchConfig(
        method=method, width=width, max_concurrent_problems=concurrency, max_depth=8, max_tokens=512, seed=1
    )


async def _sample_rss(peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], rss_bytes())
        try:
            await asyncio.wait_for(stop.wait(), 0.02)
        except TimeoutError:
            pass


async def _solve(method: str, width: int, concurrency: int, problems: int) -> tuple[list, int]:
    backends = fake_backends(answer_depth=4)
    texts = [f"What is {i} + {i % 7}?" for i in range(problems)]
    peak = [rss_bytes()]
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(peak, stop))
    start_rss = peak[0]
    results = await solve_many(
        texts, config_for(method, width, concurrency),
        policy=backends.policy, prm=backends.prm, embedder=backends.embedder,
    )
    stop.set()
    await sampler
    return results, peak[0] - start_rss


def run(method: str, width: int, concurrency: int, rounds: float) -> Run:
    problems = max(concurrency, int(concurrency * rounds))
    c0, t0 = time.process_time(), time.perf_counter()
    results, rss = asyncio.run(_solve(method, width, concurrency, problems))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    errors = [r.error for r in results if r.error]
    assert not errors, errors[:3]
    m = [r.metrics for r in results]
    return Run(
        method, width, concurrency, problems,
        steps=int(sum(x["generated_steps"] for x in m)),
        tokens=int(sum(x["generated_tokens"] for x in m)),
        selections=int(sum(x["selections"] for x in m)),
        wall_s=wall, cpu_s=cpu,
        selection_s=sum(x["selection_time_s"] for x in m),
        peak_rss_delta=rss,
    )


AREAS = [  # (area, substring of the profile's file name), first match wins
    ("scripted backends", "ets_async/testing.py"),
    ("search loop", "ets_async/search/"),
    ("micro-batching", "ets_async/batching.py"),
    ("HiGHS (solver.py, highspy)", "solver.py"),
    ("HiGHS (solver.py, highspy)", "highspy"),
    ("ets_async (other)", "ets_async/"),
    ("asyncio", "asyncio/"),
    ("numpy", "numpy/"),
]


IDLE = "idle (waiting for work)"


def area_of(func: tuple[str, int, str]) -> str:
    filename, _, name = func
    if filename == "~":  # a builtin: name it by what it is a method of
        if "SimpleQueue' objects" in name and "get" in name or "epoll" in name:
            return IDLE
        if "ets_async._core" in name:
            return "Rust core (_core)"
        if "highspy" in name or "Highs" in name:
            return "HiGHS (solver.py, highspy)"
        return "builtins"
    for area, key in AREAS:
        if key in filename:
            return area
    return "other Python"


def profile(method: str, width: int, concurrency: int, rounds: float, top: int) -> None:
    """One run under cProfile, in the event-loop thread and in every selection thread."""
    profiles: list[cProfile.Profile] = []

    def start_profiling() -> None:
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()

    # The selection threads profile themselves from their first task on; they exit (and their
    # profilers with them) when the block ends.
    main = cProfile.Profile()
    c0 = time.process_time()
    with loop.selection_threads(start_profiling):
        main.enable()
        try:
            r = run(method, width, concurrency, rounds)
        finally:
            main.disable()
    cpu = time.process_time() - c0
    stats = pstats.Stats(main)
    for p in profiles:
        stats.add(p)
    by_area: dict[str, float] = {}
    total = 0.0
    for func, (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        area = area_of(func)
        if area != IDLE:
            by_area[area] = by_area.get(area, 0.0) + tottime
            total += tottime
    print(f"\nprofile: {method} W={width}, {concurrency} concurrent, {r.steps} steps, {1e6 * cpu / r.steps:.1f} us CPU"
          " per step under cProfile (which inflates Python-heavy areas)")
    for area, t in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"  {area:<28} {100 * t / total:5.1f}%")
    print(f"top {top} functions by own time (idle waits included):")
    stats.sort_stats("tottime").print_stats(top)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", nargs="+", default=["ets", "rebase"])
    ap.add_argument("--widths", type=int, nargs="+", default=[64])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[256])
    ap.add_argument("--full", action="store_true", help="widths 16 64 256 x concurrency 64 256")
    ap.add_argument("--rounds", type=float, default=1.0,
                    help="problems per concurrency slot (2: 512 problems at 256 concurrent)")
    ap.add_argument("--cores", type=int, default=1, help="pin the process to this many CPUs (0: do not pin)")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--profile-method", default="ets")
    ap.add_argument("--profile-width", type=int, default=64)
    ap.add_argument("--profile-concurrency", type=int, default=64)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    if args.full:
        args.widths, args.concurrency = [16, 64, 256], [64, 256]
    if args.cores > 0 and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.cores])
    print(f"coordinator on {loop.available_cores()} core(s); selection threads: {loop.available_cores()}")

    run("ets", 16, 4, 1)  # warm-up: imports, HiGHS banner, first compilations
    header = (
        f"{'method':>7} {'W':>4} {'conc':>5} {'problems':>8} {'steps':>7} | {'steps/s':>8} {'tok/s':>9}"
        f" | {'CPU us/step':>11} {'steps/CPU-s':>11} {'ms/select':>9} | {'MiB/problem':>11}"
    )
    print(header)
    print("-" * len(header))
    for width in args.widths:
        for concurrency in args.concurrency:
            for method in args.methods:
                r = run(method, width, concurrency, args.rounds)
                per_step = r.cpu_s / r.steps
                print(
                    f"{r.method:>7} {r.width:>4} {r.concurrency:>5} {r.problems:>8} {r.steps:>7} |"
                    f" {r.steps / r.wall_s:>8.0f} {r.tokens / r.wall_s:>9.0f} | {1e6 * per_step:>11.1f}"
                    f" {1 / per_step:>11.0f} {1e3 * r.selection_s / r.selections:>9.2f} |"
                    f" {r.peak_rss_delta / r.concurrency / 2**20:>11.3f}"
                )
    print("targets (issue 12, one core, W=64, 256 concurrent): ETS >= 10,000 steps/s, REBASE >= 20,000 steps/s;"
          " steps/CPU-s is the rate of a core this process had to itself")
    if not args.no_profile:
        profile(args.profile_method, args.profile_width, args.profile_concurrency, 1.0, args.top)


if __name__ == "__main__":
    main()
