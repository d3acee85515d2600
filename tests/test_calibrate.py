"""Calibrating the clustering cut: equivalence labels, selection groups, the sweep, the command."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
from ets_async.calibrate import best_cut, equivalence_key, selection_groups, sweep_cuts
from ets_async.cli import app
from ets_async.records import RunRecord
from typer.testing import CliRunner


def test_equivalence_keys() -> None:
    # the same result however it is worded
    assert equivalence_key("She has 16 - 3 - 4 = 9 eggs left.\n\n") == equivalence_key("So 9 eggs remain.\n\n")
    assert equivalence_key("9 * 2 = $18 per day") == ("numbers", frozenset({Fraction(18)}))
    assert equivalence_key("First, 3 + 4 = 7, then 7 * 2 = 14.") == ("numbers", frozenset({Fraction(7), Fraction(14)}))
    # final steps compare their answers
    assert (
        equivalence_key(r"So the answer is \boxed{18}.")
        == equivalence_key("The answer is: $18.")
        == ("answer", Fraction(18))
    )
    assert equivalence_key("Let us find how many eggs she sells.") is None  # nothing to judge


def record(texts: list[str], parents: list[int], finished: list[bool]) -> RunRecord:
    return RunRecord.from_dict({"id": "p", "tree": {"parents": parents, "finished": finished, "texts": texts}})


def test_selection_groups_are_the_unfinished_nodes_of_each_depth() -> None:
    #        0
    #   1    2    3(finished)
    #  4 5   6
    texts = ["", "a", "b", "c", "d", "e", "e"]
    parents = [-1, 0, 0, 0, 1, 1, 2]
    finished = [False, False, False, True, False, False, False]
    groups = list(selection_groups([record(texts, parents, finished)]))
    assert groups == [["a", "b"], ["d", "e", "e"]]
    # one distinct text, or no texts recorded: nothing to calibrate on
    assert list(selection_groups([record(["", "x", "x"], [-1, 0, 0], [False] * 3)])) == []
    assert (
        list(
            selection_groups(
                [RunRecord.from_dict({"id": "q", "tree": {"parents": [-1, 0], "finished": [False, False]}})]
            )
        )
        == []
    )


def test_sweep_finds_the_cut_that_separates_equivalent_steps() -> None:
    # Equivalent steps (same result) get vectors 0.1 rad apart; different results are far apart.
    steps = {"3 + 4 = 7": 0.0, "That makes 7.": 0.1, "7 * 2 = 14": 1.2, "So 14 in total.": 1.3, "2 * 9 = 18": 2.4}

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([[np.cos(steps[t]), np.sin(steps[t])] for t in texts], dtype=np.float32)

    groups = [list(steps)]
    scores = sweep_cuts(groups, embed, [0.001, 0.01, 0.1, 0.5, 1.5])
    by_cut = {s.cut: s for s in scores}
    assert by_cut[0.001].recall == 0.0 and by_cut[0.001].clusters_per_step == 1.0  # every step alone
    assert by_cut[0.01].f1 == 1.0  # 1 - cos(0.1) = 0.005: equivalent pairs merge, nothing else
    assert by_cut[1.5].precision < 1.0  # far apart steps merge too
    assert best_cut(scores).cut == 0.01


def test_calibrate_command_with_the_real_embedder(tmp_path) -> None:
    texts = ["", "3 + 4 = 7 apples.\n\n", "Adding gives 3 + 4 = 7.\n\n", "She pays 5 * 2 = 10 dollars.\n\n",
             "The cat is asleep.\n\n", "Tom has 7 apples now.\n\n", "10 dollars in total.\n\n"]
    rec = record(texts, [-1, 0, 0, 0, 0, 1, 3], [False] * 7)
    path = tmp_path / "run.jsonl"
    path.write_text(json.dumps(rec.to_dict()) + "\n")
    result = CliRunner().invoke(app, ["calibrate", str(path), "--cuts", "0.05:0.8:0.05"])
    assert result.exit_code == 0, result.output
    assert "2 selection steps, 6 steps" in result.output
    assert "best cut for all-minilm-l6-v2:" in result.output and "precision" in result.output
    empty = tmp_path / "old.jsonl"
    empty.write_text(json.dumps({"id": "p", "tree": {"parents": [-1]}}) + "\n")
    result = CliRunner().invoke(app, ["calibrate", str(empty)])
    assert result.exit_code == 2 and "no selection steps" in result.output


@pytest.mark.parametrize("cuts", ["1:2", "a:b:c"])
def test_calibrate_rejects_bad_cut_ranges(tmp_path, cuts) -> None:
    result = CliRunner().invoke(app, ["calibrate", str(tmp_path / "x.jsonl"), "--cuts", cuts])
    assert result.exit_code == 2
