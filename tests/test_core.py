"""The Rust core through ets_async.core, against the pure-Python reference in core_reference.py."""

from __future__ import annotations

import logging
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from ets_async import _core, core
from ets_async.core import CoreError
from ets_async.errors import EtsError
from ets_async.solver import SolverError, solve_program
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from .core_reference import (
    EtsObjective,
    canonical_partition,
    kv_blocks_reference,
    kv_tokens_reference,
    kv_unshared_reference,
    rebase_exact,
    rebase_reference,
)

SLOW = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=80)

# Scores drawn from a few fixed values (ties) or freely from [0, 1].
score = st.one_of(st.sampled_from([0.0, 0.25, 0.5, 0.9, 1.0]), st.floats(0.0, 1.0))
temperatures = st.sampled_from([0.05, 0.1, 0.2, 0.5, 1.0, 3.0])


# ---------------------------------------------------------------------------------------------
# Random trees


@st.composite
def trees(draw, max_level: int = 12, max_depth: int = 4, shuffle: bool = True):
    """(parents, frontier): a random tree grown level by level; frontier = its deepest level.

    Node ids are randomly permuted (the core must not assume parents come before children).
    """
    depth = draw(st.integers(1, max_depth))
    parents = [-1]
    level = [0]
    for _ in range(depth):
        size = draw(st.integers(1, max_level))
        new = []
        for _ in range(size):
            parents.append(draw(st.sampled_from(level)))
            new.append(len(parents) - 1)
        level = new
    if shuffle:
        perm = draw(st.permutations(range(len(parents))))
        parents = _relabel(parents, perm)
        level = [perm[v] for v in level]
    return parents, level


def _relabel(parents: list[int], perm: list[int]) -> list[int]:
    out = [0] * len(parents)
    for v, p in enumerate(parents):
        out[perm[v]] = -1 if p == -1 else perm[p]
    return out


@st.composite
def ets_cases(draw):
    parents, level = draw(trees())
    candidates = draw(st.lists(st.sampled_from(level), min_size=1, max_size=len(level), unique=True))
    n = len(candidates)
    scores = draw(st.lists(score, min_size=n, max_size=n))
    clustered = draw(st.booleans())
    labels = draw(st.lists(st.sampled_from([0, 1, 2, 5, 9]), min_size=n, max_size=n)) if clustered else None
    step_tokens = draw(st.lists(st.integers(0, 40), min_size=len(parents), max_size=len(parents)))
    return dict(
        parents=parents,
        candidates=candidates,
        scores=scores,
        cluster_labels=labels,
        budget=draw(st.integers(1, 24)),
        lambda_b=draw(st.sampled_from([0.0, 0.5, 1.0, 2.0])),
        lambda_s=draw(st.sampled_from([0.0, 0.5, 1.5])),
        softmax_temperature=draw(st.sampled_from([0.1, 0.2, 1.0])),
        cost=draw(st.sampled_from(["nodes", "tokens"])),
        step_tokens=step_tokens,
    )


# ---------------------------------------------------------------------------------------------
# REBASE (SPEC §4) and the re-allocation (§5.6)


@given(st.lists(score, min_size=0, max_size=40), st.integers(0, 300), temperatures)
@settings(max_examples=300)
def test_rebase_matches_reference_and_sums_to_budget(scores, budget, t):
    got = core.rebase_allocation(scores, budget, t)
    assert got == rebase_reference(scores, budget, t)
    assert len(got) == len(scores)
    assert all(n >= 0 for n in got)
    assert sum(got) == (budget if scores else 0)


@given(st.lists(score, min_size=1, max_size=40), st.integers(0, 300), temperatures)
@settings(max_examples=300)
def test_rebase_higher_score_never_gets_fewer(scores, budget, t):
    got = core.rebase_allocation(scores, budget, t)
    # In exact arithmetic the rule is monotone; float32 cancellation in S can move a share by one
    # when b * e / S is within an ulp of an integer (SPEC §4). Those cases are skipped here
    # (the exact-match test above still covers them).
    assume(got == rebase_exact(scores, budget, t))
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] > scores[j]:
                assert got[i] >= got[j], (i, j)
            if scores[i] == scores[j] and i < j:
                # Ties: the later index is served first, so it never gets fewer.
                assert got[j] >= got[i], (i, j)


