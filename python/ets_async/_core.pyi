"""Rust core of ets_async (built from ``rust/`` by maturin; this stub carries its documentation).

Pure, synchronous and deterministic functions of plain lists: REBASE/ETS/beam/DVTS allocation
rules, the ETS selection problem (solved exactly by a tree DP when it is a tree problem, else posed
as HiGHS arrays), step clustering, KV-size accounting, and the per-problem ``SearchTree``. Every
function copies its arguments into Rust and releases the GIL while it computes, so calls from
several threads run on several cores.

Node ids are ints indexing ``parents`` (``parents[v]`` is v's parent, ``-1`` for the single root;
node order is free). Every invalid input raises ``CoreError`` (a ``ValueError``) whose message
says what to fix; no input makes the extension panic. ``CoreError`` is
``ets_async.errors.CoreError``, so ``except EtsError`` catches it too.
"""

from typing import final

import numpy as np
from numpy.typing import NDArray

from ets_async.errors import CoreError as CoreError

__all__ = [
    "CoreError",
    "rebase_allocation",
    "reallocate_kept",
    "beam_allocation",
    "dvts_allocation",
    "kv_tokens",
    "kv_blocks",
    "kv_unshared_tokens",
    "cluster_labels",
    "ets_instance",
    "EtsInstance",
    "EtsProgram",
    "SearchTree",
]

def rebase_allocation(scores: list[float], budget: int, softmax_temperature: float) -> list[int]:
    """REBASE's children counts per candidate (SPEC §4), in input order.

    Candidates are ranked by score, highest first; equal scores put the later input index
    first (the original sorts ascending, then reverses). In that order candidate i receives
    ``n_i = ceil(b * e_i / S)`` clamped to ``[0, b]``, then ``b -= n_i`` and ``S -= e_i``, where
    ``e_i = exp((r_i - r_max) / T)`` in float32 (subtracting the maximum score leaves every ratio
    unchanged and keeps float32 ``exp`` from overflowing), ``S`` is the sum of the weights not
    yet visited and ``b`` the budget not yet handed out. If ``S`` stops being a finite number
    > 0, the next candidate takes the remaining budget, and the last candidate always takes what
    is left, so the counts sum exactly to ``budget``.

    Arguments:
        scores: PRM score per candidate (finite).
        budget: children to hand out (>= 0).
        softmax_temperature: T > 0 (the paper uses 0.2).

    Returns:
        One count per candidate; ``[]`` for empty ``scores``, all zeros for ``budget == 0``.

    Raises:
        CoreError: a NaN or infinite score, ``budget < 0``, or ``softmax_temperature <= 0``.
    """

def reallocate_kept(scores: list[float], kept: list[bool], budget: int, softmax_temperature: float) -> list[int]:
    """ETS's final re-allocation (SPEC §5.6): ``rebase_allocation`` over the kept candidates.

    Pruned candidates weigh ``exp(-inf) = 0`` and get 0; kept ones share the whole budget with
    REBASE's rule and tie order. Kept candidates that rank low may still get 0.

    Arguments:
        scores: PRM score per candidate (finite).
        kept: whether the ETS program kept each candidate (same length as ``scores``).
        budget: children to hand out (>= 0).
        softmax_temperature: T > 0.

    Returns:
        One count per candidate, summing exactly to ``budget``.

    Raises:
        CoreError: no candidate kept, mismatched lengths, or the errors of ``rebase_allocation``.
    """

def beam_allocation(scores: list[float], budget: int, keep: int | None = None) -> list[int]:
    """Beam-search children counts per candidate (SPEC §6), in input order.

    The ``keep`` best candidates by score (equal scores: lower index first) each get
    ``ceil(budget / keep)`` children, all others 0; the total may exceed ``budget``, as in the
    original. Depth 0 is the caller's business: there the root alone gets the whole budget.

    Arguments:
        scores: PRM score per candidate (finite).
        budget: the remaining width (>= 0); 0 gives all zeros.
        keep: beam width (>= 1); ``None`` means ``ceil(sqrt(budget))``.

    Returns:
        One count per candidate.

    Raises:
        CoreError: ``keep < 1``, ``budget < 0`` or a non-finite score.
    """

