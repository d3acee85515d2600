"""Beam search: the top-k candidates by PRM score each get ceil(B / k) children (ets_spec §6)."""

from __future__ import annotations

from .. import core
from ..config import SearchConfig
from .method import Allocation, Frontier, StatelessMethod


class BeamSearch(StatelessMethod):
    def __init__(self, config: SearchConfig) -> None:
        self.keep = config.beam_keep  # None: ceil(sqrt(B)) of the current budget

    def allocate(self, frontier: Frontier) -> Allocation:
        return Allocation(core.beam_allocation(frontier.scores, frontier.budget, self.keep))
