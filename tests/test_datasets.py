"""Problem files: GSM8K / MATH auto-detection, explicit field mapping, stable ids, bad lines reported;
shards of a dataset."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from ets_async.datasets import Shard, load_hf_dataset, load_problems, normalise_rows
from ets_async.errors import ConfigError


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_gsm8k_rows(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "gsm8k.jsonl",
        [
            json.dumps({"question": "How many?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"}),
            json.dumps({"question": "How much?", "answer": "Lots.\n#### 1,234"}),
        ],
    )
    problems, issues = load_problems(path)
    assert issues == []
    assert problems == [
        {"id": "0", "problem": "How many?", "answer": "5"},
        {"id": "1", "problem": "How much?", "answer": "1234"},
    ]


def test_math_rows(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "math500.jsonl",
        [
            json.dumps({"problem": "Find x.", "answer": r"\frac{1}{2}", "unique_id": "test/algebra/1.json"}),
            json.dumps({"problem": "Find y.", "solution": r"Thus $\boxed{\sqrt{3}}$.", "id": 17}),
            json.dumps({"problem": "No reference."}),
        ],
    )
    problems, issues = load_problems(path)
    assert issues == []
    assert problems == [
        {"id": "test/algebra/1.json", "problem": "Find x.", "answer": r"\frac{1}{2}"},
        {"id": "17", "problem": "Find y.", "answer": r"\sqrt{3}"},
        {"id": "2", "problem": "No reference.", "answer": None},
    ]


def test_bad_lines_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "mixed.jsonl",
        [
            json.dumps({"question": "ok 1", "answer": "#### 1"}),  # line 1
            '{"question": "broken',  # line 2
            json.dumps({"text": "wrong field"}),  # line 3
            json.dumps({"problem": "   ", "answer": "1"}),  # line 4
            "",  # line 5: blank, ignored
            json.dumps(["not", "an", "object"]),  # line 6
            json.dumps({"problem": 42}),  # line 7
            json.dumps({"problem": "dup", "id": "x"}),  # line 8
            json.dumps({"problem": "dup again", "id": "x"}),  # line 9
            json.dumps({"question": "ok 2", "answer": "#### 2"}),  # line 10
        ],
    )
    problems, issues = load_problems(path)
    assert [(p["id"], p["problem"]) for p in problems] == [("0", "ok 1"), ("x", "dup"), ("9", "ok 2")]
    assert len(issues) == 6
    assert issues[0].startswith("line 2: not valid JSON: ")
    assert issues[1:] == [
        "line 3: missing problem text (expected one of problem/question)",
        "line 4: empty problem text",
        "line 6: expected a JSON object, got list",
        "line 7: field 'problem' is not a string (got int)",
        "line 9: duplicate id 'x' (first seen on line 8)",
    ]


def test_ids_are_stable_when_earlier_lines_are_bad(tmp_path: Path) -> None:
    good = json.dumps({"question": "q", "answer": "#### 3"})
    clean, _ = load_problems(write_lines(tmp_path / "a.jsonl", [good, good.replace('"q"', '"r"')]))
    dirty, _ = load_problems(write_lines(tmp_path / "b.jsonl", ["garbage", good.replace('"q"', '"r"')]))
    assert clean[1]["id"] == dirty[0]["id"] == "1"


def test_explicit_field_mapping_overrides_detection(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "custom.jsonl",
        [
            json.dumps({"problem": "ignored", "prompt": "Use me", "target": "#### 9", "answer": "no", "key": "k1"}),
            json.dumps({"prompt": "no key", "target": "1"}),
            json.dumps({"problem": "no prompt", "target": "1", "key": "k3"}),
        ],
    )
    problems, issues = load_problems(path, question_field="prompt", answer_field="target", id_field="key")
    assert problems == [{"id": "k1", "problem": "Use me", "answer": "9"}]
    assert issues == ["line 2: missing field 'key'", "line 3: missing field 'prompt'"]


def test_limit_counts_problems(tmp_path: Path) -> None:
    rows = ["bad"] + [json.dumps({"problem": f"p{i}"}) for i in range(5)]
    problems, issues = load_problems(write_lines(tmp_path / "l.jsonl", rows), limit=2)
    assert [p["id"] for p in problems] == ["1", "2"]
    assert len(issues) == 1


def test_normalise_rows_labels_rows() -> None:
    problems, issues = normalise_rows([{"question": "q", "answer": "#### 4"}, {"answer": "1"}])
    assert problems == [{"id": "0", "problem": "q", "answer": "4"}]
    assert issues == ["row 1: missing problem text (expected one of problem/question)"]


def test_load_hf_dataset_without_datasets_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="pip install datasets"):
        load_hf_dataset("openai/gsm8k", "test", config="main")


def test_solve_many_and_the_cli_share_one_normaliser() -> None:
    from ets_async.types import Problem

    row = {"question": "Tom has 3 apples and buys 5 more. How many?", "answer": "3 + 5 = 8\n#### 8"}
    problem = Problem.coerce(row, 4)
    (loaded,), _ = normalise_rows([row])
    assert problem.reference == loaded["answer"] == "8"
    assert problem.id == "4" and problem.text == loaded["problem"]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_shards_are_disjoint_and_cover_the_dataset(count: int) -> None:
    ids = [f"q{i}" for i in range(500)] + ["test/algebra/1.json", "ünïcode", ""]
    owners = {problem_id: [i for i in range(count) if Shard(i, count).holds(problem_id)] for problem_id in ids}
    assert all(len(shards) == 1 for shards in owners.values())
    if count > 1:  # every shard gets a fair share, none is empty
        sizes = [sum(shards == [i] for shards in owners.values()) for i in range(count)]
        assert min(sizes) > len(ids) / count / 2


def test_shards_depend_on_the_id_alone(tmp_path: Path) -> None:
    rows = [json.dumps({"id": f"q{i}", "question": f"What is {i}?"}) for i in range(40)]
    in_order = load_problems(write_lines(tmp_path / "a.jsonl", rows))[0]
    reordered = load_problems(write_lines(tmp_path / "b.jsonl", rows[::-1][:25] + ["bad"] + rows[::-1][25:]))[0]
    shard = Shard(1, 3)
    assert {p["id"] for p in in_order if shard.holds(p["id"])} == {p["id"] for p in reordered if shard.holds(p["id"])}
    # blake2b of the id, the same on every machine and Python version: pinned so a change is noticed.
    assert [next(i for i in range(4) if Shard(i, 4).holds(f"q{n}")) for n in range(4)] == [1, 0, 2, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("4/4", "I must be in 0..3"),
        ("1/0", "N must be at least 1"),
        ("-1/4", "expected I/N"),
        ("1", "expected I/N"),
        ("a/b", "expected I/N"),
        ("1/2/3", "expected I/N"),
    ],
)
def test_bad_shards_say_what_is_expected(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Shard.parse(text)


def test_shard_round_trips_as_text() -> None:
    assert Shard.parse(" 2 / 5 ") == Shard(2, 5) and str(Shard(2, 5)) == "2/5"
