"""The stable core API: thin wrappers over the Rust ``_core`` (docs/ARCHITECTURE.md, "The parts")."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from ets_async import _core
from ets_async._core import (
    CoreError,
    EtsInstance,
    SearchTree,
    beam_allocation,
    dvts_allocation,
    kv_blocks,
    kv_tokens,
    kv_unshared_tokens,
    reallocate_kept,
    rebase_allocation,
)
from ets_async.errors import SolverError
from ets_async.solver import solve_program

__all__ = [
    "CoreError",
    "SearchTree",
    "SolverError",
    "beam_allocation",
    "cluster_steps",
    "dvts_allocation",
    "EtsInstance",
    "EtsSelection",
    "ets_allocation",
    "ets_select",
    "select",
    "kv_blocks",
    "kv_tokens",
    "kv_unshared_tokens",
    "reallocate_kept",
    "rebase_allocation",
]

logger = logging.getLogger("ets_async")

@dataclass(frozen=True)
class EtsSelection:
    """One ETS selection: children per candidate, the kept set, and whether HiGHS failed."""

    counts: list[int]
    kept: list[bool]
    fell_back: bool


def select(instance: EtsInstance) -> EtsSelection:
    """Solve one frontier's ETS problem exactly, then re-allocate the budget (SPEC §5.6).

    A tree problem (coverage off or separable, or ``lambda_b == 0``) comes solved and re-allocated
    from Rust: the tree DP's kept set (``instance.kept``; its tie rule is in ``_core.pyi``) and
    ``instance.counts``. Otherwise HiGHS solves ``instance.program()``. The budget is re-allocated
    over the kept candidates with REBASE's rule; the counts sum to the budget.

    If HiGHS fails (``SolverError``) the REBASE allocation is returned with ``fell_back=True`` and a
    warning is logged on the ``ets_async`` logger (searches count these in ``metrics.solver_fallbacks``).
    """
    kept, counts = instance.kept, instance.counts
    if kept is not None and counts is not None:  # a tree problem, solved and re-allocated in Rust
        return EtsSelection(counts, kept, fell_back=False)
    try:
        kept = solve_program(instance.program())
    except SolverError as exc:
        logger.warning("ETS program not solved, falling back to the REBASE allocation: %s", exc)
        counts = instance.reallocate([True] * instance.num_candidates)  # everything kept = REBASE
        return EtsSelection(counts, [c > 0 for c in counts], fell_back=True)
    return EtsSelection(instance.reallocate(kept), kept, fell_back=False)


def ets_select(
    parents: Sequence[int],
    candidates: Sequence[int],
    scores: Sequence[float],
    cluster_labels: Sequence[int] | None,
    budget: int,
    lambda_b: float,
    lambda_s: float,
    softmax_temperature: float,
    cost: Literal["nodes", "tokens"] = "nodes",
    step_tokens: Sequence[int] | None = None,
) -> EtsSelection:
    """ETS selection (SPEC §5) on a frontier given as a parent array: ``select`` of its instance.

    ``parents[v]`` is node v's parent (-1 for the root), ``candidates`` the frontier node ids;
    ``scores[i]`` and ``cluster_labels[i]`` belong to ``candidates[i]`` (``None`` disables the
    coverage term). Bad input raises ``CoreError``. A search builds the instance from its
    ``SearchTree`` instead (``SearchTree.ets_instance``), without exporting the tree.
    """
    instance = _core.ets_instance(
        list(parents),
        list(candidates),
        list(scores),
        None if cluster_labels is None else list(cluster_labels),
        budget,
        lambda_b,
        lambda_s,
        softmax_temperature,
        cost=cost,
        step_tokens=None if step_tokens is None else list(step_tokens),
    )
    return select(instance)


def ets_allocation(
    parents: Sequence[int],
    candidates: Sequence[int],
    scores: Sequence[float],
    cluster_labels: Sequence[int] | None,
    budget: int,
    lambda_b: float,
    lambda_s: float,
    softmax_temperature: float,
    cost: Literal["nodes", "tokens"] = "nodes",
    step_tokens: Sequence[int] | None = None,
) -> list[int]:
    """ETS children counts per candidate: ``ets_select(...).counts`` (part of this module's stable API)."""
    return ets_select(
        parents, candidates, scores, cluster_labels, budget, lambda_b, lambda_s, softmax_temperature, cost, step_tokens
    ).counts


def cluster_steps(embeddings: np.ndarray | Sequence[Sequence[float]], threshold: float) -> list[int]:
    """Cluster step embeddings (SPEC §5.4): average-linkage cosine, cut at ``threshold``.

    Same partition as SciPy's ``fcluster(linkage(X, "average", "cosine"), threshold,
    criterion="distance")``, labelled 0..K-1 in order of first appearance. ``embeddings`` is an
    (n, dim) array or a list of equal-length rows.
    """
    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    if x.size == 0:
        return []
    if x.ndim != 2:
        raise CoreError(f"embeddings must be a 2-D (n, dim) array, got {x.ndim} dimension(s)")
    dim = x.shape[1]
    return _core.cluster_labels(x.tobytes(), dim, threshold)