def test_rebase_tie_order_and_worked_numbers():
    # Equal scores, odd budget: ceil(3 * 1/2) = 2 goes to the later index.
    assert core.rebase_allocation([0.5, 0.5], 3, 0.2) == [1, 2]
    # Four equal scores, budget 2: ceil(2/4) = 1 to index 3, then ceil(1/3) = 1 to index 2.
    assert core.rebase_allocation([0.7] * 4, 2, 0.2) == [0, 0, 1, 1]
    # e = [1, e^-2, e^-2, e^-4], S ~ 1.2890: ceil(16/1.289) = 13; index 2 (later 0.5) gets
    # ceil(3 * 0.1353/0.2890) = 2; index 1 the last 1; index 3 nothing.
    assert core.rebase_allocation([0.9, 0.5, 0.5, 0.1], 16, 0.2) == [13, 1, 2, 0]


@given(st.data())
@settings(max_examples=200)
def test_reallocate_kept_matches_reference(data):
    scores = data.draw(st.lists(score, min_size=1, max_size=30))
    kept = data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores)))
    assume(any(kept))
    budget = data.draw(st.integers(0, 256))
    t = data.draw(temperatures)
    got = core.reallocate_kept(scores, kept, budget, t)
    assert got == rebase_reference(scores, budget, t, kept=kept)
    assert sum(got) == budget
    assert all(n == 0 for n, k in zip(got, kept, strict=True) if not k)
    if all(kept):
        assert got == core.rebase_allocation(scores, budget, t)


# ---------------------------------------------------------------------------------------------
# ETS: exact optimality against brute force over every keep-set (§5.5)


@given(ets_cases())
@SLOW
def test_ets_solution_is_optimal_against_brute_force(case):
    objective = EtsObjective(**case)
    instance = _core.ets_instance(**case)
    # O_i follows §5.2 (REBASE over all candidates, equal scores keep input order).
    assert instance.outcome == pytest.approx(objective.outcome, abs=0)
    assert instance.num_candidates == len(case["candidates"])
    best = objective.best()
    kept_highs = solve_program(instance.program())  # HiGHS solves any instance, tree problems too
    assert any(kept_highs)
    assert objective(kept_highs) == pytest.approx(best, abs=1e-9)
    kept = instance.kept
    tree_problem = case["cluster_labels"] is None or case["lambda_s"] == 0 or case["lambda_b"] == 0 or len(
        set(case["cluster_labels"])
    ) == len(case["candidates"])
    assert (kept is not None) == tree_problem
    if kept is None:
        kept = kept_highs
    else:  # the tree DP
        assert objective(kept) == pytest.approx(best, abs=1e-9)
        assert instance.objective(kept) == pytest.approx(best, abs=1e-9)
        optima = objective.optima()
        if len(optima) == 1:
            assert kept == kept_highs == optima[0]

    selection = core.ets_select(**case)
    assert not selection.fell_back
    counts = selection.counts
    t = case["softmax_temperature"]
    assert counts == core.reallocate_kept(case["scores"], kept, case["budget"], t)
    assert counts == rebase_reference(case["scores"], case["budget"], t, kept=kept)
    assert sum(counts) == case["budget"]


@given(ets_cases(), st.sampled_from(["off", "singletons"]))
@SLOW
def test_tree_dp_matches_highs_and_brute_force(case, coverage):
    """Tree problems (coverage off, or every cluster a singleton) are solved by the Rust DP: its
    kept set reaches HiGHS's objective and the brute-force optimum, and is the optimum when that is
    unique."""
    n = len(case["candidates"])
    case["cluster_labels"] = None if coverage == "off" else [7 * i for i in range(n)]
    objective = EtsObjective(**case)
    instance = _core.ets_instance(**case)
    assert instance.kept is not None
    highs = solve_program(instance.program())
    assert objective(instance.kept) == pytest.approx(objective(highs), abs=1e-9)
    assert objective(instance.kept) == pytest.approx(objective.best(), abs=1e-9)
    optima = objective.optima()
    if len(optima) == 1:
        assert instance.kept == optima[0]
    assert instance.counts == instance.reallocate(instance.kept) == core.ets_allocation(**case)


