"""Reports of run records (the lines ``ets-async run`` writes, ``records.RunRecord``): summaries
per run, accuracy with confidence intervals, paired comparisons of two runs on the same problems, and
the one number formatter that every table, the progress bar and the benchmarks use.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from .records import RunRecord
from .types import ProblemResult

if TYPE_CHECKING:
    from .config import SearchConfig

__all__ = [
    "Column",
    "Summary",
    "fmt",
    "format_summary",
    "format_table",
    "group_runs",
    "paired_difference",
    "paired_outcomes",
    "regrade",
    "replay_stop_rule",
    "run_summary",
    "summarize",
    "summary_rows",
    "table",
    "wall_time",
    "wilson_interval",
]

Row = dict[str, Any]
Result = TypeVar("Result", bound=ProblemResult)
Column = tuple[str, Callable[[Any], str]]


def fmt(value: Any, kind: str = "num") -> str:
    """The one number formatter: ``num`` (1,234 / 12.5), ``pct`` (0.123 -> 12.3%), ``rate``
    (3 significant digits below 100), ``compact`` (1234 -> 1.2k); None is "-"."""
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.1f}%"
    if kind == "rate":
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    if kind == "compact":
        for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(value) >= scale:
                return f"{value / scale:.1f}{suffix}"
        return f"{value:.0f}"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:,.1f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def group_runs(records: Iterable[RunRecord]) -> dict[tuple[str, Any], list[RunRecord]]:
    """Records per (label, width), ordered by label then width."""
    groups: dict[tuple[str, Any], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.label, record.width), []).append(record)
    order = sorted(groups, key=lambda k: (k[0], k[1] if isinstance(k[1], int) else -1))
    return {key: groups[key] for key in order}


def wall_time(records: Iterable[RunRecord]) -> float | None:
    """Total search wall time of the sessions that wrote ``records`` (None if any record lacks it).

    A session lasted as long as its last record, so resumed and killed runs add up.
    """
    sessions: dict[str, float] = {}
    for record in records:
        if record.run is None:
            return None
        sessions[record.run.session] = max(sessions.get(record.run.session, 0.0), record.run.elapsed_s)
    return sum(sessions.values()) if sessions else None


class Summary:
    """Running totals over problem results, added one at a time: the progress bar's figures and every
    summary row (``summarize``).

    ``accuracy`` is over results whose ``correct`` is a bool; ``accuracy_all`` counts every problem
    with a reference, errors and missing answers as wrong (the paper's convention). A metric's mean
    and sum are over the results that report it; the prefix-cache hit rate is sum(prefix_cached_tokens)
    / sum(prompt_tokens) over results that report both.
    """

    def __init__(self) -> None:
        self.problems = self.errors = self.no_answer = self.graded = self.correct = self.with_reference = 0
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.kv_tokens_peak: float | None = None
        self.cached_tokens = self.prompt_tokens = 0.0
        self.has_cache_stats = False

    def add(self, result: ProblemResult) -> None:
        self.problems += 1
        if result.error is not None:
            self.errors += 1
        elif result.answer is None:
            self.no_answer += 1
        if result.correct is not None:
            self.graded += 1
            self.correct += result.correct
        if result.reference is not None or result.correct is not None:
            self.with_reference += 1
        metrics = result.metrics
        for key, value in metrics.items():
            self.sums[key] = self.sums.get(key, 0.0) + value
            self.counts[key] = self.counts.get(key, 0) + 1
        if metrics.kv_tokens_peak is not None:
            self.kv_tokens_peak = max(self.kv_tokens_peak or 0.0, metrics.kv_tokens_peak)
        if metrics.prefix_cached_tokens is not None and metrics.prompt_tokens is not None:
            self.has_cache_stats = True
            self.cached_tokens += metrics.prefix_cached_tokens
            self.prompt_tokens += metrics.prompt_tokens

    def mean(self, key: str) -> float | None:
        return self.sums[key] / self.counts[key] if key in self.sums else None

    @property
    def prefix_cache_hit_rate(self) -> float | None:
        return self.cached_tokens / self.prompt_tokens if self.has_cache_stats and self.prompt_tokens > 0 else None

    def as_dict(self, wall_time_s: float | None = None) -> Row:
        """The figures as one dict; ``problems_per_s`` needs the run's total ``wall_time_s``."""
        return {
            "n_problems": self.problems,
            "n_errors": self.errors,
            "n_no_answer": self.no_answer,
            "n_graded": self.graded,
            "n_correct": self.correct,
            "accuracy": self.correct / self.graded if self.graded else None,
            "n_with_reference": self.with_reference,
            "accuracy_all": self.correct / self.with_reference if self.with_reference else None,
            "metrics_mean": {key: self.sums[key] / self.counts[key] for key in sorted(self.sums)},
            "metrics_sum": {key: self.sums[key] for key in sorted(self.sums)},
            "prefix_cache_hit_rate": self.prefix_cache_hit_rate,
            "wall_time_s": wall_time_s,
            "problems_per_s": self.problems / wall_time_s if wall_time_s else None,
        }

    def postfix(self, elapsed_s: float) -> str:
        """'acc 3/5 | hit 87% | KV 412 (peak 980) | 1.2k tok/s' (parts without data are left out)."""
        parts = []
        if self.graded:
            parts.append(f"acc {self.correct}/{self.graded}")
        if self.errors:
            parts.append(f"err {self.errors}")
        if (hit := self.prefix_cache_hit_rate) is not None:
            parts.append(f"hit {100 * hit:.0f}%")
        if (kv := self.mean("kv_tokens_mean")) is not None:
            parts.append(f"KV {fmt(kv, 'compact')} (peak {fmt(self.kv_tokens_peak, 'compact')})")
        if elapsed_s > 0 and self.problems:
            parts.append(f"{fmt(self.sums.get('generated_tokens', 0.0) / elapsed_s, 'compact')} tok/s")
        return " | ".join(parts)


def summarize(results: Iterable[ProblemResult], *, wall_time_s: float | None = None) -> Row:
    """``Summary.as_dict`` of a set of results."""
    summary = Summary()
    for result in results:
        summary.add(result)
    return summary.as_dict(wall_time_s)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None when ``n`` is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _summary(records: Sequence[RunRecord], label: Any, method: Any, width: Any) -> Row:
    wall = wall_time(records)
    summary = Summary()
    for record in records:
        summary.add(record)
    detail = summary.as_dict(wall)
    means, sums = detail["metrics_mean"], detail["metrics_sum"]
    generated = sums.get("generated_tokens")
    interval = wilson_interval(detail["n_correct"], detail["n_with_reference"])
    return {
        "label": label,
        "method": method,
        "width": width,
        "problems": detail["n_problems"],
        "accuracy": detail["accuracy_all"],
        "accuracy_low": interval[0] if interval else None,
        "accuracy_high": interval[1] if interval else None,
        "correct": detail["n_correct"],
        "with_reference": detail["n_with_reference"],
        "accuracy_graded": detail["accuracy"],
        "errors": detail["n_errors"],
        "no_answer": detail["n_no_answer"],
        "kv_tokens_mean": means.get("kv_tokens_mean"),
        "kv_tokens_peak": summary.kv_tokens_peak,
        "kv_tokens_peak_mean": means.get("kv_tokens_peak"),
        "kv_blocks_mean": means.get("kv_blocks_mean"),
        "kv_blocks_peak_mean": means.get("kv_blocks_peak"),
        "generated_tokens_mean": means.get("generated_tokens"),
        "generated_tokens_total": generated,
        "prefix_cache_hit_rate": detail["prefix_cache_hit_rate"],
        "wall_time_s": wall,
        "problems_per_s": detail["problems_per_s"],
        "generated_tokens_per_s": generated / wall if wall and generated is not None else None,
        "detail": detail,
    }


def _one_or_all(values: set[Any]) -> Any:
    return values.pop() if len(values) == 1 else sorted(values, key=str)


def summary_rows(records: Iterable[RunRecord]) -> list[Row]:
    """One summary per run (label, width), sorted by label then width.

    ``accuracy`` counts every problem with a reference (errors and missing answers are wrong, as in
    the paper), with its 95% Wilson interval (``accuracy_low``/``accuracy_high``); ``accuracy_graded``
    only those that were graded. KV figures are in tokens: ``kv_tokens_mean`` is the mean over
    problems of each problem's mean over selection steps, ``kv_tokens_peak`` the largest over
    problems. ``problems_per_s`` needs the ``run`` timing that ``ets-async run`` writes.
    """
    return [
        _summary(group, label, _one_or_all({r.method for r in group}), width)
        for (label, width), group in group_runs(records).items()
    ]


def run_summary(records: Sequence[RunRecord]) -> Row:
    """The summary of one run file (all its records together)."""
    return _summary(
        records,
        _one_or_all({r.label for r in records}),
        _one_or_all({r.method for r in records}),
        _one_or_all({r.width for r in records}),
    )


def paired_difference(
    runs: Sequence[ProblemResult], baseline: Sequence[ProblemResult], *, resamples: int = 10_000, seed: int = 0
) -> Row:
    """Accuracy of ``runs`` minus ``baseline`` on the problems both graded, with a 95% paired
    bootstrap interval (problems resampled with replacement), and the problems only one solved."""
    return paired_outcomes(
        {r.id: bool(r.correct) for r in runs if r.reference is not None},
        {r.id: bool(r.correct) for r in baseline if r.reference is not None},
        resamples=resamples,
        seed=seed,
    )


def paired_outcomes(
    ours: Mapping[str, bool], theirs: Mapping[str, bool], *, resamples: int = 10_000, seed: int = 0
) -> Row:
    """``paired_difference`` over right/wrong by problem id (the ids both have)."""
    shared = sorted(ours.keys() & theirs.keys())
    deltas = [int(ours[i]) - int(theirs[i]) for i in shared]
    if not deltas:
        return {"problems": 0, "difference": None, "low": None, "high": None, "wins": 0, "losses": 0}
    rng = random.Random(seed)
    n = len(deltas)
    means = sorted(sum(rng.choices(deltas, k=n)) / n for _ in range(resamples))
    return {
        "problems": n,
        "difference": sum(deltas) / n,
        "low": means[int(0.025 * resamples)],
        "high": means[min(resamples - 1, int(0.975 * resamples))],
        "wins": deltas.count(1),
        "losses": deltas.count(-1),
    }


def accuracy_text(row: Row) -> str:
    """'56.7% (17/30)'."""
    if row["accuracy"] is None:
        return "-"
    return f"{fmt(row['accuracy'], 'pct')} ({row['correct']}/{row['with_reference']})"


def format_summary(row: Row, title: str) -> str:
    """A run's summary, one figure per line."""
    interval = ""
    if row.get("accuracy_low") is not None:
        interval = f", 95% CI {fmt(row['accuracy_low'], 'pct')}-{fmt(row['accuracy_high'], 'pct')}"
    lines = [
        ("accuracy", accuracy_text(row) + interval),
        ("errors / no answer", f"{row['errors']} / {row['no_answer']}"),
        ("KV tokens mean", fmt(row["kv_tokens_mean"])),
        ("KV tokens peak", fmt(row["kv_tokens_peak"])),
        ("KV blocks mean", fmt(row["kv_blocks_mean"])),
        (
            "generated tokens",
            f"{fmt(row['generated_tokens_mean'])} per problem, {fmt(row['generated_tokens_total'])} total",
        ),
        (
            "throughput",
            f"{fmt(row['problems_per_s'], 'rate')} problems/s, {fmt(row['generated_tokens_per_s'], 'rate')} tokens/s",
        ),
        ("prefix-cache hits", fmt(row["prefix_cache_hit_rate"], "pct")),
        ("search wall time", f"{fmt(row['wall_time_s'], 'rate')} s"),
    ]
    width = max(len(name) for name, _ in lines)
    return "\n".join([f"summary of {title}"] + [f"  {name:<{width}}  {value}" for name, value in lines])


SUMMARY_COLUMNS: list[Column] = [
    ("method", lambda r: str(r["label"])),
    ("W", lambda r: fmt(r["width"])),
    ("problems", lambda r: fmt(r["problems"])),
    ("accuracy", accuracy_text),
    (
        "95% CI",
        lambda r: (
            f"{fmt(r['accuracy_low'], 'pct')}-{fmt(r['accuracy_high'], 'pct')}"
            if r["accuracy_low"] is not None
            else "-"
        ),
    ),
    ("KV mean", lambda r: fmt(r["kv_tokens_mean"])),
    ("KV peak", lambda r: fmt(r["kv_tokens_peak"])),
    ("KV blocks", lambda r: fmt(r["kv_blocks_mean"])),
    ("gen tokens", lambda r: fmt(r["generated_tokens_mean"])),
    ("problems/s", lambda r: fmt(r["problems_per_s"], "rate")),
    ("prefix hit", lambda r: fmt(r["prefix_cache_hit_rate"], "pct")),
    ("errors", lambda r: fmt(r["errors"])),
]


def table(rows: Sequence[Any], columns: Sequence[Column], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [[name for name, _ in columns]] + [[cell(row) for _, cell in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = []
    for n, line in enumerate(cells):
        text.append(
            "  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
        )
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_table(rows: Sequence[Row]) -> str:
    """A plain-text table of ``summary_rows``."""
    return table(rows, SUMMARY_COLUMNS)


def _clip(text: Any, width: int) -> str:
    text = " ".join(str(text if text is not None else "-").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _verdict(result: ProblemResult) -> str:
    if result.error:
        return "error: " + _clip(result.error, 60)
    return {True: "right", False: "wrong", None: "-"}[result.correct]


PROBLEM_COLUMNS: list[Column] = [
    ("id", lambda r: r.id),
    ("problem", lambda r: _clip(r.problem, 48)),
    ("answer", lambda r: _clip(r.answer, 12)),
    ("reference", lambda r: _clip(r.reference, 12)),
    ("result", _verdict),
    ("tokens", lambda r: fmt(r.metrics.generated_tokens)),
    ("KV mean", lambda r: fmt(r.metrics.kv_tokens_mean)),
    ("time s", lambda r: fmt(r.metrics.wall_time_s, "rate")),
]
"""One row per problem result (the demo's table)."""


def regrade(
    records: Iterable[RunRecord], selection: str, aggregation: str, *, timeout_s: float = 5.0
) -> list[RunRecord]:
    """Copies of ``records`` with the answer re-selected from the stored candidates and re-graded."""
    from .grading import grade
    from .voting import select_answer

    regraded = []
    for record in records:
        if record.error is None:
            answer = select_answer([(c.answer, c.step_scores) for c in record.candidates], selection, aggregation)  # type: ignore[arg-type]
            record = replace(record, answer=answer, correct=grade(answer, record.reference, timeout_s=timeout_s))
        regraded.append(record)
    return regraded


def _node_depths(parents: Sequence[int]) -> list[int]:
    """Each node's depth from a parent array (a parent comes before its children)."""
    depth = [0] * len(parents)
    for node, parent in enumerate(parents):
        if parent >= 0:
            depth[node] = depth[parent] + 1
    return depth


def replay_stop_rule(record: Result, config: SearchConfig, *, timeout_s: float = 5.0) -> Result:
    """A full-width tree search's record as ``config``'s stop rule would have ended it (SPEC §3.4).

    A tree search's round r grows the nodes of depth r, and the live rule is tested after each round
    in which trajectories finished, over the finished ones so far, while the search goes on. So the
    first such round whose finished leaves settle the answer, short of the tree's last depth, is where
    the same search with the rule would have stopped on these samples: with the answer of those
    leaves, the tokens and steps of the nodes grown by then and the KV of the selections before that
    round (recomputed from the tree as the search records it); figures the tree does not hold (engine
    calls, timings) are None. A record that no round settles, or that has no tree (best-of-N draws its
    waves anew), is returned as it is.
    """
    from . import _core
    from .grading import grade
    from .metrics import MetricsSummary
    from .stopping import settled
    from .voting import select_answer

    tree = record.tree
    if tree is None or record.error is not None or not record.candidates:
        return record
    depth = _node_depths(tree.parents)
    finished_at = {depth[c.node] for c in record.candidates}
    for stop in range(1, max(depth)):
        if stop not in finished_at:
            continue
        leaves = [c for c in record.candidates if depth[c.node] <= stop]
        votes = [(c.answer, c.step_scores) for c in leaves]
        if not settled(votes, config, config.answer_selection, config.score_aggregation):
            continue
        answer = select_answer(votes, config.answer_selection, config.score_aggregation)
        parents = list(tree.parents)
        step_tokens = [int(record.metrics.root_prompt_tokens or 0), *tree.step_tokens[1:]]
        kv = [  # a selection's candidates: the unfinished nodes of its round
            _core.kv_tokens(parents, step_tokens, live)
            for r in range(1, stop)
            if (live := [v for v, d in enumerate(depth) if d == r and not tree.finished[v]])
        ]
        grown = [v for v, d in enumerate(depth) if 1 <= d <= stop]
        metrics = MetricsSummary(  # only what the tree tells; engine counts and timings are not replayed
            root_prompt_tokens=record.metrics.root_prompt_tokens,
            generated_tokens=sum(tree.step_tokens[v] for v in grown),
            generated_steps=len(grown),
            depth=stop,
            finished=len(leaves),
            waves=record.metrics.waves,
            stop_reason="settled",
            kv_tokens_mean=sum(kv) / len(kv) if kv else None,
            kv_tokens_peak=max(kv, default=None),
            kv_tokens_total=sum(kv),
        )
        correct = grade(answer, record.reference, timeout_s=timeout_s)
        return replace(record, answer=answer, correct=correct, candidates=leaves, metrics=metrics)
    return record
