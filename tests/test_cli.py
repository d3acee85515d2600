"""The command line on the scripted backend (--backend fake): datasets, bad lines, resume (also after
SIGKILL, in a real subprocess), run files, summaries, eval, plot, recipes, demo and usage errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer.main
from ets_async import SearchConfig
from ets_async.cli import app, build_search_config
from ets_async.config import recipe_names
from ets_async.datasets import Shard
from ets_async.records import RunRecord
from ets_async.report import Summary, regrade, wall_time
from ets_async.results import HEADER_KEY
from ets_async.search.ets import Ets
from typer.testing import CliRunner

FAST = [
    "--backend",
    "fake",
    "--method",
    "rebase",
    "--width",
    "4",
    "--set",
    "max_step_tokens=32",
    "--set",
    "max_depth=6",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200"})


def gsm8k_file(path: Path, n: int, *, start: int = 0) -> Path:
    """n GSM8K-style lines; the fake policy answers 40, 41 or 42, so references cycle through those."""
    with path.open("w") as handle:
        for i in range(start, start + n):
            row = {
                "id": f"q{i}",
                "question": f"What is {i} + {40 - i + i % 3}?",
                "answer": f"steps...\n#### {40 + i % 3}",
            }
            handle.write(json.dumps(row) + "\n")
    return path


def run_lines(path: Path) -> tuple[list[dict], list[dict]]:
    """(headers, problem records) of a run file; fails on any line that is not complete, valid JSON."""
    data = path.read_bytes()
    assert data.endswith(b"\n"), "torn last line"
    headers, records = [], []
    for line in data.decode().splitlines():
        value = json.loads(line)
        (headers if HEADER_KEY in value else records).append(value)
    return headers, records


def kill_run_midway(command: list[str], out: Path, problems: int = 3) -> None:
    """Start ``command`` (an ``ets-async run``) and SIGKILL it once ``out`` holds the header and
    ``problems`` problem lines; fails if the run ends first."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if out.exists() and out.read_bytes().count(b"\n") >= problems + 1:
                break
            time.sleep(0.02)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        proc.stderr.close()


def invoke(runner: CliRunner, *args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------------------------------------------------------------
# run: datasets, bad lines, output
# --------------------------------------------------------------------------------------------------


def test_run_reports_bad_lines_and_processes_the_rest(runner, tmp_path):
    dataset = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"question": "What is 1 + 40?", "answer": "so\n#### 41"}),  # line 1
        json.dumps({"question": "What is 2 + 40?", "answer": "#### 42"}),  # line 2
        '{"question": "broken", "answer": ',  # line 3: malformed JSON
        json.dumps({"problem": "What is 40?", "answer": "40"}),  # line 4: MATH fields
        json.dumps({"answer": "#### 3"}),  # line 5: no problem text
        "",  # line 6: blank, ignored
        json.dumps({"question": "   ", "answer": "#### 1"}),  # line 7: empty problem
        json.dumps({"question": "What is 0 + 41?", "answer": "#### 41"}),  # line 8
    ]
    dataset.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    result = invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    for number in (3, 5, 7):
        assert f"line {number}:" in result.output
    assert "line 6" not in result.output
    assert "not valid JSON" in result.output and "empty problem text" in result.output

    headers, records = run_lines(out)
    assert len(headers) == 1 and headers[0][HEADER_KEY]["config"]["method"] == "rebase"
    # Ids are the 0-based line index when a row has none, so they stay stable across runs.
    assert sorted(r["id"] for r in records) == ["0", "1", "3", "7"]
    by_id = {r["id"]: r for r in records}
    assert by_id["0"]["reference"] == "41" and by_id["3"]["reference"] == "40"
    for record in records:
        assert record["error"] is None
        assert record["config"]["width"] == 4 and record["config"]["max_step_tokens"] == 32
        assert record["candidates"] and all("step_scores" in c for c in record["candidates"])
        assert record["tree"]["parents"][0] == -1
        assert record["metrics"]["generated_tokens"] > 0
        assert isinstance(record["correct"], bool)
        assert record["run"]["elapsed_s"] >= 0

    summary = json.loads(out.with_name("out.jsonl.summary.json").read_text())
    assert summary["problems"] == 4
    for key in ("accuracy", "kv_tokens_mean", "kv_tokens_peak", "generated_tokens_mean", "problems_per_s",
                "prefix_cache_hit_rate"):
        assert summary[key] is not None, key
    assert "summary of" in result.output and "accuracy" in result.output and "prefix-cache hits" in result.output


