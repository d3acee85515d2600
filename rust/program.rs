//! The ETS selection problem of one frontier (SPEC §5), built from a tree.
//!
//! The original maximises
//!
//! ```text
//!   Σ_i O_i x_i  +  coef · ( Σ_j C_j y_j + Σ_i C_i x_i )  +  (λ_s / K) · Σ_k c_k
//! ```
//!
//! over binary `x_i` (keep candidate i), `y_j` (ancestor j stays live) and `c_k` (cluster k
//! covered), with `coef = -λ_b`, or `+1e-4` when `λ_b == 0` (the original's tiny reward for
//! keeping nodes, SPEC §5.3), subject to `y_j = OR of the x below j`, `c_k <= Σ_{i ∈ C_k} x_i`
//! and `Σ_i x_i >= 1`.
//!
//! [`EtsInstance`] holds one frontier's problem and solves it exactly without a MIP solver when it
//! is a tree problem ([`EtsInstance::exact_kept`]):
//! * the coverage term is off (no labels, or `λ_s == 0`), or every cluster has one member (then
//!   covering it is a bonus of `λ_s / K` on that member): dynamic programming over the tree
//!   (`program/tree_dp.rs`, which documents the tie rule);
//! * `λ_b == 0`: every term grows with the kept set, so keeping every candidate is optimal.
//!
//! Otherwise [`EtsInstance::program`] poses it as a HiGHS minimisation (every column cost
//! negated) in column-wise (CSC) form.

mod tree_dp;

use crate::allocation::{reallocate_kept, rebase_allocation_with_ties, TieOrder};
use crate::error::{finite_scores, same_len, temperature, CoreError, Result};
use crate::tree::ParentTree;
use crate::types::{ChildCount, NodeId, TokenCount};
use std::str::FromStr;
use tree_dp::{best_kept, Skeleton};

/// Stands for an infinite row bound (HiGHS treats any bound >= 1e20 as infinite).
pub const INF: f64 = 1e30;

/// Per-node coefficient used instead of `-λ_b` when `λ_b == 0` (a tiny reward for keeping nodes,
/// as in the original code).
pub const ZERO_LAMBDA_B_REWARD: f64 = 1e-4;

/// How the program weighs a retained node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeCost {
    /// `C_v = 1 / (M + N)` for every node (the paper's cost).
    Nodes,
    /// `C_v = step_tokens[v] / Σ_{u ∈ A ∪ L} step_tokens[u]` (an extension: KV tokens instead of
    /// node count); falls back to node cost if that sum is 0.
    Tokens,
}

impl FromStr for NodeCost {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nodes" => Ok(NodeCost::Nodes),
            "tokens" => Ok(NodeCost::Tokens),
            other => Err(CoreError::UnknownCost {
                got: other.to_string(),
            }),
        }
    }
}

/// The parameters of one ETS selection, named like the Python arguments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EtsParams {
    /// Remaining width B (>= 1).
    pub budget: i64,
    /// Weight of the node (KV) cost, λ_b >= 0.
    pub lambda_b: f64,
    /// Weight of the coverage term, λ_s >= 0 (divided by K).
    pub lambda_s: f64,
    /// Softmax temperature T of the outcome scores and of the re-allocation.
    pub softmax_temperature: f64,
    /// Node or token cost.
    pub cost: NodeCost,
}

/// Inputs of [`EtsInstance::from_parents`]: a frontier given as a parent array.
#[derive(Debug, Clone, Copy)]
pub struct ProgramInput<'a> {
    /// `parents[v]`: parent of node v, -1 for the root.
    pub parents: &'a [i64],
    /// The frontier nodes L (no candidate may be an ancestor of another).
    pub candidates: &'a [i64],
    /// PRM score per candidate.
    pub scores: &'a [f64],
    /// Cluster label per candidate; `None` disables the coverage term.
    pub cluster_labels: Option<&'a [i64]>,
    /// Step length per node (indexed like `parents`), required for [`NodeCost::Tokens`].
    pub step_tokens: Option<&'a [i64]>,
    /// λ_b, λ_s, budget, temperature, cost.
    pub params: EtsParams,
}

/// The coverage term: a cluster per candidate (0..K, distinct labels ascending).
#[derive(Debug, Clone, PartialEq)]
struct Coverage {
    cluster: Vec<usize>,
    size: Vec<usize>,
    /// λ_s / K per covered cluster.
    reward: f64,
}

/// One frontier's ETS problem: the candidates, their ancestors and every objective coefficient.
///
/// Ancestors A are every node above a candidate, up to and including the root, numbered parents
/// first. Built by [`EtsInstance::from_parents`] or [`crate::SearchTree::ets_instance`].
#[derive(Debug, Clone, PartialEq)]
pub struct EtsInstance {
    scores: Vec<f64>,
    params: EtsParams,
    ancestors: Vec<NodeId>,
    skeleton: Skeleton,
    outcome: Vec<f64>,
    /// `O_i + coef · C_i` per candidate (coverage not included).
    gain: Vec<f64>,
    /// `coef · C_j` per ancestor.
    ancestor_gain: Vec<f64>,
    coverage: Option<Coverage>,
    /// The exact kept set and its re-allocation, for tree problems.
    exact: Option<(Vec<bool>, Vec<ChildCount>)>,
}

