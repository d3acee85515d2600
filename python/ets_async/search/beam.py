"""Beam search: the top-k candidates by PRM score each get ceil(B / k) children (SPEC §6)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .. import core
from ..registry import BeamSettings, MethodSettings
from .method import Allocation, Frontier, StatelessMethod

if TYPE_CHECKING:
    from ..config import SearchConfig


class BeamSearch(StatelessMethod):
    settings: ClassVar[type[MethodSettings] | None] = BeamSettings

    def __init__(self, config: SearchConfig) -> None:
        self.keep = BeamSettings.of(config).beam_keep

    def allocate(self, frontier: Frontier) -> Allocation:
        return Allocation(core.beam_allocation(frontier.scores, frontier.budget, self.keep))
