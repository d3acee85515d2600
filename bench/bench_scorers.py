"""How well each CPU scorer separates right from wrong trajectories (AUROC), on real samples.

    python bench/bench_scorers.py --start 100 --problems 40 --width 8 --out runs/scorers.jsonl
    python bench/bench_scorers.py --start 0 --problems 100 --verifier HEAD --out runs/scorers-verifier.jsonl

Samples ``width`` independent trajectories per problem with the search loop (best-of-N, so every
step is scored as the search would score it), scores every step with every scorer at once, then
grades each finished trajectory and reports, per scorer and step aggregation, the AUROC of the
aggregated score against correctness: pooled over all trajectories, and the mean within a problem
(over problems that have both right and wrong trajectories: that is what choosing among one
problem's candidates needs). Scorers:

* judge: the LM judge, P(Yes) / (P(Yes) + P(No)) for "Is the last step above correct?" (one engine call;
  ``--no-judge`` leaves it out);
* confidence_mean / confidence_window: the policy's own geometric-mean token probability over the
  step, or over its least confident 16-token window (read from the logprobs returned with the step);
* arithmetic: 1 if the step's stated arithmetic checks out exactly, 0.5 if it states none, 0.1 if wrong;
* verifier (with ``--verifier``, a head file or a registered verifier): the value head learned from the
  policy's rollouts, served on its own vLLM pooling engine as the search serves it (prm=verifier);
* X+arith: scorer X cut to a tenth on a step with wrong arithmetic.

The within-problem AUROC of every scorer is also reported by step depth: over the steps at that depth
of finished trajectories (each labelled by its trajectory's correctness).

One JSON line per problem goes to ``--out`` (the run resumes from it), with every trajectory's step
texts; the report is recomputed from the file, so ``--report-only`` re-prints it without an engine.
``--rescore KEPT.jsonl --verifier NEW`` judges another verifier on the same samples: it re-scores
every step of the kept run with NEW (its engine only, no sampling; each step's text encoded on its
own after the prompt, as training reads them) and writes the run with NEW's scores to ``--out``. KEPT
may also be a search run file (bench_quality's or ``ets-async run``'s; its trees have the step texts).
``--from-run RUN.jsonl`` reports a search's own run file instead (bench_quality's or ``ets-async run``'s):
every candidate a trajectory, scored at each step by the PRM the search ran with.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ets_async import Candidate, EngineConfig, SearchConfig, TreeRecord, load_backends, models
from ets_async.arithmetic import check_arithmetic
from ets_async.backends import ScoreRequest
from ets_async.backends.confidence_prm import step_confidence
from ets_async.backends.prm_kinds import judge_prm, verifier_prm
from ets_async.backends.vllm_engine import EngineTransport, InProcessEngine
from ets_async.backends.vllm_policy import render_chat
from ets_async.config import DEFAULT_SYSTEM_PROMPT
from ets_async.datasets import load_problems
from ets_async.grading import grade
from ets_async.report import paired_outcomes
from ets_async.results import ResultWriter, read_header, read_lines, read_results
from ets_async.verifier.head import auroc
from ets_async.voting import STEP_AGGREGATIONS, aggregate_scores, select_answer
from gsm8k import DEFAULT_DATA  # a sibling module: the script's folder is on sys.path

BASE_SCORERS = ("judge", "confidence_mean", "confidence_window", "arithmetic")
ARITH_PENALTY = 0.1


class RecordingPRM:
    """Drives the search with the judge (without one: the verifier, or else the windowed confidence)
    and records every scorer's value for every step. Best-of-N samples every trajectory whatever the
    scores, so which scorer drives it changes nothing but the run's own pick."""

    needs_step_logprobs = True

    def __init__(self, judge: Any | None, verifier: Any | None) -> None:
        self.judge = judge
        self.verifier = verifier
        self.table: dict[tuple[str, str], dict[str, float]] = {}
        self.steps: dict[tuple[str, str], tuple[str, ...]] = {}

    async def score(self, requests: Sequence[ScoreRequest]) -> list[float | None]:
        nothing: list[float | None] = [None] * len(requests)
        judged = await self.judge.score(requests) if self.judge is not None else nothing
        verified = await self.verifier.score(requests) if self.verifier is not None else nothing
        for request, judge, value in zip(requests, judged, verified, strict=True):
            logprobs = request.step_logprobs or ()
            check = check_arithmetic(request.steps[-1])
            key = (request.scope.id if request.scope else "", "".join(request.steps))
            self.steps[key] = tuple(request.steps)
            self.table[key] = {
                "confidence_mean": step_confidence(logprobs, "mean"),
                "confidence_window": step_confidence(logprobs, "lowest_window"),
                "arithmetic": ARITH_PENALTY if check.wrong else (1.0 if check.claims else 0.5),
                "arith_wrong": float(check.wrong > 0),
                **({"judge": judge} if judge is not None else {}),
                **({"verifier": value} if value is not None else {}),
            }
        if self.judge is not None:
            return judged
        if self.verifier is not None:
            return verified
        return [self.table[(r.scope.id if r.scope else "", "".join(r.steps))]["confidence_window"] for r in requests]