@given(st.data())
@settings(max_examples=60, deadline=None)
def test_search_tree_instance_equals_parent_array_instance(data):
    """``SearchTree.ets_instance`` builds the problem in Rust from the arena: the same problem as the
    parent-array path with the tree's scores and its step lengths without the prompt."""
    tree = core.SearchTree(data.draw(st.lists(st.integers(0, 99), min_size=1, max_size=9)), 64, 4096)
    frontier = [0]
    for _ in range(data.draw(st.integers(1, 3))):
        grown = []
        for v in frontier:
            k = data.draw(st.integers(0, 3))
            steps = data.draw(st.lists(st.lists(st.integers(0, 99), max_size=5), min_size=k, max_size=k))
            grown += tree.add_children(v, steps, data.draw(st.lists(score, min_size=k, max_size=k)), [False] * k)
        if not grown:
            break
        frontier = grown
    labels = data.draw(st.none() | st.lists(st.integers(0, 3), min_size=len(frontier), max_size=len(frontier)))
    args = (labels, data.draw(st.integers(1, 32)), data.draw(st.sampled_from([0.0, 1.0, 3.0])), 1.5, 0.2)
    cost = data.draw(st.sampled_from(["nodes", "tokens"]))
    got = tree.ets_instance(frontier, *args, cost=cost)
    expected = _core.ets_instance(
        tree.parents(),
        frontier,
        [tree.score(v) for v in frontier],
        *args,
        cost=cost,
        step_tokens=tree.step_lengths(False),
    )
    assert (got.kept, got.outcome, got.ancestors) == (expected.kept, expected.outcome, expected.ancestors)
    everything = [True] * len(frontier)
    assert got.objective(everything) == expected.objective(everything)
    assert got.reallocate(everything) == core.rebase_allocation([tree.score(v) for v in frontier], args[1], 0.2)


def test_ets_depth_zero_gives_the_root_everything():
    assert core.ets_allocation([-1], [0], [1.0], None, 16, 1.0, 1.5, 0.2) == [16]
    assert core.ets_allocation([-1], [0], [1.0], [0], 16, 0.0, 1.5, 0.2) == [16]


# The worked toy of SPEC §5.7: W = 16, 16 leaves at depth 2 under 5 parents, M = 6 (with the
# root). The spec gives no scores or tree shape; these were found by a seeded random search
# (numpy default_rng(57), hill climbing on 2-decimal scores, restart 140) for distinct scores
# that give the stated REBASE allocation and the stated re-allocations, with this shape:
# parents P1..P5 (nodes 1..5) hold leaves {0-4}, {5-8}, {9-11}, {12,13}, {14,15} (leaf i = node 6+i).
TOY_SCORES = [0.66, 0.29, 0.44, 0.33, 0.72, 0.8, 0.49, 0.67, 0.4, 0.81, 0.71, 0.02, 0.76, 0.26, 0.6, 0.22]
TOY_GROUPS = [[0, 1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11], [12, 13], [14, 15]]
TOY_REBASE = [1, 0, 0, 0, 2, 3, 1, 1, 0, 3, 2, 0, 2, 0, 1, 0]
TOY_ETS = [1, 0, 0, 0, 2, 3, 0, 1, 0, 4, 2, 0, 3, 0, 0, 0]
# 14 clusters: leaves 12/13 and 14/15 are near-duplicates, every other leaf is alone.
TOY_LABELS = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 12, 13, 13]


def _toy_tree():
    parents = [-1] + [0] * 5 + [0] * 16
    for p, group in enumerate(TOY_GROUPS):
        for leaf in group:
            parents[6 + leaf] = 1 + p
    return parents, list(range(6, 22))


def _live_parents(parents, candidates, counts):
    return {parents[c] for c, n in zip(candidates, counts, strict=True) if n > 0}


