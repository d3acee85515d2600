"""REBASE (Wu et al. 2024): children in proportion to softmax(PRM score / T), sequential ceil."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import core
from .method import Allocation, Frontier, StatelessMethod

if TYPE_CHECKING:
    from ..config import SearchConfig


class Rebase(StatelessMethod):
    def __init__(self, config: SearchConfig) -> None:
        self.softmax_temperature = config.softmax_temperature

    def allocate(self, frontier: Frontier) -> Allocation:
        return Allocation(core.rebase_allocation(frontier.scores, frontier.budget, self.softmax_temperature))
