"""The run file: durable appends, torn-line recovery, resume after SIGKILL (and what it may not change),
tolerant reading, strict merging for summaries, summaries."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import ets_async.results
import pytest
from ets_async.errors import BackendError, CoreError, EngineDiedError, ProblemError, RequestTimeoutError, RunFileError
from ets_async.records import RECORD_VERSION, RunRecord
from ets_async.report import group_runs, paired_outcomes, summarize
from ets_async.results import HEADER_KEY, ResultWriter, header_differences, read_lines, read_results, read_runs
from ets_async.types import ErrorKind

RESULTS_PY = Path(ets_async.results.__file__).resolve()


def record(problem_id: str, **fields) -> dict:
    return {"id": problem_id, "problem": "p", "answer": "1", "correct": True, "error": None, **fields}


def valid_ids(path: Path) -> list[str]:
    """Ids of the file's lines; fails if any line is not valid JSON or the file has a torn end."""
    data = path.read_bytes()
    assert data == b"" or data.endswith(b"\n")
    return [json.loads(line)["id"] for line in data.decode().splitlines() if "run_header" not in json.loads(line)]


def test_write_appends_one_line_per_record(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with ResultWriter(path) as writer:
        assert writer.done_ids() == set()
        assert writer.write(record("a", metrics={"generated_tokens": 5}))
        assert writer.write(record("b"))
        assert writer.done_ids() == {"a", "b"}
    assert valid_ids(path) == ["a", "b"]
    assert read_results(path)[0].metrics.generated_tokens == 5


def test_torn_last_line_is_truncated_on_open(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "run.jsonl"
    lines = [json.dumps(record(str(i))) + "\n" for i in range(3)]
    torn = json.dumps(record("3"))[:25]  # killed mid-write: no newline
    path.write_text("".join(lines) + torn)
    caplog.set_level(logging.WARNING)
    with ResultWriter(path) as writer:
        assert writer.done_ids() == {"0", "1", "2"}
        assert writer.torn_bytes == len(torn)
        assert path.read_text() == "".join(lines)  # ends cleanly after the third line
        assert writer.write(record("3"))
    assert "line 4 is torn" in caplog.text
    assert valid_ids(path) == ["0", "1", "2", "3"]


def test_duplicate_ids_are_not_written_twice(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with ResultWriter(path) as writer:
        writer.write(record("a"))
    with ResultWriter(path) as writer:
        assert writer.write(record("a")) is False
        assert writer.write(record("b")) is True
        assert writer.write(record("b")) is False
    assert valid_ids(path) == ["a", "b"]


def test_record_needs_a_string_id(tmp_path: Path) -> None:
    with ResultWriter(tmp_path / "run.jsonl") as writer, pytest.raises(ValueError, match="string 'id'"):
        writer.write({"id": 3})


def test_run_header_is_written_once_and_is_not_a_problem(tmp_path: Path, caplog) -> None:
    path = tmp_path / "run.jsonl"
    with ResultWriter(path, run_header={"method": "ets", "width": 16}) as writer:
        writer.write(record("a"))
    caplog.set_level(logging.WARNING)
    with ResultWriter(path, run_header={"method": "ets", "width": 16}) as writer:
        assert writer.done_ids() == {"a"}
        assert writer.existing_header == {"method": "ets", "width": 16}
    assert "differs" not in caplog.text
    with ResultWriter(path, run_header={"method": "rebase", "width": 16}):
        pass
    assert "differs from the file's first one: method: 'ets' -> 'rebase'" in caplog.text
    assert path.read_text().count("run_header") == 1
    assert [r.id for r in read_results(path)] == ["a"]


def test_header_differences_name_nested_and_added_keys() -> None:
    old = {"dataset": "d.jsonl", "config": {"width": 8, "seed": 0}}
    new = {"dataset": "d.jsonl", "config": {"width": 16, "seed": 0, "pf_temperature": 1.0}}
    assert header_differences(old, new) == ["config.pf_temperature: (absent) -> 1.0", "config.width: 8 -> 16"]
    assert header_differences(old, old) == []


def test_a_resume_may_change_the_runtime_but_not_the_search_or_the_shard(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    header = {"shard": "0/2", "config": {"method": "ets", "width": 16, "max_concurrent_problems": 8}}
    with ResultWriter(path, run_header=header) as writer:
        assert writer.settings_changed(header) == []  # a new file
    with ResultWriter(path) as writer:
        assert writer.settings_changed({**header, "config": {**header["config"], "max_concurrent_problems": 1}}) == []
        assert writer.settings_changed({**header, "shard": "1/2"}) == ["shard: '0/2' -> '1/2'"]
        unsharded = {"config": {**header["config"], "width": 8}}  # an unsharded header has no "shard" key
        assert writer.settings_changed(unsharded) == ["width: 16 -> 8", "shard: '0/2' -> None"]
        # a setting added to the package since the file was written (a new method's) does not block the resume
        newer = {**header, "config": {**header["config"], "pf_temperature": 1.0}}
        assert writer.settings_changed(newer) == []


def test_a_resume_reads_a_renamed_setting_by_its_new_name(tmp_path: Path) -> None:
    """A run written when the highest-score selection was called best_of_n resumes under its new name."""
    path = tmp_path / "run.jsonl"
    old = {"config": {"method": "best_of_n", "width": 16, "answer_selection": "best_of_n"}}
    with ResultWriter(path, run_header=old):
        pass
    new = {"config": {**old["config"], "answer_selection": "highest_score"}}
    with ResultWriter(path) as writer:
        assert writer.settings_changed(new) == []
        assert writer.settings_changed({"config": {**new["config"], "answer_selection": "majority"}}) == [
            "answer_selection: 'highest_score' -> 'majority'"
        ]


def test_second_writer_on_the_same_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    with ResultWriter(path), pytest.raises(RuntimeError, match="another process"):
        ResultWriter(path)
    with ResultWriter(path):  # the lock is released on close
        pass


def test_read_results_reports_bad_lines(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text(
        json.dumps(record("1"))
        + "\n"
        + "{not json\n"
        + "\n"
        + "[1, 2]\n"
        + json.dumps({"x": 1})
        + "\n"
        + json.dumps(record("1"))
        + "\n"
        + json.dumps(record("2"))
        + "\n"
        + json.dumps(record("4", tree={"parents": [-1, 0], "texts": [""]}))
        + "\n"
        + '{"id": "3"'
    )
    second.write_text(json.dumps(record("1", method="rebase")) + "\n")
    caplog.set_level(logging.WARNING)
    records = read_results([first, second])
    assert [(r.id, r.method) for r in records] == [("1", ""), ("2", ""), ("1", "rebase")]
    assert read_lines(first)[-1]["id"] == "4"  # a JSON object with an id: any record, not a run record
    assert f"{first}:8: skipped: not a run record (ValueError: the tree's lists have different lengths" in caplog.text
    assert f"{first}:2: skipped: not valid JSON" in caplog.text
    assert f"{first}:4: skipped: expected a JSON object" in caplog.text
    assert f"{first}:5: skipped: no string 'id'" in caplog.text
    assert f"{first}:6: skipped: id '1' already on line 1" in caplog.text
    assert f"{first}:9: torn last line" in caplog.text


def test_version_1_records_are_read_and_written_back_as_version_2(tmp_path: Path) -> None:
    old = {  # a line as version 1 wrote it: no version, no error_kind, the error's kind in its message
        "id": "7", "problem": "p", "method": "ets", "width": 4, "reference": "3", "answer": None, "correct": False,
        "error": "EngineDiedError: the vLLM engine died (EngineCore_DP0 was killed by SIGKILL)",
        "candidates": [], "tree": {}, "metrics": {"generated_tokens": 12, "a_figure_from_elsewhere": 1.5},
        "config": {"seed": 0}, "run": {"session": "s1", "elapsed_s": 2.5},
    }
    timed_out = {**old, "id": "8", "error": "timed out after 30s"}
    bad_problem = {**old, "id": "9", "error": "problem 9: empty problem text"}
    path = write_run(tmp_path / "old.jsonl", [old, timed_out, bad_problem])
    records = read_results(path)
    assert [r.error_kind for r in records] == [ErrorKind.ENGINE_DIED, ErrorKind.TIMEOUT, ErrorKind.PROBLEM]
    first = records[0]
    assert first.metrics.generated_tokens == 12 and first.metrics.kv_tokens_mean is None  # not in version 1's line
    assert first.run is not None and first.run.session == "s1" and first.label == "ets"
    written = first.to_dict()
    assert written["version"] == RECORD_VERSION == 2 and written["error_kind"] == "engine_died"
    assert written["metrics"] == old["metrics"]  # an unknown figure survives a round trip
    assert RunRecord.from_dict(json.loads(json.dumps(written))) == first
    with pytest.raises(ValueError, match="record version 3: this version of ets_async reads versions 1 to 2"):
        RunRecord.from_dict({**written, "version": 3})


def test_error_kind_of_each_error() -> None:
    assert ErrorKind.of(EngineDiedError("x")) is ErrorKind.ENGINE_DIED
    assert ErrorKind.of(RequestTimeoutError("x")) is ErrorKind.REQUEST_TIMEOUT
    assert ErrorKind.of(BackendError("x")) is ErrorKind.BACKEND
    assert ErrorKind.of(ProblemError("x")) is ErrorKind.PROBLEM
    assert ErrorKind.of(CoreError("x")) is ErrorKind.CORE
    assert ErrorKind.of(KeyError("x")) is ErrorKind.INTERNAL
    assert ErrorKind.from_message("RequestTimeoutError: policy request ran past 5s") is ErrorKind.REQUEST_TIMEOUT


_KILLED_WRITER = textwrap.dedent(
    """
    import importlib.util, sys, time
    # Load results.py by path so the child does not import the whole package (engines and all).
    spec = importlib.util.spec_from_file_location("results", sys.argv[3])
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    ResultWriter = results.ResultWriter
    path, n = sys.argv[1], int(sys.argv[2])
    with ResultWriter(path, run_header={"method": "ets"}) as writer:
        done = writer.done_ids()
        for i in range(n):
            if str(i) in done:
                continue
            writer.write({"id": str(i), "answer": "x" * 50000, "metrics": {"wall_time_s": 0.1}})
            print(i, flush=True)
            time.sleep(0.02)
    """
)


def test_sigkill_midway_then_resume_leaves_one_line_per_id(tmp_path: Path) -> None:
    path, n = tmp_path / "run.jsonl", 40
    command = [sys.executable, "-c", _KILLED_WRITER, str(path), str(n), str(RESULTS_PY)]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    for _ in range(5):  # let it write a few records, then kill it without warning
        assert child.stdout.readline(), "the writer process died early"
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    written = len(valid_ids(path)) if path.read_bytes().endswith(b"\n") else None
    assert written is None or 5 <= written < n
    # Whatever the kill left, add a torn tail as a kill in the middle of os.write would.
    with path.open("ab") as handle:
        handle.write(b'{"id": "torn", "answer": "xxxx')

    resumed = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    assert "torn" in resumed.stderr
    ids = valid_ids(path)
    assert sorted(ids, key=int) == [str(i) for i in range(n)]
    assert len(ids) == len(set(ids))
    assert path.read_text().count("run_header") == 1


def test_summarize_by_hand() -> None:
    records = [
        record(
            "1",
            correct=True,
            reference="1",
            metrics={"generated_tokens": 100, "prompt_tokens": 50, "prefix_cached_tokens": 40},
        ),
        record(
            "2",
            correct=False,
            reference="2",
            metrics={"generated_tokens": 300, "prompt_tokens": 150, "prefix_cached_tokens": 20},
        ),
        record("3", answer=None, correct=False, reference="3", metrics={"generated_tokens": 200}),
        record("4", answer=None, correct=None, reference="4", error="BackendError: engine died", metrics={}),
        record("5", correct=None, reference=None, metrics={"generated_tokens": 0, "policy_calls": 7}),
    ]
    summary = summarize(map(RunRecord.from_dict, records), wall_time_s=10.0)
    assert summary["n_problems"] == 5
    assert summary["n_errors"] == 1
    assert summary["n_no_answer"] == 1  # the error is counted as an error, not as "no answer"
    assert summary["n_graded"] == 3 and summary["n_correct"] == 1
    assert summary["accuracy"] == pytest.approx(1 / 3)
    assert summary["n_with_reference"] == 4
    assert summary["accuracy_all"] == pytest.approx(1 / 4)  # the errored problem counts as wrong
    assert summary["metrics_mean"]["generated_tokens"] == pytest.approx(600 / 4)
    assert summary["metrics_sum"]["generated_tokens"] == 600
    assert summary["metrics_mean"]["policy_calls"] == 7
    assert summary["prefix_cache_hit_rate"] == pytest.approx(60 / 200)
    assert summary["problems_per_s"] == pytest.approx(0.5)


def test_summarize_empty_and_without_cache_stats() -> None:
    summary = summarize([])
    assert summary["n_problems"] == 0 and summary["accuracy"] is None and summary["accuracy_all"] is None
    assert summary["prefix_cache_hit_rate"] is None and summary["problems_per_s"] is None


def test_paired_outcomes_count_only_the_problems_both_have() -> None:
    ours = {"a": True, "b": False, "c": True, "d": True}
    theirs = {"a": False, "b": True, "c": True, "d": False, "e": True}  # "e" is not ours: left out
    row = paired_outcomes(ours, theirs, resamples=2_000)
    assert (row["problems"], row["wins"], row["losses"]) == (4, 2, 1)
    assert row["difference"] == pytest.approx(0.25)
    assert -1 <= row["low"] <= row["difference"] <= row["high"] <= 1
    assert paired_outcomes({}, theirs)["difference"] is None


def test_group_runs_then_summarize() -> None:
    records = [
        record("1", method="rebase", width=16, correct=True),
        record("1", method="ets", width=64, correct=False),
        record("1", method="ets", width=16, correct=True),
        record("2", method="ets", width=16, correct=False),
    ]
    groups = group_runs(map(RunRecord.from_dict, records))
    rows = [(*key, summarize(group)) for key, group in groups.items()]
    assert [(m, w, s["n_problems"], s["accuracy"]) for m, w, s in rows] == [
        ("ets", 16, 2, 0.5),
        ("ets", 64, 1, 0.0),
        ("rebase", 16, 1, 1.0),
    ]
    assert summarize(groups[("ets", 16)], wall_time_s=4.0)["problems_per_s"] == 0.5


def write_run(path: Path, records: list[dict], *, shard: str | None = None, extra: str = "") -> Path:
    """A run file as ``ets-async run`` writes it: a header (with the shard, if any), one line per record."""
    header = {"config": {"seed": 0}, **({"shard": shard} if shard else {})}
    lines = [json.dumps({HEADER_KEY: header})] + [json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def ets(problem_id: str, **config) -> dict:
    return record(problem_id, method="ets", width=16, config={"seed": 0, "max_concurrent_problems": 8, **config})


def test_read_runs_merges_shards_and_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = write_run(tmp_path / "a.jsonl", [ets("1"), ets("2")], shard="0/3")
    second = write_run(tmp_path / "b.jsonl", [ets("3", max_concurrent_problems=1)], shard="1/3")  # runtime only
    other = write_run(tmp_path / "c.jsonl", [record("1", method="rebase", width=16)])  # another row: "1" again is fine
    caplog.set_level(logging.WARNING)
    records = read_runs([first, second, other, tmp_path / "." / "a.jsonl"])
    assert [(r.id, r.method) for r in records] == [("1", "ets"), ("2", "ets"), ("3", "ets"), ("1", "rebase")]
    assert "a.jsonl is named twice; reading it once" in caplog.text
    assert "ets, width 16: no run file of shard 2/3; its summary covers part of the dataset" in caplog.text
    assert "rebase" not in caplog.text  # an unsharded run is whole


def test_read_runs_refuses_a_problem_twice_in_a_row(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a.jsonl", [ets("1"), ets("2")])
    second = write_run(tmp_path / "b.jsonl", [ets("3"), ets("2")])
    message = f"problem '2' is in {first}:3 and in {second}:3 (both ets, width 16)"
    with pytest.raises(RunFileError, match=re.escape(message)):
        read_runs([first, second])
    # Twice in one file (two runs concatenated, say): read_results keeps the first, read_runs refuses.
    joined = write_run(tmp_path / "joined.jsonl", [ets("1"), ets("2"), ets("1")])
    assert len(read_results(joined)) == 2
    with pytest.raises(RunFileError, match=re.escape(f"problem '1' is in {joined}:2 and in {joined}:4")):
        read_runs([joined])


def test_read_runs_refuses_two_searches_in_a_row(tmp_path: Path) -> None:
    first = write_run(tmp_path / "a.jsonl", [ets("1")])
    second = write_run(tmp_path / "b.jsonl", [ets("2", seed=1, lambda_s=0.0)])
    message = f"{first}:2 and {second}:2 are both ets, width 16 but were searched with different settings"
    with pytest.raises(RunFileError, match=re.escape(message)) as caught:
        read_runs([first, second])
    reason = "(lambda_s: None -> 0.0, seed: 0 -> 1); one summary would mix them: eval them separately"
    assert reason in str(caught.value)


def test_metrics_read_as_a_dict_still_work_with_a_deprecation_warning() -> None:
    metrics = RunRecord.from_dict({"id": "1", "metrics": {"generated_tokens": 7, "from_a_newer_version": 2.0}}).metrics
    with pytest.warns(
        DeprecationWarning, match=r'metrics\["generated_tokens"\] is deprecated.*metrics.generated_tokens'
    ):
        assert metrics["generated_tokens"] == 7
    with pytest.warns(DeprecationWarning):
        assert metrics["from_a_newer_version"] == 2.0 and metrics["kv_tokens_mean"] is None
    with pytest.warns(DeprecationWarning), pytest.raises(KeyError):
        metrics["no_such_figure"]