def test_worked_example_without_coverage():
    parents, candidates = _toy_tree()
    assert core.rebase_allocation(TOY_SCORES, 16, 0.2) == TOY_REBASE
    instance = _core.ets_instance(parents, candidates, TOY_SCORES, None, 16, 1.0, 0.0, 0.2)
    assert len(instance.ancestors) == 6
    # 8 leaves kept; leaf 14 (share 1, the only leaf with a share under P5) is dropped, leaf 6
    # (share 1, but P2 stays live for leaves 5 and 7) is kept and ranks too low to get a child.
    expected = [0, 4, 5, 6, 7, 9, 10, 12]
    assert [i for i, k in enumerate(instance.kept) if k] == expected  # the tree DP
    assert [i for i, k in enumerate(solve_program(instance.program())) if k] == expected  # HiGHS
    counts = core.ets_allocation(parents, candidates, TOY_SCORES, None, 16, 1.0, 0.0, 0.2)
    assert counts == TOY_ETS
    assert len(_live_parents(parents, candidates, TOY_REBASE)) == 5
    assert len(_live_parents(parents, candidates, counts)) == 4  # one fewer live branch


def test_worked_example_with_coverage_equals_rebase():
    parents, candidates = _toy_tree()
    instance = _core.ets_instance(parents, candidates, TOY_SCORES, TOY_LABELS, 16, 1.0, 1.5, 0.2)
    assert instance.num_clusters == 14
    assert instance.kept is None  # two clusters have two members: HiGHS
    program = instance.program()
    assert program.num_col == 16 + 6 + 2  # twelve singleton clusters fold into their x columns
    kept = solve_program(program)
    # Every cluster is covered; the zero-share twins 13 and 15 are the redundant members.
    assert [i for i, k in enumerate(kept) if not k] == [13, 15]
    assert core.ets_allocation(parents, candidates, TOY_SCORES, TOY_LABELS, 16, 1.0, 1.5, 0.2) == TOY_REBASE


# ---------------------------------------------------------------------------------------------
# The solver on its own


def _some_program(seed: int, width: int = 32):
    rng = np.random.default_rng(seed)
    parents, level = [-1], [0]
    for depth in range(4):
        size = width if depth == 3 else int(rng.integers(1, width))
        new = []
        for _ in range(size):
            parents.append(int(rng.choice(level)))
            new.append(len(parents) - 1)
        level = new
    scores = rng.uniform(0, 1, width).tolist()
    labels = rng.integers(0, width // 2, width).tolist()
    return _core.ets_instance(parents, level, scores, labels, width, 1.0, 1.45, 0.2).program()


def test_solver_is_deterministic_and_thread_safe():
    programs = [_some_program(seed) for seed in range(12)]
    sequential = [solve_program(p) for p in programs]
    assert sequential == [solve_program(p) for p in programs]
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(solve_program, programs * 3)) == sequential * 3


def test_solver_reports_an_infeasible_program():
    program = _some_program(0)
    program.row_lower[-1] = program.num_x + 1.0  # the "keep at least one" row, now impossible
    with pytest.raises(SolverError, match="Infeasible"):
        solve_program(program)


def test_solver_solves_fractional_relaxations_by_branch_and_bound():
    # Two clusters {0, 1}, {2, 3}; each leaf under its own parent. The LP relaxation can take
    # half of each member of a cluster; the integer optimum must still be returned.
    parents = [-1, 0, 0, 0, 0, 1, 2, 3, 4]
    case = dict(
        parents=parents, candidates=[5, 6, 7, 8], scores=[0.5] * 4, cluster_labels=[0, 0, 1, 1],
        budget=4, lambda_b=2.0, lambda_s=1.5, softmax_temperature=0.2,
    )
    kept = solve_program(_core.ets_instance(**case).program())
    objective = EtsObjective(**case)
    assert objective(kept) == pytest.approx(objective.best(), abs=1e-12)


def test_ets_falls_back_to_rebase_when_the_solver_fails(monkeypatch, caplog):
    def failing(program, **kwargs):
        raise SolverError("HiGHS did not solve the ETS program: Time limit reached")

    monkeypatch.setattr(core, "solve_program", failing)
    parents, candidates = _toy_tree()
    with caplog.at_level(logging.WARNING, logger="ets_async"):
        selection = core.ets_select(parents, candidates, TOY_SCORES, TOY_LABELS, 16, 1.0, 1.5, 0.2)
    assert selection.fell_back and selection.counts == TOY_REBASE
    [record] = [r for r in caplog.records if r.name == "ets_async"]
    assert record.levelno == logging.WARNING
    assert "REBASE" in record.getMessage() and "Time limit reached" in record.getMessage()
    # Tree problems never reach the solver.
    assert not core.ets_select(parents, candidates, TOY_SCORES, None, 16, 1.0, 0.0, 0.2).fell_back
    assert core.ets_allocation(parents, candidates, TOY_SCORES, None, 16, 1.0, 0.0, 0.2) == TOY_ETS


