"""The HTTP path against the in-process engine, and prefix affinity against round-robin routing.

    python bench/bench_http.py --problems 4 --width 4
    python bench/bench_http.py --no-affinity     # only the overhead comparison (one server)

One run, same problems, same search settings, side by side:

1. overhead: the problems through the in-process vLLM engine, then through one local ``vllm serve``
   (same model, same engine settings, one CPU core each), printed as a wall-time ratio (HTTP /
   in-process) and a generated-tokens/s ratio;
2. routing: the problems on two local servers with the client-side router (every request of a
   problem on one server), with client-side round-robin per request, and through vLLM's own router
   (``vllm-router``, one process in front of both servers; ``--routers``: consistent_hash, keyed on
   the problem's session key, cache_aware and round_robin by default), printed as the share of
   prompt tokens the servers reported as served from their prefix cache, and tokens/s.

Every run prefixes the system prompt with its own tag, so no run starts with another run's prefixes
in a cache. Servers are started here on loopback ports and always stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from ets_async import SearchConfig, solve_many
from ets_async.backends.fleet import HttpClient, HttpPolicy, HttpTransport, LazyTokenizer, RetryPolicy, Router
from ets_async.backends.prm_kinds import judge_prm
from ets_async.config import DEFAULT_SYSTEM_PROMPT, EngineConfig
from ets_async.datasets import load_problems
from ets_async.local_servers import ROUTER_POLICIES, local_router, local_servers
from gsm8k import DEFAULT_DATA  # a sibling module: the script's folder is on sys.path


class RoundRobinRouter(Router):
    """No affinity: request i goes to endpoint i mod N (the baseline of the affinity comparison)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._next = 0

    def _pick(self, scope):
        live = [e for e in self.endpoints if e.up]
        if not live:
            return None
        self._next += 1
        return live[self._next % len(live)]


class NoEmbedder:
    """REBASE needs no embeddings; solve_many still wants an embedder (and would start a default one)."""

    async def embed(self, texts):  # pragma: no cover - never called for rebase
        raise AssertionError("rebase does not embed")


async def measure(tag: str, problems, config: SearchConfig, policy, prm) -> dict[str, float]:
    config = config.replace(system_prompt=f"[{tag}] {DEFAULT_SYSTEM_PROMPT}")
    started = time.perf_counter()
    results = await solve_many(problems, config, policy=policy, prm=prm, embedder=NoEmbedder())
    wall = time.perf_counter() - started
    ok = [r for r in results if r.error is None]
    if len(ok) != len(results):
        print(f"  {tag}: {len(results) - len(ok)} problem(s) failed: {[r.error for r in results if r.error][:2]}")
    generated = sum(r.metrics.generated_tokens for r in ok)
    prompt = sum(r.metrics.prompt_tokens for r in ok)
    cached = sum(r.metrics.prefix_cached_tokens for r in ok)
    row = {
        "wall_s": wall,
        "generated_tokens": generated,
        "tok_per_s": generated / wall if wall else 0.0,
        "cached_share": cached / prompt if prompt else 0.0,
        "moves": sum(r.metrics.endpoint_moves for r in ok),
    }
    print(f"  {tag:<14} wall {wall:7.1f}s  generated {generated:6d} tok  {row['tok_per_s']:6.1f} tok/s  "
          f"cached share {row['cached_share']:.3f}")  # fmt: skip
    return row


def fleet(router_cls, urls: list[str], model: str, max_model_len: int):
    router = router_cls(urls, HttpClient(RetryPolicy(timeout_s=900.0)))
    tokenizer = LazyTokenizer(model)
    policy = HttpPolicy(router, tokenizer, max_model_len=max_model_len)
    return policy, judge_prm(HttpTransport(router, tokenizer), policy.tokenizer)