def recorded_prefixes(table: dict[tuple[str, str], Any], problem_id: str, text: str) -> list[tuple[str, str]]:
    """The table keys of one finished trajectory's recorded steps, root first (its prefixes)."""
    prefixes = [key for (pid, key) in table if pid == problem_id and text.startswith(key)]
    return [(problem_id, key) for key in sorted(prefixes, key=len)]


def arith_penalised(values: Sequence[float], wrong: Sequence[bool]) -> list[float]:
    """A scorer's step values cut to ARITH_PENALTY of themselves on the steps with wrong arithmetic (X+arith)."""
    return [v * (ARITH_PENALTY if w else 1.0) for v, w in zip(values, wrong, strict=True)]


def scorer_values(steps: list[dict[str, float]]) -> dict[str, list[float]]:
    present = [name for name in (*BASE_SCORERS, "verifier") if steps and all(name in s for s in steps)]
    values = {name: [s[name] for s in steps] for name in present}
    wrong = [bool(s["arith_wrong"]) for s in steps]
    for name in ("judge", "confidence_mean", "confidence_window", "verifier"):
        if name in present:
            values[f"{name}+arith"] = arith_penalised(values[name], wrong)
    return values


async def collect(args: argparse.Namespace, problems: list[dict[str, Any]]) -> None:
    if args.verifier:  # the verifier on its own engine; the judge asks the policy's
        backends = load_backends(EngineConfig(model=args.model, prm="verifier", prm_model=args.verifier))
        policy_engine = backends.engines[0]
        judge = None if args.no_judge else judge_prm(EngineTransport(policy_engine), policy_engine.llm.get_tokenizer())
        recorder = RecordingPRM(judge, backends.prm)
    else:
        backends = load_backends(EngineConfig(model=args.model, prm="confidence" if args.no_judge else "judge"))
        recorder = RecordingPRM(None if args.no_judge else backends.prm, None)
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
                keys = recorded_prefixes(recorder.table, result.id, candidate.text)
                scores = scorer_values([recorder.table[key] for key in keys])
                steps = recorder.steps[keys[-1]] if keys else ()
                trajectories.append(trajectory(candidate, result.reference, scores, steps))
            writer.write(
                {"id": result.id, "reference": result.reference, "error": result.error, "trajectories": trajectories}
            )
            print(f"  {result.id}: {sum(t['correct'] for t in trajectories)}/{len(trajectories)} right", flush=True)
    backends.shutdown()


async def rescore(args: argparse.Namespace, problems: list[dict[str, Any]]) -> None:
    """The kept run ``args.rescore`` with its verifier scores replaced by ``args.verifier``'s."""
    # a search run file (it starts with a run header: its prompt is the run's) or this script's own records
    header = read_header(args.rescore)
    kept = from_run(args.rescore) if header else [r for r in read_lines(args.rescore) if "id" in r]
    run_config = (header or {}).get("config") or {}
    system_prompt = run_config.get("system_prompt", DEFAULT_SYSTEM_PROMPT)
    template = run_config.get("prompt_template", "{problem}")
    unscorable = [r["id"] for r in kept if any(t["scores"] and not t.get("steps") for t in r["trajectories"])]
    if unscorable:
        raise SystemExit(f"{args.rescore} has no step texts for problems {unscorable[:5]}: re-run bench_scorers.py")
    text = {p["id"]: p["problem"] for p in problems}
    unknown = [r["id"] for r in kept if r["id"] not in text]
    if unknown:
        raise SystemExit(f"ids {unknown[:5]} of {args.rescore} are not in {args.dataset}: give the run's --dataset")
    config = EngineConfig(model=args.model, prm="verifier", prm_model=args.verifier)
    engine = InProcessEngine.start(
        config.prm_engine(), models.resolve_verifier(args.verifier, args.model), runner="pooling"
    )
    tokenizer = engine.llm.get_tokenizer()
    verifier = verifier_prm(EngineTransport(engine), tokenizer)
    try:
        with ResultWriter(args.out) as writer:
            todo = [r for r in kept if r["id"] not in writer.done_ids()]
            print(f"{len(kept) - len(todo)} problems already in {args.out}; re-scoring {len(todo)}", flush=True)
            for record in todo:
                prompt = render_chat(tokenizer, text[record["id"]], system_prompt, template)
                requests = []
                for t in record["trajectories"]:
                    ids = list(prompt)
                    for k, step in enumerate(t["steps"]):
                        ids += tokenizer.encode(step, add_special_tokens=False)
                        requests.append(ScoreRequest(tuple(ids), text[record["id"]], tuple(t["steps"][: k + 1])))
                values = iter(await verifier.score(requests))
                for t in record["trajectories"]:
                    scores = t["scores"]
                    scores["verifier"] = [next(values) for _ in t["steps"]]
                    if "arithmetic" in scores:  # this script's records; a search run file has only its PRM's
                        # the kept file has no arith_wrong flags: the arithmetic score is ARITH_PENALTY iff wrong
                        wrong = [a == ARITH_PENALTY for a in scores["arithmetic"]]
                        scores["verifier+arith"] = arith_penalised(scores["verifier"], wrong)
                writer.write(record)
                print(f"  {record['id']}: {len(requests)} steps re-scored", flush=True)
    finally:
        engine.shutdown()


