"""Accuracy against cost for every search method on the same problems, one engine, one run.

    python bench/bench_quality.py --problems 30 --width 8 --out runs/quality
    python bench/bench_quality.py --variants rebase ets ets:lambda_s=0 --width 16 --baseline rebase
    python bench/bench_quality.py --out runs/quality --report-only
    python bench/bench_quality.py --verifier HEAD --variants majority weighted_verifier rebase_verifier pf_verifier

Each variant is a predefined name (greedy, majority, weighted_majority, best_of_n, beam, dvts, rebase,
ets, and with the verifier: weighted_verifier, rebase_verifier, ets_verifier, pf_verifier, pf) or
``[label=]method[:key=value,...]`` with any SearchConfig fields, plus ``prm=confidence`` (the default)
or ``prm=verifier`` (the head given by ``--verifier``, on its own pooling engine, started once beside
the policy's); ``--width`` applies unless a variant sets its own. Every variant runs on the same
problems with the same seed, one after another on one engine (its prefix cache reset before each), and
appends one line per problem to ``OUT/<label>-<width>.jsonl``: an interrupted run resumes where it
stopped, and a variant whose settings changed is refused. While a variant runs, the engine's own
KV-cache usage (``vllm:kv_cache_usage_perc``) and the processes' memory are sampled every 0.25 s. A
variant that differs from an earlier one only in ``answer_selection``/``score_aggregation`` (majority
vote, weighted majority and the highest score over the same N samples) grows identical trees, so its
answers are re-selected from the earlier run's candidates instead of searching again.

The report (``OUT/summary.json``, ``OUT/quality.png`` and the printed table): accuracy with its 95%
Wilson interval, the paired difference against ``--baseline`` on the same problems with a 95%
bootstrap interval, mean and peak tree KV (tokens and blocks, SPEC §8.1) with how many times
smaller than the baseline's they are (mean KV, and the mean of the per-problem peaks), the engine's KV
usage, generated tokens per problem, wall time and throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ets_async import EngineConfig, SearchConfig, iter_solve, load_backends, report
from ets_async.api import resolve_config
from ets_async.backends.confidence_prm import ConfidencePRM
from ets_async.datasets import load_problems
from ets_async.plots import plot_summaries
from ets_async.records import RunRecord
from ets_async.results import ResultWriter, read_results
from gsm8k import DEFAULT_DATA  # a sibling module: the script's folder is on sys.path

VARIANTS = {
    "greedy": "best_of_n:width=1,temperature=0",
    "majority": "best_of_n:answer_selection=majority",
    "weighted_majority": "best_of_n:answer_selection=weighted_majority",
    "best_of_n": "best_of_n:answer_selection=highest_score",
    "beam": "beam",
    "dvts": "dvts",
    "rebase": "rebase",
    "ets": "ets",
    "pf": "particle_filter",
    "weighted_verifier": "best_of_n:answer_selection=weighted_majority,prm=verifier",
    "rebase_verifier": "rebase:prm=verifier",
    "ets_verifier": "ets:prm=verifier",
    "pf_verifier": "particle_filter:prm=verifier",
}
PRMS = ("confidence", "verifier")
ISSUE_SET = ["greedy", "majority", "weighted_majority", "best_of_n", "beam", "dvts", "rebase", "ets"]


@dataclass(frozen=True)
class Variant:
    label: str
    config: SearchConfig
    prm: str = "confidence"


def parse_variant(spec: str, base: dict[str, Any]) -> Variant:
    """``label=method:key=value,...`` (label defaults to the spec; ``prm=`` picks the scorer) -> a variant."""
    label, sep, body = spec.partition("=")
    if not sep or ":" in label:
        label, body = spec, spec
    body = VARIANTS.get(body, body)
    method, _, rest = body.partition(":")
    settings = [s for s in rest.split(",") if s and not s.startswith("prm=")]
    prm = next((s.partition("=")[2] for s in rest.split(",") if s.startswith("prm=")), "confidence")
    if prm not in PRMS:
        raise SystemExit(f"{spec}: prm must be one of {', '.join(PRMS)}")
    return Variant(label, SearchConfig.load(None, settings, base={**base, "method": method}), prm)


def process_tree_rss_gib() -> float:
    """Resident memory of this process and its children (the engine core and worker), in GiB."""
    import psutil

    me = psutil.Process()
    total = 0
    for process in [me, *me.children(recursive=True)]:
        try:
            total += process.memory_info().rss
        except psutil.Error:
            pass
    return total / 2**30


async def sample_engine(kv_usage: list[float], rss_gib: list[float], period_s: float = 0.25) -> None:
    """Append the engine's own KV-cache usage (the share of blocks held by running requests) and the
    process tree's memory every ``period_s`` until cancelled."""
    from vllm.v1.metrics.reader import Gauge, get_metrics_snapshot

    while True:
        kv_usage.extend(
            m.value for m in get_metrics_snapshot() if m.name == "vllm:kv_cache_usage_perc" and isinstance(m, Gauge)
        )
        rss_gib.append(process_tree_rss_gib())
        await asyncio.sleep(period_s)


