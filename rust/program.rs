//! The ETS integer program (ets_spec §5) as plain arrays, ready for HiGHS (`highspy`).
//!
//! The original maximises
//!
//! ```text
//!   Σ_i O_i x_i  +  coef · ( Σ_j C_j y_j + Σ_i C_i x_i )  +  (λ_s / K) · Σ_k c_k
//! ```
//!
//! over binary `x_i` (keep candidate i), `y_j` (ancestor j stays live) and `c_k` (cluster k
//! covered), with `coef = -λ_b`, or `+1e-4` when `λ_b == 0` (the original's tiny reward for
//! keeping nodes, ets_spec §5.3). [`ets_program`] emits the equivalent *minimisation* (every
//! column cost negated) in HiGHS's column-wise (CSC) layout.

use crate::allocation::{rebase_allocation_with_ties, TieOrder};
use crate::error::{finite_scores, same_len, temperature, CoreError, Result};
use crate::tree::ParentTree;
use crate::types::{NodeId, TokenCount};
use std::str::FromStr;

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

/// Inputs of [`ets_program`], named like the Python arguments.
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
    /// Remaining width B (>= 1).
    pub budget: i64,
    /// Weight of the node (KV) cost, λ_b >= 0.
    pub lambda_b: f64,
    /// Weight of the coverage term, λ_s >= 0 (divided by K).
    pub lambda_s: f64,
    /// Softmax temperature T of the outcome scores.
    pub softmax_temperature: f64,
    /// Node or token cost.
    pub cost: NodeCost,
    /// Step length per node (indexed like `parents`), required for [`NodeCost::Tokens`].
    pub step_tokens: Option<&'a [i64]>,
}

/// The ETS program as a HiGHS minimisation in CSC form.
///
/// Columns: `x_i` for each candidate (input order), then `y_j` for each ancestor in
/// [`EtsProgram::ancestors`] order, then `c_k` per cluster. Rows: for each ancestor j
/// `y_j - Σ_{i∈D(j)} x_i <= 0`; for each ancestor (in ancestor order, the root excluded) and then
/// each candidate (in input order) whose parent is an ancestor, `y_parent - y_node >= 0` or
/// `y_parent - x_i >= 0` (the spec's pairwise `y_j >= x_i`, i in D(j), chained along tree edges:
/// the same integer and LP optima with M + N rows instead of one per pair); for each cluster k
/// `c_k - Σ_{i∈C_k} x_i <= 0`; finally `Σ_i x_i >= 1`. All columns are binary.
#[derive(Debug, Clone, PartialEq)]
pub struct EtsProgram {
    /// Number of columns, `N + M + K`.
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
    pub a_start: Vec<usize>,
    /// CSC row index per nonzero (ascending within a column).
    pub a_index: Vec<usize>,
    /// CSC value per nonzero.
    pub a_value: Vec<f64>,
    /// Number of x columns (candidates), N.
    pub num_x: usize,
    /// The ancestor node ids A, ascending; `y` columns follow this order.
    pub ancestors: Vec<NodeId>,
    /// Number of cluster columns K (0 when coverage is off).
    pub num_clusters: usize,
    /// Outcome score `O_i = a_i / budget` per candidate.
    pub outcome: Vec<f64>,
    /// Constant added to the objective (always 0.0).
    pub offset: f64,
}

