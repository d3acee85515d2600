"""ETS (Hooper et al. 2025): an integer program keeps the candidates worth their KV cost and
semantic coverage, then REBASE re-allocates the budget over the kept set (ets_spec §5)."""

from __future__ import annotations

from .. import core
from ..config import PAPER_CLUSTER_THRESHOLD, SearchConfig
from .method import Allocation, Frontier, StatelessMethod


class Ets(StatelessMethod):
    offload = True  # clustering, the ETS problem and, in the general case, HiGHS: up to milliseconds
    def __init__(self, config: SearchConfig) -> None:
        self.lambda_b = config.lambda_b
        self.lambda_s = config.coverage_weight
        self.softmax_temperature = config.softmax_temperature
        self.cluster_threshold = (
            PAPER_CLUSTER_THRESHOLD if config.cluster_threshold is None else config.cluster_threshold
        )
        self.cost = config.kv_cost
        self.needs_embeddings = self.lambda_s > 0

    def cluster_labels(self, frontier: Frontier) -> list[int] | None:
        """Clusters of the newest steps; None when coverage is off or cannot matter (ets_spec §5.4)."""
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
