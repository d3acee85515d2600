//! The ETS program solved exactly by dynamic programming over the tree, when it is a tree problem.
//!
//! Without the coverage term (or with singleton clusters only, whose reward is then just a bonus
//! on their one member), the program asks for a nonempty kept set S of candidates maximising
//!
//! ```text
//!   Σ_{i ∈ S} g_i  +  Σ_{j ∈ A(S)} h_j
//! ```
//!
//! where `A(S)` is the set of ancestors of the kept candidates, `g_i` a candidate's own value and
//! `h_j` an ancestor's (its node cost, usually negative). Subtrees below different children of an
//! ancestor are independent once the ancestor is live, so with `best(v)` = the best value of the
//! subtree of `v` given that something below `v` is kept (`best(i) = g_i` for a candidate),
//!
//! ```text
//!   best(j) = h_j + Σ_{c child of j, best(c) >= 0} best(c)     if some best(c) >= 0,
//!   best(j) = h_j + max_c best(c)                              otherwise (keep at least one),
//! ```
//!
//! and the optimum is `best(root)`: one pass up, one pass down, O(M + N).
//!
//! Ties, when several kept sets reach the optimum (the re-allocation of SPEC §5.6 may then
//! differ), are decided by a fixed rule, on the floating-point values as computed here:
//! * a subtree whose best value is exactly 0 is kept (keeping costs nothing, so nothing is pruned
//!   for it);
//! * where every child subtree of a live ancestor is negative, the highest is kept, and among
//!   equal ones the subtree holding the lowest candidate index (the earliest in input order).

use crate::types::NodeId;

/// The shape of the program's tree: the candidates (leaves) and their ancestors.
///
/// Ancestor slots are numbered parents first (slot 0 is the root when there is an ancestor).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Skeleton {
    /// Parent slot of each ancestor slot; `None` for the root.
    pub ancestor_parent: Vec<Option<usize>>,
    /// Parent slot of each candidate; `None` when the candidate is the root (depth 0).
    pub candidate_parent: Vec<Option<usize>>,
}

/// What an ancestor knows of its children after the upward pass.
#[derive(Debug, Clone, Copy)]
struct Children {
    /// Sum of the children's best values that are >= 0.
    nonnegative_sum: f64,
    /// Whether some child's best value is >= 0.
    any_nonnegative: bool,
    /// The highest child best value, and the lowest candidate index below that child.
    top: (f64, NodeId),
    /// The lowest candidate index below this ancestor.
    first: NodeId,
}

impl Children {
    const NONE: Children = Children {
        nonnegative_sum: 0.0,
        any_nonnegative: false,
        top: (f64::NEG_INFINITY, NodeId::MAX),
        first: NodeId::MAX,
    };

    fn offer(&mut self, value: f64, first: NodeId) {
        if value >= 0.0 {
            self.nonnegative_sum += value;
            self.any_nonnegative = true;
        }
        if value > self.top.0 || (value == self.top.0 && first < self.top.1) {
            self.top = (value, first);
        }
        self.first = self.first.min(first);
    }

    fn value(&self) -> f64 {
        if self.any_nonnegative {
            self.nonnegative_sum
        } else {
            self.top.0
        }
    }

    /// Whether the child with this best value and first candidate is kept, this node being live.
    fn keeps(&self, value: f64, first: NodeId) -> bool {
        if self.any_nonnegative {
            value >= 0.0
        } else {
            first == self.top.1
        }
    }
}

