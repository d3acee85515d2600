"""How well each CPU scorer separates right from wrong trajectories (AUROC), on real samples.

    python bench/bench_scorers.py --start 100 --problems 40 --width 8 --out runs/scorers.jsonl
    python bench/bench_scorers.py --start 0 --problems 100 --verifier HEAD --out runs/scorers-verifier.jsonl

Samples ``width`` independent trajectories per problem with the search loop (best-of-N, so every
step is scored as the search would score it), scores every step with every scorer at once, then
grades each finished trajectory and reports, per scorer and step aggregation, the AUROC of the
aggregated score against correctness: pooled over all trajectories, and the mean within a problem
(over problems that have both right and wrong trajectories: that is what choosing among one
problem's candidates needs). Scorers:

* judge: the LM judge, P(Yes) / (P(Yes) + P(No)) for "Is the last step above correct?" (one engine call);
* confidence_mean / confidence_window: the policy's own geometric-mean token probability over the
  step, or over its least confident 16-token window (read from the logprobs returned with the step);
* arithmetic: 1 if the step's stated arithmetic checks out exactly, 0.5 if it states none, 0.1 if wrong;
* verifier (with ``--verifier``, a head file or a registered verifier): the value head learned from the
  policy's rollouts, served on its own vLLM pooling engine as the search serves it (prm=verifier);
* X+arith: scorer X cut to a tenth on a step with wrong arithmetic.

The within-problem AUROC of every scorer is also reported by step depth: over the steps at that depth
of finished trajectories (each labelled by its trajectory's correctness).

One JSON line per problem goes to ``--out`` (the run resumes from it); the report is recomputed
from the file, so ``--report-only`` re-prints it without an engine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ets_async import EngineConfig, SearchConfig, load_backends, models
from ets_async.arithmetic import check_arithmetic
from ets_async.backends import ScoreRequest
from ets_async.backends.confidence_prm import step_confidence
from ets_async.backends.prm_kinds import judge_prm
from ets_async.backends.vllm_engine import EngineTransport
from ets_async.datasets import load_problems
from ets_async.grading import grade
from ets_async.results import ResultWriter, read_lines
from ets_async.verifier.head import auroc
from ets_async.voting import STEP_AGGREGATIONS, aggregate_scores, select_answer
from gsm8k import DEFAULT_DATA  # a sibling module: the script's folder is on sys.path

BASE_SCORERS = ("judge", "confidence_mean", "confidence_window", "arithmetic")
ARITH_PENALTY = 0.1


class RecordingPRM:
    """Drives the search with the judge and records every scorer's value for every step."""

    needs_step_logprobs = True

    def __init__(self, judge: Any, verifier: Any | None) -> None:
        self.judge = judge
        self.verifier = verifier
        self.table: dict[tuple[str, str], dict[str, float]] = {}

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        judged = await self.judge.score(requests)
        verified = await self.verifier.score(requests) if self.verifier is not None else [None] * len(requests)
        for request, judge, value in zip(requests, judged, verified, strict=True):
            logprobs = request.step_logprobs or ()
            check = check_arithmetic(request.steps[-1])
            self.table[(request.scope.id if request.scope else "", "".join(request.steps))] = {
                "judge": judge,
                "confidence_mean": step_confidence(logprobs, "mean"),
                "confidence_window": step_confidence(logprobs, "lowest_window"),
                "arithmetic": ARITH_PENALTY if check.wrong else (1.0 if check.claims else 0.5),
                "arith_wrong": float(check.wrong > 0),
                **({"verifier": value} if value is not None else {}),
            }
        return judged


def step_features(table: dict[tuple[str, str], dict[str, float]], problem_id: str, text: str) -> list[dict[str, float]]:
    """The recorded steps of one finished trajectory, root first (its prefixes in the table)."""
    prefixes = [key for (pid, key) in table if pid == problem_id and text.startswith(key)]
    return [table[(problem_id, key)] for key in sorted(prefixes, key=len)]


def scorer_values(steps: list[dict[str, float]]) -> dict[str, list[float]]:
    values = {name: [s[name] for s in steps] for name in BASE_SCORERS}
    if steps and all("verifier" in s for s in steps):
        values["verifier"] = [s["verifier"] for s in steps]
    for name in ("judge", "confidence_mean", "confidence_window"):
        values[f"{name}+arith"] = [s[name] * (ARITH_PENALTY if s["arith_wrong"] else 1.0) for s in steps]
    return values


async def collect(args: argparse.Namespace, problems: list[dict[str, Any]]) -> None:
    if args.verifier:  # the verifier on its own engine; the judge asks the policy's
        backends = load_backends(EngineConfig(model=args.model, prm="verifier", prm_model=args.verifier))
        policy_engine = backends.engines[0]
        judge = judge_prm(EngineTransport(policy_engine), policy_engine.llm.get_tokenizer())
        recorder = RecordingPRM(judge, backends.prm)
    else:
        backends = load_backends(EngineConfig(model=args.model, prm="judge"))
        recorder = RecordingPRM(backends.prm, None)
    config = SearchConfig(
        method="best_of_n",
        width=args.width,
        temperature=args.temperature,
        max_step_tokens=args.max_step_tokens,
        max_tokens=args.max_tokens,
        max_concurrent_problems=args.concurrency,
    )
    from ets_async import iter_solve

    with ResultWriter(args.out) as writer:
        todo = [p for p in problems if p["id"] not in writer.done_ids()]
        print(f"{len(problems) - len(todo)} problems already in {args.out}; sampling {len(todo)}", flush=True)
        async for result in iter_solve(todo, config, policy=backends.policy, prm=recorder, embedder=None):
            trajectories = []
            for candidate in result.candidates:
                steps = step_features(recorder.table, result.id, candidate.text)
                trajectories.append(
                    {
                        "answer": candidate.answer,
                        "correct": grade(candidate.answer, result.reference),
                        "tokens": candidate.tokens,
                        "scores": scorer_values(steps),
                    }
                )
            writer.write(
                {"id": result.id, "reference": result.reference, "error": result.error, "trajectories": trajectories}
            )
            print(f"  {result.id}: {sum(t['correct'] for t in trajectories)}/{len(trajectories)} right", flush=True)
    backends.shutdown()


