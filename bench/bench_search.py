"""ETS against REBASE (and scaling with concurrency) on the same GSM8K problems and the same engine.

    python bench/bench_search.py compare --problems 20 --width 16
    python bench/bench_search.py compare --methods rebase ets ets:lambda_s=0   # variants: method:key=value,...
    python bench/bench_search.py scaling --problems 16 --width 4 --concurrency-levels 1 4 16
    python bench/bench_search.py pressure --problems 32 --width 16 --concurrency 32 --kv-blocks 600 --rounds 2

``pressure`` caps the engine's KV cache (``--kv-blocks``, 32 tokens each) below what REBASE's trees
need at that concurrency, so the engine preempts and recomputes, and runs the methods in alternating
rounds (A B, then B A, ...) on the same problems: problems/s and tokens/s per method, the engine's
preemptions and prefix-cache hit rate per run, and the throughput ratios averaged over rounds.

All runs share one engine; its prefix cache is reset before each run so no run inherits another's
cache. Prints per-method means and the side-by-side ratios. Compare mode also prints how much of the
reference's KV any selection rule could save at all: the newest layer (the candidates' own steps) is
held whatever is kept, so generated-only KV / newest-layer tokens bounds every method's KV ratio.
``score_wait_share`` and ``embed_wait_share``: the part of the problems' search time in which a
round's generation was done and the search still waited for PRM scores, then for embeddings.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from bench_quality import sample_engine  # sibling modules: the script's folder is on sys.path
from ets_async import SearchConfig, load_backends, solve_many
from ets_async.config import EngineConfig
from ets_async.datasets import load_problems
from gsm8k import DEFAULT_DATA


def mean(records, key):
    return statistics.fmean(getattr(r.metrics, key) for r in records) if records else 0.0


def method_variant(spec: str) -> tuple[str, dict[str, Any]]:
    """'ets' or 'ets:lambda_s=0,cluster_threshold=0.3' -> (method, SearchConfig overrides), parsed
    like the CLI's ``--set`` (unknown fields are refused by name)."""
    method, _, rest = spec.partition(":")
    return spec, {"method": method, **SearchConfig.parse_settings(filter(None, rest.split(",")))}


def engine_counters() -> dict[str, float]:
    """The engine's cumulative preemptions and prefix-cache queries and hits (tokens)."""
    from vllm.v1.metrics.reader import Counter, get_metrics_snapshot

    wanted = {"vllm:num_preemptions": "preemptions", "vllm:prefix_cache_queries": "prefix_queries",
              "vllm:prefix_cache_hits": "prefix_hits"}  # fmt: skip
    totals = dict.fromkeys(wanted.values(), 0.0)
    for metric in get_metrics_snapshot():
        if metric.name in wanted and isinstance(metric, Counter):
            totals[wanted[metric.name]] += metric.value
    return totals


async def run_once(backends, problems, config, label=None):
    engine = backends.engines[0].llm
    await engine.reset_prefix_cache()
    usage: list[float] = []
    sampler = asyncio.create_task(sample_engine(usage, []))
    before = engine_counters()
    started = time.perf_counter()
    try:
        results = await solve_many(
            problems, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder
        )
    finally:
        sampler.cancel()
    wall = time.perf_counter() - started
    counters = {key: value - before[key] for key, value in engine_counters().items()}
    ok = [r for r in results if r.error is None]
    graded = [r for r in ok if r.correct is not None]
    prompt_tokens = sum(r.metrics.prompt_tokens for r in ok)
    search_time = sum(r.metrics.wall_time_s for r in ok)
    return {
        "method": label or config.method,
        "width": config.width,
        "concurrency": config.max_concurrent_problems,
        "problems": len(results),
        "errors": len(results) - len(ok),
        "accuracy": sum(bool(r.correct) for r in graded) / len(graded) if graded else float("nan"),
        "kv_tokens_mean": mean(ok, "kv_tokens_mean"),
        "kv_tokens_peak": mean(ok, "kv_tokens_peak"),
        "kv_generated_mean": mean(ok, "kv_tokens_mean") - mean(ok, "root_prompt_tokens"),
        "kv_newest_layer_mean": mean(ok, "kv_frontier_tokens_mean"),
        "expanded_nodes": mean(ok, "expanded_nodes_mean"),
        "cluster_ratio": mean(ok, "cluster_ratio_mean"),
        "kv_blocks_mean": mean(ok, "kv_blocks_mean"),
        "kv_blocks_peak": mean(ok, "kv_blocks_peak"),
        "engine_kv_usage_mean": statistics.fmean(usage) if usage else float("nan"),
        "engine_kv_usage_peak": max(usage, default=float("nan")),
        "generated_tokens": mean(ok, "generated_tokens"),
        "selection_ms_per_step": 1000 * sum(r.metrics.selection_time_s for r in ok)
        / max(1, sum(r.metrics.selections for r in ok)),
        "prefix_hit_rate": sum(r.metrics.prefix_cached_tokens for r in ok) / max(1, prompt_tokens),
        # shares of the problems' search time spent waiting, after a round's generation, for scores / embeddings
        "score_wait_share": sum(r.metrics.score_wait_s for r in ok) / max(1e-9, search_time),
        "embed_wait_share": sum(r.metrics.embed_wait_s for r in ok) / max(1e-9, search_time),
        "engine_preemptions": counters["preemptions"],
        "engine_prefix_hit_rate": counters["prefix_hits"] / max(1.0, counters["prefix_queries"]),
        "wall_s": wall,
        "problems_per_s": len(results) / wall,
        "tokens_per_s": sum(r.metrics.generated_tokens for r in ok) / wall,
    }