/// The optimal nonempty kept set (module docs) for candidate values `gain` (one per candidate)
/// and ancestor values `ancestor_gain` (one per ancestor slot), with the documented tie rule.
pub(crate) fn best_kept(skeleton: &Skeleton, gain: &[f64], ancestor_gain: &[f64]) -> Vec<bool> {
    let m = skeleton.ancestor_parent.len();
    if m == 0 {
        // Depth 0: the root is the only candidate.
        return vec![true; gain.len()];
    }
    let mut children = vec![Children::NONE; m];
    for (i, (&g, p)) in gain.iter().zip(&skeleton.candidate_parent).enumerate() {
        if let Some(p) = *p {
            children[p].offer(g, i);
        }
    }
    // Slots are numbered parents first, so walking them backwards visits children first.
    let mut best = vec![0.0; m];
    for j in (0..m).rev() {
        best[j] = ancestor_gain[j] + children[j].value();
        if let Some(p) = skeleton.ancestor_parent[j] {
            let first = children[j].first;
            children[p].offer(best[j], first);
        }
    }
    let mut live = vec![false; m];
    for j in 0..m {
        live[j] = match skeleton.ancestor_parent[j] {
            None => true,
            Some(p) => live[p] && children[p].keeps(best[j], children[j].first),
        };
    }
    gain.iter()
        .zip(&skeleton.candidate_parent)
        .enumerate()
        .map(|(i, (&g, p))| match *p {
            None => true,
            Some(p) => live[p] && children[p].keeps(g, i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Value of a kept set: kept gains plus the gains of every ancestor above a kept candidate.
    fn value(s: &Skeleton, gain: &[f64], ancestor_gain: &[f64], kept: &[bool]) -> f64 {
        let mut live = vec![false; s.ancestor_parent.len()];
        let mut total = 0.0;
        for (i, &k) in kept.iter().enumerate() {
            if k {
                total += gain[i];
                let mut u = s.candidate_parent[i];
                while let Some(j) = u {
                    live[j] = true;
                    u = s.ancestor_parent[j];
                }
            }
        }
        total
            + (0..live.len())
                .filter(|&j| live[j])
                .map(|j| ancestor_gain[j])
                .sum::<f64>()
    }

    /// A random skeleton: ancestors with parents among earlier slots (slot 0 the root),
    /// candidates hung under ancestors, and one more candidate under each childless ancestor.
    fn skeleton(parents: &[usize], leaves: &[usize]) -> Skeleton {
        let m = parents.len() + 1;
        let ancestor_parent: Vec<Option<usize>> = std::iter::once(None)
            .chain(parents.iter().enumerate().map(|(j, &p)| Some(p % (j + 1))))
            .collect();
        let mut has_child = vec![false; m];
        for p in ancestor_parent.iter().flatten() {
            has_child[*p] = true;
        }
        let mut candidate_parent: Vec<Option<usize>> =
            leaves.iter().map(|&l| Some(l % m)).collect();
        for (j, &has) in has_child.iter().enumerate() {
            if !has {
                candidate_parent.push(Some(j));
            }
        }
        Skeleton {
            ancestor_parent,
            candidate_parent,
        }
    }

    #[test]
    fn depth_zero_keeps_the_root() {
        let s = Skeleton {
            ancestor_parent: vec![],
            candidate_parent: vec![None],
        };
        assert_eq!(best_kept(&s, &[-5.0], &[]), vec![true]);
    }

    #[test]
    fn hand_worked_tree() {
        // root(slot 0, -0.1) -> a(1, -0.3) -> {c0: 0.5, c1: 0.1}; root -> b(2, -0.3) -> {c2: 0.2}.
        let s = Skeleton {
            ancestor_parent: vec![None, Some(0), Some(0)],
            candidate_parent: vec![Some(1), Some(1), Some(2)],
        };
        let h = [-0.1, -0.3, -0.3];
        // best(a) = -0.3 + 0.6 = 0.3 >= 0; best(b) = -0.3 + 0.2 = -0.1 < 0: b is pruned.
        assert_eq!(best_kept(&s, &[0.5, 0.1, 0.2], &h), vec![true, true, false]);
        // Everything negative: the best single leaf with its ancestors (c2: -0.1 - 0.3 > c0's -0.8).
        assert_eq!(
            best_kept(&s, &[-0.5, -0.6, -0.1], &h),
            vec![false, false, true]
        );
    }

    #[test]
    fn ties_keep_zero_subtrees_and_the_earliest_of_equal_negatives() {
        let s = Skeleton {
            ancestor_parent: vec![None, Some(0), Some(0)],
            candidate_parent: vec![Some(2), Some(1), Some(1)],
        };
        // c2 gains exactly 0 under a live ancestor: kept.
        assert_eq!(
            best_kept(&s, &[-1.0, 1.0, 0.0], &[0.0, -0.5, -0.5]),
            vec![false, true, true]
        );
        // Both subtrees of the root are worth -0.5: the one holding candidate 0 wins.
        assert_eq!(
            best_kept(&s, &[-0.5, -0.5, -0.9], &[0.0, 0.0, 0.0]),
            vec![true, false, false]
        );
        // Siblings with equal negative gains: the lower index.
        assert_eq!(
            best_kept(&s, &[-2.0, -0.5, -0.5], &[0.0, 0.0, 0.0]),
            vec![false, true, false]
        );
    }

    proptest! {
        #[test]
        fn optimal_against_brute_force(
            parents in proptest::collection::vec(0usize..64, 0..6),
            leaves in proptest::collection::vec(0usize..64, 1..8),
            gains in proptest::collection::vec(-4i32..5, 20),
            costs in proptest::collection::vec(-3i32..1, 7),
        ) {
            let s = skeleton(&parents, &leaves);
            let n = s.candidate_parent.len();
            prop_assume!(n <= 14);
            // Quarter steps keep the sums exact, so ties are real ties.
            let g: Vec<f64> = (0..n).map(|i| f64::from(gains[i % gains.len()]) / 4.0).collect();
            let h: Vec<f64> = (0..s.ancestor_parent.len()).map(|j| f64::from(costs[j]) / 4.0).collect();
            let kept = best_kept(&s, &g, &h);
            prop_assert!(kept.iter().any(|&k| k));
            let best = (1u32..(1 << n))
                .map(|mask| {
                    let set: Vec<bool> = (0..n).map(|i| mask >> i & 1 == 1).collect();
                    value(&s, &g, &h, &set)
                })
                .fold(f64::NEG_INFINITY, f64::max);
            prop_assert_eq!(value(&s, &g, &h, &kept), best);
        }
    }
}
