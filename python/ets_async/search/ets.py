"""ETS (Hooper et al. 2025): an integer program keeps the candidates worth their KV cost and
semantic coverage, then REBASE re-allocates the budget over the kept set (SPEC §5)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .. import core
from ..registry import EtsSettings, MethodSettings
from .method import Allocation, Frontier, StatelessMethod

if TYPE_CHECKING:
    from ..config import SearchConfig

PAPER_CLUSTER_THRESHOLD = 0.05
"""The paper's cut, calibrated on its math-similarity BERT (SPEC §5.4); the recipes keep it."""
_PAPER_LAMBDA_S = {16: 1.5, 64: 1.4, 256: 1.45}  # per width (SPEC §9); other widths take the nearest


def paper_lambda_s(width: int) -> float:
    """The released λ_s for the paper's width nearest to ``width``."""
    nearest = min(_PAPER_LAMBDA_S, key=lambda w: (abs(w - width), w))
    return _PAPER_LAMBDA_S[nearest]


class Ets(StatelessMethod):
    settings: ClassVar[type[MethodSettings] | None] = EtsSettings
    offload = True  # clustering, the ETS problem and, in the general case, HiGHS: up to milliseconds

    def __init__(self, config: SearchConfig) -> None:
        settings = EtsSettings.of(config)
        self.lambda_b = settings.lambda_b
        self.lambda_s = paper_lambda_s(config.width) if settings.lambda_s is None else settings.lambda_s
        self.softmax_temperature = config.softmax_temperature
        self.cluster_threshold = (
            PAPER_CLUSTER_THRESHOLD if settings.cluster_threshold is None else settings.cluster_threshold
        )
        self.cost = settings.kv_cost
        self.needs_embeddings = self.lambda_s > 0

    def cluster_labels(self, frontier: Frontier) -> list[int] | None:
        """Clusters of the newest steps; None when coverage is off or cannot matter (SPEC §5.4)."""
        if frontier.embeddings is None or len(frontier.candidates) < 2 or len(set(frontier.step_texts)) < 2:
            return None
        return core.cluster_steps(frontier.embeddings, self.cluster_threshold)

    def allocate(self, frontier: Frontier) -> Allocation:
        labels = self.cluster_labels(frontier)
        instance = frontier.tree.ets_instance(
            frontier.candidates,
            labels,
            frontier.budget,
            self.lambda_b,
            self.lambda_s,
            self.softmax_temperature,
            cost=self.cost,
        )
        selection = core.select(instance)
        clusters = len(set(labels)) if labels is not None else None
        return Allocation(selection.counts, solver_fallback=selection.fell_back, clusters=clusters)