/// The ETS program as a HiGHS minimisation in CSC form (index arrays in HiGHS's 32-bit ints).
///
/// Columns: `x_i` per candidate (input order), `y_j` per ancestor with two or more children (in
/// [`EtsInstance::ancestors`] order), then `c_k` per cluster of two or more members. Two exact
/// reductions keep the program small: an ancestor with a single child is live exactly when that
/// child is, so its cost joins the column of the child (or of the chain below it); a singleton
/// cluster's reward joins its member's `x` cost (`c_k = x_i` at any optimum). Rows: per edge of the
/// reduced tree, `y_parent - y_child >= 0` or `y_parent - x_i >= 0` (the spec's `y_j >= x_i` for i
/// below j, chained along edges: same optima, one row per edge instead of one per pair); only when
/// `λ_b == 0` (live nodes then earn a reward), per y column `y_j - Σ_{children} (y or x) <= 0` (with
/// a cost, `y <= Σ x` holds at every optimum anyway); per cluster column `c_k - Σ_{i∈C_k} x_i <= 0`;
/// last `Σ_i x_i >= 1`. All columns binary.
#[derive(Debug, Clone, PartialEq)]
pub struct EtsProgram {
    /// Number of columns.
    pub num_col: usize,
    /// Number of rows.
    pub num_row: usize,
    /// Minimisation cost per column (the negated maximisation objective).
    pub col_cost: Vec<f64>,
    /// Column lower bounds (all 0).
    pub col_lower: Vec<f64>,
    /// Column upper bounds (all 1).
    pub col_upper: Vec<f64>,
    /// Column integrality (all 1 = integer).
    pub integrality: Vec<i32>,
    /// Row lower bounds (`-INF` for none).
    pub row_lower: Vec<f64>,
    /// Row upper bounds (`INF` for none).
    pub row_upper: Vec<f64>,
    /// CSC column starts, `num_col + 1` entries.
    pub a_start: Vec<i32>,
    /// CSC row index per nonzero (ascending within a column).
    pub a_index: Vec<i32>,
    /// CSC value per nonzero.
    pub a_value: Vec<f64>,
    /// Number of x columns (candidates), N.
    pub num_x: usize,
    /// Constant added to the objective (always 0.0).
    pub offset: f64,
}

impl EtsProgram {
    /// The maximisation objective of a column assignment: `-(Σ col_cost · values) - offset`.
    pub fn max_objective(&self, values: &[f64]) -> f64 {
        -(self
            .col_cost
            .iter()
            .zip(values)
            .map(|(c, v)| c * v)
            .sum::<f64>()
            + self.offset)
    }
}

fn non_negative_finite(name: &'static str, value: f64) -> Result<f64> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(CoreError::invalid(
            name,
            value,
            "the lambdas must be finite numbers >= 0",
        ))
    }
}

const NO_SLOT: usize = usize::MAX;

impl EtsInstance {
    /// The problem of a frontier given as a parent array (the stable `ets_allocation` API).
    ///
    /// # Errors
    /// Malformed `parents`; unknown candidates; `cost = Tokens` without `step_tokens`, or
    /// `step_tokens` not one non-negative count per node; and the errors of the shared checks
    /// (see [`crate::SearchTree::ets_instance`]).
    pub fn from_parents(input: &ProgramInput<'_>) -> Result<Self> {
        let tree = ParentTree::from_parents(input.parents)?;
        let candidates = tree.nodes("candidates", input.candidates)?;
        let step_tokens: Option<Vec<TokenCount>> = match input.step_tokens {
            Some(s) => {
                same_len("step_tokens", s.len(), "parents", tree.len())?;
                Some(crate::types::token_counts(s, "step_tokens")?)
            }
            None if input.params.cost == NodeCost::Tokens => {
                return Err(CoreError::MissingStepTokens)
            }
            None => None,
        };
        let tokens = |v: NodeId| step_tokens.as_ref().map_or(0, |s| s[v]);
        Self::build(
            tree.len(),
            |v| tree.parent(v),
            tokens,
            &candidates,
            input.scores.to_vec(),
            input.cluster_labels,
            input.params,
        )
    }