def run_file(out: Path, variant: Variant) -> Path:
    return out / f"{variant.label}-{variant.config.width}.jsonl"


async def run_variant(backends: Any, prm: Any, problems: list[dict[str, Any]], variant: Variant, out: Path) -> None:
    label, config = variant.label, variant.config
    path = run_file(out, variant)
    header = {"label": label, "config": config.model_dump(mode="json"), "prm": variant.prm}
    with ResultWriter(path, run_header=header) as writer:
        if changed := writer.settings_changed(header):
            raise SystemExit(
                f"{path} was written with other settings ({', '.join(changed)}); remove it or use another --out"
            )
        todo = [p for p in problems if p["id"] not in writer.done_ids()]
        if not todo:
            return
        config = resolve_config(config, backends.policy, backends.embedder)  # records say what ran
        print(f"{label} (W={config.width}): {len(todo)} problems to run", flush=True)
        await backends.engines[0].llm.reset_prefix_cache()
        session = f"{time.strftime('%Y%m%dT%H%M%S')}-{label}"
        usage: list[float] = []
        rss: list[float] = []
        sampler = asyncio.create_task(sample_engine(usage, rss))
        started = time.perf_counter()
        try:
            results = iter_solve(todo, config, policy=backends.policy, prm=prm, embedder=backends.embedder)
            async for result in results:
                elapsed = time.perf_counter() - started
                writer.write(RunRecord.of(result, config, session=session, elapsed_s=elapsed, label=label))
        finally:
            sampler.cancel()
        with path.with_suffix(".engine.jsonl").open("a") as log:
            log.write(
                json.dumps({"session": session, "kv_usage": usage, "rss_gib_peak": max(rss, default=None)}) + "\n"
            )


_SELECTION_FIELDS = ("answer_selection", "score_aggregation")


def same_search(a: Variant, b: Variant) -> bool:
    """Whether two variants grow identical trees with identical scores (they differ at most in how the
    answer is picked: seeds depend only on the seed, the problem and the node, so the samples are the same)."""
    def search_fields(config: SearchConfig) -> dict[str, Any]:
        return {k: v for k, v in config.model_dump().items() if k not in _SELECTION_FIELDS}

    return a.prm == b.prm and search_fields(a.config) == search_fields(b.config)