# ---------------------------------------------------------------------------------------------
# Clustering (§5.4) against SciPy


def _scipy_labels(x: np.ndarray, threshold: float) -> list[int]:
    from scipy.cluster.hierarchy import fcluster, linkage

    if len(x) == 1:
        return [0]
    z = linkage(x.astype(np.float64), method="average", metric="cosine")
    # Merges within 1e-6 of the cut are decided by rounding (float32 vs float64); skip those.
    assume(np.all(np.abs(z[:, 2] - threshold) > 1e-6))
    return canonical_partition(fcluster(z, threshold, criterion="distance"))


@st.composite
def embeddings(draw):
    n = draw(st.integers(1, 40))
    dim = draw(st.integers(2, 24))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    kind = draw(st.sampled_from(["random", "clustered", "duplicates"]))
    if kind == "random":
        x = rng.normal(size=(n, dim))
    else:
        centers = rng.normal(size=(draw(st.integers(1, 6)), dim))
        spread = draw(st.sampled_from([0.05, 0.15, 0.3, 0.5]))
        x = centers[rng.integers(0, len(centers), n)] * (1 + spread * rng.normal(size=(n, 1)))
        x += spread * rng.normal(size=(n, dim)) / math.sqrt(dim)
        if kind == "duplicates":
            x[rng.integers(0, n, n // 2)] = x[0]
    return x.astype(np.float32)


@given(embeddings(), st.sampled_from([0.01, 0.05, 0.05, 0.1, 0.3, 0.7]))
@settings(max_examples=300, deadline=None)
def test_cluster_steps_equals_scipy(x, threshold):
    expected = _scipy_labels(x, threshold)
    got = core.cluster_steps(x, threshold)
    assert got == canonical_partition(got)  # labels 0..K-1 by first appearance
    assert got == expected
    assert core.cluster_steps(x.tolist(), threshold) == got


def test_cluster_steps_simple_cases():
    assert core.cluster_steps(np.zeros((0, 4), dtype=np.float32), 0.05) == []
    assert core.cluster_steps([[1.0, 0.0]], 0.05) == [0]
    # cos distance between rows 0 and 2 is 1 - cos(0.1) ~ 0.005; row 1 is orthogonal.
    x = [[1.0, 0.0], [0.0, 1.0], [math.cos(0.1), math.sin(0.1)]]
    assert core.cluster_steps(x, 0.05) == [0, 1, 0]


# ---------------------------------------------------------------------------------------------
# KV metrics (§8.1)


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_kv_metrics_equal_naive_recomputation(data):
    parents, _ = data.draw(trees(max_level=6, max_depth=5))
    step_tokens = data.draw(st.lists(st.integers(0, 12), min_size=len(parents), max_size=len(parents)))
    live = data.draw(st.lists(st.integers(0, len(parents) - 1), max_size=12))
    block_size = data.draw(st.integers(1, 9))
    assert core.kv_tokens(parents, step_tokens, live) == kv_tokens_reference(parents, step_tokens, live)
    assert core.kv_unshared_tokens(parents, step_tokens, live) == kv_unshared_reference(
        parents, step_tokens, live
    )
    assert core.kv_blocks(parents, step_tokens, live, block_size) == kv_blocks_reference(
        parents, step_tokens, live, block_size
    )


@given(st.data())
@settings(max_examples=100, deadline=None)
def test_search_tree_kv_agrees_with_free_functions(data):
    prompt = data.draw(st.lists(st.integers(0, 1000), min_size=1, max_size=20))
    tree = core.SearchTree(prompt, 64, 4096)
    nodes = [0]
    for _ in range(data.draw(st.integers(0, 15))):
        parent = data.draw(st.sampled_from(nodes))
        steps = data.draw(st.lists(st.lists(st.integers(0, 1000), max_size=10), min_size=1, max_size=3))
        ids = tree.add_children(parent, steps, [0.5] * len(steps), [False] * len(steps))
        nodes.extend(ids)
    live = data.draw(st.lists(st.sampled_from(nodes), max_size=8))
    block_size = data.draw(st.integers(1, 8))
    parents = tree.parents()
    steps_len = tree.step_lengths(True)  # SearchTree.kv counts the prompt
    assert steps_len[0] == len(prompt)
    tokens, blocks, unshared = tree.kv(live, block_size)
    assert tokens == core.kv_tokens(parents, steps_len, live)
    assert blocks == core.kv_blocks(parents, steps_len, live, block_size)
    assert unshared == core.kv_unshared_tokens(parents, steps_len, live)
    assert tokens == kv_tokens_reference(parents, steps_len, live)


# ---------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: core.rebase_allocation([0.1, float("nan")], 4, 0.2), r"scores\[1\] = NaN is not a finite number"),
        (lambda: core.rebase_allocation([0.1], 4, 0.0), "softmax_temperature"),
        (lambda: core.rebase_allocation([0.1], 4, float("inf")), "softmax_temperature"),
        (lambda: core.rebase_allocation([0.1], -1, 0.2), "budget = -1 is negative"),
        (lambda: core.reallocate_kept([0.1, 0.2], [True], 4, 0.2), "kept has 1 entries but scores has 2"),
        (lambda: core.reallocate_kept([0.1, 0.2], [False, False], 4, 0.2), "kept has no true entry"),
        (lambda: core.kv_tokens([-1, 2, 1], [1, 1, 1], [1]), "cycle"),
        (lambda: core.kv_tokens([1, 0], [1, 1], [0]), "no root"),
        (lambda: core.kv_tokens([-1, -1], [1, 1], [0]), "more than one root"),
        (lambda: core.kv_tokens([-1, 0], [1], [0]), "step_tokens has 1 entries but parents has 2"),
        (lambda: core.kv_tokens([-1, 0], [1, -3], [0]), "negative"),
        (lambda: core.kv_tokens([-1, 0], [1, 1], [5]), "does not exist"),
        (lambda: core.kv_blocks([-1, 0], [1, 1], [1], 0), "block_size"),
        (
            lambda: core.ets_allocation([-1, 0, 0], [1, 2], [0.5], None, 4, 1.0, 0.0, 0.2),
            "scores has 1 entries but candidates has 2",
        ),
        (lambda: core.ets_allocation([-1, 0, 1], [1, 2], [0.5, 0.5], None, 4, 1.0, 0.0, 0.2), "ancestor"),
        (lambda: core.ets_allocation([-1, 0, 0], [1, 1], [0.5, 0.5], None, 4, 1.0, 0.0, 0.2), "more than once"),
        (lambda: core.ets_allocation([-1, 0, 0], [1, 2], [0.5, 0.5], [0], 4, 1.0, 1.5, 0.2), "cluster_labels"),
        (lambda: core.ets_allocation([-1, 0, 0], [1, 2], [0.5, 0.5], None, 4, -1.0, 0.0, 0.2), "lambda_b"),
        (lambda: core.ets_allocation([-1, 0, 0], [1, 2], [0.5, 0.5], None, 4, 1.0, 0.0, 0.0), "softmax_temperature"),
        (
            lambda: core.ets_allocation([-1, 0, 0], [1, 2], [0.5, 0.5], None, 4, 1.0, 0.0, 0.2, cost="tokens"),
            "needs step_tokens",
        ),
        (lambda: core.ets_allocation([-1, 0, 0], [1, 2], [0.5, 0.5], None, 4, 1.0, 0.0, 0.2, cost="bytes"), "unknown"),
        (lambda: core.ets_allocation([-1, 0, 1, 2], [3, 1], [0.5, 0.5], None, 4, 1.0, 0.0, 0.2), "ancestor"),
        (lambda: core.cluster_steps(np.ones(4, dtype=np.float32), 0.05), "2-D"),
    ],
)
def test_bad_input_raises_core_error(call, message):
    with pytest.raises(EtsError, match=message) as info:  # errors.py is the one root
        call()
    assert isinstance(info.value, CoreError) and isinstance(info.value, ValueError)