def dvts_allocation(groups: list[int], scores: list[float], group_budgets: list[int]) -> list[int]:
    """DVTS children counts per candidate (SPEC §6), in input order.

    For each group present among the candidates, its best-scoring candidate (equal scores: lower
    index) gets ``group_budgets[g]`` children (0 if that budget is <= 0); all others get 0.

    Arguments:
        groups: subtree id per candidate, an index into ``group_budgets``.
        scores: PRM score per candidate (finite).
        group_budgets: remaining budget per subtree.

    Returns:
        One count per candidate.

    Raises:
        CoreError: mismatched lengths, a group id outside ``0..len(group_budgets)``, or a
            non-finite score.
    """

def kv_tokens(parents: list[int], step_tokens: list[int], live: list[int]) -> int:
    """The ETS KV metric (SPEC §8.1): tokens in the union of the live nodes' root paths.

    Sums ``step_tokens[v]`` over every node on a root-to-live-node path, each node once.

    Arguments:
        parents: parent index per node, -1 for the root (exactly one root, no cycles).
        step_tokens: step length per node (>= 0); the root's entry is the prompt length, or 0
            to leave the prompt out.
        live: node ids (duplicates count once; ``[]`` gives 0).

    Returns:
        The number of token positions held with perfect prefix sharing.

    Raises:
        CoreError: malformed ``parents``, ``step_tokens`` not one non-negative count per node,
            or a live id that is not a node.
    """

def kv_blocks(parents: list[int], step_tokens: list[int], live: list[int], block_size: int) -> int:
    """KV blocks held by an engine with block-granular prefix caching for the live paths.

    A live path of length L (the sum of ``step_tokens`` along root..v) has full blocks
    ``b = 0 .. L // block_size - 1``, each identified by (the node holding the block's last
    token, at position ``(b + 1) * block_size - 1``, and ``b``). The result is the number of
    distinct full-block identities over all live paths, plus one private partial block for each
    distinct live path with ``L % block_size != 0``.

    Arguments:
        parents: parent index per node, -1 for the root.
        step_tokens: step length per node (>= 0).
        live: node ids (duplicates count once).
        block_size: the engine's KV block size in tokens (>= 1).

    Returns:
        The number of KV blocks.

    Raises:
        CoreError: as ``kv_tokens``, or ``block_size < 1``.
    """

def kv_unshared_tokens(parents: list[int], step_tokens: list[int], live: list[int]) -> int:
    """The no-sharing KV total: the sum of the full path lengths of the distinct live nodes.

    Arguments:
        parents: parent index per node, -1 for the root.
        step_tokens: step length per node (>= 0).
        live: node ids (duplicates count once).

    Returns:
        The number of token positions held without prefix sharing.

    Raises:
        CoreError: as ``kv_tokens``.
    """

def cluster_labels(embeddings: bytes, dim: int, threshold: float) -> list[int]:
    """Average-linkage cosine clustering of step embeddings, cut at ``threshold`` (SPEC §5.4).

    Two rows share a cluster iff the average-linkage dendrogram (cosine distance ``1 - cos``,
    computed in float64) joins them at a height <= ``threshold``: SciPy's
    ``fcluster(linkage(X, "average", "cosine"), threshold, criterion="distance")`` partition.
    A zero vector is at distance 1.0 from every row, another zero vector included (SciPy would
    reject it).

    Arguments:
        embeddings: ``n * dim`` little-endian float32 values, row-major
            (``arr.astype("<f4").tobytes()``); n may be 0.
        dim: values per row (>= 1).
        threshold: cut height (the paper uses 0.05); a negative threshold puts every row alone.

    Returns:
        A label per row, ``0..K-1`` numbered in order of first appearance (``[]`` for n = 0,
        ``[0]`` for n = 1).

    Raises:
        CoreError: ``dim < 1``, a byte length that is not a multiple of ``4 * dim``, a NaN or
            infinite component, or a NaN threshold.
    """