async def http_runs(
    problems, config: SearchConfig, urls: list[str], model: str, max_model_len: int, routers: list[str], log_dir: str
) -> dict[str, dict]:
    rows = {}
    policy, prm = fleet(Router, urls[:1], model, max_model_len)
    rows["http_1_server"] = await measure("http-1", problems, config, policy, prm)
    await policy.aclose()
    if len(urls) < 2:
        return rows
    policy, prm = fleet(Router, urls, model, max_model_len)
    rows["affinity"] = await measure("affinity-2", problems, config, policy, prm)
    await policy.aclose()
    policy, prm = fleet(RoundRobinRouter, urls, model, max_model_len)
    rows["round_robin"] = await measure("roundrobin-2", problems, config, policy, prm)
    await policy.aclose()
    for router_policy in routers:  # vllm-router in front of the same two servers, one endpoint for us
        with local_router(urls, router_policy, log_dir=log_dir) as router:
            policy, prm = fleet(Router, [router.url], model, max_model_len)
            rows[f"vllm-router {router_policy}"] = await measure(
                f"router-{router_policy}", problems, config, policy, prm
            )
            await policy.aclose()
    return rows


async def in_process_run(problems, config: SearchConfig, model: str, max_model_len: int) -> dict[str, float]:
    from ets_async import load_backends

    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = "0"  # the same single core the first server had
    # The servers' model and PRM (the judge), the servers' KV cache (1 GiB).
    engine = EngineConfig(model=model, prm="judge", max_model_len=max_model_len, max_num_seqs=64, cpu_kv_cache_gib=1)
    backends = load_backends(engine)
    try:
        return await measure("in-process", problems, config, backends.policy, backends.prm)
    finally:
        backends.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--problems", type=int, default=4)
    parser.add_argument("--width", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--max-step-tokens", type=int, default=32)
    parser.add_argument("--max-depth", type=int, default=4)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--no-affinity", action="store_true", help="only the overhead comparison (one server)")
    parser.add_argument(
        "--routers", nargs="*", default=["consistent_hash", "cache_aware", "round_robin"], choices=ROUTER_POLICIES,
        help="vllm-router policies to run in front of the two servers (none: skip vllm-router)",
    )
    args = parser.parse_args()

    from ets_async import models

    model = models.prepare_model(models.TEST_POLICY)
    problems, _ = load_problems(args.data, limit=args.problems)
    config = SearchConfig(
        method="rebase", width=args.width, max_tokens=args.max_tokens, max_step_tokens=args.max_step_tokens,
        max_depth=args.max_depth, seed=11,
    )  # fmt: skip
    print(f"{len(problems)} problems, rebase W={args.width}, max_tokens={args.max_tokens}; model {model}")

    servers = 1 if args.no_affinity else 2
    log_dir = tempfile.mkdtemp(prefix="bench_http_")
    with local_servers(model, servers, max_model_len=args.max_model_len, max_num_seqs=64, log_dir=log_dir) as running:
        urls = [server.url for server in running]
        rows = asyncio.run(http_runs(problems, config, urls, model, args.max_model_len, args.routers, log_dir))
    rows["in_process"] = asyncio.run(in_process_run(problems, config, model, args.max_model_len))

    http, local = rows["http_1_server"], rows["in_process"]
    print("\nHTTP overhead (one local server vs the in-process engine, same problems and settings):")
    print(f"  wall time ratio  http / in-process = {http['wall_s'] / local['wall_s']:.3f}")
    print(f"  tokens/s ratio   http / in-process = {http['tok_per_s'] / local['tok_per_s']:.3f}")
    if args.no_affinity:
        return
    print("Routing over two servers, same problems: prefix-cache share of prompt tokens, and speed")
    print(f"  {'routing':<30} {'cached share':>12} {'tokens/s':>9} {'wall s':>7}  vs client affinity (tokens/s)")
    base = rows["affinity"]["tok_per_s"]
    for name in ["affinity", "round_robin", *(f"vllm-router {p}" for p in args.routers)]:
        row = rows[name]
        label = {"affinity": "client-side affinity", "round_robin": "client-side round robin"}.get(name, name)
        print(
            f"  {label:<30} {row['cached_share']:>12.3f} {row['tok_per_s']:>9.1f} {row['wall_s']:>7.1f}  "
            f"{row['tok_per_s'] / base:.2f}x"
        )


if __name__ == "__main__":
    main()