def derive_variant(source: Path, problems: list[dict[str, Any]], variant: Variant, out: Path) -> None:
    """A variant that only picks answers differently: re-select and re-grade the source run's stored
    candidates instead of searching again (its timing is the source's search)."""
    label, config = variant.label, variant.config
    path = run_file(out, variant)
    header = {"label": label, "config": config.model_dump(mode="json"), "prm": variant.prm, "derived_from": source.name}
    wanted = {p["id"] for p in problems}
    with ResultWriter(path, run_header=header) as writer:
        records = [r for r in read_results(source) if r.id in wanted and r.id not in writer.done_ids()]
        if records:
            print(f"{label} (W={config.width}): answers re-selected from {source.name}", flush=True)
        for record in report.regrade(records, config.answer_selection, config.score_aggregation):
            record.config = {**record.config, **{k: getattr(config, k) for k in _SELECTION_FIELDS}}
            record.run = replace(record.run, label=label) if record.run is not None else None
            writer.write(record)
    sidecar = source.with_suffix(".engine.jsonl")
    if sidecar.is_file():
        path.with_suffix(".engine.jsonl").write_text(sidecar.read_text())


def engine_usage(path: Path) -> tuple[float | None, float | None, float | None]:
    """Mean and peak of the engine's sampled KV-cache usage over every session of a run file, and
    the peak memory of the process tree (GiB)."""
    samples: list[float] = []
    peaks: list[float] = []
    sidecar = path.with_suffix(".engine.jsonl")
    if sidecar.is_file():
        for line in sidecar.read_text().splitlines():
            session = json.loads(line)
            samples.extend(session["kv_usage"])
            if session.get("rss_gib_peak") is not None:
                peaks.append(session["rss_gib_peak"])
    usage = (statistics.fmean(samples), max(samples)) if samples else (None, None)
    return (*usage, max(peaks) if peaks else None)


def kv_ratio(reference: list[RunRecord] | None, records: list[RunRecord], figure: str) -> float | None:
    """How many times smaller the mean of a per-problem KV ``figure`` is in ``records`` than in
    ``reference``, over the problems both finished (rows may cover different problems)."""
    if reference is None or records is reference:
        return None
    mine = {r.id: getattr(r.metrics, figure) for r in records if r.error is None}
    theirs = {r.id: getattr(r.metrics, figure) for r in reference if r.error is None}
    common = [i for i in mine if i in theirs and mine[i] is not None and theirs[i] is not None]
    if not common or not sum(mine[i] for i in common):
        return None
    return sum(theirs[i] for i in common) / sum(mine[i] for i in common)


def summarise(out: Path, runs: list[Variant] | None, baseline: str | None) -> list[dict[str, Any]]:
    """One summary row per run file in ``out`` (or per given run), with the paired difference."""
    paths = [run_file(out, variant) for variant in runs] if runs else sorted(out.glob("*-*.jsonl"))
    paths = [p for p in paths if p.is_file() and not p.name.endswith(".engine.jsonl")]
    records = {p: read_results(p) for p in paths}
    rows = []
    reference = next((recs for p, recs in records.items() if recs and recs[0].label == baseline), None)
    for path, recs in records.items():
        if not recs:
            continue
        row = report.run_summary(recs)
        row["engine_kv_usage_mean"], row["engine_kv_usage_peak"], row["memory_gib_peak"] = engine_usage(path)
        row["vs_baseline"] = report.paired_difference(recs, reference) if reference is not None else None
        row["kv_mean_ratio"] = kv_ratio(reference, recs, "kv_tokens_mean")
        row["kv_peak_ratio"] = kv_ratio(reference, recs, "kv_tokens_peak")
        row.pop("detail")
        rows.append(row)
    return rows