def test_field_mapping_and_default_output_path(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = tmp_path / "custom.jsonl"
    rows = [{"key": f"k{i}", "q": f"What is {i}?", "gold": "41"} for i in range(3)]
    dataset.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["run", "--dataset", dataset, "--question-field", "q", "--answer-field", "gold", "--id-field", "key"]
    result = invoke(runner, *args, *FAST, "--quiet")
    assert result.exit_code == 0, result.output
    _, records = run_lines(tmp_path / "runs" / "custom-rebase-4.jsonl")
    assert sorted(r["id"] for r in records) == ["k0", "k1", "k2"]
    assert {r["reference"] for r in records} == {"41"}

    # Without the mapping every row lacks a problem field: nothing usable is a usage error.
    result = invoke(runner, "run", "--dataset", dataset, *FAST)
    assert result.exit_code == 2
    assert "line 1: missing problem text" in result.output and "no usable problems" in result.output


def test_failed_problems_do_not_fail_the_run(runner, tmp_path, monkeypatch):
    from ets_async import testing

    def failing_backends(*, delay_s=0.0, answer_depth=3):
        return testing.Backends(testing.FakePolicy(fail_on="boom"), testing.FakePRM(), testing.FakeEmbedder())

    monkeypatch.setattr(testing, "fake_backends", failing_backends)
    dataset = tmp_path / "d.jsonl"
    dataset.write_text(
        json.dumps({"question": "What is boom?", "answer": "#### 1"}) + "\n"
        + json.dumps({"question": "What is 41?", "answer": "#### 41"}) + "\n"
    )
    out = tmp_path / "out.jsonl"
    result = invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST, "--quiet")
    assert result.exit_code == 0, result.output
    _, records = run_lines(out)
    by_id = {r["id"]: r for r in records}
    assert by_id["0"]["error"] and by_id["0"]["correct"] is None and by_id["1"]["error"] is None
    assert json.loads(out.with_name("out.jsonl.summary.json").read_text())["errors"] == 1


def test_hf_dataset_needs_the_datasets_package(runner, tmp_path):
    try:
        import datasets  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("datasets is installed; this test checks the message when it is not")
    result = invoke(runner, "run", "--dataset", "hf:openai/gsm8k:test", "--out", tmp_path / "o.jsonl", *FAST)
    assert result.exit_code == 2
    assert "datasets" in result.output


# --------------------------------------------------------------------------------------------------
# Resume
# --------------------------------------------------------------------------------------------------


def test_resume_skips_problems_already_written(runner, tmp_path):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 7)
    out = tmp_path / "out.jsonl"
    assert invoke(runner, "run", "--dataset", dataset, "--out", out, "--limit", "3", *FAST).exit_code == 0
    first = out.read_bytes()
    _, records = run_lines(out)
    assert sorted(r["id"] for r in records) == ["q0", "q1", "q2"]

    result = invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST)
    assert result.exit_code == 0, result.output
    assert "3 already done, resuming" in result.output
    assert out.read_bytes().startswith(first)  # earlier lines untouched
    headers, records = run_lines(out)
    assert len(headers) == 1
    assert sorted(r["id"] for r in records) == [f"q{i}" for i in range(7)]
    assert json.loads(out.with_name("out.jsonl.summary.json").read_text())["problems"] == 7

    # Nothing left to do: the file is not touched, the summary is still printed.
    before = out.read_bytes()
    result = invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST)
    assert result.exit_code == 0 and out.read_bytes() == before
    assert "summary of" in result.output


def test_resume_refuses_other_search_settings(runner, tmp_path):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 2)
    out = tmp_path / "out.jsonl"
    assert invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST).exit_code == 0
    result = invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST, "--width", "8")
    assert result.exit_code == 2
    assert "width: 4 -> 8" in result.output
    # How fast it runs may change.
    assert invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST, "--max-concurrent", "1").exit_code == 0