impl EtsProgram {
    /// The maximisation objective of a column assignment (test and debugging aid):
    /// `-(Σ col_cost · values) - offset`.
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

/// Builds the ETS program of ets_spec §5.
///
/// * `A` = every ancestor of a candidate, up to and including the root (ascending ids);
///   `D(j)` = the candidates below ancestor j.
/// * `O_i = a_i / budget` with `a` the REBASE allocation of §4 over all candidates; equal scores
///   keep input order here (the original's `sorted(..., reverse=True)`, ets_spec §5.2), unlike
///   [`crate::allocation::rebase_allocation`] whose ties put the later candidate first.
/// * `C_v` per [`NodeCost`]; `coef = -λ_b`, or `+1e-4` when `λ_b == 0`.
/// * Coverage is active iff `cluster_labels` is given and `λ_s > 0`; clusters are the distinct
///   labels in ascending label order, K of them, each worth `λ_s / K`.
///
/// Depth 0 (`candidates = [root]`) gives M = 0, N = 1: one x column and the row `x >= 1`.
///
/// # Errors
/// Malformed `parents`; an empty, duplicated or non-frontier candidate list; lengths of
/// `scores`, `cluster_labels` or `step_tokens` that do not match; `budget < 1`; lambdas that are
/// negative or not finite; `softmax_temperature <= 0`; [`NodeCost::Tokens`] without
/// `step_tokens`.
pub fn ets_program(input: &ProgramInput<'_>) -> Result<EtsProgram> {
    let tree = ParentTree::from_parents(input.parents)?;
    let candidates = tree.nodes("candidates", input.candidates)?;
    if candidates.is_empty() {
        return Err(CoreError::Empty {
            what: "candidates",
            requirement: "pass at least one frontier node",
        });
    }
    let n = candidates.len();
    same_len("scores", input.scores.len(), "candidates", n)?;
    finite_scores("scores", input.scores)?;
    let t = temperature(input.softmax_temperature)?;
    if input.budget < 1 {
        return Err(CoreError::invalid(
            "budget",
            input.budget,
            "the ETS program needs budget >= 1 (the remaining width)",
        ));
    }
    let lambda_b = non_negative_finite("lambda_b", input.lambda_b)?;
    let lambda_s = non_negative_finite("lambda_s", input.lambda_s)?;
    if let Some(labels) = input.cluster_labels {
        same_len("cluster_labels", labels.len(), "candidates", n)?;
    }
    let step_tokens: Option<Vec<TokenCount>> = match input.step_tokens {
        Some(s) => {
            same_len("step_tokens", s.len(), "parents", tree.len())?;
            Some(crate::types::token_counts(s, "step_tokens")?)
        }
        None if input.cost == NodeCost::Tokens => return Err(CoreError::MissingStepTokens),
        None => None,
    };

    // Candidate index per node; reject duplicates.
    let mut candidate_of: Vec<Option<usize>> = vec![None; tree.len()];
    for (i, &c) in candidates.iter().enumerate() {
        if candidate_of[c].is_some() {
            return Err(CoreError::DuplicateNode {
                what: "candidates",
                node: c,
            });
        }
        candidate_of[c] = Some(i);
    }
    // Ancestors; reject a candidate above another. A walk stops at an ancestor already seen,
    // whose own root path was checked when it was first reached.
    let mut is_ancestor = vec![false; tree.len()];
    for &c in &candidates {
        let mut u = tree.parent(c);
        while let Some(x) = u {
            if candidate_of[x].is_some() {
                return Err(CoreError::CandidateIsAncestor {
                    ancestor: x,
                    descendant: c,
                });
            }
            if is_ancestor[x] {
                break;
            }
            is_ancestor[x] = true;
            u = tree.parent(x);
        }
    }
    let ancestors: Vec<NodeId> = (0..tree.len()).filter(|&v| is_ancestor[v]).collect();
    let m = ancestors.len();
    let mut ancestor_col = vec![usize::MAX; tree.len()];
    for (j, &a) in ancestors.iter().enumerate() {
        ancestor_col[a] = j;
    }
    // D(j), each in ascending candidate index.
    let mut below_start = vec![0usize; m + 1];
    for &c in &candidates {
        let mut u = tree.parent(c);
        while let Some(x) = u {
            below_start[ancestor_col[x] + 1] += 1;
            u = tree.parent(x);
        }
    }
    for j in 0..m {
        below_start[j + 1] += below_start[j];
    }
    let mut below_flat = vec![0usize; below_start[m]];
    let mut fill = below_start.clone();
    for (i, &c) in candidates.iter().enumerate() {
        let mut u = tree.parent(c);
        while let Some(x) = u {
            let j = ancestor_col[x];
            below_flat[fill[j]] = i;
            fill[j] += 1;
            u = tree.parent(x);
        }
    }
    let below: Vec<&[usize]> = (0..m)
        .map(|j| &below_flat[below_start[j]..below_start[j + 1]])
        .collect();

    // Outcome scores.
    let alloc = rebase_allocation_with_ties(input.scores, input.budget, t, TieOrder::EarlierFirst)?;
    let budget = input.budget as f64;
    let outcome: Vec<f64> = alloc.iter().map(|&a| a as f64 / budget).collect();

    // Node costs.
    let node_cost = 1.0 / (m + n) as f64;
    let token_total: TokenCount = match (&step_tokens, input.cost) {
        (Some(s), NodeCost::Tokens) => ancestors.iter().chain(&candidates).map(|&v| s[v]).sum(),
        _ => 0,
    };
    let cost_of = |v: NodeId| -> f64 {
        match (&step_tokens, input.cost) {
            (Some(s), NodeCost::Tokens) if token_total > 0 => s[v] as f64 / token_total as f64,
            _ => node_cost,
        }
    };
    let coef = if lambda_b == 0.0 {
        ZERO_LAMBDA_B_REWARD
    } else {
        -lambda_b
    };

    // Clusters: distinct labels ascending, members in candidate order.
    let clusters: Vec<Vec<usize>> = match input.cluster_labels {
        Some(labels) if lambda_s > 0.0 => {
            let mut distinct: Vec<i64> = labels.to_vec();
            distinct.sort_unstable();
            distinct.dedup();
            let mut members = vec![Vec::new(); distinct.len()];
            for (i, label) in labels.iter().enumerate() {
                // `distinct` holds every label, so the search always succeeds.
                let k = distinct.binary_search(label).unwrap_or(0);
                members[k].push(i);
            }
            members
        }
        _ => Vec::new(),
    };
    let k = clusters.len();

    // Columns and costs (minimisation; `+ 0.0` turns -0.0 into 0.0).
    let num_col = n + m + k;
    let mut col_cost = Vec::with_capacity(num_col);
    col_cost.extend(
        candidates
            .iter()
            .zip(&outcome)
            .map(|(&c, &o)| -(o + coef * cost_of(c)) + 0.0),
    );
    col_cost.extend(ancestors.iter().map(|&a| -(coef * cost_of(a)) + 0.0));
    col_cost.extend(std::iter::repeat_n(-(lambda_s / k.max(1) as f64) + 0.0, k));
    let x = |i: usize| i;
    let y = |j: usize| n + j;
    let c = |kk: usize| n + m + kk;

    // Rows as (column, row, value) triplets, generated in row order.
    let pairs = below_flat.len();
    let linked = (0..m)
        .filter(|&j| tree.parent(ancestors[j]).is_some())
        .count()
        + candidates
            .iter()
            .filter(|&&v| tree.parent(v).is_some())
            .count();
    let num_row = m + linked + k + 1;
    let mut triplets: Vec<(usize, usize, f64)> =
        Vec::with_capacity(m + pairs + 2 * linked + k + 2 * n);
    let mut row_lower = Vec::with_capacity(num_row);
    let mut row_upper = Vec::with_capacity(num_row);
    let mut row = 0;
    for (j, d) in below.iter().enumerate() {
        triplets.push((y(j), row, 1.0));
        triplets.extend(d.iter().map(|&i| (x(i), row, -1.0)));
        row_lower.push(-INF);
        row_upper.push(0.0);
        row += 1;
    }
    // y_j >= x_i for every candidate i below ancestor j, written along tree edges: each live node
    // keeps its parent live (y_parent - y_child >= 0, y_parent - x_i >= 0). Chained, these imply
    // exactly the pairwise constraints, so the integer optimum and the LP relaxation are the same,
    // with M + N rows instead of one per (ancestor, descendant) pair (about N * depth).
    let edges = ancestors
        .iter()
        .map(|&a| (a, y(ancestor_col[a])))
        .chain(candidates.iter().enumerate().map(|(i, &v)| (v, x(i))));
    for (node, col) in edges {
        if let Some(p) = tree.parent(node) {
            triplets.push((y(ancestor_col[p]), row, 1.0));
            triplets.push((col, row, -1.0));
            row_lower.push(0.0);
            row_upper.push(INF);
            row += 1;
        }
    }
    for (kk, members) in clusters.iter().enumerate() {
        triplets.push((c(kk), row, 1.0));
        triplets.extend(members.iter().map(|&i| (x(i), row, -1.0)));
        row_lower.push(-INF);
        row_upper.push(0.0);
        row += 1;
    }
    triplets.extend((0..n).map(|i| (x(i), row, 1.0)));
    row_lower.push(1.0);
    row_upper.push(INF);
    debug_assert_eq!(row + 1, num_row);

    // Stable counting sort by column keeps rows ascending within each column.
    let mut a_start = vec![0usize; num_col + 1];
    for &(col, _, _) in &triplets {
        a_start[col + 1] += 1;
    }
    for col in 0..num_col {
        a_start[col + 1] += a_start[col];
    }
    let mut next = a_start.clone();
    let mut a_index = vec![0usize; triplets.len()];
    let mut a_value = vec![0.0; triplets.len()];
    for &(col, r, v) in &triplets {
        a_index[next[col]] = r;
        a_value[next[col]] = v;
        next[col] += 1;
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
        a_start,
        a_index,
        a_value,
        num_x: n,
        ancestors,
        num_clusters: k,
        outcome,
        offset: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::{random_tree, SplitMix64};

    fn input<'a>(parents: &'a [i64], candidates: &'a [i64], scores: &'a [f64]) -> ProgramInput<'a> {
        ProgramInput {
            parents,
            candidates,
            scores,
            cluster_labels: None,
            budget: 16,
            lambda_b: 1.0,
            lambda_s: 0.0,
            softmax_temperature: 0.2,
            cost: NodeCost::Nodes,
            step_tokens: None,
        }
    }

