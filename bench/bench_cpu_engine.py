"""What an in-process CPU engine's decode throughput depends on: how many sequences decode at once,
and an embedder running beside it.

    python bench/bench_cpu_engine.py --engine-set model=smollm2-135m-instruct --batch-sizes 16 64 256 --threads 1 2

Batch sizes: the engine prefills ``N`` distinct 64-token prompts and decodes ``--tokens`` tokens for
each (EOS ignored, prefix cache reset), for each ``N`` in ``--batch-sizes``, and prints generated
tokens/s; a search step is alike (its parent's newest step is prefilled, the rest is cached, then
tens of tokens are decoded). Where tokens/s stops growing with N,
decode is compute-bound: a KV saving that lets more sequences run at once cannot raise throughput,
only spare the recomputation of preempted ones.

Contention: ETS embeds the new steps that can be selected while the engine generates the next ones; on CPU both run on
the same cores. The engine decodes a fixed batch (``--requests`` sequences) alone, then with the
embedder encoding GSM8K solution lines in a loop at each ``--threads`` setting (torch's intra-op
threads of this process), in alternating rounds. Prints the engine's tokens/s, the embedder's
steps/s, the engine's slowdown against running alone, and what one embedded step costs in engine
tokens: set against the tokens per step a search generates, that is the share of engine time ETS's
coverage term takes.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from pathlib import Path

import torch
from ets_async import EngineConfig, load_backends
from ets_async.backends.vllm_engine import next_request_id
from gsm8k import DEFAULT_DATA, read_rows, solution_lines  # a sibling module: the script's folder is on sys.path


async def decode_batch(engine, requests: int, tokens: int) -> float:
    """Seconds the engine takes to decode ``requests`` sequences of exactly ``tokens`` tokens."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=0.8, seed=0)

    async def one(i: int) -> None:
        prompt = {"prompt_token_ids": [1 + (i * 7 + j) % 5000 for j in range(64)]}
        async for _ in engine.generate(prompt, params, next_request_id("contention")):
            pass

    await engine.reset_prefix_cache()
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(requests)))
    return time.perf_counter() - started


def embed_until(stop: threading.Event, embedder, texts: list[str], batch: int, done: list[int]) -> None:
    """Encode batches of step texts until ``stop`` is set, as ETS's embedder thread does."""
    i = 0
    while not stop.is_set():
        embedder.encode([texts[(i + k) % len(texts)] for k in range(batch)])
        done[0] += batch
        i += batch


async def measure(engine, embedder, texts, args, threads: int | None) -> dict[str, float]:
    """One decode of the fixed batch, alone (``threads`` None) or beside the embedding loop."""
    if threads is None:
        seconds = await decode_batch(engine, args.requests, args.tokens)
        return {"threads": 0, "engine_tokens_per_s": args.requests * args.tokens / seconds, "embedded_per_s": 0.0}
    torch.set_num_threads(threads)
    stop, done = threading.Event(), [0]
    worker = threading.Thread(target=embed_until, args=(stop, embedder, texts, args.embed_batch, done))
    worker.start()
    try:
        seconds = await decode_batch(engine, args.requests, args.tokens)
    finally:
        stop.set()
        await asyncio.to_thread(worker.join)
    return {
        "threads": threads,
        "engine_tokens_per_s": args.requests * args.tokens / seconds,
        "embedded_per_s": done[0] / seconds,
    }


async def batch_sizes(engine, args) -> None:
    rates = {}
    for size in args.batch_sizes:
        rates[size] = size * args.tokens / await decode_batch(engine, size, args.tokens)
        print(f"{size} sequences at once: {rates[size]:.1f} tokens/s", flush=True)
    first = rates[args.batch_sizes[0]]
    print(
        f"tokens/s relative to {args.batch_sizes[0]} at once: "
        + ", ".join(f"{n}: x{r / first:.2f}" for n, r in rates.items())
    )


async def contention(engine, embedder, args) -> None:
    texts = solution_lines(read_rows(args.data, 200))[:512]
    embedder.encode(texts[:8])  # load the model outside the timed runs
    settings: list[int | None] = [None, *args.threads]
    rows = []
    for round_ in range(args.rounds):
        for threads in settings if round_ % 2 == 0 else settings[::-1]:
            row = await measure(engine, embedder, texts, args, threads)
            rows.append(row)
            print(
                f"round {round_} embedder threads {row['threads']}: engine {row['engine_tokens_per_s']:.1f} tokens/s, "
                f"embedder {row['embedded_per_s']:.1f} steps/s",
                flush=True,
            )
    alone = statistics.fmean(r["engine_tokens_per_s"] for r in rows if r["threads"] == 0)
    print(f"engine alone: {alone:.1f} tokens/s (mean of {args.rounds} rounds)")
    for threads in args.threads:
        mine = [r for r in rows if r["threads"] == threads]
        speed = statistics.fmean(r["engine_tokens_per_s"] for r in mine)
        steps = statistics.fmean(r["embedded_per_s"] for r in mine)
        print(f"embedder on {threads} thread(s): engine x{speed / alone:.2f} of alone ({speed:.1f} tokens/s), "
              f"embedder {steps:.1f} steps/s: each embedded step cost the engine {(alone - speed) / steps:.2f} tokens")


async def run(args, backends) -> None:
    engine = backends.engines[0].llm
    await decode_batch(engine, 8, 8)  # warm the engine outside the timed runs
    if args.batch_sizes:
        await batch_sizes(engine, args)
    if args.threads:
        await contention(engine, backends.embedder, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--batch-sizes", type=int, nargs="*", default=[16, 64, 256], help="sequences decoded at once, alone"
    )
    parser.add_argument("--requests", type=int, default=64, help="sequences decoded at once beside the embedder")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per sequence")
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2], help="embedder thread counts to compare")
    parser.add_argument(
        "--embed-batch", type=int, default=128, help="steps per encode call (ETS sends up to 128 at once)"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE", help="EngineConfig field")
    args = parser.parse_args()

    backends = load_backends(EngineConfig.load(None, args.engine_set, base={"max_model_len": 2048}))
    try:
        asyncio.run(run(args, backends))
    finally:
        backends.shutdown()


if __name__ == "__main__":
    main()