def test_resume_after_sigkill_leaves_exactly_one_line_per_problem(tmp_path):
    n = 24
    dataset = gsm8k_file(tmp_path / "d.jsonl", n)
    out = tmp_path / "out.jsonl"
    command = [sys.executable, "-m", "ets_async", "run", "--dataset", str(dataset), "--out", str(out), *FAST]
    kill_run_midway([*command, "--quiet", "--fake-delay", "0.15", "--max-concurrent", "2"], out)
    _, written = run_lines(out)
    assert 3 <= len(written) < n
    # Simulate the kill landing inside a write: a torn, newline-less last line.
    with out.open("ab") as handle:
        handle.write(b'{"id": "q99", "answer": "4')

    resumed = subprocess.run([*command, "--quiet"], capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr.decode()
    assert b"torn" in resumed.stderr
    headers, records = run_lines(out)
    assert len(headers) == 1
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == n
    assert set(ids) == {f"q{i}" for i in range(n)}
    assert [r["id"] for r in records[: len(written)]] == [r["id"] for r in written]
    assert len({r["run"]["session"] for r in records}) == 2
    summary = json.loads(out.with_name("out.jsonl.summary.json").read_text())
    assert summary["problems"] == n and summary["problems_per_s"] > 0


# --------------------------------------------------------------------------------------------------
# Sharded batch runs: run --shard I/N on N coordinators, then eval the N run files
# --------------------------------------------------------------------------------------------------

TIMING = ("wall_time_s", "problems_per_s", "generated_tokens_per_s")


def eval_json(runner: CliRunner, *files: Path) -> list[dict]:
    result = invoke(runner, "eval", "--json", *files)
    assert result.exit_code == 0, result.output
    return [{k: v for k, v in row.items() if k not in TIMING} for row in json.loads(result.output)]


def test_shards_split_the_dataset_and_eval_merges_them(runner, tmp_path):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 16)
    full = tmp_path / "full.jsonl"
    assert invoke(runner, "run", "--dataset", dataset, "--out", full, *FAST, "--quiet").exit_code == 0
    shards = []
    for index in range(3):
        out = tmp_path / f"run-{index}.jsonl"
        result = invoke(runner, "run", "--dataset", dataset, "--shard", f"{index}/3", "--out", out, *FAST)
        assert result.exit_code == 0, result.output
        headers, records = run_lines(out)
        assert headers[0][HEADER_KEY]["shard"] == f"{index}/3"
        assert f"{len(records)} problems (shard {index}/3 of 16)" in result.output
        shards.append({r["id"] for r in records})
    assert all(shards) and sum(map(len, shards)) == 16 and set().union(*shards) == {f"q{i}" for i in range(16)}

    # The same problems whatever the line order.
    reordered = tmp_path / "reordered.jsonl"
    reordered.write_text("".join(reversed(dataset.read_text().splitlines(keepends=True))))
    out = tmp_path / "reordered-1.jsonl"
    assert invoke(runner, "run", "--dataset", reordered, "--shard", "1/3", "--out", out, *FAST, "-q").exit_code == 0
    assert {r["id"] for r in run_lines(out)[1]} == shards[1]

    # Every figure but the timing is that of the single run (problems/s adds up the shards' search times),
    # to rounding: the means add the same records in another order.
    (merged,) = eval_json(runner, *(tmp_path / f"run-{index}.jsonl" for index in range(3)))
    (single,) = eval_json(runner, full)
    assert merged == pytest.approx(single)


def test_default_output_names_the_shard_and_an_empty_shard_has_nothing_to_do(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = gsm8k_file(tmp_path / "d.jsonl", 4)
    assert invoke(runner, "run", "--dataset", dataset, "--shard", "0/3", *FAST, "--quiet").exit_code == 0
    assert (tmp_path / "runs" / "d-rebase-4-shard0of3.jsonl").is_file()
    empty = next(i for i in range(50) if not any(Shard(i, 50).holds(f"q{n}") for n in range(4)))
    result = invoke(runner, "run", "--dataset", dataset, "--shard", f"{empty}/50", *FAST)
    assert result.exit_code == 0
    assert f"shard {empty}/50 holds none of the 4 problems of {dataset}; nothing to do" in result.output
    assert not (tmp_path / "runs" / f"d-rebase-4-shard{empty}of50.jsonl").exists()


@pytest.mark.parametrize(
    ("shard", "message"),
    [("3/3", "I must be in 0..2 (shards are numbered from 0"), ("1/0", "N must be at least 1"), ("x", "expected I/N")],
)
def test_bad_shard_is_a_usage_error(runner, tmp_path, shard, message):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 2)
    result = invoke(runner, "run", "--dataset", dataset, "--shard", shard, "--out", tmp_path / "o.jsonl", *FAST)
    assert result.exit_code == 2
    assert "--shard" in result.output and message in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_resume_keeps_to_its_shard(runner, tmp_path):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 12)
    out = tmp_path / "run-0.jsonl"
    shard = ["--shard", "0/2", "--out", out, *FAST]
    assert invoke(runner, "run", "--dataset", dataset, "--limit", "6", *shard).exit_code == 0  # an interrupted run
    first = {r["id"] for r in run_lines(out)[1]}
    result = invoke(runner, "run", "--dataset", dataset, *shard)
    assert result.exit_code == 0, result.output
    assert f"{len(first)} already done, resuming" in result.output
    whole = {r["id"] for r in run_lines(out)[1]}
    assert first < whole and whole == {f"q{i}" for i in range(12) if Shard(0, 2).holds(f"q{i}")}

    for other, change in (["--shard", "1/2"], "shard: '0/2' -> '1/2'"), ([], "shard: '0/2' -> None"):
        result = invoke(runner, "run", "--dataset", dataset, "--out", out, *FAST, *other)
        assert result.exit_code == 2
        assert f"was written with other settings ({change})" in result.output