    /// Row activities of a column assignment.
    fn activities(p: &EtsProgram, values: &[f64]) -> Vec<f64> {
        let mut act = vec![0.0; p.num_row];
        for (col, &value) in values.iter().enumerate() {
            for k in p.a_start[col]..p.a_start[col + 1] {
                act[p.a_index[k]] += p.a_value[k] * value;
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

    /// Best objective straight from ets_spec §5.5, over the kept set only (y, c = OR).
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

    #[test]
    fn depth_zero_root_only() {
        let p = ets_program(&input(&[-1], &[0], &[0.8])).unwrap();
        assert_eq!(
            (p.num_col, p.num_row, p.num_x, p.num_clusters),
            (1, 1, 1, 0)
        );
        assert!(p.ancestors.is_empty());
        assert_eq!(p.outcome, vec![1.0]);
        // O = 1, C = 1/(0 + 1), coef = -1: maximisation coefficient 0.
        assert_eq!(p.col_cost, vec![0.0]);
        assert_eq!(
            (p.a_start.clone(), p.a_index.clone(), p.a_value.clone()),
            (vec![0, 1], vec![0], vec![1.0])
        );
        assert_eq!((p.row_lower[0], p.row_upper[0]), (1.0, INF));
        assert_eq!(brute_force_program(&p), 0.0);
    }

    #[test]
    fn layout_of_a_small_tree() {
        // 0 -> {1, 2}; 1 -> {3, 4}; 2 -> {5}. Frontier 3, 4, 5; ancestors 0, 1, 2.
        let parents = [-1, 0, 0, 1, 1, 2];
        let candidates = [3, 4, 5];
        let scores = [0.9, 0.5, 0.5];
        let mut inp = input(&parents, &candidates, &scores);
        let labels = [4, 9, 4];
        inp.cluster_labels = Some(&labels);
        inp.lambda_s = 1.5;
        let p = ets_program(&inp).unwrap();
        assert_eq!(p.ancestors, vec![0, 1, 2]);
        assert_eq!((p.num_x, p.num_clusters, p.num_col), (3, 2, 8));
        // rows: 3 OR-upper rows; edge rows y0>=y1, y0>=y2, y1>=x0, y1>=x1, y2>=x2 (3..8);
        // 2 cluster rows (8, 9); 1 cover row (10).
        assert_eq!(p.num_row, 3 + 5 + 2 + 1);
        assert_eq!(p.a_start.len(), p.num_col + 1);
        assert_eq!(*p.a_start.last().unwrap(), p.a_index.len());
        // Column x_0 (node 3): rows y0-sum (0), y1-sum (1), edge y1>=x0 (5), cluster 0 (8),
        // cover (10).
        assert_eq!(&p.a_index[p.a_start[0]..p.a_start[1]], &[0, 1, 5, 8, 10]);
        assert_eq!(
            &p.a_value[p.a_start[0]..p.a_start[1]],
            &[-1.0, -1.0, -1.0, -1.0, 1.0]
        );
        // Column y_0 (root): its sum row and the edge rows to its children y1, y2.
        assert_eq!(&p.a_index[p.a_start[3]..p.a_start[4]], &[0, 3, 4]);
        // Cluster column c_1 (label 9) is worth λ_s / K = 0.75.
        assert_eq!(p.col_cost[7], -0.75);
        assert_eq!(p.col_cost[6], -0.75);
        // Ancestors cost λ_b / (M + N) = 1/6.
        assert!((p.col_cost[3] - 1.0 / 6.0).abs() < 1e-15);
        // Outcome: REBASE with input-order ties: [0.9, 0.5, 0.5] -> 13, then index 1 first.
        assert_eq!(p.outcome, vec![13.0 / 16.0, 2.0 / 16.0, 1.0 / 16.0]);
        for (r, (&lo, &hi)) in p.row_lower.iter().zip(&p.row_upper).enumerate() {
            assert!(lo < hi, "row {r}");
        }
    }

    #[test]
    fn program_optimum_matches_the_spec_objective() {
        let mut rng = SplitMix64::new(3);
        let mut checked = 0;
        while checked < 120 {
            let size = 2 + rng.below(9) as usize;
            let (parents, _) = random_tree(&mut rng, size);
            let tree = ParentTree::from_parents(&parents).unwrap();
            let leaves: Vec<i64> = (0..size)
                .filter(|&v| (0..size).all(|u| tree.parent(u) != Some(v)))
                .map(|v| v as i64)
                .collect();
            let candidates: Vec<i64> = leaves.into_iter().filter(|_| rng.below(4) != 0).collect();
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
                budget: 1 + rng.below(20) as i64,
                lambda_b,
                lambda_s,
                softmax_temperature: 0.2,
                cost: NodeCost::Nodes,
                step_tokens: Some(&steps),
            };
            let p = ets_program(&inp).unwrap();
            if p.num_col > 16 {
                continue;
            }
            let coef = if lambda_b == 0.0 { 1e-4 } else { -lambda_b };
            let coef_cost = coef / (p.ancestors.len() + n) as f64;
            let active = use_labels && lambda_s > 0.0;
            let spec = brute_force_spec(
                &parents,
                &candidates,
                &p.outcome,
                coef_cost,
                if active { Some(&labels) } else { None },
                lambda_s,
            );
            let program = brute_force_program(&p);
            assert!(
                (spec - program).abs() < 1e-9,
                "spec {spec} program {program} parents {parents:?} cands {candidates:?}"
            );
            // Outcome sums to 1.
            assert!((p.outcome.iter().sum::<f64>() - 1.0).abs() < 1e-12);
            checked += 1;
        }
    }

    #[test]
    fn token_cost_and_zero_lambda_b() {
        let parents = [-1, 0, 0];
        let candidates = [1, 2];
        let scores = [0.5, 0.5];
        let steps = [10, 30, 60];
        let mut inp = input(&parents, &candidates, &scores);
        inp.cost = NodeCost::Tokens;
        inp.step_tokens = Some(&steps);
        let p = ets_program(&inp).unwrap();
        // Ties in input order: ceil(16/2) = 8 each.
        assert_eq!(p.outcome, vec![0.5, 0.5]);
        assert!((p.col_cost[0] - (-(0.5 - 0.3))).abs() < 1e-15);
        assert!((p.col_cost[1] - (-(0.5 - 0.6))).abs() < 1e-15);
        assert!((p.col_cost[2] - 0.1).abs() < 1e-15);
        // All-zero tokens fall back to node cost 1/3.
        let zeros = [0, 0, 0];
        inp.step_tokens = Some(&zeros);
        let p = ets_program(&inp).unwrap();
        assert!((p.col_cost[2] - 1.0 / 3.0).abs() < 1e-15);
        // λ_b = 0: +1e-4 per node instead of a penalty.
        let mut inp = input(&parents, &candidates, &scores);
        inp.lambda_b = 0.0;
        let p = ets_program(&inp).unwrap();
        assert!((p.col_cost[2] - (-1e-4 / 3.0)).abs() < 1e-18);
        assert!((p.col_cost[0] - (-(0.5 + 1e-4 / 3.0))).abs() < 1e-15);
    }

    #[test]
    fn coverage_needs_labels_and_positive_lambda_s() {
        let parents = [-1, 0, 0];
        let candidates = [1, 2];
        let scores = [0.5, 0.4];
        let labels = [0, 0];
        let mut inp = input(&parents, &candidates, &scores);
        inp.cluster_labels = Some(&labels);
        assert_eq!(ets_program(&inp).unwrap().num_clusters, 0);
        inp.lambda_s = 1.0;
        let p = ets_program(&inp).unwrap();
        assert_eq!((p.num_clusters, p.num_col), (1, 4));
        assert_eq!(p.col_cost[3], -1.0);
    }

    #[test]
    fn deep_chain_frontier() {
        let n = 500;
        let parents: Vec<i64> = (0..n as i64).map(|v| v - 1).collect();
        let p = ets_program(&input(&parents, &[n as i64 - 1], &[0.3])).unwrap();
        assert_eq!(p.ancestors.len(), n - 1);
        // n - 1 OR-upper rows, n - 1 edge rows (n - 2 between ancestors, one to the candidate), cover.
        assert_eq!(p.num_row, (n - 1) * 2 + 1);
        // x: every OR-upper row, its own edge row and the cover row.
        assert_eq!(p.a_start[1] - p.a_start[0], (n - 1) + 2);
    }

    #[test]
    fn rejects_bad_input() {
        let parents = [-1, 0, 0, 1];
        let ok = input(&parents, &[3, 2], &[0.1, 0.2]);
        assert!(ets_program(&ok).is_ok());
        let e = ets_program(&input(&parents, &[1, 3], &[0.1, 0.2])).unwrap_err();
        assert_eq!(
            e,
            CoreError::CandidateIsAncestor {
                ancestor: 1,
                descendant: 3
            }
        );
        assert!(matches!(
            ets_program(&input(&parents, &[3, 3], &[0.1, 0.2])),
            Err(CoreError::DuplicateNode { .. })
        ));
        assert!(matches!(
            ets_program(&input(&parents, &[], &[])),
            Err(CoreError::Empty { .. })
        ));
        assert!(matches!(
            ets_program(&input(&parents, &[3], &[0.1, 0.2])),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(matches!(
            ets_program(&input(&parents, &[9], &[0.1])),
            Err(CoreError::UnknownNode { .. })
        ));
        let mut bad = ok;
        bad.budget = 0;
        assert!(matches!(
            ets_program(&bad),
            Err(CoreError::InvalidArgument { name: "budget", .. })
        ));
        let mut bad = ok;
        bad.lambda_b = -1.0;
        assert!(matches!(
            ets_program(&bad),
            Err(CoreError::InvalidArgument {
                name: "lambda_b",
                ..
            })
        ));
        let mut bad = ok;
        bad.lambda_s = f64::NAN;
        assert!(matches!(
            ets_program(&bad),
            Err(CoreError::InvalidArgument {
                name: "lambda_s",
                ..
            })
        ));
        let mut bad = ok;
        bad.softmax_temperature = 0.0;
        assert!(ets_program(&bad).is_err());
        let mut bad = ok;
        bad.cost = NodeCost::Tokens;
        assert_eq!(ets_program(&bad).unwrap_err(), CoreError::MissingStepTokens);
        let mut bad = ok;
        bad.step_tokens = Some(&[1, 2]);
        assert!(matches!(
            ets_program(&bad),
            Err(CoreError::LengthMismatch {
                what: "step_tokens",
                ..
            })
        ));
        let mut bad = ok;
        bad.cluster_labels = Some(&[0]);
        assert!(matches!(
            ets_program(&bad),
            Err(CoreError::LengthMismatch {
                what: "cluster_labels",
                ..
            })
        ));
        assert_eq!(
            "bytes".parse::<NodeCost>().unwrap_err(),
            CoreError::UnknownCost {
                got: "bytes".into()
            }
        );
        assert_eq!("tokens".parse::<NodeCost>().unwrap(), NodeCost::Tokens);
    }
}
