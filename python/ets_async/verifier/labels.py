"""Value labels for the nodes of searched trees: a leaf is right or wrong by the grader, an inner node
is worth the share of right leaves below it (the Monte-Carlo value of the partial solution, as in
Math-Shepherd, ReST-MCTS* and TreeRL). Pure functions of run-file records."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..grading import grade
from ..types import ProblemResult

Grader = Callable[[str | None, str | None], bool | None]


@dataclass(frozen=True)
class LabeledTree:
    """One problem's tree with a value label for every node that has a graded leaf below it.

    ``nodes`` are node ids (root excluded), each with its ``depth`` (1 = first step), ``value`` (share of
    right leaves below, 1.0 or 0.0 at a leaf), ``leaves`` (graded leaves below), ``is_leaf`` and
    ``search_score`` (what the run's own PRM gave the step: the baseline a verifier must beat).
    ``steps`` are the step texts of every node of the tree, ``parents`` its parent ids."""

    problem_id: str
    problem: str
    parents: tuple[int, ...]
    steps: tuple[str, ...]
    nodes: tuple[int, ...]
    depth: tuple[int, ...]
    value: tuple[float, ...]
    leaves: tuple[int, ...]
    is_leaf: tuple[bool, ...]
    search_score: tuple[float, ...]

    def path(self, node: int) -> list[int]:
        """Node ids from the first step to ``node``."""
        out = []
        while node > 0:
            out.append(node)
            node = self.parents[node]
        return out[::-1]

    @property
    def mixed(self) -> bool:
        """Whether the tree has both right and wrong leaves (only those can rank within a problem)."""
        leaf_values = {v for v, leaf in zip(self.value, self.is_leaf, strict=True) if leaf}
        return leaf_values == {0.0, 1.0}


def node_values(parents: Sequence[int], leaf_right: Mapping[int, bool]) -> dict[int, tuple[float, int]]:
    """``node -> (share of right leaves below, number of leaves below)`` for every node (root included)
    that has at least one of the graded ``leaf_right`` nodes in its subtree (a leaf counts as below itself)."""
    right: dict[int, int] = {}
    total: dict[int, int] = {}
    for leaf, ok in leaf_right.items():
        node = leaf
        while node >= 0:
            total[node] = total.get(node, 0) + 1
            right[node] = right.get(node, 0) + bool(ok)
            node = parents[node]
    return {node: (right[node] / total[node], total[node]) for node in total}


def label_tree(result: ProblemResult, grader: Grader = grade) -> LabeledTree | None:
    """The labelled tree of one search result, or None when it cannot be labelled (an error, no
    reference answer, no tree or no finished trajectory)."""
    tree, reference = result.tree, result.reference
    if result.error or reference is None or not tree.parents or not result.candidates:
        return None
    parents = list(tree.parents)
    leaf_right = {c.node: bool(grader(c.answer, reference)) for c in result.candidates}
    values = node_values(parents, leaf_right)
    depth = [0] * len(parents)
    for node in range(1, len(parents)):  # parents come before their children
        depth[node] = depth[parents[node]] + 1
    nodes = sorted(n for n in values if n > 0)
    scores = tree.scores or (float("nan"),) * len(parents)
    return LabeledTree(
        problem_id=result.id,
        problem=result.problem,
        parents=tuple(parents),
        steps=tree.texts or ("",) * len(parents),
        nodes=tuple(nodes),
        depth=tuple(depth[n] for n in nodes),
        value=tuple(values[n][0] for n in nodes),
        leaves=tuple(values[n][1] for n in nodes),
        is_leaf=tuple(n in leaf_right for n in nodes),
        search_score=tuple(float(scores[n]) for n in nodes),
    )


def label_trees(results: Iterable[ProblemResult], grader: Grader = grade) -> list[LabeledTree]:
    """Every result that can be labelled, in order (failed problems are skipped)."""
    return [t for r in results if (t := label_tree(r, grader)) is not None]
