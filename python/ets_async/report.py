"""Reports of run records (the lines ``ets-async run`` writes): summaries per run, accuracy with
confidence intervals, paired comparisons of two runs on the same problems, and the one number
formatter that every table, the progress bar and the benchmarks use.

A record is ``ProblemResult.to_dict()`` plus ``config`` (the SearchConfig) and ``run``: ``session``,
``elapsed_s`` (seconds from the session's start to this record) and optionally ``label`` (a name
for the run when several runs share a method and width, e.g. majority vote and best-of-N).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "Column",
    "fmt",
    "format_summary",
    "format_table",
    "group_runs",
    "paired_difference",
    "record_label",
    "regrade",
    "run_record",
    "run_summary",
    "summarize",
    "summary_rows",
    "table",
    "wall_time",
    "wilson_interval",
]

Record = Mapping[str, Any]
Column = tuple[str, Callable[[Record], str]]


def number(value: Any) -> float | None:
    """A finite number as float, else None (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


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


def run_record(result: Any, config: Any, *, session: str, elapsed_s: float, label: str | None = None) -> dict[str, Any]:
    """The run-file line of one ``ProblemResult``."""
    record = result.to_dict()
    record["config"] = config.model_dump(mode="json")
    record["run"] = {"session": session, "elapsed_s": round(elapsed_s, 4)}
    if label is not None:
        record["run"]["label"] = label
    return record


def record_label(record: Record) -> str:
    """The run's label if it has one, else its method."""
    run = record.get("run")
    label = run.get("label") if isinstance(run, Mapping) else None
    return str(label) if label else str(record.get("method"))


def group_runs(records: Iterable[Record]) -> dict[tuple[str, Any], list[Record]]:
    """Records per (label, width), ordered by label then width."""
    groups: dict[tuple[str, Any], list[Record]] = {}
    for record in records:
        groups.setdefault((record_label(record), record.get("width")), []).append(record)
    order = sorted(groups, key=lambda k: (k[0], k[1] if isinstance(k[1], int) else -1))
    return {key: groups[key] for key in order}


def wall_time(records: Iterable[Record]) -> float | None:
    """Total search wall time of the sessions that wrote ``records`` (None if any record lacks it).

    A session lasted as long as its last record, so resumed and killed runs add up.
    """
    sessions: dict[str, float] = {}
    for record in records:
        info = record.get("run")
        if not isinstance(info, Mapping):
            return None
        elapsed, session = number(info.get("elapsed_s")), info.get("session")
        if elapsed is None or not isinstance(session, str):
            return None
        sessions[session] = max(sessions.get(session, 0.0), elapsed)
    return sum(sessions.values()) if sessions else None


def summarize(records: Iterable[Record], *, wall_time_s: float | None = None) -> dict[str, Any]:
    """Accuracy, error counts and metric means of a set of problem records.

    ``accuracy`` is over records whose ``correct`` is a bool; ``accuracy_all`` counts every problem
    with a reference, errors and missing answers as wrong (the paper's convention).
    ``metrics_mean[k]`` averages metric ``k`` over the records that report it; ``metrics_sum`` sums
    it. ``prefix_cache_hit_rate`` = sum(prefix_cached_tokens) / sum(prompt_tokens) over records that
    report both. ``problems_per_s`` needs the run's total ``wall_time_s``.
    """
    records = list(records)
    n_graded = n_correct = n_with_reference = n_errors = n_no_answer = 0
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    cached_tokens = prompt_tokens = 0.0
    has_cache_stats = False
    for record in records:
        correct = record.get("correct")
        if record.get("error") is not None:
            n_errors += 1
        elif record.get("answer") is None:
            n_no_answer += 1
        if isinstance(correct, bool):
            n_graded += 1
            n_correct += correct
        if record.get("reference") is not None or isinstance(correct, bool):
            n_with_reference += 1
        metrics = record.get("metrics")
        if not isinstance(metrics, Mapping):
            continue
        for key, value in metrics.items():
            if (value := number(value)) is not None:
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
        cached, prompt = number(metrics.get("prefix_cached_tokens")), number(metrics.get("prompt_tokens"))
        if cached is not None and prompt is not None:
            has_cache_stats = True
            cached_tokens += cached
            prompt_tokens += prompt
    return {
        "n_problems": len(records),
        "n_errors": n_errors,
        "n_no_answer": n_no_answer,
        "n_graded": n_graded,
        "n_correct": n_correct,
        "accuracy": n_correct / n_graded if n_graded else None,
        "n_with_reference": n_with_reference,
        "accuracy_all": n_correct / n_with_reference if n_with_reference else None,
        "metrics_mean": {key: sums[key] / counts[key] for key in sorted(sums)},
        "metrics_sum": {key: sums[key] for key in sorted(sums)},
        "prefix_cache_hit_rate": (cached_tokens / prompt_tokens) if has_cache_stats and prompt_tokens > 0 else None,
        "wall_time_s": wall_time_s,
        "problems_per_s": len(records) / wall_time_s if wall_time_s else None,
    }


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval of a proportion (95% by default); None when ``n`` is 0."""
    if n <= 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _summary(records: Sequence[Record], label: Any, method: Any, width: Any) -> dict[str, Any]:
    wall = wall_time(records)
    detail = summarize(records, wall_time_s=wall)
    means, sums = detail["metrics_mean"], detail["metrics_sum"]
    peaks = [peak for r in records if (peak := number((r.get("metrics") or {}).get("kv_tokens_peak"))) is not None]
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
        "kv_tokens_peak": max(peaks) if peaks else None,
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


def summary_rows(records: Iterable[Record]) -> list[dict[str, Any]]:
    """One summary per run (label, width), sorted by label then width.

    ``accuracy`` counts every problem with a reference (errors and missing answers are wrong, as in
    the paper), with its 95% Wilson interval (``accuracy_low``/``accuracy_high``); ``accuracy_graded``
    only those that were graded. KV figures are in tokens: ``kv_tokens_mean`` is the mean over
    problems of each problem's mean over selection steps, ``kv_tokens_peak`` the largest over
    problems. ``problems_per_s`` needs the ``run`` timing that ``ets-async run`` writes.
    """
    return [
        _summary(group, label, _one_or_all({str(r.get("method")) for r in group}), width)
        for (label, width), group in group_runs(records).items()
    ]


def run_summary(records: Sequence[Record]) -> dict[str, Any]:
    """The summary of one run file (all its records together)."""
    return _summary(
        records,
        _one_or_all({record_label(r) for r in records}),
        _one_or_all({str(r.get("method")) for r in records}),
        _one_or_all({r.get("width") for r in records}),
    )


def paired_difference(
    runs: Sequence[Record], baseline: Sequence[Record], *, resamples: int = 10_000, seed: int = 0
) -> dict[str, Any]:
    """Accuracy of ``runs`` minus ``baseline`` on the problems both graded, with a 95% paired
    bootstrap interval (problems resampled with replacement), and the problems only one solved."""
    ours = {r["id"]: bool(r.get("correct")) for r in runs if r.get("reference") is not None}
    theirs = {r["id"]: bool(r.get("correct")) for r in baseline if r.get("reference") is not None}
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


def accuracy_text(row: Record) -> str:
    """'56.7% (17/30)'."""
    if row["accuracy"] is None:
        return "-"
    return f"{fmt(row['accuracy'], 'pct')} ({row['correct']}/{row['with_reference']})"


def format_summary(row: Record, title: str) -> str:
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
        ("generated tokens", f"{fmt(row['generated_tokens_mean'])} per problem, {fmt(row['generated_tokens_total'])} total"),
        ("throughput", f"{fmt(row['problems_per_s'], 'rate')} problems/s, {fmt(row['generated_tokens_per_s'], 'rate')} tokens/s"),
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
    ("95% CI", lambda r: f"{fmt(r['accuracy_low'], 'pct')}-{fmt(r['accuracy_high'], 'pct')}" if r["accuracy_low"] is not None else "-"),
    ("KV mean", lambda r: fmt(r["kv_tokens_mean"])),
    ("KV peak", lambda r: fmt(r["kv_tokens_peak"])),
    ("KV blocks", lambda r: fmt(r["kv_blocks_mean"])),
    ("gen tokens", lambda r: fmt(r["generated_tokens_mean"])),
    ("problems/s", lambda r: fmt(r["problems_per_s"], "rate")),
    ("prefix hit", lambda r: fmt(r["prefix_cache_hit_rate"], "pct")),
    ("errors", lambda r: fmt(r["errors"])),
]


def table(rows: Sequence[Record], columns: Sequence[Column], left: int = 1) -> str:
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned."""
    cells = [[name for name, _ in columns]] + [[cell(row) for _, cell in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    text = []
    for n, line in enumerate(cells):
        text.append("  ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))))
        if n == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def format_table(rows: Sequence[Record]) -> str:
    """A plain-text table of ``summary_rows``."""
    return table(rows, SUMMARY_COLUMNS)


def _clip(text: Any, width: int) -> str:
    text = " ".join(str(text if text is not None else "-").split())
    return text if len(text) <= width else text[: width - 3] + "..."


def _verdict(record: Record) -> str:
    if record.get("error"):
        return "error: " + _clip(record["error"], 60)
    return {True: "right", False: "wrong", None: "-"}[record.get("correct")]


PROBLEM_COLUMNS: list[Column] = [
    ("id", lambda r: str(r.get("id"))),
    ("problem", lambda r: _clip(r.get("problem"), 48)),
    ("answer", lambda r: _clip(r.get("answer"), 12)),
    ("reference", lambda r: _clip(r.get("reference"), 12)),
    ("result", _verdict),
    ("tokens", lambda r: fmt((r.get("metrics") or {}).get("generated_tokens"))),
    ("KV mean", lambda r: fmt((r.get("metrics") or {}).get("kv_tokens_mean"))),
    ("time s", lambda r: fmt((r.get("metrics") or {}).get("wall_time_s"), "rate")),
]
"""One row per problem (the demo's table)."""


def regrade(records: Iterable[Record], selection: str, aggregation: str, *, timeout_s: float = 5.0) -> list[dict[str, Any]]:
    """Copies of ``records`` with the answer re-selected from the stored candidates and re-graded."""
    from .grading import grade
    from .voting import select_answer

    regraded = []
    for record in records:
        copy = dict(record)
        if copy.get("error") is None:
            candidates = copy.get("candidates") or []
            pairs = [(c.get("answer"), c.get("step_scores") or ()) for c in candidates if isinstance(c, Mapping)]
            copy["answer"] = select_answer(pairs, selection, aggregation)  # type: ignore[arg-type]
            copy["correct"] = grade(copy["answer"], copy.get("reference"), timeout_s=timeout_s)
        regraded.append(copy)
    return regraded
