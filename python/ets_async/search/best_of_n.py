"""Best-of-N: N independent samples from the root; every live trajectory gets one child, no pruning."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .method import Allocation, Frontier, StatelessMethod

if TYPE_CHECKING:
    from ..config import SearchConfig


class BestOfN(StatelessMethod):
    independent = True

    def __init__(self, config: SearchConfig) -> None:
        pass

    def allocate(self, frontier: Frontier) -> Allocation:
        return Allocation([1] * len(frontier.candidates))