def ets_instance(
    parents: list[int],
    candidates: list[int],
    scores: list[float],
    cluster_labels: list[int] | None,
    budget: int,
    lambda_b: float,
    lambda_s: float,
    softmax_temperature: float,
    cost: str = "nodes",
    step_tokens: list[int] | None = None,
) -> EtsInstance:
    """The ETS selection problem (SPEC §5) of a frontier given as a parent array.

    ``SearchTree.ets_instance`` builds the same problem from a live tree without exporting it.

    Arguments:
        parents: parent index per node, -1 for the root.
        candidates: the frontier node ids (non-empty, distinct, none above another).
        scores: PRM score per candidate (finite).
        cluster_labels: cluster label per candidate, or None to disable the coverage term.
        budget: the remaining width (>= 1).
        lambda_b: node (KV) cost weight (finite, >= 0).
        lambda_s: coverage weight (finite, >= 0), divided by K.
        softmax_temperature: T > 0 for the outcome scores and the re-allocation.
        cost: ``"nodes"`` or ``"tokens"``.
        step_tokens: step length per node (indexed like ``parents``); required for
            ``cost="tokens"``.

    Returns:
        The problem, already solved when it is a tree problem (``EtsInstance.kept``).

    Raises:
        CoreError: malformed ``parents``; empty, duplicate, unknown or non-frontier candidates;
            mismatched lengths; ``budget < 1``; a negative or non-finite lambda;
            ``softmax_temperature <= 0``; an unknown ``cost``; ``cost="tokens"`` without
            ``step_tokens``.
    """

@final
class EtsInstance:
    """One frontier's ETS problem (SPEC §5): maximise over kept sets of candidates

    ``Σ_i O_i x_i + coef (Σ_j C_j y_j + Σ_i C_i x_i) + (λ_s/K) Σ_k c_k`` with ``Σ_i x_i >= 1``,
    where ``y_j`` (ancestor j live) is the OR of the kept candidates below j and ``c_k`` (cluster k
    covered) the OR of its kept members. ``O_i = a_i / budget`` with ``a`` the REBASE allocation of
    §4, except that equal scores keep input order (the original's ``sorted(..., reverse=True)``,
    §5.2). ``coef = -lambda_b``, or ``+1e-4`` when ``lambda_b == 0`` (the original's tiny reward per
    kept node). Node cost ``C_v``: ``"nodes"``: ``1 / (M + N)``; ``"tokens"``: ``step_tokens[v] /
    Σ_{u ∈ A ∪ L} step_tokens[u]`` (node cost if that sum is 0). Coverage is active when cluster
    labels are given and ``lambda_s > 0``; K counts the distinct labels.

    A tree problem is solved exactly when the instance is built, in linear time (``kept``):
    without coverage, or when every cluster has one member (covering it is then a bonus on that
    member), a dynamic program over the tree; when ``lambda_b == 0``, every term grows with the
    kept set and every candidate is kept. The DP breaks ties between equally good kept sets (whose
    re-allocations may differ) by a fixed rule, on the floating-point values: a subtree whose best
    value is exactly 0 is kept; where every child subtree of a live ancestor is negative, the
    highest is kept, and among equal ones the one holding the lowest candidate index. Otherwise
    ``kept`` is None and ``program()`` poses the problem for HiGHS.
    """

    @property
    def kept(self) -> list[bool] | None:
        """The optimal kept flag per candidate when this is a tree problem, else None."""

    @property
    def counts(self) -> list[int] | None:
        """``reallocate(kept)`` when this is a tree problem (computed with ``kept``), else None."""

    @property
    def num_candidates(self) -> int:
        """Number of candidates, N."""

    @property
    def num_clusters(self) -> int:
        """Number of clusters K (0 when coverage is off)."""

    @property
    def ancestors(self) -> list[int]:
        """The ancestor node ids A (every node above a candidate, root included), parents first
        (the program's ``y`` columns follow this order)."""

    @property
    def outcome(self) -> list[float]:
        """Outcome score ``O_i = a_i / budget`` per candidate."""

    def objective(self, kept: list[bool]) -> float:
        """The objective (to maximise) of a kept set, straight from the formula.

        Raises:
            CoreError: ``kept`` is not one flag per candidate.
        """

    def reallocate(self, kept: list[bool]) -> list[int]:
        """Children per candidate for a kept set: ``reallocate_kept`` over the instance's scores,
        budget and temperature (SPEC §5.6); all kept gives REBASE's allocation.

        Raises:
            CoreError: nothing kept, or ``kept`` is not one flag per candidate.
        """

    def program(self) -> EtsProgram:
        """The problem as a HiGHS integer program (layout in ``EtsProgram``).

        Raises:
            CoreError: the program is too large for HiGHS's 32-bit indices.
        """