    /// Builds the problem from any tree: `parent(v)` for `v < num_nodes`, `tokens(v)` the step
    /// length of node v (read only for [`NodeCost::Tokens`]), candidates already range-checked.
    ///
    /// * `O_i = a_i / budget`, `a` the REBASE allocation of §4 over all candidates, equal scores
    ///   in input order (the original's `sorted(..., reverse=True)`, SPEC §5.2);
    /// * `C_v` per [`NodeCost`]; `coef = -λ_b`, or `+1e-4` when `λ_b == 0`;
    /// * coverage is active iff `cluster_labels` is given and `λ_s > 0`; clusters are the
    ///   distinct labels ascending, K of them, each worth `λ_s / K`.
    pub(crate) fn build(
        num_nodes: usize,
        parent: impl Fn(NodeId) -> Option<NodeId>,
        tokens: impl Fn(NodeId) -> TokenCount,
        candidates: &[NodeId],
        scores: Vec<f64>,
        cluster_labels: Option<&[i64]>,
        params: EtsParams,
    ) -> Result<Self> {
        if candidates.is_empty() {
            return Err(CoreError::Empty {
                what: "candidates",
                requirement: "pass at least one frontier node",
            });
        }
        let n = candidates.len();
        same_len("scores", scores.len(), "candidates", n)?;
        finite_scores("scores", &scores)?;
        temperature(params.softmax_temperature)?;
        if params.budget < 1 {
            return Err(CoreError::invalid(
                "budget",
                params.budget,
                "the ETS program needs budget >= 1 (the remaining width)",
            ));
        }
        let lambda_b = non_negative_finite("lambda_b", params.lambda_b)?;
        let lambda_s = non_negative_finite("lambda_s", params.lambda_s)?;
        if let Some(labels) = cluster_labels {
            same_len("cluster_labels", labels.len(), "candidates", n)?;
        }

        // Candidate index per node; reject duplicates.
        let mut candidate_of = vec![NO_SLOT; num_nodes];
        for (i, &c) in candidates.iter().enumerate() {
            if candidate_of[c] != NO_SLOT {
                return Err(CoreError::DuplicateNode {
                    what: "candidates",
                    node: c,
                });
            }
            candidate_of[c] = i;
        }
        // Ancestors, numbered parents first: each walk goes up to the first ancestor already
        // numbered (whose own root path was checked then), and numbers the new ones top down.
        let mut slot = vec![NO_SLOT; num_nodes];
        let mut ancestors = Vec::new();
        let mut ancestor_parent: Vec<Option<usize>> = Vec::new();
        let mut candidate_parent = Vec::with_capacity(n);
        let mut walk = Vec::new();
        for &c in candidates {
            walk.clear();
            let mut joined = None;
            let mut u = parent(c);
            while let Some(x) = u {
                if candidate_of[x] != NO_SLOT {
                    return Err(CoreError::CandidateIsAncestor {
                        ancestor: x,
                        descendant: c,
                    });
                }
                if slot[x] != NO_SLOT {
                    joined = Some(slot[x]);
                    break;
                }
                walk.push(x);
                u = parent(x);
            }
            let mut above = joined;
            for &x in walk.iter().rev() {
                slot[x] = ancestors.len();
                ancestors.push(x);
                ancestor_parent.push(above);
                above = Some(slot[x]);
            }
            candidate_parent.push(parent(c).map(|p| slot[p]));
        }
        let m = ancestors.len();

        let alloc = rebase_allocation_with_ties(
            &scores,
            params.budget,
            params.softmax_temperature,
            TieOrder::EarlierFirst,
        )?;
        let budget = params.budget as f64;
        let outcome: Vec<f64> = alloc.iter().map(|&a| a as f64 / budget).collect();

        let node_cost = 1.0 / (m + n) as f64;
        let token_total: TokenCount = match params.cost {
            NodeCost::Tokens => ancestors.iter().chain(candidates).map(|&v| tokens(v)).sum(),
            NodeCost::Nodes => 0,
        };
        let cost_of = |v: NodeId| -> f64 {
            if token_total > 0 {
                tokens(v) as f64 / token_total as f64
            } else {
                node_cost
            }
        };
        let coef = if lambda_b == 0.0 {
            ZERO_LAMBDA_B_REWARD
        } else {
            -lambda_b
        };
        let gain: Vec<f64> = candidates
            .iter()
            .zip(&outcome)
            .map(|(&c, &o)| o + coef * cost_of(c))
            .collect();
        let ancestor_gain: Vec<f64> = ancestors.iter().map(|&a| coef * cost_of(a)).collect();

        let coverage = match cluster_labels {
            Some(labels) if lambda_s > 0.0 => {
                let mut distinct: Vec<i64> = labels.to_vec();
                distinct.sort_unstable();
                distinct.dedup();
                let mut size = vec![0; distinct.len()];
                // `distinct` holds every label, so the search always succeeds.
                let cluster: Vec<usize> = labels
                    .iter()
                    .map(|label| distinct.binary_search(label).unwrap_or(0))
                    .collect();
                for &k in &cluster {
                    size[k] += 1;
                }
                Some(Coverage {
                    cluster,
                    reward: lambda_s / distinct.len() as f64,
                    size,
                })
            }
            _ => None,
        };

        let skeleton = Skeleton {
            ancestor_parent,
            candidate_parent,
        };
        let mut instance = EtsInstance {
            scores,
            params,
            ancestors,
            skeleton,
            outcome,
            gain,
            ancestor_gain,
            coverage,
            exact: None,
        };
        let kept = if coef > 0.0 {
            Some(vec![true; n])
        } else if instance.coverage_is_separable() {
            let gain = instance.gain_with_singleton_rewards();
            Some(best_kept(
                &instance.skeleton,
                &gain,
                &instance.ancestor_gain,
            ))
        } else {
            None
        };
        if let Some(kept) = kept {
            let counts = instance.reallocate(&kept)?;
            instance.exact = Some((kept, counts));
        }
        Ok(instance)
    }

    fn coverage_is_separable(&self) -> bool {
        self.coverage
            .as_ref()
            .is_none_or(|c| c.size.iter().all(|&s| s == 1))
    }

    /// Each candidate's gain plus the reward of its cluster when it is the only member.
    fn gain_with_singleton_rewards(&self) -> Vec<f64> {
        match &self.coverage {
            None => self.gain.clone(),
            Some(c) => self
                .gain
                .iter()
                .zip(&c.cluster)
                .map(|(&g, &k)| if c.size[k] == 1 { g + c.reward } else { g })
                .collect(),
        }
    }

    /// The optimal kept set when the problem is a tree problem (module docs), else `None`: then
    /// solve [`EtsInstance::program`] with a MIP solver.
    pub fn exact_kept(&self) -> Option<&[bool]> {
        self.exact.as_ref().map(|(kept, _)| kept.as_slice())
    }

    /// [`EtsInstance::reallocate`] of [`EtsInstance::exact_kept`], computed with it.
    pub fn exact_counts(&self) -> Option<&[ChildCount]> {
        self.exact.as_ref().map(|(_, counts)| counts.as_slice())
    }

    /// Number of candidates, N.
    pub fn num_candidates(&self) -> usize {
        self.gain.len()
    }

    /// The ancestor node ids A, parents first (the root first when there is one).
    pub fn ancestors(&self) -> &[NodeId] {
        &self.ancestors
    }

    /// Number of clusters K (0 when coverage is off).
    pub fn num_clusters(&self) -> usize {
        self.coverage.as_ref().map_or(0, |c| c.size.len())
    }

    /// Outcome score `O_i = a_i / budget` per candidate.
    pub fn outcome(&self) -> &[f64] {
        &self.outcome
    }

    /// The §5.5 objective (to maximise) of a kept set, straight from the formula.
    ///
    /// # Errors
    /// [`CoreError::LengthMismatch`] if `kept` is not one flag per candidate.
    pub fn objective(&self, kept: &[bool]) -> Result<f64> {
        same_len("kept", kept.len(), "candidates", self.num_candidates())?;
        let mut live = vec![false; self.ancestors.len()];
        let mut value = 0.0;
        for (i, _) in kept.iter().enumerate().filter(|(_, &k)| k) {
            value += self.gain[i];
            let mut u = self.skeleton.candidate_parent[i];
            while let Some(j) = u.filter(|&j| !live[j]) {
                live[j] = true;
                value += self.ancestor_gain[j];
                u = self.skeleton.ancestor_parent[j];
            }
        }
        if let Some(c) = &self.coverage {
            let mut covered = vec![false; c.size.len()];
            for (i, _) in kept.iter().enumerate().filter(|(_, &k)| k) {
                covered[c.cluster[i]] = true;
            }
            value += c.reward * covered.iter().filter(|&&k| k).count() as f64;
        }
        Ok(value)
    }

