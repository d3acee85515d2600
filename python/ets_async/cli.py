"""The command line: datasets and flags -> configs -> iter_solve -> run files; eval, plot and demo.

    ets-async run --dataset test.jsonl --method ets --width 16 [--config ets_16] [--out runs/x.jsonl]
    ets-async eval runs/*.jsonl
    ets-async plot runs/*.jsonl -o fig.png
    ets-async demo
    ets-async serve --port 8000
    ets-async train-verifier runs/rollouts.jsonl --out head.safetensors
    ets-async models list | prepare [NAME...]

The commands read datasets, start backends and write run files through the library (results.py,
models.py, backends/, app.py); what is here is argument parsing, progress, resume and exit codes.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import gc
import importlib.resources
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from . import models, report
from .app import BackendPlan, EngineStartError, RunPlan, engine_log_path, execute
from .config import EngineConfig, SearchConfig, read_recipe, recipe_names
from .datasets import Shard
from .errors import ConfigError, EngineDiedError, RunFileError
from .models import DEFAULT_POLICY, POLICY_ENV, default_policy
from .progress import RunProgress
from .records import RunRecord
from .registry import METHOD_NAMES, StopSettings, method_settings
from .voting import ANSWER_SELECTIONS, STEP_AGGREGATIONS

__all__ = ["app", "build_search_config", "main"]

log = logging.getLogger("ets_async")

app = typer.Typer(
    name="ets-async",
    help="ETS tree search (and REBASE, beam search, DVTS, best-of-N) for LLM math reasoning: "
    "run a dataset, evaluate and plot run files, or try the demo.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain click help and errors: stable text, no markup in option help
    pretty_exceptions_enable=False,
)

MethodName = enum.Enum("MethodName", {name: name for name in METHOD_NAMES}, type=str)  # type: ignore[misc]
Selection = enum.Enum("Selection", {name: name for name in ANSWER_SELECTIONS}, type=str)  # type: ignore[misc]
Aggregation = enum.Enum("Aggregation", {name: name for name in STEP_AGGREGATIONS}, type=str)  # type: ignore[misc]


class BackendName(enum.StrEnum):
    vllm = "vllm"
    fake = "fake"


DEMO_FILE = "demo_problems.jsonl"
DEMO_SETTINGS: dict[str, Any] = {
    "method": "ets",
    "width": 4,
    "max_step_tokens": 128,
    "max_tokens": 384,
    "max_depth": 8,
    "max_concurrent_problems": 8,
}
"""Small enough for the embedded default on two CPU cores in a few minutes."""
DEMO_ENGINE: dict[str, Any] = {"max_model_len": 2048, "cpu_kv_cache_gib": 1.0, "max_num_seqs": 64}

_MAX_REPORTED_ISSUES = 50
_BACKEND_HELP = "vllm: the in-process engine; fake: scripted backends (no model; answers are noise)."
_MODEL_HELP = (
    "Policy model: a registry name (ets-async models list), a path or a hub name. "
    f"[default: ${POLICY_ENV}, else {DEFAULT_POLICY}]"
)

# Options that several commands take, declared once.
SearchSets = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Set any SearchConfig field, e.g. --set lambda_s=1.2 --set max_depth=10 (value read as YAML). "
        "Repeatable; wins over every other setting.",
    ),
]
EngineSets = Annotated[
    list[str] | None,
    typer.Option(
        "--engine-set",
        metavar="KEY=VALUE",
        help="Set any EngineConfig field, e.g. --engine-set prm=verifier --engine-set max_model_len=4096. "
        "Repeatable.",
    ),
]
Endpoints = Annotated[
    list[str] | None,
    typer.Option(
        "--endpoint",
        metavar="URL",
        help="An OpenAI-compatible vLLM/SGLang server (or a router) to search on instead of the in-process "
        "engine (repeatable: the work is spread over them, each problem pinned to one; also "
        "$ETS_ASYNC_ENDPOINTS).",
    ),
]
PolicyModel = Annotated[str | None, typer.Option(help=_MODEL_HELP)]
Backend = Annotated[BackendName, typer.Option(help=_BACKEND_HELP)]


# --------------------------------------------------------------------------------------------------
# Recipes and configuration
# --------------------------------------------------------------------------------------------------


def _usage_error(message: str) -> typer.Exit:
    """Report a usage or configuration error; raise the result (exit code 2, like a bad option)."""
    typer.echo(f"Error: {message}", err=True)
    return typer.Exit(2)


def build_search_config(
    recipe: str | None = None,
    sets: Sequence[str] = (),
    *,
    base: Mapping[str, Any] | None = None,
    **flags: Any,
) -> tuple[SearchConfig, str]:
    """The SearchConfig of a run (``SearchConfig.load``) and where it came from; a bad key or value
    exits with code 2 and says why."""
    try:
        config = SearchConfig.load(recipe, sets, base=base, **{key: _plain(value) for key, value in flags.items()})
        return config, "defaults" if recipe is None else read_recipe(recipe)[0]
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def _engine_config(model: str | None, sets: Sequence[str], base: Mapping[str, Any] | None = None) -> EngineConfig:
    try:
        return EngineConfig.load(None, sets, base=base, model=model)
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None


def _describe_config(config: SearchConfig) -> str:
    """The settings that shape a search, the method's own included ('default': left to the models)."""
    settings = method_settings(config.method)
    parts = [
        f"method={config.method}",
        f"width={config.width}",
        f"temperature={'default' if config.temperature is None else format(config.temperature, 'g')}",
        f"max_step_tokens={config.max_step_tokens}",
        f"max_tokens={config.max_tokens}",
        f"max_depth={config.max_depth}",
        f"softmax_temperature={config.softmax_temperature:g}",
        *([settings.of(config).describe()] if settings is not None else []),
        *([StopSettings.of(config).describe()] if config.stop_when != "budget" else []),
        f"selection={config.answer_selection}/{config.score_aggregation}",
        f"seed={config.seed}",
    ]
    return " ".join(parts)


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------


