"""Each method's allocation rule on scripted scores; expected counts worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from ets_async import METHODS, SearchConfig, core
from ets_async.core import SearchTree
from ets_async.search.method import Frontier


def frontier_of(scores, parents_of_candidates, *, width=None, embeddings=None, texts=None):
    """A depth-2 frontier: root -> one child per distinct parent label -> the candidates."""
    tree = SearchTree([1, 2, 3], width or len(scores), 1024)
    labels = sorted(set(parents_of_candidates))
    mids = tree.add_children(0, [[10 + i] for i in labels], [0.5] * len(labels), [False] * len(labels))
    by_label = dict(zip(labels, mids, strict=True))
    candidates = []
    for label, score in zip(parents_of_candidates, scores, strict=True):
        candidates += tree.add_children(by_label[label], [[100, 101]], [score], [False])
    return Frontier(
        tree=tree,
        candidates=candidates,
        scores=list(scores),
        budget=width or len(scores),
        depth=2,
        embeddings=embeddings,
        step_texts=texts or [f"step {i}" for i in range(len(scores))],
    )


def allocate(method, frontier, **config):
    return METHODS[method](SearchConfig(method=method, **config)).allocate(frontier).counts


def test_rebase_hand_worked():
    # T = 1: e = (2.4596, 1.6487, 1.1052), S = 5.2135; ceil(4 * 2.4596 / 5.2135) = ceil(1.887) = 2;
    # then b = 2, S = 2.7539: ceil(2 * 1.6487 / 2.7539) = ceil(1.197) = 2; b = 0 -> the last gets 0.
    f = frontier_of([0.9, 0.5, 0.1], [0, 0, 1], width=4)
    assert allocate("rebase", f, width=4, softmax_temperature=1.0) == [2, 2, 0]
    # T = 0.2 sharpens: ceil(4 * e^4.5 / (e^4.5 + e^2.5 + e^0.5)) = ceil(3.47) = 4 for the best.
    assert allocate("rebase", f, width=4, softmax_temperature=0.2) == [4, 0, 0]


def test_beam_keeps_top_sqrt_b_each_ceil_b_over_k():
    # B = 4 -> keep ceil(sqrt(4)) = 2: the 0.9 and 0.7 candidates get ceil(4 / 2) = 2 each.
    f = frontier_of([0.1, 0.9, 0.5, 0.7], [0, 0, 1, 1], width=4)
    assert allocate("beam", f, width=4) == [0, 2, 0, 2]
    assert allocate("beam", f, width=4, beam_keep=3) == [0, 2, 2, 2]  # ceil(4/3) = 2, may exceed B


def test_best_of_n_continues_every_trajectory():
    f = frontier_of([0.1, 0.9, 0.5], [0, 1, 2], width=3)
    assert allocate("best_of_n", f, width=3) == [1, 1, 1]


def test_dvts_one_beam_per_subtree():
    # W = 4 -> ceil(sqrt(4)) = 2 subtrees with budget 2 each; the root's 4 children split in order
    # into [c0, c1] and [c2, c3]; the best of each subtree gets its subtree's budget.
    tree = SearchTree([1, 2, 3], 4, 1024)
    kids = tree.add_children(0, [[5], [6], [7], [8]], [0.3, 0.8, 0.6, 0.2], [False] * 4)
    method = METHODS["dvts"](SearchConfig(method="dvts", width=4))
    first = Frontier(tree, kids, [0.3, 0.8, 0.6, 0.2], 4, 1, None, ["a", "b", "c", "d"])
    assert method.allocate(first).counts == [0, 2, 2, 0]
    # next depth: children of c1 (subtree 0) and c2 (subtree 1); one of subtree 1 finished.
    g0 = tree.add_children(kids[1], [[9], [9]], [0.4, 0.9], [False, False])
    g1 = tree.add_children(kids[2], [[9], [9]], [0.7, 0.5], [True, False])
    method.retired(tree, [g1[0]])
    second = Frontier(tree, [*g0, g1[1]], [0.4, 0.9, 0.5], 3, 2, None, ["e", "f", "g"])
    assert method.allocate(second).counts == [0, 2, 1]


def test_ets_without_costs_equals_rebase():
    """λ_b = 0 and λ_s = 0: keeping a node is never penalised, so ETS re-allocates exactly as REBASE."""
    f = frontier_of([0.9, 0.2, 0.6, 0.55, 0.3, 0.8], [0, 0, 1, 1, 2, 2], width=6)
    rebase = allocate("rebase", f, width=6)
    assert allocate("ets", f, width=6, lambda_b=0.0, lambda_s=0.0) == rebase


def test_ets_prunes_a_branch_that_costs_more_than_it_is_worth():
    # T = 0.2, B = 8: e = (e^4.5, e^4.5, e^4.4) = (90.0, 90.0, 81.5); order 1, 0, 2 (ties: later first):
    # ceil(8*90/261.5) = 3, ceil(5*90/171.5) = 3, then the remaining 2 -> REBASE [3, 3, 2].
    # ETS, λ_b = 1: M = 3 ancestors (root, two parents), N = 3, node cost 1/6. Candidate 2 is worth
    # O = 2/8 but keeping it also keeps its own parent: 0.25 - 2/6 < 0, so it is dropped; candidate 1
    # adds only itself: 3/8 - 1/6 > 0. Kept {0, 1}; re-allocation splits 8 evenly -> [4, 4, 0].
    f = frontier_of([0.9, 0.9, 0.88], [0, 0, 1], width=8)
    assert allocate("rebase", f, width=8) == [3, 3, 2]
    assert allocate("ets", f, width=8, lambda_b=1.0, lambda_s=0.0) == [4, 4, 0]


def test_ets_coverage_keeps_a_member_of_each_cluster():
    # Two clusters: candidates 0-2 point one way, 3 the other; 3 has REBASE share 0 and its own parent.
    # λ_b = 4: M = 3, N = 4, cost 4/7 per node, so keeping 3 costs 8/7 for nothing (dropped). With
    # λ_s = 4 and K = 2, covering its cluster earns 2 > 8/7, so the program keeps it.
    e = np.array([[1, 0], [1, 0.01], [1, 0.02], [0, 1]], dtype=np.float32)
    f = frontier_of([0.95, 0.9, 0.9, 0.3], [0, 0, 0, 1], width=4, embeddings=e, texts=["a", "b", "c", "d"])
    labels = core.cluster_steps(e, 0.05)
    assert labels[0] == labels[1] == labels[2] != labels[3]
    parents = f.tree.parents()

    def kept(lambda_s):
        return core.ets_select(parents, f.candidates, f.scores, labels, 4, 4.0, lambda_s, 0.2).kept

    assert kept(4.0)[3] and not kept(0.0)[3]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_counts_are_nonnegative_and_aligned(method):
    f = frontier_of([0.5, 0.4, 0.9, 0.1, 0.7, 0.65], [0, 0, 1, 1, 2, 2], width=6,
                    embeddings=np.eye(6, dtype=np.float32))
    counts = allocate(method, f, width=6)
    assert len(counts) == 6 and min(counts) >= 0 and sum(counts) >= 1


def test_particle_filter_resamples_in_proportion_to_the_score_odds():
    from ets_async.search.particle_filter import resampling_weights

    # odds 0.8 / 0.2 = 4 and 0.5 / 0.5 = 1: shares 0.8 and 0.2 at T = 1; T = 0.5 squares the odds (16 : 1)
    assert resampling_weights([0.8, 0.5], 1.0) == pytest.approx([0.8, 0.2])
    assert resampling_weights([0.8, 0.5], 0.5) == pytest.approx([16 / 17, 1 / 17])
    assert resampling_weights([1.0, 0.0], 1.0).sum() == pytest.approx(1.0)  # scores at the ends are clipped
    f = frontier_of([0.8, 0.5], [0, 1], width=2000)
    counts = allocate("particle_filter", f, width=2000)
    assert sum(counts) == 2000 and 1500 < counts[0] < 1700  # binomial(2000, 0.8): mean 1600, sd 18
    assert allocate("particle_filter", f, width=2000) == counts  # seeded: repeatable
    assert allocate("particle_filter", f, width=2000, seed=1) != counts
    # a doubted trajectory still gets children now and then (REBASE at T = 0.2 would give it none)
    small = frontier_of([0.9, 0.3], [0, 1], width=8)
    draws = [allocate("particle_filter", small, width=8, seed=s)[1] for s in range(20)]
    assert any(draws) and allocate("rebase", small, width=8) == [8, 0]