def test_eval_refuses_a_problem_twice_and_mixed_settings(runner, tmp_path):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 4)
    full, shard, seeded = tmp_path / "full.jsonl", tmp_path / "run-1.jsonl", tmp_path / "seed1.jsonl"
    assert invoke(runner, "run", "--dataset", dataset, "--out", full, *FAST, "--quiet").exit_code == 0
    assert invoke(runner, "run", "--dataset", dataset, "--shard", "1/2", "--out", shard, *FAST, "-q").exit_code == 0
    result = invoke(runner, "eval", full, shard)
    assert result.exit_code == 2
    problem_id = run_lines(shard)[1][0]["id"]
    assert f"problem {problem_id!r} is in {full}:" in result.output
    assert f"and in {shard}:2 (both rebase, width 4)" in result.output

    assert invoke(runner, "run", "--dataset", dataset, "--out", seeded, *FAST, "--seed", "1", "-q").exit_code == 0
    result = invoke(runner, "eval", full, seeded)
    assert result.exit_code == 2 and "different settings (seed: 0 -> 1)" in result.output
    assert invoke(runner, "eval", full, full).exit_code == 0  # one file named twice is read once


# --------------------------------------------------------------------------------------------------
# eval and plot
# --------------------------------------------------------------------------------------------------


@pytest.fixture()
def run_files(runner, tmp_path) -> list[Path]:
    dataset = gsm8k_file(tmp_path / "d.jsonl", 4)
    files = []
    for method, width in (("rebase", 2), ("rebase", 4), ("beam", 4)):
        out = tmp_path / f"{method}-{width}.jsonl"
        args = [*FAST, "--method", method, "--width", str(width), "--quiet"]
        assert invoke(runner, "run", "--dataset", dataset, "--out", out, *args).exit_code == 0
        files.append(out)
    return files


def test_eval_prints_a_table_per_method_and_width(runner, run_files):
    result = invoke(runner, "eval", *run_files)
    assert result.exit_code == 0, result.output
    header, rule, *rows = result.output.strip().splitlines()
    for column in ("method", "accuracy", "KV mean", "KV peak", "gen tokens", "problems/s", "prefix hit", "errors"):
        assert column in header
    assert [row.split()[:2] for row in rows] == [["beam", "4"], ["rebase", "2"], ["rebase", "4"]]

    result = invoke(runner, "eval", "--json", *run_files)
    summaries = json.loads(result.output)
    assert [(s["method"], s["width"]) for s in summaries] == [("beam", 4), ("rebase", 2), ("rebase", 4)]
    for summary in summaries:
        assert summary["problems"] == 4 and 0.0 <= summary["accuracy"] <= 1.0
        assert summary["problems_per_s"] > 0 and summary["kv_tokens_peak"] >= summary["kv_tokens_mean"] > 0


def test_eval_regrades_with_another_selection(runner, run_files):
    result = invoke(runner, "eval", "--regrade", "--selection", "highest_score", "--aggregation", "min", run_files[0])
    assert result.exit_code == 0, result.output
    assert "regraded with selection=highest_score aggregation=min" in result.output
    assert result.output.strip().splitlines()[-1].split()[:3] == ["rebase", "2", "4"]