def _load_dataset(
    spec: str,
    *,
    limit: int | None,
    question_field: str | None,
    answer_field: str | None,
    id_field: str | None,
    hf_config: str | None,
) -> tuple[list[dict[str, Any]], list[str], str]:
    """(problems, issues prefixed with their source, a short name for default output files)."""
    from .datasets import load_hf_dataset, load_problems

    fields: dict[str, Any] = {
        "limit": limit,
        "question_field": question_field,
        "answer_field": answer_field,
        "id_field": id_field,
    }
    if spec.startswith("hf:"):
        name, _, split = spec[3:].partition(":")
        split = split or "test"
        if not name:
            raise typer.BadParameter("expected hf:NAME[:SPLIT], e.g. hf:openai/gsm8k:test", param_hint="--dataset")
        try:
            problems, issues = load_hf_dataset(name, split, config=hf_config, **fields)
        except ImportError as exc:
            raise _usage_error(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - hub unreachable, unknown dataset or split, ...
            raise _usage_error(
                f"could not load Hugging Face dataset {name!r} (split {split!r}): {type(exc).__name__}: {exc}"
            ) from None
        return problems, [f"{spec}: {issue}" for issue in issues], f"{name.replace('/', '_')}-{split}"
    path = Path(spec).expanduser()
    if not path.is_file():
        raise typer.BadParameter(f"{spec}: no such file", param_hint="--dataset")
    problems, issues = load_problems(path, **fields)
    return problems, [f"{spec}: {issue}" for issue in issues], path.stem


def _report_issues(issues: Sequence[str]) -> None:
    for issue in issues[:_MAX_REPORTED_ISSUES]:
        typer.echo(f"skipped {issue}", err=True)
    if len(issues) > _MAX_REPORTED_ISSUES:
        typer.echo(f"... and {len(issues) - _MAX_REPORTED_ISSUES} more skipped lines", err=True)


def _demo_problems(n: int) -> list[dict[str, Any]]:
    from .datasets import load_problems

    resource = importlib.resources.files("ets_async") / "data" / DEMO_FILE
    with importlib.resources.as_file(resource) as path:
        problems, _ = load_problems(path, limit=n)
    return problems


# --------------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------------


def _log_note(log_path: Path | None) -> str:
    return f"; its output goes to {log_path} (--verbose shows it)" if log_path else ""


def _engine_config_for(
    backend: BackendName, model: str | None, engine_sets: Sequence[str] | None, endpoints: Sequence[str] | None
) -> EngineConfig | None:
    """The engine configuration of a run or a service: None for scripted backends; with ``endpoints``
    the policy (and a judge PRM) run on those servers instead of an in-process engine."""
    if backend != BackendName.vllm:
        return None
    return _engine_config(model, engine_sets or (), base={"endpoints": tuple(endpoints)} if endpoints else None)


def _backend_plan(backend: BackendName, engine_config: EngineConfig | None, fake_delay: float = 0.0) -> BackendPlan:
    if backend == BackendName.fake:
        return BackendPlan("fake", fake_delay_s=fake_delay)
    return BackendPlan("vllm", engine_config, log=engine_log_path())


def _start(plan: BackendPlan) -> Any:
    """``plan.start()`` with its errors as CLI exits: 2 for a bad engine config, 1 for an engine that
    could not start (one line)."""
    try:
        return plan.start()
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    except EngineStartError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None


def _default_out(stem: str, config: SearchConfig, shard: Shard | None) -> Path:
    suffix = f"-shard{shard.index}of{shard.count}" if shard is not None else ""
    return Path("runs") / f"{stem}-{config.method}-{config.width}{suffix}.jsonl"


@app.command()
def run(
    dataset: str = typer.Option(
        ...,
        "--dataset",
        "-d",
        metavar="FILE|hf:NAME[:SPLIT]",
        help="Problems: a JSONL file, one object per line, with GSM8K fields (question, answer ending in "
        "'#### N') or MATH fields (problem, answer or solution), detected per line; or hf:NAME[:SPLIT] "
        "(split defaults to test) for a Hugging Face dataset, which needs the optional 'datasets' package "
        "and a reachable hub. Bad lines are reported with their line numbers and skipped.",
    ),
    method: MethodName | None = typer.Option(
        None, "--method", "-m", help="Search method. [default: ets, or the recipe's]"
    ),
    width: int | None = typer.Option(
        None, "--width", "-w", min=1, help="Search width W: trajectories per problem. [default: 16, or the recipe's]"
    ),
    config: str | None = typer.Option(
        None,
        "--config",
        "-c",
        metavar="RECIPE|FILE",
        help="Start from a shipped recipe (ets_16, ets_64, ets_256, rebase_16, ...: the paper's settings; "
        "see 'ets-async recipes') or a YAML file of SearchConfig fields. Flags override it.",
    ),
    set_: SearchSets = None,
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="Run file (JSONL, one line per finished problem; the summary goes to OUT.summary.json). "
        "If it exists the run resumes: problems already in it are skipped. "
        "[default: runs/<dataset>-<method>-<width>.jsonl]",
    ),
    limit: int | None = typer.Option(
        None, "--limit", "-n", min=1, help="Use only the first N valid problems of the dataset."
    ),
    shard: str | None = typer.Option(
        None,
        "--shard",
        metavar="I/N",
        help="Search only shard I of N (0 <= I < N) of the dataset (after --limit): the problems whose id "
        "hashes to I, the same on every machine whatever the line order. Run I = 0..N-1, each with its own "
        "--out, then 'ets-async eval' the N run files together. [default: the whole dataset]",
    ),
    question_field: str | None = typer.Option(
        None, help="Field holding the problem text. [default: problem, else question]"
    ),
    answer_field: str | None = typer.Option(
        None, help="Field holding the reference answer ('#### N' is reduced to N). [default: answer, else solution]"
    ),
    id_field: str | None = typer.Option(
        None, help="Field holding the problem id. [default: id, else unique_id, else the line index]"
    ),
    hf_config: str | None = typer.Option(
        None, help="Configuration name of a Hugging Face dataset (e.g. 'main' for openai/gsm8k)."
    ),
    model: PolicyModel = None,
    engine_set: EngineSets = None,
    endpoint: Endpoints = None,
    backend: Backend = BackendName.vllm,
    fake_delay: float = typer.Option(
        0.0, min=0.0, help="With --backend fake: seconds each policy request takes (a slow engine)."
    ),
    max_concurrent: int | None = typer.Option(
        None, min=1, help="Problems searched at once. [default: 8, or the recipe's]"
    ),
    seed: int | None = typer.Option(None, min=0, help="Sampling seed. [default: 0]"),
    selection: Selection | None = typer.Option(
        None, help="Final answer selection. [default: weighted_majority]"
    ),
    aggregation: Aggregation | None = typer.Option(
        None, help="Step-score aggregation for weighted voting and highest_score. [default: last]"
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or progress messages; only the summary."),
    ray: str | None = typer.Option(
        None,
        "--ray",
        metavar="local|auto|ADDRESS",
        help="Search on a Ray cluster (needs ets-async[ray]): 'local' starts one of this machine, 'auto' or "
        "HOST:PORT or ray://HOST:PORT joins one. Each actor starts its own backends; this process writes the "
        "run file. See docs/USAGE.md.",
    ),
    actors: int = typer.Option(2, min=1, help="With --ray: how many actors (each with its own engine)."),
    actor_gpus: float = typer.Option(0.0, min=0.0, help="With --ray: GPUs per actor (1: an engine per GPU)."),
) -> None:
    """Search every problem of a dataset and append one JSON line per problem to a run file.

    Re-running the same command resumes: problems already in the run file are skipped, so a run
    that was interrupted (even killed) ends with exactly one line per problem. Failed problems are
    recorded with their error. Exit codes: 2 for usage and configuration errors, 1 if the engine died
    (the problems it failed are not recorded: re-run to resume), 130 on Ctrl-C.
    """
    from .results import ResultWriter, read_results

    try:
        part = Shard.parse(shard) if shard is not None else None
    except ConfigError as exc:
        raise typer.BadParameter(str(exc), param_hint="--shard") from None
    search_config, source = build_search_config(
        config,
        set_ or (),
        method=method,
        width=width,
        seed=seed,
        max_concurrent_problems=max_concurrent,
        answer_selection=selection,
        score_aggregation=aggregation,
    )
    engine_config = _engine_config_for(backend, model, engine_set, endpoint)
    problems, issues, stem = _load_dataset(
        dataset,
        limit=limit,
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        hf_config=hf_config,
    )
    _report_issues(issues)
    if not problems:
        raise _usage_error(f"{dataset}: no usable problems ({len(issues)} skipped)")
    in_dataset = len(problems)
    if part is not None:
        problems = [p for p in problems if part.holds(p["id"])]
        if not problems:
            typer.echo(f"shard {part} holds none of the {in_dataset} problems of {dataset}; nothing to do", err=True)
            return
    out = out or _default_out(stem, search_config, part)
    backends = _backend_plan(backend, engine_config, fake_delay)
    header = {
        "dataset": dataset,
        **({"shard": str(part)} if part is not None else {}),  # no key when unsharded: older files resume as is
        "backend": backend.value,
        "model": engine_config.model if engine_config else None,
        "config": search_config.model_dump(mode="json"),
    }
    try:
        writer = ResultWriter(out, run_header=header)
    except RuntimeError as exc:  # another run holds the file
        raise _usage_error(str(exc)) from None
    with writer:
        if changed := writer.settings_changed(header):
            raise _usage_error(
                f"{out} was written with other settings ({', '.join(changed)}); "
                "use another --out, or the same settings and --shard to resume it"
            )
        done = writer.done_ids()
        todo = [p for p in problems if p["id"] not in done]
        if not quiet:
            typer.echo(f"config ({source}): {_describe_config(search_config)}", err=True)
            resumed = ""
            if not todo:
                resumed = "; all already done"
            elif len(todo) < len(problems):
                resumed = f"; {len(problems) - len(todo)} already done, resuming"
            share = f" (shard {part} of {in_dataset})" if part is not None else ""
            typer.echo(f"{len(problems)} problems{share} from {dataset} -> {out}{resumed}", err=True)
            if todo and ray is not None:
                typer.echo(f"starting {actors} Ray actors (their output goes to Ray's session logs) ...", err=True)
            elif todo and backend == BackendName.vllm:
                typer.echo(f"starting the engine{_log_note(backends.log)} ...", err=True)
        if todo:
            plan = RunPlan(todo, search_config, backends)
            solve = functools.partial(execute, plan)
            if ray is not None:
                from .ray_batch import RayWorkers, record_on_ray

                try:  # each actor starts the backends in its own process; their output stays in Ray's logs
                    workers = RayWorkers(
                        search_config, replace(backends, log=None).start,
                        actors=actors, address=ray, actor_options={"num_gpus": actor_gpus},
                    )
                except ConfigError as exc:
                    raise _usage_error(str(exc)) from None
                solve = functools.partial(record_on_ray, workers, plan)
            _run_with_progress(
                solve,
                writer.write,
                total=len(problems),
                done=len(problems) - len(todo),
                quiet=quiet,
            )
    records = read_results(out)
    summary = report.run_summary(records)
    summary_path = out.with_name(out.name + ".summary.json")
    summary_path.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    typer.echo(report.format_summary(summary, f"{out} ({summary['problems']} problems)"))
    if not quiet:
        typer.echo(f"summary written to {summary_path}", err=True)


def _run_with_progress(
    solve: Callable[[Callable[[RunRecord], None], Callable[[], None]], Coroutine[Any, Any, None]],
    on_record: Callable[[RunRecord], Any],
    *,
    total: int,
    done: int = 0,
    quiet: bool = False,
) -> None:
    """Run ``solve(on_record, on_ready)`` (``app.execute`` or ``ray_batch.record_on_ray`` with their
    plan bound) with a live bar; Ctrl-C stops cleanly (what was written stays) and exits 130; an
    engine that dies stops the run the same way with one line saying why, and exit code 1, as does one
    that cannot start; a bad engine config exits 2."""
    progress = RunProgress(total, done=done, quiet=quiet)

    def record_done(record: RunRecord) -> None:
        on_record(record)
        progress.update(record)

    redirect = contextlib.nullcontext()
    if not quiet:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()  # log lines go above the bar
    try:
        with progress, redirect:
            asyncio.run(solve(record_done, progress.start))
    except ConfigError as exc:
        raise _usage_error(str(exc)) from None
    except EngineStartError as exc:
        typer.echo(f"Error: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(
            f"\ninterrupted after {progress.summary.problems} problems; run the same command again to resume",
            err=True,
        )
        raise typer.Exit(130) from None
    except EngineDiedError as exc:
        typer.echo(
            f"\nError: {exc}; {done + progress.summary.problems} of {total} problems done; "
            "run the same command again to resume",
            err=True,
        )
        raise typer.Exit(1) from None
    finally:
        gc.collect()  # release the engine now, while the interpreter is whole, not at exit


# --------------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------------


def _read_run_files(files: Sequence[Path], *, one_run_per_row: bool = True) -> list[RunRecord]:
    """The records of ``files``: ``read_runs`` (a problem twice or two searches in one summary row
    are usage errors) for tables; ``read_results`` for commands that pool records of any runs."""
    from .results import read_results, read_runs

    for path in files:
        if not path.is_file():
            raise typer.BadParameter(f"{path}: no such file", param_hint="FILES")
    try:
        records = read_runs(files) if one_run_per_row else read_results(files)
    except RunFileError as exc:
        raise _usage_error(str(exc)) from None
    if not records:
        raise _usage_error(f"no problem records in {', '.join(map(str, files))}")
    return records


@app.command("eval")
def eval_(
    files: list[Path] = typer.Argument(
        ..., help="Run files written by 'ets-async run': runs of any methods and widths, and the shards of a run."
    ),
    regrade_: bool = typer.Option(
        False,
        "--regrade",
        help="Re-select each answer from the stored candidates with --selection/--aggregation and grade it again.",
    ),
    selection: Selection = typer.Option(  # type: ignore[valid-type]
        "weighted_majority", help="Answer selection for --regrade."
    ),
    aggregation: Aggregation = typer.Option(  # type: ignore[valid-type]
        "last", help="Step-score aggregation for --regrade (weighted voting and highest_score)."
    ),
    grade_timeout: float = typer.Option(5.0, min=0.1, help="Seconds math-verify may take per comparison."),
    as_json: bool = typer.Option(False, "--json", help="Print the summaries as JSON instead of a table."),
) -> None:
    """Summarize run files per (method, width): accuracy, KV size, tokens, throughput, prefix-cache hits.

    Accuracy counts errors and missing answers as wrong. KV sizes are tokens held by the search
    tree (SPEC §8.1): the mean over problems of each problem's mean over selection steps,
    and the largest peak.

    The files of one method and width make one row: the shards of a run ('run --shard') merge into
    it; a warning names missing shards. A problem twice in a row, or a row whose files were searched
    with different settings (lambda_s, seed, ...), is refused: eval such runs separately.
    """
    records = _read_run_files(files)
    if regrade_:
        records = report.regrade(records, _plain(selection), _plain(aggregation), timeout_s=grade_timeout)
    rows = report.summary_rows(records)
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "detail"} for r in rows], indent=2))
        return
    if regrade_:
        typer.echo(f"regraded with selection={_plain(selection)} aggregation={_plain(aggregation)}")
    typer.echo(report.format_table(rows))


