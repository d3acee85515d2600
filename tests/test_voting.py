"""Step-score aggregation and answer selection (SPEC §7), on hand-worked examples."""

from __future__ import annotations

import pytest
from ets_async.voting import aggregate_scores, resolve_selection, select_answer, vote_table


def exact(a: str, b: str) -> bool:
    return a == b


@pytest.mark.parametrize(
    ("scores", "how", "expected"),
    [
        ([0.2, 0.9, 0.5], "last", 0.5),
        ([], "last", 0.0),
        ([0.3, None], "last", 0.0),
        ([0.2, 0.9, 0.5], "min", 0.2),
        ([], "min", 0.0),
        ([None, 0.4], "min", 0.4),
        ([None], "min", 1.0),  # the original starts its minimum at 1 and skips None
        ([1.5], "min", 1.0),
        ([0.5, 0.5, 0.4], "prod", 0.1),
        ([], "prod", 0.0),
        ([0.2, 0.4], "mean", 0.3),
        ([], "mean", 0.0),
    ],
)
def test_aggregate_scores(scores: list, how: str, expected: float) -> None:
    assert aggregate_scores(scores, how) == pytest.approx(expected)  # type: ignore[arg-type]


def test_unknown_aggregation_and_selection_raise() -> None:
    with pytest.raises(ValueError, match="unknown step aggregation"):
        aggregate_scores([0.5], "max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown answer selection"):
        select_answer([("1", [0.5])], "vote")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown step aggregation"):
        select_answer([("1", [0.5])], "weighted_majority", "max")  # type: ignore[arg-type]


# Six finished trajectories (answer, step scores); weight = last step score.
CANDIDATES = [
    ("4", [0.9, 0.6]),  # A
    ("5", [0.8, 0.7]),  # B
    ("4", [0.5]),  # C
    ("5", [0.9, 0.2]),  # D
    ("6", [0.3, 0.95]),  # E
    ("5", [0.05]),  # F
]


def test_weighted_majority_by_hand() -> None:
    # "4": 0.6 + 0.5 = 1.1; "5": 0.7 + 0.2 + 0.05 = 0.95; "6": 0.95  -> "4"
    assert select_answer(CANDIDATES, "weighted_majority", "last", equivalent=exact) == "4"
    table = vote_table(CANDIDATES, "weighted_majority", "last", equivalent=exact)
    assert [(c.answer, c.count) for c in table] == [("4", 2), ("5", 3), ("6", 1)]
    assert [c.weight for c in table] == pytest.approx([1.1, 0.95, 0.95])


def test_unweighted_majority_by_hand() -> None:
    # "4": 2 votes; "5": 3 votes; "6": 1 vote  -> "5"
    assert select_answer(CANDIDATES, "majority", equivalent=exact) == "5"


def test_weighted_majority_with_min_aggregation_by_hand() -> None:
    # min (from 1): A 0.6, B 0.7, C 0.5, D 0.2, E 0.3, F 0.05
    # "4": 1.1; "5": 0.95; "6": 0.3  -> "4"
    assert select_answer(CANDIDATES, "weighted_majority", "min", equivalent=exact) == "4"


def test_highest_score_by_hand() -> None:
    # last: E has 0.95, the highest single score -> "6"
    assert select_answer(CANDIDATES, "highest_score", "last", equivalent=exact) == "6"
    # prod: A 0.54, B 0.56, C 0.5, D 0.18, E 0.285, F 0.05 -> B -> "5"
    assert select_answer(CANDIDATES, "highest_score", "prod", equivalent=exact) == "5"
    # ties: the first candidate with the maximum wins
    assert select_answer([("a", [0.5]), ("b", [0.5])], "highest_score", equivalent=exact) == "a"


def test_the_former_name_best_of_n_still_selects_the_highest_score() -> None:
    assert resolve_selection("highest_score") == "highest_score"
    with pytest.warns(DeprecationWarning, match="now called 'highest_score'"):
        assert resolve_selection("best_of_n") == "highest_score"
    with pytest.warns(DeprecationWarning):
        assert select_answer(CANDIDATES, "best_of_n", "last", equivalent=exact) == "6"  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match="unknown answer selection 'best'; expected one of weighted_majority, majority, highest_score"
    ):
        resolve_selection("best")


def near(a: str, b: str) -> bool:
    """A deliberately non-transitive equivalence: integers at most 1 apart."""
    return abs(int(a) - int(b)) <= 1


def test_weight_goes_to_every_matching_class() -> None:
    # "1" (0.5) opens class 1; "3" (0.6) opens class 3; "2" (0.3) matches both and adds 0.3 to each:
    # class 1 = 0.8, class 3 = 0.9 -> "3". Adding to the first match only would give 0.8 vs 0.6 -> "1".
    candidates = [("1", [0.5]), ("3", [0.6]), ("2", [0.3])]
    assert select_answer(candidates, equivalent=near) == "3"
    table = vote_table(candidates, equivalent=near)
    assert [c.weight for c in table] == pytest.approx([0.8, 0.9])
    assert [c.count for c in table] == [2, 2]


def test_tie_goes_to_the_earlier_class() -> None:
    assert select_answer([("a", [0.5]), ("b", [0.5])], equivalent=exact) == "a"
    assert select_answer([("a", []), ("b", [0.9]), ("a", [0.9])], "majority", equivalent=exact) == "a"


def test_weight_ties_go_to_the_larger_class_then_to_a_number() -> None:
    # weights tie at 1.0: "b" has two members, "a" one -> "b"
    assert select_answer([("a", [1.0]), ("b", [0.5]), ("b", [0.5])], equivalent=exact) == "b"
    # weight and count tie: the answer that reads as a number wins over an earlier non-number
    assert select_answer([("2X'", [0.5]), ("8 apples", [0.5])], equivalent=exact) == "8 apples"
    # the class that reached the maximum first no longer wins a tie: equal votes -> earlier class
    assert select_answer([("a", []), ("b", []), ("b", []), ("a", [])], "majority", equivalent=exact) == "a"


def test_missing_answers_are_ignored() -> None:
    candidates = [(None, [0.99]), ("7", [0.1]), (None, [0.99])]
    for selection in ("weighted_majority", "majority", "highest_score"):
        assert select_answer(candidates, selection, equivalent=exact) == "7"  # type: ignore[arg-type]
        assert select_answer([(None, [0.9])], selection, equivalent=exact) is None  # type: ignore[arg-type]
        assert select_answer([], selection, equivalent=exact) is None  # type: ignore[arg-type]


def test_zero_weights_still_select_an_answer() -> None:
    # The original's running maximum starts at 0, so all-zero weights would select nothing.
    assert select_answer([("1", []), ("2", [])], equivalent=exact) == "1"


def test_equivalence_is_cached_and_identical_strings_skip_it() -> None:
    calls: list[tuple[str, str]] = []

    def counting(a: str, b: str) -> bool:
        calls.append((a, b))
        return False

    select_answer([("x", [1]), ("x", [1]), ("y", [1]), ("y", [1]), ("x", [1])], equivalent=counting)
    # "y" vs "x" once (cached for the second "y"), then the last "x" vs "y" once.
    assert calls == [("y", "x"), ("x", "y")]


def test_default_equivalence_uses_grading() -> None:
    pytest.importorskip("math_verify")
    # 0.5 and \frac12 are one class (0.6) against "3" (0.4) -> "0.5", the class's first answer.
    candidates = [("3", [0.4]), ("0.5", [0.3]), (r"\frac12", [0.3])]
    assert select_answer(candidates) == "0.5"