def test_regrade_recomputes_answer_and_correctness():
    record = {
        "id": "1",
        "reference": "41",
        "error": None,
        "answer": "40",
        "correct": False,
        "candidates": [
            {"answer": "40", "step_scores": [0.9]},
            {"answer": "41", "step_scores": [0.2]},
            {"answer": "41", "step_scores": [0.3]},
        ],
    }
    stored = RunRecord.from_dict(record)
    (weighted,) = regrade([stored], "weighted_majority", "last")
    assert weighted.answer == "40" and weighted.correct is False
    (majority,) = regrade([stored], "majority", "last")
    assert majority.answer == "41" and majority.correct is True
    assert stored.answer == "40"  # the input is not modified


def test_eval_rejects_missing_and_empty_files(runner, tmp_path):
    assert invoke(runner, "eval", tmp_path / "nope.jsonl").exit_code == 2
    empty = tmp_path / "empty.jsonl"
    empty.write_text("not json\n")
    result = invoke(runner, "eval", empty)
    assert result.exit_code == 2 and "no problem records" in result.output


def test_plot_writes_a_png(runner, run_files, tmp_path):
    figure = tmp_path / "figs" / "fig.png"
    result = invoke(runner, "plot", *run_files, "-o", figure, "--title", "fake runs")
    assert result.exit_code == 0, result.output
    data = figure.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000


def test_plot_copes_with_missing_figures(tmp_path):
    from ets_async.plots import plot_summaries

    rows = [
        {"method": "ets", "width": 16, "accuracy": None, "kv_tokens_mean": None, "problems_per_s": None},
        {"method": "rebase", "width": 16, "accuracy": 0.5, "kv_tokens_mean": 100.0, "generated_tokens_mean": 50.0},
    ]
    path = plot_summaries(rows, tmp_path / "p.png")
    assert path.read_bytes().startswith(PNG_SIGNATURE)


# --------------------------------------------------------------------------------------------------
# Configuration: recipes, --set, usage errors
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "lambda_s"), [(16, 1.5), (64, 1.4), (256, 1.45)])
def test_ets_recipes_are_the_papers_settings(width, lambda_s):
    config, source = build_search_config(f"ets_{width}")
    assert source == f"recipe ets_{width}"
    assert (config.method, config.width) == ("ets", width)
    assert config.lambda_s == lambda_s and Ets(config).lambda_s == lambda_s
    assert config.lambda_b == 1.0
    assert config.softmax_temperature == 0.2
    assert config.temperature == 1.0
    assert config.max_step_tokens == 256 and config.max_tokens == 1024
    assert config.max_depth == 25 and config.cluster_threshold == 0.05
    assert (config.answer_selection, config.score_aggregation) == ("weighted_majority", "last")
    assert config.max_concurrent_problems == 8


def test_every_recipe_loads():
    names = recipe_names()
    papers = [
        f"{method}_{width}" for method in ("ets", "rebase", "beam", "dvts", "best_of_n") for width in (16, 64, 256)
    ]
    assert set(papers) <= set(names)
    for name in names:
        config, _ = build_search_config(name)
        assert config.max_tokens == 1024 and config.softmax_temperature == 0.2
        if name in papers:
            assert f"{config.method}_{config.width}" == name
            assert config.temperature == 1.0 and config.stop_when == "budget"
        else:  # adaptive budgets, chosen at the policy's own temperature (bench/bench_adaptive.py)
            assert name == "majority_adaptive_8" and config.temperature is None
            assert (config.method, config.width, config.answer_selection) == ("best_of_n", 8, "majority")
            assert config.stop_when == "supermajority"


def test_config_precedence_and_yaml_files(tmp_path):
    config, _ = build_search_config("ets_64.yaml", ["lambda_s=0.5", "answer_markers=[Answer]"], width=32)
    assert (config.width, config.lambda_s, config.answer_markers) == (32, 0.5, ("Answer",))
    recipe = tmp_path / "mine.yaml"
    recipe.write_text("method: beam\nwidth: 9\nmax_depth: 3\n")
    config, source = build_search_config(str(recipe), seed=7)
    assert source == str(recipe) and (config.method, config.width, config.max_depth, config.seed) == ("beam", 9, 3, 7)
    assert build_search_config(None)[0] == SearchConfig()