@app.command()
def plot(
    files: list[Path] = typer.Argument(..., help="Run files written by 'ets-async run' (any methods and widths)."),
    output: Path = typer.Option(Path("plot.png"), "--output", "-o", help="PNG file to write."),
    title: str | None = typer.Option(None, help="Figure title."),
) -> None:
    """Plot accuracy against mean KV size and against generated tokens, and throughput, per method and width."""
    from .plots import plot_summaries

    rows = report.summary_rows(_read_run_files(files))
    path = plot_summaries(rows, output, title=title)
    typer.echo(f"wrote {path}")


@app.command()
def calibrate(
    files: list[Path] = typer.Argument(..., help="Run files of real searches ('ets-async run'; any method)."),
    embedder: list[str] | None = typer.Option(
        None, "--embedder", "-e", help="Embedder to calibrate: a registry name or a sentence-transformers folder. "
        "Repeatable. [default: all-minilm-l6-v2]"
    ),
    cuts: str = typer.Option("0.01:0.61:0.01", metavar="START:STOP:STEP", help="Cosine-distance cuts to try."),
) -> None:
    """Choose ETS's clustering cut (cluster_threshold) for an embedder from the trees of real searches.

    Groups the newest steps that each selection clustered, labels two steps equivalent when they
    compute the same numbers (final steps: the same answer), and prints, per cut, how well ETS's
    clusters agree with those labels (pairwise precision, recall, F1) and the cut with the best F1.
    """
    from dataclasses import asdict

    import numpy as np

    from .backends.embedder import SentenceTransformerEmbedder
    from .calibrate import best_cut, selection_groups, sweep_cuts
    from .models import DEFAULT_EMBEDDER, resolve_model

    try:
        start, stop, step = (float(x) for x in cuts.split(":"))
    except ValueError:
        raise typer.BadParameter(f"{cuts!r}: expected START:STOP:STEP", param_hint="--cuts") from None
    grid = [round(float(c), 6) for c in np.arange(start, stop, step)]
    groups = list(selection_groups(_read_run_files(files, one_run_per_row=False)))
    if not groups:
        raise _usage_error("no selection steps with step texts in these run files (record them with this version)")
    typer.echo(f"{len(groups)} selection steps, {sum(map(len, groups))} steps")
    for name in embedder or [DEFAULT_EMBEDDER]:
        model = SentenceTransformerEmbedder(resolve_model(name, DEFAULT_EMBEDDER))
        scores = sweep_cuts(groups, model.encode, grid)
        model.close()
        chosen = best_cut(scores)
        shown = [
            asdict(s) for s in scores if abs(s.cut - chosen.cut) <= 5 * step + 1e-9 or s.cut in (grid[0], grid[-1])
        ]
        typer.echo(f"\n{name}")
        typer.echo(report.table(shown, [
            ("cut", lambda s: f"{s['cut']:g}"),
            ("precision", lambda s: f"{s['precision']:.3f}"),
            ("recall", lambda s: f"{s['recall']:.3f}"),
            ("F1", lambda s: f"{s['f1']:.3f}"),
            ("clusters/step", lambda s: f"{s['clusters_per_step']:.2f}"),
        ]))  # fmt: skip
        typer.echo(
            f"best cut for {name}: {chosen.cut:g} (precision {chosen.precision:.3f}, recall {chosen.recall:.3f}, "
            f"F1 {chosen.f1:.3f}); use --set cluster_threshold={chosen.cut:g}"
        )


