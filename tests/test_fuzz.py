"""Fuzzing the inputs users hand us (hypothesis): configuration (YAML files, --set values) and problem
rows (dataset lines, solve_many items). Whatever comes in, the answer is a valid value or one clear
error of ours (ConfigError for a configuration, an error result or a skipped line for a problem),
never another exception; a lone surrogate is reported as such."""

from __future__ import annotations

import asyncio
import json
import string
from pathlib import Path

from ets_async import EngineConfig, SearchConfig, solve_many
from ets_async.config import read_recipe
from ets_async.datasets import load_problems
from ets_async.errors import ConfigError, ProblemError
from ets_async.testing import fake_backends
from ets_async.types import Problem
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text()
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
problem_keys = st.sampled_from(["question", "problem", "answer", "solution", "id", "unique_id", "other"])
problem_rows = st.dictionaries(problem_keys, json_values, max_size=5)
surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts_with_surrogates = st.lists(st.text(max_size=5) | surrogates, min_size=1, max_size=4).map("".join)


def is_valid_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------

field_names = st.sampled_from(sorted(SearchConfig.model_fields)) | st.text(max_size=12)
setting_values = st.text(max_size=30) | st.sampled_from(
    ["2001-02-30", "!!float x", "!!binary zz", "&a [*a]", "[" * 200, "{a: 1}", ".nan", "-.inf", "1e400", "0x1F", "~"]
)


@FUZZ
@given(st.lists(st.tuples(field_names, st.sampled_from(["=", ""]), setting_values), max_size=4))
@example([("width", "=", "2001-02-30")])
@example([("answer_markers", "=", "&a [*a]")])
@example([("width", "=", "[" * 2000)])
def test_settings_give_a_config_or_a_config_error(items):
    settings_ = [f"{key}{sep}{value}" for key, sep, value in items]
    for cls in (SearchConfig, EngineConfig):
        try:
            config = cls.load(None, settings_)
        except ConfigError as exc:
            assert str(exc)
        else:
            assert isinstance(config, cls)


yaml_documents = st.one_of(
    st.text(max_size=200),
    st.dictionaries(field_names, json_values, max_size=5).map(json.dumps),  # JSON is YAML
    st.lists(st.tuples(field_names, setting_values), max_size=5).map(lambda kv: "\n".join(f"{k}: {v}" for k, v in kv)),
)


@FUZZ
@given(yaml_documents | st.binary(max_size=100))
@example("1: 2\nwidth: 4\n")  # a key that is not a string
@example("width: 2001-02-30\n")
@example(b"width: \xff\xfe 4\n")  # not UTF-8
@example("- " * 3000)
def test_recipe_files_give_a_config_or_a_config_error(tmp_path_factory, document):
    path = Path(tmp_path_factory.mktemp("recipe")) / "recipe.yaml"
    if isinstance(document, bytes):
        path.write_bytes(document)
    else:
        path.write_text(document, encoding="utf-8", errors="surrogatepass")
    try:
        config = SearchConfig.load(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
    else:
        assert isinstance(config, SearchConfig)
        assert isinstance(read_recipe(path)[1], dict)


@FUZZ
@given(st.text(max_size=40))
@example("ets_16\x00")
@example("no/such/recipe")
@example("ets_16")
def test_recipe_names_give_a_recipe_or_a_config_error(name):
    try:
        label, fields = read_recipe(name)
    except ConfigError as exc:
        assert str(exc)
    else:
        assert isinstance(fields, dict) and label


# --------------------------------------------------------------------------------------------------
# Problems
# --------------------------------------------------------------------------------------------------


dataset_lines = st.one_of(
    problem_rows.map(json.dumps),  # ensure_ascii: lone surrogates arrive as \\udXXX escapes
    json_values.map(json.dumps),
    st.text(alphabet=string.printable, max_size=40),
    st.builds(lambda q, i: json.dumps({"question": q, "id": i}), texts_with_surrogates, texts_with_surrogates),
)


@FUZZ
@given(st.lists(dataset_lines, max_size=12))
@example(['{"question": "What is \\ud800?", "answer": "#### 1"}', '{"question": "ok", "id": "a\\udfff"}'])
def test_dataset_lines_give_problems_or_reported_issues(tmp_path_factory, lines):
    path = Path(tmp_path_factory.mktemp("data")) / "d.jsonl"
    path.write_text("".join(line.replace("\n", " ") + "\n" for line in lines), encoding="utf-8")
    problems, issues = load_problems(path)
    assert len(problems) + len(issues) == sum(1 for line in lines if line.replace("\n", " ").strip())
    assert len({p["id"] for p in problems}) == len(problems)
    for problem in problems:
        assert problem["problem"].strip()
        assert all(v is None or is_valid_text(v) for v in problem.values())
    for issue in issues:
        assert issue.startswith("line ") and is_valid_text(issue)


@FUZZ
@given(json_values | problem_rows | texts_with_surrogates)
@example({"question": "What is \ud800?"})
@example({"question": "ok", "id": "a\udc00"})
@example({"question": "ok", "answer": "4\udbff"})
@example("x\ud800")
def test_any_item_is_a_problem_or_a_problem_error(item):
    try:
        problem = Problem.coerce(item, 3)
    except ProblemError as exc:
        assert is_valid_text(str(exc))
        if isinstance(item, str) or (isinstance(item, dict) and isinstance(item.get("question"), str)):
            text = item if isinstance(item, str) else item["question"]
            if text.strip() and not is_valid_text(text):
                assert "lone surrogate" in str(exc)
    else:
        assert problem.text.strip() and is_valid_text(problem.text) and is_valid_text(problem.id)


@settings(max_examples=25, deadline=None)
@given(st.lists(json_values | problem_rows | texts_with_surrogates, min_size=1, max_size=6))
def test_solve_many_gives_one_clean_result_per_item(items):
    backends = fake_backends()
    config = SearchConfig(method="rebase", width=2, max_step_tokens=16, max_tokens=48, max_depth=3)
    results = asyncio.run(
        solve_many(items, config, policy=backends.policy, prm=backends.prm, embedder=backends.embedder)
    )
    assert len(results) == len(items)
    for result in results:
        assert result.error is None or is_valid_text(result.error)
        assert is_valid_text(result.problem) and is_valid_text(result.id)
        json.dumps(result.to_dict(), ensure_ascii=False).encode("utf-8")  # writable as a run-file line