    /// Children per candidate for a kept set: REBASE's rule over the kept candidates
    /// ([`crate::reallocate_kept`], SPEC §5.6), summing exactly to the budget.
    ///
    /// # Errors
    /// As [`crate::reallocate_kept`] (nothing kept, a length that does not match).
    pub fn reallocate(&self, kept: &[bool]) -> Result<Vec<ChildCount>> {
        reallocate_kept(
            &self.scores,
            kept,
            self.params.budget,
            self.params.softmax_temperature,
        )
    }

    /// The problem as a HiGHS integer program ([`EtsProgram`] documents the layout).
    ///
    /// # Errors
    /// [`CoreError::ProgramTooLarge`] if an index does not fit HiGHS's 32-bit integers.
    pub fn program(&self) -> Result<EtsProgram> {
        let n = self.num_candidates();
        let m = self.ancestors.len();
        let sk = &self.skeleton;
        // An ancestor with a single child is live exactly when that child is, so its cost joins
        // the child's column; only ancestors with two or more children get a y column.
        let mut children = vec![0usize; m];
        for &p in sk
            .ancestor_parent
            .iter()
            .chain(&sk.candidate_parent)
            .flatten()
        {
            children[p] += 1;
        }
        let mut column = vec![NO_SLOT; m];
        let mut num_y = 0;
        for j in 0..m {
            if children[j] >= 2 {
                column[j] = n + num_y;
                num_y += 1;
            }
        }
        for (i, p) in sk.candidate_parent.iter().enumerate() {
            if let Some(p) = *p {
                if children[p] == 1 {
                    column[p] = i;
                }
            }
        }
        // Slots are numbered parents first: backwards, a chain's columns resolve bottom up.
        for j in (0..m).rev() {
            if let Some(p) = sk.ancestor_parent[j] {
                if children[p] == 1 {
                    column[p] = column[j];
                }
            }
        }
        // The nearest ancestor with a y column above a slot's chain.
        let branching_above = |mut p: Option<usize>| {
            while let Some(j) = p.filter(|&j| children[j] == 1) {
                p = sk.ancestor_parent[j];
            }
            p.map(|j| column[j])
        };

        // Cluster columns for clusters of two or more members; singletons fold into x.
        let (cluster_col, k) = match &self.coverage {
            None => (Vec::new(), 0),
            Some(c) => {
                let mut next = 0;
                let cols = c
                    .size
                    .iter()
                    .map(|&s| {
                        if s >= 2 {
                            next += 1;
                            next - 1
                        } else {
                            NO_SLOT
                        }
                    })
                    .collect();
                (cols, next)
            }
        };
        let reward = self.coverage.as_ref().map_or(0.0, |c| c.reward);
        let num_col = n + num_y + k;
        let mut col_cost: Vec<f64> = self.gain_with_singleton_rewards();
        col_cost.resize(n + num_y, 0.0);
        for (j, &g) in self.ancestor_gain.iter().enumerate() {
            col_cost[column[j]] += g;
        }
        for c in col_cost.iter_mut() {
            *c = -*c + 0.0; // minimisation; `+ 0.0` turns -0.0 into 0.0
        }
        col_cost.extend(std::iter::repeat_n(-reward + 0.0, k));

        // Rows as (column, row, value) triplets; edges as (parent column, child column).
        let edges: Vec<(usize, usize)> = (0..m)
            .filter(|&j| children[j] >= 2)
            .filter_map(|j| branching_above(sk.ancestor_parent[j]).map(|p| (p, column[j])))
            .chain((0..n).filter_map(|i| branching_above(sk.candidate_parent[i]).map(|p| (p, i))))
            .collect();
        let or_rows = self.params.lambda_b == 0.0;
        let num_row = edges.len() + if or_rows { num_y } else { 0 } + k + 1;
        let mut triplets: Vec<(usize, usize, f64)> = Vec::with_capacity(4 * edges.len() + 2 * n);
        let mut row_lower = Vec::with_capacity(num_row);
        let mut row_upper = Vec::with_capacity(num_row);
        for (r, &(p, child)) in edges.iter().enumerate() {
            triplets.push((p, r, 1.0));
            triplets.push((child, r, -1.0));
            row_lower.push(0.0);
            row_upper.push(INF);
        }
        let mut row = edges.len();
        if or_rows {
            for y in 0..num_y {
                triplets.push((n + y, row + y, 1.0));
                row_lower.push(-INF);
                row_upper.push(0.0);
            }
            for &(p, child) in &edges {
                triplets.push((child, row + (p - n), -1.0));
            }
            row += num_y;
        }
        if let Some(c) = &self.coverage {
            for col in 0..k {
                triplets.push((n + num_y + col, row + col, 1.0));
            }
            for (i, &kk) in c.cluster.iter().enumerate() {
                if cluster_col[kk] != NO_SLOT {
                    triplets.push((i, row + cluster_col[kk], -1.0));
                }
            }
            row_lower.extend(std::iter::repeat_n(-INF, k));
            row_upper.extend(std::iter::repeat_n(0.0, k));
            row += k;
        }
        triplets.extend((0..n).map(|i| (i, row, 1.0)));
        row_lower.push(1.0);
        row_upper.push(INF);
        debug_assert_eq!(row + 1, num_row);

        let int = |v: usize| {
            i32::try_from(v).map_err(|_| CoreError::ProgramTooLarge {
                nonzeros: triplets.len(),
            })
        };
        // Counting sort by column, then rows ascending within each column.
        let mut start = vec![0usize; num_col + 1];
        for &(col, _, _) in &triplets {
            start[col + 1] += 1;
        }
        for col in 0..num_col {
            start[col + 1] += start[col];
        }
        let mut next = start.clone();
        let mut entries = vec![(0usize, 0.0); triplets.len()];
        for &(col, r, v) in &triplets {
            entries[next[col]] = (r, v);
            next[col] += 1;
        }
        for col in 0..num_col {
            entries[start[col]..start[col + 1]].sort_unstable_by_key(|&(r, _)| r);
        }
        Ok(EtsProgram {
            num_col,
            num_row,
            col_cost,
            col_lower: vec![0.0; num_col],
            col_upper: vec![1.0; num_col],
            integrality: vec![1; num_col],
            row_lower,
            row_upper,
            a_start: start.iter().map(|&s| int(s)).collect::<Result<_>>()?,
            a_index: entries
                .iter()
                .map(|&(r, _)| int(r))
                .collect::<Result<_>>()?,
            a_value: entries.iter().map(|&(_, v)| v).collect(),
            num_x: n,
            offset: 0.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{random_tree, SplitMix64};
    use proptest::prelude::*;

    const PARAMS: EtsParams = EtsParams {
        budget: 16,
        lambda_b: 1.0,
        lambda_s: 0.0,
        softmax_temperature: 0.2,
        cost: NodeCost::Nodes,
    };

    fn input<'a>(parents: &'a [i64], candidates: &'a [i64], scores: &'a [f64]) -> ProgramInput<'a> {
        ProgramInput {
            parents,
            candidates,
            scores,
            cluster_labels: None,
            step_tokens: None,
            params: PARAMS,
        }
    }

    fn instance(input: &ProgramInput<'_>) -> EtsInstance {
        EtsInstance::from_parents(input).unwrap()
    }

    /// Row activities of a column assignment.
    fn activities(p: &EtsProgram, values: &[f64]) -> Vec<f64> {
        let mut act = vec![0.0; p.num_row];
        for (col, &value) in values.iter().enumerate() {
            for k in p.a_start[col] as usize..p.a_start[col + 1] as usize {
                act[p.a_index[k] as usize] += p.a_value[k] * value;
            }
        }
        act
    }

    fn feasible(p: &EtsProgram, values: &[f64]) -> bool {
        let act = activities(p, values);
        (0..p.num_row).all(|r| act[r] >= p.row_lower[r] - 1e-9 && act[r] <= p.row_upper[r] + 1e-9)
    }

    /// Best maximisation objective over all binary assignments of all columns.
    fn brute_force_program(p: &EtsProgram) -> f64 {
        assert!(p.num_col <= 20);
        let mut best = f64::NEG_INFINITY;
        for mask in 0u32..(1 << p.num_col) {
            let values: Vec<f64> = (0..p.num_col).map(|b| ((mask >> b) & 1) as f64).collect();
            if feasible(p, &values) {
                best = best.max(p.max_objective(&values));
            }
        }
        best
    }

    /// Best objective straight from SPEC §5.5, over nonempty kept sets (y, c = OR), from
    /// the parent array and the outcome scores only.
    fn brute_force_spec(
        parents: &[i64],
        candidates: &[i64],
        outcome: &[f64],
        coef_cost: f64,
        labels: Option<&[i64]>,
        lambda_s: f64,
    ) -> f64 {
        let tree = ParentTree::from_parents(parents).unwrap();
        let n = candidates.len();
        let mut best = f64::NEG_INFINITY;
        for mask in 1u32..(1 << n) {
            let kept: Vec<usize> = (0..n).filter(|&i| (mask >> i) & 1 == 1).collect();
            let mut live = std::collections::BTreeSet::new();
            for &i in &kept {
                live.extend(tree.path(candidates[i] as usize));
            }
            let mut value: f64 = kept.iter().map(|&i| outcome[i]).sum();
            value += coef_cost * live.len() as f64;
            if let Some(labels) = labels {
                let all: std::collections::BTreeSet<i64> = labels.iter().copied().collect();
                let covered: std::collections::BTreeSet<i64> =
                    kept.iter().map(|&i| labels[i]).collect();
                value += lambda_s / all.len() as f64 * covered.len() as f64;
            }
            best = best.max(value);
        }
        best
    }

    /// Best of `objective` over nonempty kept sets.
    fn brute_force_objective(inst: &EtsInstance) -> f64 {
        let n = inst.num_candidates();
        (1u32..(1 << n))
            .map(|mask| {
                let kept: Vec<bool> = (0..n).map(|i| mask >> i & 1 == 1).collect();
                inst.objective(&kept).unwrap()
            })
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// The leaves of a parent array, as candidate ids.
    fn leaves(parents: &[i64]) -> Vec<i64> {
        let n = parents.len();
        (0..n as i64)
            .filter(|&v| parents.iter().all(|&p| p != v) || n == 1)
            .collect()
    }

    #[test]
    fn depth_zero_root_only() {
        let inst = instance(&input(&[-1], &[0], &[0.8]));
        assert!(inst.ancestors().is_empty());
        assert_eq!(inst.outcome(), &[1.0]);
        assert_eq!(inst.exact_kept(), Some(&[true][..]));
        let p = inst.program().unwrap();
        assert_eq!((p.num_col, p.num_row, p.num_x), (1, 1, 1));
        // O = 1, C = 1/(0 + 1), coef = -1: maximisation coefficient 0.
        assert_eq!(p.col_cost, vec![0.0]);
        assert_eq!(
            (p.a_start.clone(), p.a_index.clone(), p.a_value.clone()),
            (vec![0, 1], vec![0], vec![1.0])
        );
        assert_eq!((p.row_lower[0], p.row_upper[0]), (1.0, INF));
        assert_eq!(inst.reallocate(&[true]).unwrap(), vec![16]);
    }

    #[test]
    fn layout_of_a_small_tree() {
        // 0 -> {1, 2}; 1 -> {3, 4}; 2 -> {5, 6}. Frontier 3, 4, 5, 6; labels {4: 3, 5}, {9: 4},
        // {7: 6}: one cluster of two members, two singletons.
        let parents = [-1, 0, 0, 1, 1, 2, 2];
        let candidates = [3, 4, 5, 6];
        let scores = [0.9, 0.5, 0.5, 0.4];
        let labels = [4, 9, 4, 7];
        let mut inp = input(&parents, &candidates, &scores);
        inp.cluster_labels = Some(&labels);
        inp.params.lambda_s = 1.5;
        let inst = instance(&inp);
        // Walk from 3 numbers 0, 1; from 5 numbers 2.
        assert_eq!(inst.ancestors(), &[0, 1, 2]);
        assert_eq!(inst.num_clusters(), 3);
        assert!(inst.exact_kept().is_none()); // cluster 4 has two members
        let p = inst.program().unwrap();
        // x0..x3, y0..y2, one cluster column.
        assert_eq!((p.num_x, p.num_col), (4, 8));
        // rows: edges y0>=y1, y0>=y2 (0, 1), y1>=x0, y1>=x1, y2>=x2, y2>=x3 (2..6); cluster (6);
        // cover (7). No OR rows: lambda_b > 0.
        assert_eq!(p.num_row, 8);
        assert_eq!(p.a_start.len(), p.num_col + 1);
        assert_eq!(*p.a_start.last().unwrap() as usize, p.a_index.len());
        // x0 (node 3): edge y1>=x0 (2), cluster (6), cover (7).
        assert_eq!(&p.a_index[0..3], &[2, 6, 7]);
        assert_eq!(&p.a_value[0..3], &[-1.0, -1.0, 1.0]);
        // x1 (node 4, a singleton): its edge and the cover row; its cluster reward is in its cost.
        assert_eq!(&p.a_index[3..5], &[3, 7]);
        // Outcome: REBASE with input-order ties, [0.9, 0.5, 0.5, 0.4] over 16.
        let o = inst.outcome();
        let reward = 1.5 / 3.0;
        assert!((p.col_cost[1] - -(o[1] - 1.0 / 7.0 + reward)).abs() < 1e-15);
        assert!((p.col_cost[0] - -(o[0] - 1.0 / 7.0)).abs() < 1e-15);
        // Ancestors cost λ_b / (M + N) = 1/7; the cluster column is worth λ_s / K.
        assert!((p.col_cost[4] - 1.0 / 7.0).abs() < 1e-15);
        assert_eq!(p.col_cost[7], -reward);
        // y0 (root): the edge rows to its children y1, y2.
        assert_eq!(
            &p.a_index[p.a_start[4] as usize..p.a_start[5] as usize],
            &[0, 1]
        );
        for (r, (&lo, &hi)) in p.row_lower.iter().zip(&p.row_upper).enumerate() {
            assert!(lo < hi, "row {r}");
        }
    }

    #[test]
    fn or_rows_only_when_live_nodes_earn_a_reward() {
        // 0 -> {1, 2}; 1 -> 3; 2 -> 4. Nodes 1 and 2 have one child each: merged into x0, x1.
        let parents = [-1, 0, 0, 1, 2];
        let candidates = [3, 4];
        let scores = [0.5, 0.4];
        let mut inp = input(&parents, &candidates, &scores);
        inp.params.lambda_b = 0.0;
        let inst = instance(&inp);
        assert_eq!(inst.exact_kept(), Some(&[true, true][..]));
        let p = inst.program().unwrap();
        // x0, x1, y0; edges y0 >= x0, y0 >= x1 (rows 0, 1); the root's OR row (2); cover (3).
        assert_eq!((p.num_col, p.num_row), (3, 4));
        let mut row2 = Vec::new();
        for c in 0..p.num_col {
            for e in p.a_start[c] as usize..p.a_start[c + 1] as usize {
                if p.a_index[e] == 2 {
                    row2.push((c, p.a_value[e]));
                }
            }
        }
        assert_eq!(row2, vec![(0, -1.0), (1, -1.0), (2, 1.0)]);
        // λ_b = 0: every node earns 1e-4 / 5; x0 carries node 3's and node 1's.
        let o = inst.outcome();
        assert!((p.col_cost[0] - -(o[0] + 2e-4 / 5.0)).abs() < 1e-15);
        assert!((brute_force_program(&p) - brute_force_objective(&inst)).abs() < 1e-12);
        inp.params.lambda_b = 1.0;
        assert_eq!(instance(&inp).program().unwrap().num_row, 3);
    }

    #[test]
    fn single_child_ancestors_join_the_column_below() {
        // 0 -> 1 -> 2 -> {3, 4}; 3 -> 5 -> 6; 4 -> 7; 4 -> 8. Candidates 6, 7, 8.
        // Branching: 2 and 4. Chains: 0, 1 join y(2); 3, 5 join x(6).
        let parents = [-1, 0, 1, 2, 2, 3, 5, 4, 4];
        let candidates = [6, 7, 8];
        let scores = [0.9, 0.3, 0.2];
        let mut inp = input(&parents, &candidates, &scores);
        let labels = [0, 1, 1];
        inp.cluster_labels = Some(&labels);
        inp.params.lambda_s = 1.5;
        let inst = instance(&inp);
        let p = inst.program().unwrap();
        // x0..x2, y(2), y(4), one cluster column {7, 8}.
        assert_eq!(p.num_col, 6);
        // Edges y(2) >= x0, y(2) >= y(4), y(4) >= x1, y(4) >= x2; cluster; cover.
        assert_eq!(p.num_row, 6);
        let cost = 1.0 / 9.0; // λ_b / (M + N), M = 6 ancestors, N = 3
        assert!((p.col_cost[3] - 3.0 * cost).abs() < 1e-15); // nodes 0, 1, 2
        assert!((p.col_cost[4] - cost).abs() < 1e-15); // node 4
        let singleton = 1.5 / 2.0;
        assert!((p.col_cost[0] - -(inst.outcome()[0] - 3.0 * cost + singleton)).abs() < 1e-15);
        assert!((brute_force_program(&p) - brute_force_objective(&inst)).abs() < 1e-12);
    }

    #[test]
    fn program_optimum_matches_the_spec_objective() {
        let mut rng = SplitMix64::new(3);
        let mut checked = 0;
        while checked < 150 {
            let size = 2 + rng.below(9) as usize;
            let (parents, _) = random_tree(&mut rng, size);
            let candidates: Vec<i64> = leaves(&parents)
                .into_iter()
                .filter(|_| rng.below(4) != 0)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let n = candidates.len();
            let scores: Vec<f64> = (0..n).map(|_| rng.below(5) as f64 / 4.0).collect();
            let labels: Vec<i64> = (0..n).map(|_| rng.below(3) as i64).collect();
            let steps: Vec<i64> = (0..size).map(|_| rng.below(4) as i64).collect();
            let lambda_b = [0.0, 0.5, 1.0, 3.0][rng.below(4) as usize];
            let lambda_s = [0.0, 1.5][rng.below(2) as usize];
            let use_labels = rng.below(2) == 0;
            let inp = ProgramInput {
                parents: &parents,
                candidates: &candidates,
                scores: &scores,
                cluster_labels: if use_labels { Some(&labels) } else { None },
                step_tokens: Some(&steps),
                params: EtsParams {
                    budget: 1 + rng.below(20) as i64,
                    lambda_b,
                    lambda_s,
                    softmax_temperature: 0.2,
                    cost: NodeCost::Nodes,
                },
            };
            let inst = instance(&inp);
            let p = inst.program().unwrap();
            if p.num_col > 16 {
                continue;
            }
            let coef = if lambda_b == 0.0 { 1e-4 } else { -lambda_b };
            let coef_cost = coef / (inst.ancestors().len() + n) as f64;
            let active = use_labels && lambda_s > 0.0;
            let spec = brute_force_spec(
                &parents,
                &candidates,
                inst.outcome(),
                coef_cost,
                if active { Some(&labels) } else { None },
                lambda_s,
            );
            let program = brute_force_program(&p);
            assert!(
                (spec - program).abs() < 1e-9,
                "spec {spec} program {program} parents {parents:?} cands {candidates:?}"
            );
            assert!((spec - brute_force_objective(&inst)).abs() < 1e-9);
            if let Some(kept) = inst.exact_kept() {
                assert!((spec - inst.objective(kept).unwrap()).abs() < 1e-9);
            }
            assert!((inst.outcome().iter().sum::<f64>() - 1.0).abs() < 1e-12);
            checked += 1;
        }
    }

    /// A random frontier: a tree grown in creation order (`picks[k] % k` is node k+1's parent),
    /// its leaves where `mask` says so (at least one).
    fn frontier(picks: &[usize], mask: u32) -> (Vec<i64>, Vec<i64>) {
        let parents: Vec<i64> = std::iter::once(-1)
            .chain(picks.iter().enumerate().map(|(k, &p)| (p % (k + 1)) as i64))
            .collect();
        let all = leaves(&parents);
        let chosen: Vec<i64> = all
            .iter()
            .enumerate()
            .filter(|(i, _)| mask >> (i % 32) & 1 == 1)
            .map(|(_, &v)| v)
            .collect();
        (parents, if chosen.is_empty() { all } else { chosen })
    }

    proptest! {
        /// The tree DP's kept set reaches the best objective over every kept set and the
        /// program's own optimum, whenever the problem is a tree problem.
        #[test]
        fn exact_path_is_optimal(
            picks in proptest::collection::vec(0usize..1000, 1..14),
            mask in any::<u32>(),
            score_picks in proptest::collection::vec(0usize..5, 14),
            labels_kind in 0usize..4,
            lambda_b in prop::sample::select(vec![0.0, 0.5, 1.0, 2.0, 6.0]),
            lambda_s in prop::sample::select(vec![0.0, 1.5]),
            budget in 1i64..24,
            tokens in any::<bool>(),
            steps in proptest::collection::vec(0i64..6, 15),
        ) {
            let (parents, candidates) = frontier(&picks, mask);
            let n = candidates.len();
            prop_assume!(n <= 12);
            // Ties on purpose: five score values.
            let scores: Vec<f64> = (0..n).map(|i| [0.0, 0.3, 0.5, 0.5, 0.9][score_picks[i]]).collect();
            let singletons: Vec<i64> = (0..n as i64).map(|i| 10 * i).collect();
            let shared: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
            let labels: Option<&[i64]> = match labels_kind {
                0 => None,
                1 => Some(&singletons),
                _ => Some(&shared),
            };
            let inst = instance(&ProgramInput {
                parents: &parents,
                candidates: &candidates,
                scores: &scores,
                cluster_labels: labels,
                step_tokens: Some(&steps[..parents.len()]),
                params: EtsParams {
                    budget,
                    lambda_b,
                    lambda_s,
                    softmax_temperature: 0.2,
                    cost: if tokens { NodeCost::Tokens } else { NodeCost::Nodes },
                },
            });
            // Labels i % 2 form singletons only for n <= 2.
            let separable = labels_kind < 2 || lambda_s == 0.0 || n <= 2 || lambda_b == 0.0;
            prop_assert_eq!(inst.exact_kept().is_some(), separable);
            if let Some(kept) = inst.exact_kept() {
                prop_assert!(kept.iter().any(|&k| k));
                let got = inst.objective(kept).unwrap();
                let best = brute_force_objective(&inst);
                prop_assert!((got - best).abs() < 1e-12, "dp {} brute force {}", got, best);
                let p = inst.program().unwrap();
                if p.num_col <= 18 {
                    prop_assert!((brute_force_program(&p) - best).abs() < 1e-12);
                }
                let counts = inst.reallocate(kept).unwrap();
                prop_assert_eq!(counts.iter().sum::<u64>(), budget as u64);
                prop_assert_eq!(inst.exact_counts(), Some(&counts[..]));
            }
        }
    }

    #[test]
    fn token_cost_and_zero_lambda_b() {
        let parents = [-1, 0, 0];
        let candidates = [1, 2];
        let scores = [0.5, 0.5];
        let steps = [10, 30, 60];
        let mut inp = input(&parents, &candidates, &scores);
        inp.params.cost = NodeCost::Tokens;
        inp.step_tokens = Some(&steps);
        let p = instance(&inp).program().unwrap();
        // Ties in input order: ceil(16/2) = 8 each.
        assert!((p.col_cost[0] - (-(0.5 - 0.3))).abs() < 1e-15);
        assert!((p.col_cost[1] - (-(0.5 - 0.6))).abs() < 1e-15);
        assert!((p.col_cost[2] - 0.1).abs() < 1e-15);
        // Keeping 1 is worth 0.5 - 0.3 - 0.1 > 0; 2 adds 0.5 - 0.6 < 0.
        assert_eq!(instance(&inp).exact_kept(), Some(&[true, false][..]));
        // All-zero tokens fall back to node cost 1/3.
        let zeros = [0, 0, 0];
        inp.step_tokens = Some(&zeros);
        let p = instance(&inp).program().unwrap();
        assert!((p.col_cost[2] - 1.0 / 3.0).abs() < 1e-15);
        // λ_b = 0: +1e-4 per node instead of a penalty, and everything is kept.
        let mut inp = input(&parents, &candidates, &scores);
        inp.params.lambda_b = 0.0;
        let inst = instance(&inp);
        let p = inst.program().unwrap();
        assert!((p.col_cost[2] - (-1e-4 / 3.0)).abs() < 1e-18);
        assert!((p.col_cost[0] - (-(0.5 + 1e-4 / 3.0))).abs() < 1e-15);
        assert_eq!(inst.exact_kept(), Some(&[true, true][..]));
    }

    #[test]
    fn coverage_needs_labels_and_positive_lambda_s() {
        let parents = [-1, 0, 0];
        let candidates = [1, 2];
        let scores = [0.5, 0.4];
        let labels = [0, 0];
        let mut inp = input(&parents, &candidates, &scores);
        inp.cluster_labels = Some(&labels);
        let inst = instance(&inp);
        assert_eq!(inst.num_clusters(), 0);
        assert!(inst.exact_kept().is_some());
        inp.params.lambda_s = 1.0;
        let inst = instance(&inp);
        assert_eq!(inst.num_clusters(), 1);
        assert!(inst.exact_kept().is_none());
        let p = inst.program().unwrap();
        assert_eq!(p.num_col, 4);
        assert_eq!(p.col_cost[3], -1.0);
        // Keeping only candidate 0 covers the cluster: O_0 - 2/3 + 1 (λ_b = 1, 3 live of 3 nodes
        // cost 1/3 each).
        let o = inst.outcome()[0];
        assert!((inst.objective(&[true, false]).unwrap() - (o - 2.0 / 3.0 + 1.0)).abs() < 1e-15);
    }

    #[test]
    fn deep_chain_frontier() {
        let n = 500;
        let parents: Vec<i64> = (0..n as i64).map(|v| v - 1).collect();
        let inst = instance(&input(&parents, &[n as i64 - 1], &[0.3]));
        assert_eq!(inst.ancestors().len(), n - 1);
        assert_eq!(inst.ancestors()[0], 0); // parents first
        assert_eq!(inst.exact_kept(), Some(&[true][..]));
        let p = inst.program().unwrap();
        // The whole chain joins the candidate's column: one column, the cover row.
        assert_eq!((p.num_col, p.num_row), (1, 1));
        assert!((p.col_cost[0] - -(1.0 - 1.0)).abs() < 1e-12); // O = 1, n nodes at 1/n each
    }

    #[test]
    fn unordered_node_ids_number_ancestors_parents_first() {
        // 3 is the root; 3 -> 0 -> {1, 4}; 3 -> 2.
        let parents = [3, 0, 3, -1, 0];
        let inst = instance(&input(&parents, &[4, 2, 1], &[0.5, 0.6, 0.7]));
        assert_eq!(inst.ancestors(), &[3, 0]);
        let p = inst.program().unwrap();
        assert!((brute_force_program(&p) - brute_force_objective(&inst)).abs() < 1e-12);
    }

    #[test]
    fn rejects_bad_input() {
        let parents = [-1, 0, 0, 1];
        let ok = input(&parents, &[3, 2], &[0.1, 0.2]);
        assert!(EtsInstance::from_parents(&ok).is_ok());
        let e = EtsInstance::from_parents(&input(&parents, &[1, 3], &[0.1, 0.2])).unwrap_err();
        assert_eq!(
            e,
            CoreError::CandidateIsAncestor {
                ancestor: 1,
                descendant: 3
            }
        );
        assert!(matches!(
            EtsInstance::from_parents(&input(&parents, &[3, 1], &[0.1, 0.2])),
            Err(CoreError::CandidateIsAncestor { .. })
        ));
        assert!(matches!(
            EtsInstance::from_parents(&input(&parents, &[3, 3], &[0.1, 0.2])),
            Err(CoreError::DuplicateNode { .. })
        ));
        assert!(matches!(
            EtsInstance::from_parents(&input(&parents, &[], &[])),
            Err(CoreError::Empty { .. })
        ));
        assert!(matches!(
            EtsInstance::from_parents(&input(&parents, &[3], &[0.1, 0.2])),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(matches!(
            EtsInstance::from_parents(&input(&parents, &[9], &[0.1])),
            Err(CoreError::UnknownNode { .. })
        ));
        let bad_params = |f: fn(&mut EtsParams)| {
            let mut bad = ok;
            f(&mut bad.params);
            EtsInstance::from_parents(&bad).unwrap_err()
        };
        assert!(matches!(
            bad_params(|p| p.budget = 0),
            CoreError::InvalidArgument { name: "budget", .. }
        ));
        assert!(matches!(
            bad_params(|p| p.lambda_b = -1.0),
            CoreError::InvalidArgument {
                name: "lambda_b",
                ..
            }
        ));
        assert!(matches!(
            bad_params(|p| p.lambda_s = f64::NAN),
            CoreError::InvalidArgument {
                name: "lambda_s",
                ..
            }
        ));
        assert!(matches!(
            bad_params(|p| p.softmax_temperature = 0.0),
            CoreError::InvalidArgument { .. }
        ));
        assert_eq!(
            bad_params(|p| p.cost = NodeCost::Tokens),
            CoreError::MissingStepTokens
        );
        let mut bad = ok;
        bad.step_tokens = Some(&[1, 2]);
        assert!(matches!(
            EtsInstance::from_parents(&bad),
            Err(CoreError::LengthMismatch {
                what: "step_tokens",
                ..
            })
        ));
        let mut bad = ok;
        bad.cluster_labels = Some(&[0]);
        assert!(matches!(
            EtsInstance::from_parents(&bad),
            Err(CoreError::LengthMismatch {
                what: "cluster_labels",
                ..
            })
        ));
        let inst = instance(&ok);
        assert!(matches!(
            inst.objective(&[true]),
            Err(CoreError::LengthMismatch { what: "kept", .. })
        ));
        assert_eq!(
            inst.reallocate(&[false, false]).unwrap_err(),
            CoreError::NothingKept
        );
        assert_eq!(
            "bytes".parse::<NodeCost>().unwrap_err(),
            CoreError::UnknownCost {
                got: "bytes".into()
            }
        );
        assert_eq!("tokens".parse::<NodeCost>().unwrap(), NodeCost::Tokens);
    }
}
