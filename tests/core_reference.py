"""Pure-Python reference implementations of the core rules, written from docs/SPEC.md for the tests.

Nothing here is fast or clever: each function follows the spec's prose line by line so that the tests
compare the Rust core against an independent reading of the spec, not against the Rust code's own
arrays.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np


def rebase_reference(
    scores: Sequence[float],
    budget: int,
    softmax_temperature: float,
    *,
    kept: Sequence[bool] | None = None,
    earlier_first: bool = False,
) -> list[int]:
    """REBASE's sequential-ceil softmax rule (SPEC §4), in float32 like the original's torch code.

    Order: sort ascending (stable), then reverse, so equal scores put the later index first
    (``earlier_first=True``: Python's ``sorted(reverse=True)``, equal scores keep input order).
    Weights: e_i = exp((r_i - max r) / T) in float32 (subtracting the max changes nothing in exact
    arithmetic and keeps exp finite); S is their float32 sum in rank order. Then
    n_i = ceil(b * e_i / S) (float32), clamped to b; b -= n_i; S -= e_i. The last ranked candidate
    takes what is left.
    With ``kept`` (§5.6) the dropped candidates weigh exp(-inf) = 0 and the max is over kept ones.
    """
    n = len(scores)
    keep = [True] * n if kept is None else list(kept)
    counts = [0] * n
    if n == 0 or not any(keep) or budget == 0:
        return counts
    f32 = np.float32
    r = [float(x) for x in scores]
    if earlier_first:  # ETS's O_i (§5.2): sorted(reverse=True), equal scores keep input order
        ranked = sorted(range(n), key=lambda i: r[i], reverse=True)
    else:  # select_softmax and §5.6: sorted ascending, then reversed
        ranked = sorted(range(n), key=lambda i: r[i])[::-1]
    order = [i for i in ranked if keep[i]]
    top = max(r[i] for i in order)
    # w_i = (r_i - max) / T in double, rounded to float32; exp in float32 (correctly rounded here).
    e = {i: f32(math.exp(float(f32((r[i] - top) / softmax_temperature)))) for i in order}
    total = f32(0.0)
    for i in order:
        total = f32(total + e[i])
    b = budget
    for pos, i in enumerate(order):
        if b == 0:
            break
        if pos == len(order) - 1 or not (math.isfinite(total) and total > 0):
            n_i = b  # the last ranked candidate takes what is left (exactly ceil(b*e/e) = b)
        else:
            share = f32(f32(f32(b) * e[i]) / total)
            n_i = min(max(math.ceil(float(share)), 0), b)
        counts[i] = n_i
        b -= n_i
        total = f32(total - e[i])
    return counts


def rebase_exact(scores: Sequence[float], budget: int, softmax_temperature: float) -> list[int]:
    """The same rule in exact rational arithmetic over the same float32 weights.

    Differs from :func:`rebase_reference` only where float32 rounding of S or of b * e / S moves
    a share across an integer (SPEC §4 notes this cancellation); used to tell such cases
    apart from real violations of the rule's properties.
    """
    n = len(scores)
    counts = [0] * n
    if n == 0 or budget == 0:
        return counts
    r = [float(x) for x in scores]
    order = sorted(range(n), key=lambda i: r[i])[::-1]
    top = max(r)
    e = {
        i: Fraction(float(np.float32(math.exp(float(np.float32((r[i] - top) / softmax_temperature))))))
        for i in order
    }
    total = sum(e.values(), Fraction(0))
    b = budget
    for i in order:
        if b == 0:
            break
        n_i = min(math.ceil(b * e[i] / total), b)
        counts[i] = n_i
        b -= n_i
        total -= e[i]
    return counts


def ancestors_of(parents: Sequence[int], node: int) -> list[int]:
    """Every strict ancestor of ``node``, nearest first, up to and including the root."""
    out = []
    v = parents[node]
    while v != -1:
        out.append(v)
        v = parents[v]
    return out


class EtsObjective:
    """The §5.5 objective (to maximise) of keep-sets, computed from the formula, not from arrays.

    O_i = a_i / B with a = REBASE allocation, ties earlier index first (§5.2); every distinct live
    node (kept candidates and all their ancestors, root included) costs C = 1/(M+N)
    (``cost="nodes"``) or its share of the step tokens of all candidates and ancestors
    (``cost="tokens"``, node cost if those are all 0); the cost coefficient is -lambda_b, or +1e-4
    when lambda_b == 0 (§5.3); each covered cluster earns lambda_s / K (§5.4), when labels are
    given and lambda_s > 0.
    """

    def __init__(
        self,
        parents: Sequence[int],
        candidates: Sequence[int],
        scores: Sequence[float],
        cluster_labels: Sequence[int] | None,
        budget: int,
        lambda_b: float,
        lambda_s: float,
        softmax_temperature: float,
        *,
        cost: str = "nodes",
        step_tokens: Sequence[int] | None = None,
    ) -> None:
        alloc = rebase_reference(scores, budget, softmax_temperature, earlier_first=True)
        self.outcome = [a / budget for a in alloc]
        self.candidates = list(candidates)
        self.anc_sets = [frozenset(ancestors_of(parents, c)) for c in candidates]
        all_nodes = frozenset().union(*self.anc_sets) | set(candidates)
        tok_total = sum(step_tokens[v] for v in all_nodes) if cost == "tokens" else 0
        if cost == "tokens" and tok_total > 0:
            assert step_tokens is not None
            self.weight = {v: step_tokens[v] / tok_total for v in all_nodes}
        else:
            self.weight = {v: 1.0 / len(all_nodes) for v in all_nodes}
        self.coef = -lambda_b if lambda_b != 0 else 1e-4
        self.labels = list(cluster_labels) if cluster_labels is not None and lambda_s > 0 else None
        self.per_cluster = lambda_s / len(set(self.labels)) if self.labels else 0.0

    def __call__(self, kept: Sequence[bool]) -> float:
        live: set[int] = set()
        value = 0.0
        for i, c in enumerate(self.candidates):
            if kept[i]:
                value += self.outcome[i]
                live.add(c)
                live |= self.anc_sets[i]
        value += self.coef * sum(self.weight[v] for v in live)
        if self.labels is not None:
            covered = {self.labels[i] for i in range(len(self.candidates)) if kept[i]}
            value += self.per_cluster * len(covered)
        return value

    def best(self) -> float:
        """The best objective over all 2^N - 1 nonempty keep-sets (brute force, vectorised)."""
        return float(self._values()[1].max())

    def optima(self, tol: float = 1e-9) -> list[list[bool]]:
        """Every nonempty keep-set within ``tol`` of the best objective."""
        masks, values = self._values()
        return [[bool(b) for b in m] for m in masks[values >= values.max() - tol]]

    def _values(self) -> tuple[np.ndarray, np.ndarray]:
        """Every nonempty mask and its objective: the formula of ``__call__`` evaluated for all
        masks at once (a node is live under a mask if any kept candidate is the node or lies below
        it)."""
        n = len(self.candidates)
        masks = np.array(list(itertools.product([0, 1], repeat=n))[1:], dtype=np.int64)
        nodes = sorted(self.weight)
        covers = np.zeros((n, len(nodes)), dtype=np.int64)  # candidate i makes node live
        for i, c in enumerate(self.candidates):
            for v in self.anc_sets[i] | {c}:
                covers[i, nodes.index(v)] = 1
        live = (masks @ covers) > 0
        weights = np.array([self.weight[v] for v in nodes])
        values = masks @ np.array(self.outcome) + self.coef * (live @ weights)
        if self.labels is not None:
            distinct = sorted(set(self.labels))
            member = np.zeros((n, len(distinct)), dtype=np.int64)
            for i, label in enumerate(self.labels):
                member[i, distinct.index(label)] = 1
            values = values + self.per_cluster * ((masks @ member) > 0).sum(axis=1)
        return masks, values


def kv_tokens_reference(parents: Sequence[int], step_tokens: Sequence[int], live: Sequence[int]) -> int:
    """Tokens in the union of the root-to-node paths of ``live`` (§8.1), via a set of path nodes."""
    nodes: set[int] = set()
    for v in live:
        nodes.add(v)
        nodes.update(ancestors_of(parents, v))
    return sum(step_tokens[v] for v in nodes)


def kv_unshared_reference(parents: Sequence[int], step_tokens: Sequence[int], live: Sequence[int]) -> int:
    """Tokens if nothing were shared: the full root-path length of each distinct live node."""
    return sum(
        step_tokens[v] + sum(step_tokens[a] for a in ancestors_of(parents, v))
        for v in set(live)
    )


def kv_blocks_reference(
    parents: Sequence[int], step_tokens: Sequence[int], live: Sequence[int], block_size: int
) -> int:
    """KV blocks held under block-granular prefix caching, token by token.

    Each live node's root path is spelled out as a sequence of token identities (node, offset);
    the sequence is cut into blocks of ``block_size``; a full block is identified by the whole
    prefix up to its end (two paths share it only if they agree on every token before it), a
    partial tail block is never shared. The answer is the number of distinct blocks.
    """
    blocks: set[tuple] = set()
    for v in dict.fromkeys(live):
        path = [v, *ancestors_of(parents, v)][::-1]
        seq = [(u, k) for u in path for k in range(step_tokens[u])]
        for start in range(0, len(seq), block_size):
            chunk = seq[start:start + block_size]
            if len(chunk) == block_size:
                blocks.add(("full", tuple(seq[:start + block_size])))
            else:
                blocks.add(("partial", v, tuple(seq)))
    return len(blocks)


def canonical_partition(labels: Sequence[int]) -> list[int]:
    """Relabel so that clusters are numbered 0.. by first appearance (compares partitions)."""
    seen: dict[int, int] = {}
    return [seen.setdefault(int(x), len(seen)) for x in labels]
