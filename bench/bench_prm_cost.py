"""What scoring a step costs each PRM kind: prefill tokens per scored step against depth.

    python bench/bench_prm_cost.py --problems 8 --depth 8 --children 4

A search scores every new step once. How much of its prompt the PRM engine computes again depends on
the kind and on the engine's prefix cache:

* judge: the policy's own token ids plus a question, on the policy's engine (generate runner);
* math_shepherd: the question and the steps with their tags, on its own engine (generate runner);
* qwen_prm in process: token classification on its own pooling engine, which reads the scored prefix
  from its cache (``EngineTransport.pool``);
* verifier: the policy's own token ids on its own pooling engine (a head learned from rollouts, read
  at the last token), which reads the scored prefix from its cache the same way;
* qwen_prm over HTTP: the same model behind ``vllm serve --runner pooling``, where a token pooling
  request cannot read the cache, so it prefills the whole trajectory.

The tree: each problem has ``--children`` steps per depth; the first child of each depth is the one
that is extended (the search keeps one path here, its siblings are scored and dropped). Step texts
are lines of GSM8K reference solutions. The models are tiny random-weight Qwen2 models (tests/tiny_models.py)
with the real Qwen2.5 tokenizer, so token counts are a real Qwen2.5 PRM's; only counts are measured
here (the engine reports what it read from its cache), never scores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ets_async import EngineConfig, load_backends, models
from ets_async.backends.fleet import HttpClient, RetryPolicy, connect
from ets_async.backends.fleet.transport import POOL_EVERY_TOKEN
from ets_async.backends.prm_kinds import judge_prm, qwen_prm
from ets_async.backends.protocols import PRM, PrefillCount, ScoreRequest
from ets_async.backends.vllm_engine import EngineTransport
from ets_async.local_servers import local_servers
from ets_async.verifier_checkpoint import TrainedHead, save_head
from gsm8k import DEFAULT_DATA, read_rows, solution_lines  # a sibling module: the script's folder is on sys.path

from tests import tiny_models


def tree_levels(
    problems: Sequence[str], depth: int, children: int, lines: Sequence[str]
) -> list[list[tuple[str, tuple[str, ...]]]]:
    """Per depth, the (problem, steps) of every scored child: the kept path plus one new step each."""
    levels = []
    for d in range(1, depth + 1):
        level = []
        for i, problem in enumerate(problems):
            path = tuple(lines[(i * depth + k) % len(lines)] for k in range(d - 1))
            for c in range(children):
                step = lines[(i * depth + d - 1 + 7 * c) % len(lines)]
                level.append((problem, (*path, step)))
        levels.append(level)
    return levels


async def measure(name: str, prm: PRM, prefill: PrefillCount, levels, to_request) -> list[tuple[float, float]]:
    """Per depth: mean prompt tokens and mean computed (prefilled) tokens per scored step."""
    rows = []
    for level in levels:
        before = (prefill.requests, prefill.prompt_tokens, prefill.computed_tokens)
        await prm.score([to_request(problem, steps) for problem, steps in level])
        requests = prefill.requests - before[0]
        rows.append(((prefill.prompt_tokens - before[1]) / requests, (prefill.computed_tokens - before[2]) / requests))
    total = prefill.computed_tokens / prefill.prompt_tokens
    print(
        f"  {name}: {prefill.requests} steps scored, computed {prefill.computed_tokens} of {prefill.prompt_tokens} "
        f"prompt tokens ({total:.0%})"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--children", type=int, default=4)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()

    rows = read_rows(args.data, 200)
    problems = [row["question"] for row in rows[: args.problems]]
    lines = solution_lines(rows)
    levels = tree_levels(problems, args.depth, args.children, lines)
    qwen_tokenizer = Path(models.prepare_model("qwen2.5-coder-0.5b-instruct"))
    root = Path(tempfile.mkdtemp(prefix="bench_prm_cost_"))
    lm = tiny_models.causal_lm(root / "lm", tokenizer_source=qwen_tokenizer)
    prm_model = tiny_models.process_reward_model(root / "prm", tokenizer_source=qwen_tokenizer)
    head = root / "verifier.safetensors"  # a random linear head on the last layer: only token counts matter
    size, layers = (int(json.loads((lm / "config.json").read_text())[k]) for k in ("hidden_size", "num_hidden_layers"))
    weights = np.random.default_rng(0).standard_normal(size).astype(np.float32)
    save_head(TrainedHead("linear", layers, {"a": weights, "c": np.zeros(1, np.float32)}), head, {})
    prm_models = {"math_shepherd": lm, "qwen_prm": prm_model, "verifier": head}
    base = dict(model=str(lm), dtype="float32", max_model_len=4096, max_num_seqs=64, cpu_kv_cache_gib=2)
    table: dict[str, list[tuple[float, float]]] = {}

    async def in_process() -> None:
        for kind, prm_path in prm_models.items():
            backends = load_backends(EngineConfig(**base, prm=kind, prm_model=str(prm_path)))
            try:
                tokenizer = backends.policy.tokenizer
                delimiter = "\n\n"

                def policy_ids(problem: str, steps: tuple[str, ...]) -> ScoreRequest:
                    ids = backends.policy.render(problem, None, "{problem}")  # noqa: B023 - called within this iteration
                    ids += tokenizer.encode("".join(s + delimiter for s in steps), add_special_tokens=False)  # noqa: B023
                    return ScoreRequest(tuple(ids), problem, steps)

                if kind == "math_shepherd":  # the judge on the policy's engine, in the same run
                    judge = judge_prm(EngineTransport(backends.engines[0]), tokenizer)
                    table["judge"] = await measure("judge", judge, judge.transport.prefill, levels, policy_ids)
                name = {"qwen_prm": "qwen_prm (in process)"}.get(kind, kind)
                to_request = policy_ids if kind == "verifier" else (lambda p, s: ScoreRequest((), p, s))
                table[name] = await measure(name, backends.prm, backends.prm.transport.prefill, levels, to_request)
            finally:
                backends.shutdown()

    asyncio.run(in_process())

    with local_servers(
        str(prm_model),
        1,
        max_model_len=4096,
        extra_args=["--runner", "pooling", "--dtype", "float32", *POOL_EVERY_TOKEN],
    ) as (server,):

        async def over_http() -> None:
            fleet = connect([server.url], str(prm_model), HttpClient(RetryPolicy(timeout_s=600.0)), role="PRM")
            prm = qwen_prm(fleet.transport(), fleet.tokenizer.get())
            table["qwen_prm (HTTP)"] = await measure(
                "qwen_prm (HTTP)", prm, prm.transport.prefill, levels, lambda p, s: ScoreRequest((), p, s)
            )
            await fleet.router.aclose()
            await fleet.router.client.aclose()

        asyncio.run(over_http())

    print(
        f"\nPrefill tokens per scored step (computed / prompt), {args.problems} problems x {args.children} children "
        "per depth:"
    )
    names = list(table)
    print("depth  " + "  ".join(f"{n:>24}" for n in names))
    for d in range(args.depth):
        print(f"{d + 1:>5}  " + "  ".join(f"{table[n][d][1]:>11.0f} / {table[n][d][0]:<10.0f}" for n in names))
    print(
        "mean   "
        + "  ".join(
            f"{statistics.mean(r[1] for r in table[n]):>11.0f} / {statistics.mean(r[0] for r in table[n]):<10.0f}"
            for n in names
        )
    )


if __name__ == "__main__":
    main()
