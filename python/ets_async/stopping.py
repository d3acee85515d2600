"""When a problem's answer is settled, so that its search may stop before the budget is spent
(``StopSettings``, SPEC §3.4).

The rule looks at the votes of the finished trajectories only, counted by ``voting.vote_table`` as
the answer selection counts them (weighted by the aggregated PRM score for ``weighted_majority``,
one each for ``majority``), and holds once ``stop_min_finished`` of them have an answer and either

- ``supermajority``: the leading answer holds at least ``stop_share`` of the vote weight, or
- ``posterior``: with a uniform prior on the leader's share of the top two answers' votes, the
  posterior ``Beta(lead + 1, runner_up + 1)`` puts probability ``stop_confidence`` above 1/2
  (the Beta stopping rule of Adaptive-Consistency, Aggarwal et al. 2023; weights act as counts).
"""

from __future__ import annotations

import numpy as np

from .registry import StopSettings
from .voting import AnswerSelection, Candidates, StepAggregation, vote_table

__all__ = ["leader_probability", "settled"]

_CELLS = 4096
_MIDPOINTS = (np.arange(_CELLS) + 0.5) / _CELLS


def leader_probability(lead: float, runner_up: float) -> float:
    """``P(X > 1/2)`` for ``X ~ Beta(lead + 1, runner_up + 1)`` (``lead``, ``runner_up`` >= 0).

    The midpoint rule on a fixed grid: both parameters are >= 1, so the density is bounded and
    smooth, and the sum is accurate to well below the confidences that matter (tests compare it
    with SciPy). Weights need not be whole numbers.
    """
    if lead < 0 or runner_up < 0:
        raise ValueError(f"vote weights must be >= 0, got {lead} and {runner_up}")
    log_density = lead * np.log(_MIDPOINTS) + runner_up * np.log1p(-_MIDPOINTS)
    density = np.exp(log_density - log_density.max())
    return float(density[_CELLS // 2 :].sum() / density.sum())


def settled(
    candidates: Candidates,
    settings: StopSettings,
    selection: AnswerSelection,
    aggregation: StepAggregation,
) -> bool:
    """Whether the finished trajectories ``(answer or None, step scores)`` settle the answer."""
    if settings.stop_when == "budget":
        return False
    if sum(answer is not None for answer, _ in candidates) < settings.stop_min_finished:
        return False
    weights = sorted((c.weight for c in vote_table(candidates, selection, aggregation)), reverse=True)
    lead, runner_up = weights[0], weights[1] if len(weights) > 1 else 0.0
    if settings.stop_when == "supermajority":
        # a class's weight is the sum over its members; one answer may match two classes (equivalence
        # need not be transitive), which only makes the total larger and the rule more cautious
        total = sum(weights)
        return total > 0 and lead >= settings.stop_share * total
    return leader_probability(lead, runner_up) >= settings.stop_confidence