def selection_accuracy(records: list[dict[str, Any]], name: str | None, how: str, selection: str) -> float:
    """Accuracy of picking each problem's answer from its trajectories with one scorer."""
    right = 0
    for record in records:
        candidates = [(t["answer"], t["scores"][name] if name else []) for t in record["trajectories"]]
        answer = select_answer(candidates, selection, how)  # type: ignore[arg-type]
        right += bool(grade(answer, record["reference"]))
    return right / len(records)


def report(records: list[dict[str, Any]]) -> None:
    trajectories = [t for r in records for t in r["trajectories"]]
    right = sum(bool(t["correct"]) for t in trajectories)
    mixed = [r for r in records if 0 < sum(bool(t["correct"]) for t in r["trajectories"]) < len(r["trajectories"])]
    oracle = sum(any(t["correct"] for t in r["trajectories"]) for r in records)
    print(f"{len(records)} problems, {len(trajectories)} finished trajectories ({right} right); "
          f"{len(mixed)} problems have both right and wrong ones; {oracle} have at least one right")
    print(f"majority vote (no scorer): {selection_accuracy(records, None, 'last', 'majority'):.3f}")
    names = (
        [n for n in trajectories[0]["scores"] if all(n in t["scores"] for t in trajectories)] if trajectories else []
    )
    print(f"\n{'scorer':<26}" + "".join(f"{agg:>16}" for agg in STEP_AGGREGATIONS))
    print(f"{'':<26}" + "".join(f"{'pooled / within':>16}" for _ in STEP_AGGREGATIONS))
    for name in names:
        cells = []
        for how in STEP_AGGREGATIONS:
            def value(t: dict[str, Any]) -> float:
                return aggregate_scores(t["scores"][name], how)  # type: ignore[arg-type]  # noqa: B023 - used in this iteration

            pooled = auroc(
                [value(t) for t in trajectories if t["correct"]], [value(t) for t in trajectories if not t["correct"]]
            )
            within = [
                a for r in mixed
                if (a := auroc([value(t) for t in r["trajectories"] if t["correct"]],
                               [value(t) for t in r["trajectories"] if not t["correct"]])) is not None
            ]  # fmt: skip
            mean_within = statistics.fmean(within) if within else None
            cells.append(f"{_fmt(pooled)} / {_fmt(mean_within)}")
        print(f"{name:<26}" + "".join(f"{c:>16}" for c in cells))
    print("\naccuracy of the answer picked with each scorer: weighted majority / highest score")
    print(f"{'scorer':<26}" + "".join(f"{agg:>16}" for agg in STEP_AGGREGATIONS))
    for name in names:
        cells = [
            f"{selection_accuracy(records, name, how, 'weighted_majority'):.3f} / "
            f"{selection_accuracy(records, name, how, 'highest_score'):.3f}"
            for how in STEP_AGGREGATIONS
        ]
        print(f"{name:<26}" + "".join(f"{c:>16}" for c in cells))
    print_depth_table(mixed, names)


def within_at_depth(mixed: list[dict[str, Any]], name: str, depth: int) -> tuple[float | None, int]:
    """Mean within-problem AUROC of the scorer's value of the step at ``depth`` (1 = first), each step
    labelled by its trajectory's correctness; and the problems that had both at that depth."""
    values = []
    for r in mixed:
        at = [
            (t["scores"][name][depth - 1], bool(t["correct"]))
            for t in r["trajectories"]
            if len(t["scores"][name]) >= depth
        ]
        a = auroc([v for v, ok in at if ok], [v for v, ok in at if not ok])
        if a is not None:
            values.append(a)
    return (statistics.fmean(values) if values else None), len(values)


def print_depth_table(mixed: list[dict[str, Any]], names: list[str], depths: int = 6) -> None:
    print("\nwithin-problem AUROC of the step at each depth (problems with both at that depth in brackets)")
    print(f"{'scorer':<26}" + "".join(f"{'depth ' + str(d):>14}" for d in range(1, depths + 1)))
    for name in names:
        cells = [within_at_depth(mixed, name, d) for d in range(1, depths + 1)]
        print(f"{name:<26}" + "".join(f"{_fmt(a) + f' ({n})':>14}" for a, n in cells))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--start", type=int, default=100, help="first problem (0-based line) of the slice")
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=None, help="default: the policy's measured one")
    parser.add_argument("--max-step-tokens", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=512)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--model", default=models.DEFAULT_POLICY)
    parser.add_argument(
        "--verifier", default=None, help="also score with this verifier (a head file or a registered verifier)"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/scorers.jsonl"))
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    if not args.report_only:
        problems, _ = load_problems(args.dataset)
        asyncio.run(collect(args, problems[args.start : args.start + args.problems]))
    report(read_lines(args.out))


if __name__ == "__main__":
    main()
