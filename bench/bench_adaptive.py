"""Adaptive budgets: accuracy and generated tokens with a stop rule against the full width, same problems.

    python bench/bench_adaptive.py --replay data/bench/gsm8k_test-0-99-scorers-verifier.jsonl
    python bench/bench_adaptive.py --problems 100 --width 8 --out runs/adaptive [--methods majority rebase ets]
    python bench/bench_adaptive.py --replay-trees runs/adaptive/rebase-8.jsonl
    python bench/bench_adaptive.py --fake --problems 2    # scripted backends: a smoke test, answers are noise

Engine mode runs, for each of ``--methods`` (default: majority only; also ``rebase`` and ``ets``),
the method at the full width and the same with the stop rule (the ``majority_adaptive_8`` recipe's
settings unless ``--stop`` says otherwise; majority is best-of-N with a majority vote) on the same
problems with the same seed, one after another on one engine (the embedded default unless
``--engine-set model=...``). Each run appends to ``OUT/<label>-<W>.jsonl`` (an interrupted run
resumes). It prints, per run against its full-width counterpart: accuracy, generated tokens per
problem, the share of tokens saved, waves, the share of problems the rule settled, and the paired
accuracy difference with its 95% bootstrap interval.

``--replay RUNFILE`` needs no engine: it replays stop rules over stored independent samples (a
``bench_scorers.py`` file: per problem, trajectories with answer, correct, tokens and per-step
scores), taking them in stored order in waves, and compares each rule with majority@W on the same
samples. The file holds finished trajectories only, so the tokens of samples that never finished are
in neither figure, and a wave of the replay is a wave of finished samples.

``--replay-trees RUNFILE`` replays stop rules over the stored trees of a full-width REBASE or ETS
run (``report.replay_stop_rule``): what the same search with the rule would have returned on the
same samples, so the comparison is paired without sampling noise. ``--full-width-only`` runs only
the full-width searches for it (half the engine time of running both).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from ets_async import EngineConfig, SearchConfig, iter_solve, load_backends, report
from ets_async.api import resolve_config
from ets_async.datasets import load_problems
from ets_async.metrics import MetricsSummary
from ets_async.records import RunRecord
from ets_async.results import ResultWriter, read_results
from ets_async.stopping import settled
from ets_async.testing import fake_backends
from ets_async.types import ProblemResult
from ets_async.voting import select_answer
from gsm8k import DEFAULT_DATA  # a sibling module: the script's folder is on sys.path

RECIPE = "majority_adaptive_8"
REPLAY_RULES = [
    "recipe",
    "stop_when=supermajority,stop_share=1.0,stop_min_finished=2,wave_size=2",
    "stop_when=supermajority,stop_share=0.75,stop_min_finished=4",
    "stop_when=posterior,stop_confidence=0.85,stop_min_finished=3",
    "stop_when=posterior,stop_confidence=0.95,stop_min_finished=4",
]
METHODS: dict[str, dict[str, Any]] = {
    "majority": {"method": "best_of_n", "answer_selection": "majority"},
    "rebase": {"method": "rebase"},
    "ets": {"method": "ets"},
}
STOP_FIELDS = ("stop_when", "stop_share", "stop_confidence", "stop_min_finished", "wave_size")


def stop_settings(spec: str) -> dict[str, Any]:
    """The stop-rule fields of ``spec``: comma-separated KEY=VALUE, or ``recipe`` (``RECIPE``'s)."""
    if spec == "recipe":
        recipe = SearchConfig.load(RECIPE)
        return {key: getattr(recipe, key) for key in STOP_FIELDS}
    return SearchConfig.parse_settings(s for s in spec.split(",") if s)


# --- replay -------------------------------------------------------------------------------------


def replay_problem(row: dict[str, Any], config: SearchConfig, scorer: str) -> ProblemResult:
    """One problem's samples, in stored order, in waves until ``config``'s rule settles them or
    ``width`` are used; graded by the stored verdict of a sample with the selected answer."""
    samples = row["trajectories"][: config.width]
    votes = [(s["answer"], s["scores"].get(scorer, [])) for s in samples]
    wave = config.width if config.stop_when == "budget" else config.wave_size or config.stop_min_finished
    used, waves, reason = 0, 0, "complete"
    while used < len(samples):
        used, waves = min(used + wave, len(samples)), waves + 1
        if used < config.width and settled(votes[:used], config, config.answer_selection, config.score_aggregation):
            reason = "settled"
            break
    answer = select_answer(votes[:used], config.answer_selection, config.score_aggregation)
    correct = next((s["correct"] for s in samples[:used] if s["answer"] == answer), False)
    tokens = sum(s["tokens"] for s in samples[:used])
    return ProblemResult(
        id=str(row["id"]), problem="", method=config.method, width=config.width, reference=row["reference"],
        answer=answer, correct=bool(correct),
        metrics=MetricsSummary(generated_tokens=tokens, waves=waves, finished=used, stop_reason=reason),
    )  # fmt: skip


def replay(path: Path, base: dict[str, Any], rules: list[str], scorer: str) -> None:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [row for row in rows if row.get("error") is None and row["trajectories"]]
    full = SearchConfig(**base)
    runs = {
        (f"recipe {RECIPE}" if spec == "recipe" else spec): [
            replay_problem(row, full.replace(**stop_settings(spec)), scorer) for row in rows
        ]
        for spec in rules
    }
    print(
        f"replay of {path.name}: {len(rows)} problems, {full.answer_selection} over at most {full.width} stored "
        "samples each"
    )
    print_comparison(f"{full.answer_selection}@{full.width}", [replay_problem(row, full, scorer) for row in rows], runs)


def replay_trees(path: Path, rules: list[str]) -> None:
    """Each stop rule replayed over the trees of the full-width tree search in ``path``."""
    records = [r for r in read_results(path) if r.error is None]
    if not records:
        raise SystemExit(f"{path}: no finished records to replay")
    full = SearchConfig(**records[0].config)
    runs = {
        (f"recipe {RECIPE}" if spec == "recipe" else spec): [
            report.replay_stop_rule(record, full.replace(**stop_settings(spec))) for record in records
        ]
        for spec in rules
    }
    print(f"replay of {path.name}: {len(records)} {full.method} trees at W={full.width}, {full.answer_selection}")
    print_comparison(f"{full.method}@{full.width}", records, runs)


# --- engine -------------------------------------------------------------------------------------


def missing(path: Path, problems: list[dict[str, Any]]) -> bool:
    """Whether some of ``problems`` have no record in ``path`` yet."""
    done = {r.id for r in read_results(path)} if path.exists() else set()
    return any(p["id"] not in done for p in problems)


async def run(
    path: Path, label: str, config: SearchConfig, backends: Any, problems: list[dict[str, Any]]
) -> list[ProblemResult]:
    """Search the problems not yet in ``path`` and return every record of it (resumable)."""
    header = {"label": label, "config": config.model_dump(mode="json")}
    with ResultWriter(path, run_header=header) as writer:
        if changed := writer.settings_changed(header):
            raise SystemExit(
                f"{path} was written with other settings ({', '.join(changed)}); remove it or use another --out"
            )
        todo = [p for p in problems if p["id"] not in writer.done_ids()]
        if todo:
            print(f"{label} (W={config.width}): {len(todo)} problems to run", flush=True)
            resolved = resolve_config(config, backends.policy, backends.embedder)
            session, started = f"{time.strftime('%Y%m%dT%H%M%S')}-{label}", time.perf_counter()
            for engine in backends.engines:
                await engine.llm.reset_prefix_cache()
            async for result in iter_solve(  # each result written as it finishes: a killed run resumes
                todo, resolved, policy=backends.policy, prm=backends.prm, embedder=backends.embedder
            ):
                elapsed = time.perf_counter() - started
                writer.write(RunRecord.of(result, resolved, session=session, elapsed_s=elapsed, label=label))
    wanted = {p["id"] for p in problems}
    return [r for r in read_results(path) if r.id in wanted]


async def engine_bench(args: argparse.Namespace, problems: list[dict[str, Any]]) -> None:
    base = {"width": args.width, **SearchConfig.parse_settings(args.sets)}
    stop = stop_settings(args.stop)
    runs = []  # (label, config, run file): each method at full width, then with the stop rule
    for name in args.methods:
        full = SearchConfig(**{**base, **METHODS[name]})
        runs.append((name, full, args.out / f"{name}-{args.width}.jsonl"))
        if not args.full_width_only:
            runs.append((f"{name}_adaptive", full.replace(**stop), args.out / f"{name}_adaptive-{args.width}.jsonl"))
    # a folder where every problem is written only reports: no engine is started
    if not any(missing(path, problems) for *_, path in runs):
        backends = None
    elif args.fake:
        backends = fake_backends()
    else:
        backends = load_backends(EngineConfig.load(None, args.engine_sets))
    results: dict[str, list[ProblemResult]] = {}
    try:
        for label, config, path in runs:
            results[label] = await run(path, label, config, backends, problems)
    finally:
        if backends is not None:
            backends.shutdown()
    for name in args.methods:
        early = {f"{name} adaptive": results[f"{name}_adaptive"]} if f"{name}_adaptive" in results else {}
        print_comparison(f"{name}@{args.width}", results[name], early)


# --- report -------------------------------------------------------------------------------------


def print_comparison(baseline_label: str, baseline: list[ProblemResult], runs: dict[str, list[ProblemResult]]) -> None:
    """Accuracy, tokens, saving, waves, mean KV (tokens) and the paired difference of each run against ``baseline``."""

    def mean(results: list[ProblemResult], key: str) -> float | None:
        values = [v for r in results if (v := getattr(r.metrics, key)) is not None]
        return sum(values) / len(values) if values else None

    base_tokens = mean(baseline, "generated_tokens")
    rows = [(baseline_label, baseline), *runs.items()]
    width = max(len(label) for label, _ in rows)
    header = (
        f"{'run':<{width}} {'accuracy':>8} {'tokens':>7} {'saved':>6} {'waves':>5} {'settled':>7} {'KV':>6}"
        "  paired difference [95% CI]"
    )
    print(header)
    print("-" * len(header))
    for label, results in rows:
        graded = [r for r in results if r.correct is not None]
        accuracy = sum(bool(r.correct) for r in graded) / len(graded) if graded else None
        tokens = mean(results, "generated_tokens")
        saved = 1 - tokens / base_tokens if tokens is not None and base_tokens else None
        stopped = sum(r.metrics.stop_reason == "settled" for r in results)
        diff = report.paired_difference(results, baseline) if results is not baseline else None
        paired = "" if diff is None or diff["difference"] is None else (
            f"{100 * diff['difference']:+.1f} pt [{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]"
            f" (+{diff['wins']}/-{diff['losses']} of {diff['problems']})"
        )  # fmt: skip
        print(
            f"{label:<{width}} {report.fmt(accuracy, 'pct'):>8} {report.fmt(tokens, 'rate'):>7}"
            f" {report.fmt(saved, 'pct'):>6} {report.fmt(mean(results, 'waves'), 'rate'):>5}"
            f" {report.fmt(stopped / len(results) if results else None, 'pct'):>7}"
            f" {report.fmt(mean(results, 'kv_tokens_mean'), 'rate'):>6}  "
            f"{paired}"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--replay", type=Path, default=None, metavar="RUNFILE", help="replay stop rules over stored samples"
    )
    parser.add_argument(
        "--replay-trees", type=Path, default=None, metavar="RUNFILE",
        help="replay stop rules over the stored trees of a full-width REBASE/ETS run file",
    )  # fmt: skip
    parser.add_argument(
        "--rules",
        nargs="+",
        default=REPLAY_RULES,
        metavar="KEY=VALUE,...",
        help="replay: stop settings to compare ('recipe': the recipe's)",
    )
    parser.add_argument(
        "--scorer", default="verifier", help="replay: the stored step scores that weight a weighted_majority"
    )
    parser.add_argument(
        "--selection", default="majority", choices=["majority", "weighted_majority"], help="replay's vote"
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--start", type=int, default=0, help="first problem (0-based) of the slice")
    parser.add_argument("--problems", type=int, default=100)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument(
        "--stop", default="recipe", metavar="KEY=VALUE,...", help=f"stop settings; default: recipe {RECIPE}'s"
    )
    parser.add_argument(
        "--methods", nargs="+", default=["majority"], choices=list(METHODS), help="each with and without the stop rule"
    )
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="SearchConfig for every run"
    )
    parser.add_argument("--engine-set", dest="engine_sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument(
        "--full-width-only", action="store_true",
        help="only the full-width runs (a tree run's stop rule can be replayed over them with --replay-trees)",
    )  # fmt: skip
    parser.add_argument("--fake", action="store_true", help="scripted backends instead of the engine (a smoke test)")
    parser.add_argument("--out", type=Path, default=Path("runs/adaptive"))
    args = parser.parse_args()
    if args.replay is not None:
        base = {"method": "best_of_n", "width": args.width, "answer_selection": args.selection}
        replay(args.replay, base, args.rules, args.scorer)
        return
    if args.replay_trees is not None:
        replay_trees(args.replay_trees, args.rules)
        return
    problems, _ = load_problems(args.dataset)
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(engine_bench(args, problems[args.start : args.start + args.problems]))


if __name__ == "__main__":
    main()