def print_report(rows: list[dict[str, Any]], baseline: str | None) -> None:
    def paired(row: dict[str, Any]) -> str:
        diff = row["vs_baseline"]
        if not diff or diff["difference"] is None or row["label"] == baseline:
            return "-"
        interval = f"[{100 * diff['low']:+.1f}, {100 * diff['high']:+.1f}]"
        return f"{100 * diff['difference']:+.1f} {interval} (+{diff['wins']}/-{diff['losses']})"

    def times(key: str) -> Callable[[dict[str, Any]], str]:
        return lambda row: "-" if row[key] is None else f"x{row[key]:.2f}"

    columns: list[report.Column] = [
        *report.SUMMARY_COLUMNS[:5],
        (f"vs {baseline} (pts, 95% CI)", paired),
        ("KV mean", lambda r: report.fmt(r["kv_tokens_mean"])),
        (f"{baseline} KV / KV", times("kv_mean_ratio")),
        ("KV peak", lambda r: report.fmt(r["kv_tokens_peak"])),
        ("per-problem peak ratio", times("kv_peak_ratio")),
        ("blocks mean/peak", lambda r: f"{report.fmt(r['kv_blocks_mean'])}/{report.fmt(r['kv_blocks_peak_mean'])}"),
        ("engine KV", lambda r: report.fmt(r["engine_kv_usage_mean"], "pct")),
        ("gen tokens", lambda r: report.fmt(r["generated_tokens_mean"])),
        ("memory GiB", lambda r: f"{r['memory_gib_peak']:.1f}" if r["memory_gib_peak"] is not None else "-"),
        ("wall s", lambda r: report.fmt(r["wall_time_s"], "rate")),
        ("tokens/s", lambda r: report.fmt(r["generated_tokens_per_s"], "rate")),
    ]
    print(report.table(rows, columns))


async def collect(args: argparse.Namespace, runs: list[Variant], problems: list[dict[str, Any]]) -> None:
    wants_verifier = any(v.prm == "verifier" for v in runs)
    if wants_verifier and not args.verifier:
        raise SystemExit(
            "a variant scores with the verifier: give --verifier HEAD (a head file or a registered verifier)"
        )
    extra = ["prm=verifier", f"prm_model={args.verifier}"] if wants_verifier else []
    engine_config = EngineConfig.load(None, [*args.engine_set, *extra])
    started = time.perf_counter()
    backends = load_backends(engine_config)
    print(
        f"engines started in {time.perf_counter() - started:.0f} s, {process_tree_rss_gib():.1f} GiB resident",
        flush=True,
    )
    prms = {"confidence": ConfidencePRM(), "verifier": backends.prm} if wants_verifier else {"confidence": backends.prm}
    try:
        for i, variant in enumerate(runs):
            source = next((run_file(args.out, earlier) for earlier in runs[:i] if same_search(earlier, variant)), None)
            if source is not None:
                derive_variant(source, problems, variant, args.out)
            else:
                await run_variant(backends, prms[variant.prm], problems, variant, args.out)
    finally:
        backends.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--start", type=int, default=0, help="first problem (0-based) of the slice")
    parser.add_argument("--problems", type=int, default=30)
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--variants", nargs="+", default=ISSUE_SET)
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE", help="SearchConfig for every variant"
    )
    parser.add_argument("--engine-set", action="append", default=[], metavar="KEY=VALUE", help="EngineConfig field")
    parser.add_argument(
        "--verifier", default=None, help="the verifier of prm=verifier variants: a head file or a registered verifier"
    )
    parser.add_argument("--baseline", default="majority", help="the run label paired differences are taken against")
    parser.add_argument("--out", type=Path, default=Path("runs/quality"))
    parser.add_argument("--report-only", action="store_true", help="summarise the run files in --out")
    args = parser.parse_args()
    base = {"width": args.width, **SearchConfig.parse_settings(args.sets)}
    runs = None if args.report_only else [parse_variant(spec, base) for spec in args.variants]
    if runs:
        problems, _ = load_problems(args.dataset)
        args.out.mkdir(parents=True, exist_ok=True)
        asyncio.run(collect(args, runs, problems[args.start : args.start + args.problems]))
    rows = summarise(args.out, runs, args.baseline)
    print_report(rows, args.baseline)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot = plot_summaries(rows, args.out / "quality.png", title=f"{rows[0]['problems'] if rows else 0} problems")
    print(f"wrote {args.out / 'summary.json'} and {plot}")


if __name__ == "__main__":
    main()
