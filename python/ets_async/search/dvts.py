"""DVTS: independent subtrees, each a greedy beam of width one with its own budget (SPEC §6)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

from .. import core
from ..core import SearchTree
from ..registry import DvtsSettings, MethodSettings
from .method import Allocation, Frontier

if TYPE_CHECKING:
    from ..config import SearchConfig


class Dvts:
    settings: ClassVar[type[MethodSettings] | None] = DvtsSettings
    needs_embeddings = False
    independent = False
    offload = False  # a few Rust calls per selection (well under a millisecond): cheaper inline than a thread hop

    def __init__(self, config: SearchConfig) -> None:
        self.num_subtrees = DvtsSettings.of(config).dvts_subtrees or math.ceil(math.sqrt(config.width))
        self.subtree_budget = config.width // self.num_subtrees
        self.budgets: list[int] = []  # per subtree, assigned at the first selection

    def subtree(self, tree: SearchTree, node: int) -> int:
        """The subtree a node belongs to: the group of its depth-1 ancestor."""
        return self._group_of_first_step[tree.path(node)[1]]

    def allocate(self, frontier: Frontier) -> Allocation:
        if not self.budgets:
            first_steps = dict.fromkeys(frontier.tree.path(v)[1] for v in frontier.candidates)
            self._split(list(first_steps))
        groups = [self.subtree(frontier.tree, v) for v in frontier.candidates]
        return Allocation(core.dvts_allocation(groups, frontier.scores, self.budgets))

    def _split(self, first_steps: list[int]) -> None:
        """Split the live first steps (the root's children at depth 1), in order, into contiguous
        groups; fewer groups if there are fewer first steps."""
        n = len(first_steps)
        groups = min(self.num_subtrees, n)
        self._group_of_first_step = {v: i * groups // n for i, v in enumerate(first_steps)}
        self.budgets = [self.subtree_budget] * groups

    def retired(self, tree: SearchTree, nodes: Sequence[int]) -> None:
        for v in nodes:
            if tree.depth(v) >= 1 and self.budgets:
                self.budgets[self.subtree(tree, v)] -= 1