@final
class EtsProgram:
    """The ETS program as a HiGHS minimisation (every maximisation coefficient negated), CSC form.

    The arrays are numpy arrays that own the buffers Rust built, ready for ``highspy``'s
    ``passModel`` as they are (float64 values, int32 indices). Columns: ``x_i`` per candidate
    (input order, ``num_x`` of them), ``y_j`` per ancestor with two or more children
    (``EtsInstance.ancestors`` order), then ``c_k`` per cluster of two or more members. Two exact
    reductions: an ancestor with a single child is live exactly when that child is, so its cost
    joins the child's column (or that of the chain below); a singleton cluster's reward joins its
    member's ``x`` cost. Rows: per edge of the reduced tree ``y_parent - y_j >= 0`` / ``y_parent -
    x_i >= 0`` (the spec's ``y_j >= x_i`` for i below j, chained along edges: same optima, one row
    per edge instead of one per pair); only when ``lambda_b == 0``, per y column ``y_j -
    Σ_{children} (y or x) <= 0`` (with a node cost ``y <= Σ x`` holds at every optimum anyway); per
    cluster column ``c_k - Σ_{i∈C_k} x_i <= 0``; last ``Σ_i x_i >= 1``. All columns binary;
    ``±1e30`` stands for an infinite row bound.
    """

    @property
    def num_col(self) -> int: ...
    @property
    def num_row(self) -> int: ...
    @property
    def num_x(self) -> int:
        """Number of candidate columns, N (the first columns)."""
    @property
    def offset(self) -> float:
        """Constant of the objective (0.0)."""
    @property
    def col_cost(self) -> NDArray[np.float64]: ...
    @property
    def col_lower(self) -> NDArray[np.float64]: ...
    @property
    def col_upper(self) -> NDArray[np.float64]: ...
    @property
    def integrality(self) -> NDArray[np.int32]:
        """All 1 (integer)."""
    @property
    def row_lower(self) -> NDArray[np.float64]: ...
    @property
    def row_upper(self) -> NDArray[np.float64]: ...
    @property
    def a_start(self) -> NDArray[np.int32]:
        """Column starts, ``num_col + 1`` entries."""
    @property
    def a_index(self) -> NDArray[np.int32]:
        """Row index per nonzero, ascending within a column."""
    @property
    def a_value(self) -> NDArray[np.float64]: ...