def print_rows(rows, keys):
    print(" | ".join(f"{k:>18}" for k in keys))
    for row in rows:
        print(" | ".join(f"{row[k]:>18.4g}" if isinstance(row[k], float) else f"{row[k]:>18}" for k in keys))


def base_config(args, concurrency: int) -> SearchConfig:
    return SearchConfig(
        width=args.width,
        max_step_tokens=args.max_step_tokens,
        max_tokens=args.max_tokens,
        max_concurrent_problems=concurrency,
        seed=args.seed,
    )


async def compare(args, backends, problems):
    base = base_config(args, args.concurrency)
    rows = []
    for spec in args.methods:
        label, overrides = method_variant(spec)
        rows.append(await run_once(backends, problems, base.replace(**overrides), label))
    keys = ["method", "accuracy", "kv_tokens_mean", "kv_generated_mean", "kv_newest_layer_mean", "kv_tokens_peak",
            "kv_blocks_mean", "kv_blocks_peak", "engine_kv_usage_mean", "engine_kv_usage_peak", "expanded_nodes",
            "cluster_ratio", "generated_tokens", "selection_ms_per_step", "score_wait_share", "embed_wait_share",
            "prefix_hit_rate", "wall_s", "problems_per_s"]
    print_rows(rows, keys)
    reference = rows[0]
    print(
        f"\nbound: {reference['method']}'s generated-only KV / its newest layer = "
        f"x{reference['kv_generated_mean'] / reference['kv_newest_layer_mean']:.2f} "
        "(no selection at this budget can shrink generated-only KV by more)"
    )
    print(
        f"\nratios {reference['method']} / other (KV and tokens: >1 means the other is smaller; throughput: other / "
        f"{reference['method']})"
    )
    for row in rows[1:]:
        print(
            f"  {row['method']:>10}: KV tokens mean x{reference['kv_tokens_mean'] / row['kv_tokens_mean']:.2f}"
            f"  KV generated-only mean x{reference['kv_generated_mean'] / row['kv_generated_mean']:.2f}"
            f"  KV peak x{reference['kv_tokens_peak'] / row['kv_tokens_peak']:.2f}"
            f"  KV blocks mean x{reference['kv_blocks_mean'] / row['kv_blocks_mean']:.2f}"
            f"  engine KV usage mean x{reference['engine_kv_usage_mean'] / row['engine_kv_usage_mean']:.2f}"
            f"  generated tokens x{reference['generated_tokens'] / row['generated_tokens']:.2f}"
            f"  throughput x{row['problems_per_s'] / reference['problems_per_s']:.2f}"
            f"  accuracy {reference['accuracy']:.2f} -> {row['accuracy']:.2f}"
        )
    return rows


async def scaling(args, backends, problems):
    label, overrides = method_variant(args.methods[0])
    rows = []
    for concurrency in args.concurrency_levels:
        config = base_config(args, concurrency).replace(**overrides)
        rows.append(await run_once(backends, problems, config, label))
    print_rows(rows, ["method", "concurrency", "problems", "errors", "generated_tokens", "wall_s", "problems_per_s"])
    base = rows[0]["problems_per_s"]
    print(
        "\nproblems/s relative to concurrency 1: "
        + ", ".join(f"{r['concurrency']}: x{r['problems_per_s'] / base:.2f}" for r in rows)
    )
    return rows


async def pressure(args, backends, problems):
    """Alternating rounds of each method under a KV cache too small for the first method's trees."""
    base = base_config(args, args.concurrency)
    variants = [method_variant(spec) for spec in args.methods]
    rows = []
    for round_ in range(args.rounds):
        for label, overrides in variants if round_ % 2 == 0 else variants[::-1]:
            row = await run_once(backends, problems, base.replace(**overrides), label)
            rows.append({**row, "round": round_})
            print(
                f"round {round_} {label}: {row['problems_per_s']:.4g} problems/s, {row['tokens_per_s']:.4g} tokens/s, "
                f"{row['engine_preemptions']:.0f} preemptions, prefix hits {row['engine_prefix_hit_rate']:.1%}",
                flush=True,
            )
    keys = ["method", "round", "accuracy", "kv_tokens_mean", "kv_blocks_mean", "kv_blocks_peak", "engine_kv_usage_mean",
            "engine_preemptions", "engine_prefix_hit_rate", "generated_tokens", "score_wait_share", "embed_wait_share",
            "wall_s", "problems_per_s", "tokens_per_s"]
    print_rows(rows, keys)
    reference = variants[0][0]
    for label, _ in variants[1:]:
        ratios = [
            other["problems_per_s"] / ref["problems_per_s"]
            for ref, other in zip(
                (r for r in rows if r["method"] == reference), (r for r in rows if r["method"] == label), strict=True
            )
        ]
        print(f"\n{label} / {reference} problems/s per round: " + ", ".join(f"x{r:.2f}" for r in ratios)
              + f"; mean x{statistics.fmean(ratios):.2f}")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["compare", "scaling", "pressure"])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--problems", type=int, default=20)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=["rebase", "ets"])
    parser.add_argument("--max-step-tokens", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent problems (compare mode)")
    parser.add_argument("--concurrency-levels", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kv-blocks", type=int, default=None, help="cap the engine's KV cache (pressure mode)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per method (pressure mode)")
    parser.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE", help="EngineConfig field")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args()

    problems, skipped = load_problems(args.data, limit=args.problems)
    assert not skipped, skipped
    engine = EngineConfig.load(None, args.engine_set, base={"max_model_len": 2048}, num_kv_blocks=args.kv_blocks)
    backends = load_backends(engine)
    modes = {"compare": compare, "scaling": scaling, "pressure": pressure}
    try:
        rows = asyncio.run(modes[args.mode](args, backends, problems))
    finally:
        backends.shutdown()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
