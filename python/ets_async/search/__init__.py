"""Search methods by name. Each differs only in how it allocates children; the loop is shared."""

from __future__ import annotations

from .beam import BeamSearch
from .best_of_n import BestOfN
from .dvts import Dvts
from .ets import Ets
from .method import MethodFactory
from .particle_filter import ParticleFilter
from .rebase import Rebase

METHODS: dict[str, MethodFactory] = {
    "ets": Ets,
    "rebase": Rebase,
    "beam": BeamSearch,
    "dvts": Dvts,
    "best_of_n": BestOfN,
    "particle_filter": ParticleFilter,
}

__all__ = ["METHODS"]