@final
class SearchTree:
    """One problem's search tree (SPEC §3): an arena of nodes in creation order.

    Node 0 is the root: its step is the prompt, score 1.0, depth 0, ``cum_tokens`` 0
    (``cum_tokens`` counts generated tokens only). Children are appended in bulk with
    consecutive ids. Node-id arguments that do not name a node raise ``CoreError``.
    """

    def __new__(cls, prompt_token_ids: list[int], width: int, max_tokens: int) -> SearchTree:
        """A tree holding only the root.

        Arguments:
            prompt_token_ids: the root prompt's token ids (each in ``0..2**32``).
            width: the search budget W (>= 1), the initial ``remaining_budget``.
            max_tokens: cap on generated tokens per trajectory (>= 1); ``retire`` retires nodes
                that reach it.

        Raises:
            CoreError: a bad token id, ``width < 1`` or ``max_tokens < 1``.
        """

    @property
    def num_nodes(self) -> int:
        """Number of nodes, root included."""

    @property
    def remaining_budget(self) -> int:
        """``width`` minus the trajectories retired so far, floored at 0 (an over-allocating
        rule such as beam search can retire more trajectories than the budget)."""

    @property
    def max_tokens(self) -> int:
        """The cap on generated tokens per trajectory."""

    def __len__(self) -> int:
        """Number of nodes, root included."""

    def add_children(self, parent: int, steps: list[list[int]], scores: list[float], finished: list[bool]) -> list[int]:
        """Append one child of ``parent`` per step; nothing is added if any argument is rejected.

        ``child.depth = parent.depth + 1``, ``child.cum_tokens = parent.cum_tokens + len(step)``.

        Arguments:
            parent: an unfinished node.
            steps: the generated token ids of each child.
            scores: PRM score of each child's step (finite).
            finished: whether each child holds a final answer.

        Returns:
            The new node ids (consecutive).

        Raises:
            CoreError: unknown or finished parent, mismatched lengths, a non-finite score or a
                bad token id.
        """

    def parent(self, v: int) -> int:
        """Parent of node ``v``, -1 for the root."""

    def depth(self, v: int) -> int:
        """Depth of node ``v`` (root 0)."""

    def score(self, v: int) -> float:
        """PRM score of node ``v``'s step (root 1.0)."""

    def is_finished(self, v: int) -> bool:
        """Whether node ``v`` holds a final answer."""

    def cum_tokens(self, v: int) -> int:
        """Generated tokens on node ``v``'s root path (the prompt excluded)."""

    def step_len(self, v: int) -> int:
        """Length of node ``v``'s own step (the prompt length for the root)."""

    def prompt_token_ids(self, v: int) -> list[int]:
        """The prompt followed by every step on the path root..v: the exact token ids a child
        of ``v`` is generated from."""

    def path(self, v: int) -> list[int]:
        """Node ids on the path root..v, root first."""

    def path_scores(self, v: int) -> list[float]:
        """Scores of the nodes on the path root..v, the root excluded (the step scores)."""

    def parents(self) -> list[int]:
        """The parent array (-1 for the root), as taken by ``kv_tokens`` and ``ets_instance``."""

    def step_lengths(self, include_prompt: bool) -> list[int]:
        """Every node's step length; the root's entry is the prompt length if
        ``include_prompt``, else 0."""

    def ets_instance(
        self,
        candidates: list[int],
        cluster_labels: list[int] | None,
        budget: int,
        lambda_b: float,
        lambda_s: float,
        softmax_temperature: float,
        cost: str = "nodes",
    ) -> EtsInstance:
        """The ETS problem of a frontier of this tree, built in Rust without exporting the tree.

        Same problem as ``ets_instance(parents(), candidates, scores, ...)`` with each candidate's
        PRM score and, for ``cost="tokens"``, ``step_lengths(False)`` (the prompt costs nothing).
        Releases the GIL while it builds and solves; meanwhile another thread must not change
        this tree (the search loop's selection runs while its problem's coroutine waits).

        Raises:
            CoreError: an unknown, duplicate or non-frontier candidate, and the argument errors of
                ``ets_instance``.
        """

    def retire(self, nodes: list[int]) -> tuple[list[int], list[int]]:
        """Budget bookkeeping for the nodes just created (SPEC §3.2).

        Every node that is finished or whose ``cum_tokens`` reached ``max_tokens`` consumes one
        unit of budget. Each node may be passed once over the tree's life; nothing changes if any
        id is rejected.

        Arguments:
            nodes: the new nodes to classify.

        Returns:
            ``(frontier, retired)``: the nodes that stay candidates and the nodes that consumed
            budget, both in input order.

        Raises:
            CoreError: an unknown node, a node listed twice, or a node already passed to
                ``retire``.
        """

    def would_retire(self, parent: int, step_tokens: int, finished: bool) -> bool:
        """Whether a child of ``parent`` with ``step_tokens`` generated tokens and the ``finished``
        flag would be retired by ``retire`` (finished, or ``cum_tokens`` reaching ``max_tokens``),
        asked before the child is added.

        Raises:
            CoreError: an unknown parent.
        """

    def finished_nodes(self) -> list[int]:
        """Nodes with the finished flag (candidate answers), in id order."""

    def kv(self, live: list[int], block_size: int) -> tuple[int, int, int]:
        """KV sizes of the live set, the prompt counted (root step = prompt length).

        Same results as ``kv_tokens``, ``kv_blocks`` and ``kv_unshared_tokens`` on
        ``(parents(), step_lengths(True), live)``, computed incrementally: the walk covers only
        the union of the live paths.

        Arguments:
            live: node ids (duplicates count once).
            block_size: the engine's KV block size in tokens (>= 1).

        Returns:
            ``(kv_tokens, kv_blocks, unshared_tokens)``.

        Raises:
            CoreError: an unknown node or ``block_size < 1``.
        """
