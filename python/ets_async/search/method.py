"""The SearchMethod protocol: a method only decides how many children each frontier node gets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np

from ..core import SearchTree
from ..registry import MethodSettings

if TYPE_CHECKING:
    from ..config import SearchConfig


@dataclass(frozen=True)
class Frontier:
    """What a method sees at one selection step (depth >= 1)."""

    tree: SearchTree
    candidates: list[int]
    scores: list[float]
    budget: int
    depth: int
    embeddings: np.ndarray | None  # newest-step embeddings of the candidates, if the method asked
    step_texts: Sequence[str]  # newest-step texts of the candidates


@dataclass(frozen=True)
class Allocation:
    """Children per candidate, whether the exact selection had to fall back, and how many semantic
    clusters the candidates formed (None when the method did not cluster)."""

    counts: list[int]
    solver_fallback: bool = False
    clusters: int | None = None


class SearchMethod(Protocol):
    """One per problem (methods may keep per-tree state, e.g. DVTS subtree budgets)."""

    settings: ClassVar[type[MethodSettings] | None]  # the method's own SearchConfig fields, if any
    needs_embeddings: bool
    offload: bool  # run ``allocate`` in the selection pool; False: inline, for rules cheaper than a thread hop
    independent: bool  # trajectories are independent samples from the root, so a stop rule samples them in waves

    def allocate(self, frontier: Frontier) -> Allocation:
        """Children counts for ``frontier.candidates``; in the selection pool when ``offload``."""
        ...

    def retired(self, tree: SearchTree, nodes: Sequence[int]) -> None:
        """Nodes that just finished or hit the token cap (each consumed one unit of budget)."""
        ...


class StatelessMethod:
    """Shared defaults for methods that keep no per-tree state, need no embeddings, and allocate with
    one Rust call of a few microseconds (inline: a hop to the selection pool costs more)."""

    settings: ClassVar[type[MethodSettings] | None] = None
    needs_embeddings = False
    offload = False
    independent = False

    def retired(self, tree: SearchTree, nodes: Sequence[int]) -> None:
        pass


class MethodFactory(Protocol):
    """A method class: its settings and how to make one per problem."""

    @property
    def settings(self) -> type[MethodSettings] | None: ...

    def __call__(self, config: SearchConfig) -> SearchMethod: ...
