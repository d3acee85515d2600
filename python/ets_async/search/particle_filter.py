"""Particle filtering (Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time Scaling
of LLMs using Particle-Based Monte Carlo Methods"; its_hub's method): the live trajectories are
particles weighted by the PRM's score of their newest step, read as a likelihood; each round the
budget is resampled among them at random in proportion to the weights, so a trajectory the PRM
doubts still gets children now and then. That tolerates an imperfect PRM better than pruning.

Weights are the score's odds raised to ``1 / pf_temperature`` (``softmax(logit(score) / T)``):
T = 1 is the odds themselves, a lower T trusts the PRM more. The draws come from a generator seeded
with the search seed, so a run is repeatable.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..core import SearchTree
from ..registry import MethodSettings, ParticleFilterSettings
from .method import Allocation, Frontier

if TYPE_CHECKING:
    from ..config import SearchConfig

_CLIP = 1e-6


def resampling_weights(scores: list[float], temperature: float) -> np.ndarray:
    """softmax(logit(score) / temperature): each particle's share of the next round's children."""
    p = np.clip(np.asarray(scores, dtype=np.float64), _CLIP, 1.0 - _CLIP)
    logits = (np.log(p) - np.log1p(-p)) / temperature
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


class ParticleFilter:
    settings: ClassVar[type[MethodSettings] | None] = ParticleFilterSettings
    needs_embeddings = False
    independent = False
    offload = False  # one draw of a few numbers: cheaper inline than a thread hop

    def __init__(self, config: SearchConfig) -> None:
        self.temperature = ParticleFilterSettings.of(config).pf_temperature
        self.rng = np.random.default_rng(config.seed)

    def allocate(self, frontier: Frontier) -> Allocation:
        weights = resampling_weights(frontier.scores, self.temperature)
        return Allocation([int(k) for k in self.rng.multinomial(frontier.budget, weights)])

    def retired(self, tree: SearchTree, nodes: Sequence[int]) -> None:
        pass
