"""Final answer selection over finished trajectories: step-score aggregation and (weighted) voting (SPEC §7)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast, get_args

from .answers import numeric_value
from .grading import answers_equivalent

__all__ = [
    "ANSWER_SELECTIONS",
    "RENAMED_SELECTIONS",
    "STEP_AGGREGATIONS",
    "AnswerSelection",
    "StepAggregation",
    "VoteClass",
    "aggregate_scores",
    "resolve_selection",
    "select_answer",
    "vote_table",
]

StepAggregation = Literal["last", "min", "prod", "mean"]
AnswerSelection = Literal["weighted_majority", "majority", "highest_score"]
STEP_AGGREGATIONS: tuple[str, ...] = get_args(StepAggregation)
ANSWER_SELECTIONS: tuple[str, ...] = get_args(AnswerSelection)
RENAMED_SELECTIONS: dict[str, AnswerSelection] = {"best_of_n": "highest_score"}
"""Former names of answer selections -> their names now. Configs and run files written before a rename
still say the old name, so it is still accepted (``resolve_selection``)."""

Candidates = Sequence[tuple[str | None, Sequence[float | None]]]
Equivalence = Callable[[str, str], bool]


def aggregate_scores(step_scores: Sequence[float | None], how: StepAggregation) -> float:
    """One score for a trajectory from its per-step PRM scores, as the original evaluator does.

    ``last``: the final step's score (0 if there are no steps or it is None); ``min``: the minimum,
    starting from 1 and ignoring None (0 if there are no steps); ``prod``: the product (0 if there
    are no scores); ``mean``: the mean (0 if there are no steps). ``prod`` and ``mean`` skip None.
    Raises ValueError for an unknown ``how``.
    """
    scores = list(step_scores)
    if how == "last":
        return 0.0 if not scores or scores[-1] is None else float(scores[-1])
    if how == "min":
        if not scores:
            return 0.0
        return min([1.0] + [float(s) for s in scores if s is not None])
    if how == "prod":
        present = [float(s) for s in scores if s is not None]
        return math.prod(present) if present else 0.0
    if how == "mean":
        present = [float(s) for s in scores if s is not None]
        return sum(present) / len(present) if present else 0.0
    raise ValueError(f"unknown step aggregation {how!r}; expected one of {', '.join(STEP_AGGREGATIONS)}")


@dataclass
class VoteClass:
    """One equivalence class of answers: its representative (first member), weight and size."""

    answer: str
    weight: float
    count: int


class _CachedEquivalence:
    """Pairwise equivalence with a per-call cache; identical strings never reach ``equivalent``."""

    def __init__(self, equivalent: Equivalence) -> None:
        self._equivalent = equivalent
        self._cache: dict[tuple[str, str], bool] = {}

    def __call__(self, answer: str, representative: str) -> bool:
        if answer == representative:
            return True
        key = (answer, representative)
        verdict = self._cache.get(key)
        if verdict is None:
            verdict = bool(self._equivalent(answer, representative))
            self._cache[key] = verdict
        return verdict


def _vote(
    candidates: Candidates,
    weighted: bool,
    aggregation: StepAggregation,
    equivalent: Equivalence,
) -> tuple[list[VoteClass], int | None]:
    """Classes in creation order and the index of the winner (None if no candidate has an answer).

    As in the original evaluator, a candidate's weight goes to *every* class whose representative
    it matches (equivalence need not be transitive, SPEC §11 quirk 8), and a new class opens only
    if it matches none. The winner has the largest total weight; ties go to the class with more
    members, then to one whose answer reads as a number (``answers.numeric_value``), then to the
    earlier class. (The original kept the class that reached the maximum first, which hands ties
    to whichever answer happened to be sampled early.) Candidates without an answer never vote.
    """
    if aggregation not in STEP_AGGREGATIONS:
        raise ValueError(f"unknown step aggregation {aggregation!r}; expected one of {', '.join(STEP_AGGREGATIONS)}")
    same = _CachedEquivalence(equivalent)
    classes: list[VoteClass] = []
    for answer, step_scores in candidates:
        if answer is None:
            continue
        weight = aggregate_scores(step_scores, aggregation) if weighted else 1.0
        matched = False
        for vote_class in classes:
            if same(answer, vote_class.answer):
                matched = True
                vote_class.weight += weight
                vote_class.count += 1
        if not matched:
            classes.append(VoteClass(answer=answer, weight=weight, count=1))
    if not classes:
        return classes, None

    def rank(index: int) -> tuple[float, int, bool, int]:
        c = classes[index]
        return (c.weight, c.count, numeric_value(c.answer) is not None, -index)

    return classes, max(range(len(classes)), key=rank)


def vote_table(
    candidates: Candidates,
    selection: AnswerSelection = "weighted_majority",
    aggregation: StepAggregation = "last",
    *,
    equivalent: Equivalence = answers_equivalent,
) -> list[VoteClass]:
    """The equivalence classes a majority vote forms, with their weights, in creation order.

    ``selection="majority"`` gives every candidate weight 1; ``highest_score`` is reported like
    ``weighted_majority`` (the table is for inspection; the selection itself differs).
    """
    classes, _ = _vote(candidates, resolve_selection(selection) != "majority", aggregation, equivalent)
    return classes


def resolve_selection(name: str) -> AnswerSelection:
    """The answer selection ``name`` names: itself, or the new name of a renamed selection (with a
    DeprecationWarning). ValueError for an unknown name."""
    if name in RENAMED_SELECTIONS:
        new = RENAMED_SELECTIONS[name]
        warnings.warn(f"answer selection {name!r} is now called {new!r}", DeprecationWarning, stacklevel=2)
        return new
    if name not in ANSWER_SELECTIONS:
        raise ValueError(f"unknown answer selection {name!r}; expected one of {', '.join(ANSWER_SELECTIONS)}")
    return cast(AnswerSelection, name)


def select_answer(
    candidates: Candidates,
    selection: AnswerSelection = "weighted_majority",
    aggregation: StepAggregation = "last",
    *,
    equivalent: Equivalence = answers_equivalent,
) -> str | None:
    """The final answer among finished trajectories ``(extracted answer or None, step scores)``.

    ``weighted_majority``: equivalence classes weighted by the aggregated step score (see
    ``_vote`` for the tie and overlap rules: weight, then count, then a numeric answer, then the
    earlier class); ``majority``: the same with weight 1;
    ``highest_score``: the answer of the candidate with the highest aggregated score (first on
    ties). Candidates without an answer are ignored; None if no candidate has one. Returns the
    winning class's representative, i.e. the first answer string of that class.
    """
    selection = resolve_selection(selection)
    if selection == "highest_score":
        if aggregation not in STEP_AGGREGATIONS:
            raise ValueError(
                f"unknown step aggregation {aggregation!r}; expected one of {', '.join(STEP_AGGREGATIONS)}"
            )
        best_answer: str | None = None
        best_score = -math.inf
        for answer, step_scores in candidates:
            if answer is None:
                continue
            score = aggregate_scores(step_scores, aggregation)
            if best_answer is None or score > best_score:
                best_answer, best_score = answer, score
        return best_answer
    classes, best = _vote(candidates, selection == "weighted_majority", aggregation, equivalent)
    return None if best is None else classes[best].answer