@app.command()
def recipes() -> None:
    """List the shipped recipes (the paper's settings per method and width, adaptive majority vote) for --config."""
    names = recipe_names()
    for name in names:
        _, values = read_recipe(name)
        typer.echo(f"{name:<{max(map(len, names))}} " + " ".join(f"{key}={value}" for key, value in values.items()))


@app.command()
def demo(
    problems: int = typer.Option(8, "--problems", "-n", min=1, max=8, help="How many bundled problems to solve (1-8)."),
    method: MethodName | None = typer.Option(None, "--method", "-m", help="Search method. [default: ets]"),
    width: int | None = typer.Option(None, "--width", "-w", min=1, help="Search width. [default: 4]"),
    set_: SearchSets = None,
    model: PolicyModel = None,
    backend: Backend = BackendName.vllm,
    fake_delay: float = typer.Option(0.0, min=0.0, help="With --backend fake: seconds each policy request takes."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Solve the bundled grade-school problems with ETS on the embedded default model and show the results.

    Uses a small search (width 4, 128-token steps, 384 tokens per trajectory, depth 8) so that it
    finishes in a few minutes on a CPU. Nothing is written to disk but the engine's log.
    """
    config, _ = build_search_config(None, set_ or (), base=DEMO_SETTINGS, method=method, width=width)
    engine_config = _engine_config(model, (), base=DEMO_ENGINE) if backend == BackendName.vllm else None
    backends = _backend_plan(backend, engine_config, fake_delay)
    items = _demo_problems(problems)
    if backend == BackendName.vllm:
        assert engine_config is not None
        model_name = engine_config.model or f"{default_policy()} (default)"
        typer.echo(f"demo: {len(items)} problems, policy {model_name}, PRM {engine_config.prm}")
    else:
        typer.echo(f"demo: {len(items)} problems, scripted backends (answers are noise)")
    typer.echo(f"config: {_describe_config(config)}")
    if backend == BackendName.vllm:
        typer.echo(f"starting the engine, about a minute on a CPU{_log_note(backends.log)} ...")
    records: list[RunRecord] = []
    _run_with_progress(
        functools.partial(execute, RunPlan(items, config, backends)), records.append, total=len(items), quiet=quiet
    )
    order = {item["id"]: i for i, item in enumerate(items)}
    records.sort(key=lambda r: order.get(r.id, len(order)))
    typer.echo("")
    typer.echo(report.table(records, report.PROBLEM_COLUMNS, left=2))
    typer.echo("")
    typer.echo(report.format_summary(report.run_summary(records), f"the demo ({len(records)} problems)"))


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on."),
    config: str | None = typer.Option(
        None, "--config", "-c", metavar="RECIPE|FILE", help="A shipped recipe or a YAML file of SearchConfig fields."
    ),
    set_: SearchSets = None,
    model: PolicyModel = None,
    engine_set: EngineSets = None,
    endpoint: Endpoints = None,
    deadline: float = typer.Option(120.0, min=0.001, help="Seconds a request may take when it names no deadline_s."),
    max_deadline: float = typer.Option(600.0, min=0.001, help="The largest deadline_s a request may ask for."),
    api_key: str | None = typer.Option(
        None, envvar="ETS_ASYNC_API_KEY", help="Require 'Authorization: Bearer KEY' on every route but /health."
    ),
    served_model_name: str | None = typer.Option(
        None, help="The model name /v1/models lists. [default: --model, or the default policy's name]"
    ),
    max_searches: int = typer.Option(64, min=1, help="Searches in flight at once; one more gets 429."),
    max_width: int = typer.Option(64, min=1, help="The widest search a request may ask for."),
    max_body_bytes: int = typer.Option(1 << 20, min=1024, help="The largest request body; a larger one gets 413."),
    backend: Backend = BackendName.vllm,
) -> None:
    """Serve searches over HTTP: OpenAI's API (POST /v1/chat/completions, /v1/completions, GET
    /v1/models), POST /solve with a problem as JSON, GET /health.

    Each request searches its problem with the server's config, or the method and settings it names
    (a model suffix such as NAME:ets-16, or extra_body={"search": {...}}). A per-request deadline
    gives the best answer so far; a client that disconnects cancels its search and aborts its engine
    requests. Ctrl-C stops it.
    """
    from .service import ServiceConfig
    from .service import serve as run_service

    search_config, _ = build_search_config(config, set_ or ())
    engine_config = _engine_config_for(backend, model, engine_set, endpoint)
    name = served_model_name or (engine_config.model if engine_config else "fake") or default_policy()
    service_config = ServiceConfig(
        search_config,
        default_deadline_s=deadline,
        max_deadline_s=max_deadline,
        model_name=name,
        api_key=api_key,
        max_body_bytes=max_body_bytes,
        max_concurrent_searches=max_searches,
        max_width=max_width,
    )
    backends = _backend_plan(backend, engine_config)
    if backend == BackendName.vllm:
        typer.echo(f"starting the engine{_log_note(backends.log)} ...", err=True)
    try:
        asyncio.run(run_service(lambda: _start(backends), service_config, host, port))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@app.command("train-verifier")
def train_verifier_(
    rollouts: list[Path] = typer.Argument(
        ...,
        help="Run files of the policy's own searches on TRAINING problems with reference answers "
        "('ets-async run --dataset train.jsonl ...'); never the problems you evaluate on.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Head file to write (safetensors, a few KB to MB)."),
    model: str | None = typer.Option(
        None, help="The policy that generated the rollouts (its hidden states are the features). " + _MODEL_HELP
    ),
    layers: list[int] | None = typer.Option(
        None, "--layer", help="Decoder layer to read (repeatable). [default: the middle and the last]"
    ),
    kinds: list[str] | None = typer.Option(
        None, "--kind", help="Head kind to try: linear or mlp (repeatable). [default: both]"
    ),
    folds: int = typer.Option(
        5, min=2, help="Cross-validation folds over problems (choose the variant and the steps)."
    ),
    features_dir: Path | None = typer.Option(
        None,
        help="Cache of the extracted hidden states (resumable). "
        "[default: <cache>/verifier-features/<policy>-<hash of its path>]",
    ),
    steps: int = typer.Option(400, min=1, help="Most optimiser steps per variant (cross-validation picks how many)."),
    time_limit: float | None = typer.Option(
        None, min=1.0, help="Stop extracting new features after this many seconds and train on what is there."
    ),
    mixed_only: bool = typer.Option(
        False,
        "--mixed-only",
        help="Train only on problems with both right and wrong trajectories (what within-problem ranking "
        "learns from; skips extracting the rest).",
    ),
) -> None:
    """Train a verifier on the policy's own rollouts and write its head file.

    Labels: a finished trajectory is right or wrong by the grader; a partial one is worth the share of
    right trajectories below it. Features: the policy's hidden states at the end of each step. Every
    (layer, kind) variant is trained with a pointwise and a within-problem ranking loss and judged by
    cross-validation over problems; the one with the best within-problem AUROC is trained on every
    problem and written. Serve it with --engine-set prm=verifier --engine-set prm_model=OUT.
    """
    from .models import resolve_model
    from .verifier.features import default_features_dir
    from .verifier.head import TrainSettings
    from .verifier.train import train_verifier

    bad = [k for k in kinds or () if k not in ("linear", "mlp")]
    if bad:
        raise typer.BadParameter(f"unknown head kind {bad[0]!r}; kinds: linear, mlp", param_hint="--kind")
    policy_dir = resolve_model(model)
    cache = features_dir or default_features_dir(policy_dir)
    try:
        train_verifier(
            rollouts,
            policy_dir,
            out,
            features_dir=cache,
            layers=layers or None,
            kinds=tuple(kinds or ("linear", "mlp")),  # type: ignore[arg-type]
            settings=TrainSettings(steps=steps, folds=folds, eval_every=max(1, min(20, steps // 10))),
            time_limit_s=time_limit,
            mixed_only=mixed_only,
            echo=typer.echo,
        )
    except (ValueError, RunFileError, OSError) as exc:  # bad rollouts, a missing file, a bad layer
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


models_app = typer.Typer(
    name="models",
    help="The offline model registry (python/ets_async/data/models.toml): list it, prepare models.",
    no_args_is_help=True,
)
app.add_typer(models_app)
_MODEL_ROLES = {
    models.DEFAULT_POLICY: "default policy",
    models.TEST_POLICY: "tests",
    models.DEFAULT_EMBEDDER: "embedder",
}


@models_app.command("list")
def models_list() -> None:
    """List the registered models: each one's kind, what it is, whether it is prepared here and the
    size of its folder."""
    for model in models.MODELS.values():
        role = f" ({_MODEL_ROLES[model.name]})" if model.name in _MODEL_ROLES else ""
        size = models.prepared_size(model.name)
        state = "not prepared" if size is None else f"prepared, {report.fmt(size, 'compact')}B"
        typer.echo(f"{model.name}{role}: {model.kind}, {model.title}, {model.license}; {state}")
        typer.echo(f"    {models.model_dir(model.name)}\n    from {model.provenance}")


@models_app.command("prepare")
def models_prepare(
    names: list[str] | None = typer.Argument(
        None, metavar="NAME", help=f"Registered models. [default: {', '.join(models.SETUP_MODELS)}]", show_default=False
    ),
) -> None:
    """Prepare registered models: download, verify and convert them into the cache (the first time:
    a minute or two each; then nothing to do)."""
    unknown = [name for name in names or () if name not in models.MODELS]
    if unknown:
        raise _usage_error(f"unknown model {unknown[0]!r}; registered: {', '.join(models.MODELS)}")
    for name in names or models.SETUP_MODELS:
        started = time.perf_counter()
        try:
            path = models.prepare_model(name)
        except models.ModelUnavailableError as exc:
            typer.echo(f"Error: {exc}", err=True)
            raise typer.Exit(1) from None
        typer.echo(f"{name}: {path}  ({time.perf_counter() - started:.1f} s)")


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log progress details (INFO).")) -> None:
    """ETS tree search for LLM math reasoning."""
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("ets_async").setLevel(level)


def main() -> None:
    """The ``ets-async`` console script and ``python -m ets_async``."""
    app(prog_name="ets-async")