def test_a_config_may_name_the_highest_score_selection_by_its_former_name(tmp_path):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("method: best_of_n\nanswer_selection: best_of_n\n")
    with pytest.warns(DeprecationWarning, match="'best_of_n' is now called 'highest_score'"):
        config, _ = build_search_config(str(recipe))
    assert config.answer_selection == "highest_score"
    with pytest.warns(DeprecationWarning):
        assert build_search_config(None, ["answer_selection=best_of_n"])[0].answer_selection == "highest_score"
    result = CliRunner().invoke(app, ["run", "--dataset", "x", "--set", "answer_selection=best"])
    assert result.exit_code == 2 and "unknown answer selection 'best'" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "bogus=1"], "unknown SearchConfig field 'bogus'"),
        (["--set", "no_equals_sign"], "expected KEY=VALUE"),
        (["--set", "width=0"], "width"),
        (["--set", "max_step_tokens=2048"], "exceeds max_tokens"),
        (["--config", "no_such_recipe"], "neither a YAML file nor a shipped recipe"),
        (["--engine-set", "bogus=1"], "unknown EngineConfig field 'bogus'"),
        (["--method", "nope"], "nope"),
    ],
)
def test_usage_errors_exit_2_with_a_clear_message(runner, tmp_path, args, message):
    dataset = gsm8k_file(tmp_path / "d.jsonl", 1)
    backend = [] if "--engine-set" in args else ["--backend", "fake"]
    result = invoke(runner, "run", "--dataset", dataset, "--out", tmp_path / "o.jsonl", *backend, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (tmp_path / "o.jsonl").exists()


def test_missing_dataset_is_a_usage_error(runner, tmp_path):
    result = invoke(runner, "run", "--dataset", tmp_path / "nope.jsonl", "--backend", "fake")
    assert result.exit_code == 2 and "no such file" in result.output


@pytest.mark.parametrize("name", ["run", "eval", "plot", "demo", "recipes"])
def test_help_explains_every_option(runner, name):
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    result = invoke(runner, name, "--help")
    assert result.exit_code == 0
    assert (command.help or "").split("\n")[0][:40] in " ".join(result.output.split())
    for param in command.params:
        if param.param_type_name == "option":
            assert param.help, f"{name} {param.opts} has no help"
            for opt in param.opts:
                assert opt in result.output, f"{opt} missing from '{name} --help'"


def test_top_level_help_lists_commands(runner):
    result = invoke(runner, "--help")
    for name in ("run", "eval", "plot", "demo", "recipes"):
        assert f"  {name}" in result.output


def test_recipes_command_lists_them(runner):
    result = invoke(runner, "recipes")
    assert result.exit_code == 0
    assert "ets_16" in result.output and "lambda_s=1.45" in result.output


# --------------------------------------------------------------------------------------------------
# demo, progress, summaries
# --------------------------------------------------------------------------------------------------


def test_demo_on_the_fake_backend(runner):
    result = invoke(runner, "demo", "--backend", "fake", "--problems", "3", "--quiet")
    assert result.exit_code == 0, result.output
    assert "config: method=ets width=4" in result.output and "max_step_tokens=128" in result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("demo-")]
    assert [row[0] for row in rows] == ["demo-1", "demo-2", "demo-3"]  # one table row per problem, in order
    references = {"demo-1": "8", "demo-2": "24", "demo-3": "13"}
    for row in rows:  # ... id, problem words..., answer, reference, result, tokens, KV mean, time
        assert row[-5] == references[row[0]] and row[-4] in ("right", "wrong")
    assert "summary of the demo (3 problems)" in result.output
    assert "errors / no answer  0 / 0" in result.output


def test_progress_summary_shows_accuracy_hits_kv_and_rate():
    summary = Summary()
    base = {"error": None, "metrics": {"generated_tokens": 100, "prompt_tokens": 200, "prefix_cached_tokens": 150,
                                       "kv_tokens_mean": 40.0, "kv_tokens_peak": 90}}
    summary.add(RunRecord.from_dict({**base, "id": "1", "correct": True}))
    summary.add(RunRecord.from_dict({**base, "id": "2", "correct": False}))
    summary.add(RunRecord.from_dict({"id": "3", "error": "boom", "correct": None, "metrics": {}}))
    postfix = summary.postfix(elapsed_s=2.0)
    assert "acc 1/2" in postfix and "err 1" in postfix and "hit 75%" in postfix and "KV 40 (peak 90)" in postfix
    assert "100 tok/s" in postfix


def test_wall_time_adds_up_sessions():
    records = [
        RunRecord.from_dict({"id": str(i), "run": {"session": session, "elapsed_s": elapsed}})
        for i, (session, elapsed) in enumerate([("a", 1.0), ("a", 3.0), ("b", 2.0)])
    ]
    assert wall_time(records) == 5.0
    assert wall_time([*records, RunRecord.from_dict({"id": "no timing"})]) is None