def picked_right(records: list[dict[str, Any]], name: str | None, how: str, selection: str) -> dict[str, bool]:
    """By problem: is the answer picked from its trajectories with one scorer right?"""
    right = {}
    for record in records:
        candidates = [(t["answer"], t["scores"][name] if name else []) for t in record["trajectories"]]
        answer = select_answer(candidates, selection, how)  # type: ignore[arg-type]
        right[record["id"]] = bool(grade(answer, record["reference"]))
    return right


def selection_accuracy(records: list[dict[str, Any]], name: str | None, how: str, selection: str) -> float:
    """Accuracy of picking each problem's answer from its trajectories with one scorer."""
    return statistics.fmean(picked_right(records, name, how, selection).values())


def trajectory(
    candidate: Candidate, reference: str | None, scores: dict[str, list[float]], steps: Sequence[str] = ()
) -> dict[str, Any]:
    """One trajectory of a record: the candidate graded against the reference, its scores by scorer and step,
    and its step texts (what ``--rescore`` encodes; none where the source did not keep them)."""
    return {
        "answer": candidate.answer,
        "correct": grade(candidate.answer, reference),
        "tokens": candidate.tokens,
        "scores": scores,
        "steps": list(steps),
    }


def from_run(path: Path) -> list[dict[str, Any]]:
    """A search run file (``ets-async run`` or bench_quality) as this script's records: every candidate a
    trajectory, scored by the run's own PRM (named by its run header) at each of its steps, with its step
    texts read from the run's tree (so ``--rescore`` can score them again)."""
    name = str((read_header(path) or {}).get("prm") or "prm")
    return [
        {
            "id": r.id,
            "reference": r.reference,
            "error": r.error,
            "trajectories": [
                trajectory(c, r.reference, {name: list(c.step_scores)}, path_texts(r.tree, c.node))
                for c in r.candidates
            ],
        }
        for r in read_results(path)
        if r.error is None
    ]


def path_texts(tree: TreeRecord, node: int) -> list[str]:
    """The step texts from the root down to ``node`` (none where the run kept no tree)."""
    if not tree.texts:
        return []
    texts = []
    while node > 0:
        texts.append(tree.texts[node])
        node = tree.parents[node]
    return texts[::-1]


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
    majority = picked_right(records, None, "last", "majority")
    print("\nweighted vote by the newest step's score against majority vote over the same trajectories, paired")
    for name in names:
        row = paired_outcomes(picked_right(records, name, "last", "weighted_majority"), majority)
        print(f"{name:<26}won {row['wins']:>3}, lost {row['losses']:>3}: {100 * row['difference']:+.1f} pt "
              f"[{100 * row['low']:+.1f}, {100 * row['high']:+.1f}]")
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
    parser.add_argument(
        "--no-judge",
        action="store_true",
        help="leave the LM judge out (a prefill per step saved; --rescore scores the samples with a verifier later)",
    )
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument(
        "--from-run",
        type=Path,
        default=None,
        help="report a search run file's own PRM scores instead (bench_quality's, or 'ets-async run'); no engine",
    )
    parser.add_argument(
        "--rescore", type=Path, default=None, help="a kept run file to re-score with --verifier (no sampling)"
    )
    args = parser.parse_args()
    if args.rescore is not None and not args.verifier:
        parser.error("--rescore needs --verifier (the verifier to judge on the kept samples)")
    if args.from_run is not None:
        report(from_run(args.from_run))
        return
    if args.rescore is not None:
        problems, _ = load_problems(args.dataset)
        asyncio.run(rescore(args, problems))
    elif not args.report_only:
        problems, _ = load_problems(args.dataset)
        asyncio.run(collect(args, problems[args.start : args.start + args.problems]))
    report(read_lines(args.out))


if __name__ == "__main__":
    main()
