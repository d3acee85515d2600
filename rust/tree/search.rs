//! The live search tree of one problem: an arena of nodes in creation order (root = 0).

use crate::error::{finite_scores, same_len, CoreError, Result};
use crate::kv::{check_block_size, measure, KvScratch, KvSizes, PrefixTree};
use crate::program::{EtsInstance, EtsParams};
use crate::types::{NodeId, TokenCount, TokenId};

/// One problem's search tree (SPEC §3.1).
///
/// Node 0 is the root; its step is the prompt, its score 1.0, its depth 0 and its `cum_tokens`
/// 0 (`cum_tokens` counts generated tokens only, the prompt is excluded). Children are appended
/// in bulk and get consecutive ids. Every node stores its step's token ids, so the exact prompt
/// of a child of `v` ([`SearchTree::prompt_token_ids`]) is rebuilt without re-tokenising.
///
/// The tree also keeps the budget bookkeeping of SPEC §3.2 ([`SearchTree::retire`]) and
/// answers KV-size queries incrementally ([`SearchTree::kv`]): each node caches its path length
/// (prompt included) and a query walks only the union of the live paths.
#[derive(Debug, Clone)]
pub struct SearchTree {
    max_tokens: TokenCount,
    /// Remaining budget; may go below 0 internally (beam search can overshoot), reported
    /// floored at 0.
    budget: i64,
    parent: Vec<Option<NodeId>>,
    depth: Vec<u32>,
    score: Vec<f64>,
    finished: Vec<bool>,
    retired_once: Vec<bool>,
    cum_tokens: Vec<TokenCount>,
    /// Node v's step is `tokens[step_start[v]..step_start[v + 1]]`.
    step_start: Vec<usize>,
    tokens: Vec<TokenId>,
    /// Tokens on the root path, prompt included.
    path_len: Vec<TokenCount>,
    scratch: KvScratch,
}

impl SearchTree {
    /// A tree holding only the root, with `width` units of budget; trajectories whose generated
    /// tokens reach `max_tokens` are retired as truncated.
    ///
    /// # Errors
    /// [`CoreError::InvalidArgument`] if `width < 1` or `max_tokens < 1`.
    pub fn new(prompt_token_ids: Vec<TokenId>, width: i64, max_tokens: i64) -> Result<Self> {
        if width < 1 {
            return Err(CoreError::invalid(
                "width",
                width,
                "width (the search budget W) must be >= 1",
            ));
        }
        let max_tokens = u64::try_from(max_tokens)
            .ok()
            .filter(|&m| m >= 1)
            .ok_or_else(|| {
                CoreError::invalid(
                    "max_tokens",
                    max_tokens,
                    "max_tokens (the cap on generated tokens per trajectory) must be >= 1",
                )
            })?;
        let prompt_len = prompt_token_ids.len() as TokenCount;
        Ok(SearchTree {
            max_tokens,
            budget: width,
            parent: vec![None],
            depth: vec![0],
            score: vec![1.0],
            finished: vec![false],
            retired_once: vec![false],
            cum_tokens: vec![0],
            step_start: vec![0, prompt_token_ids.len()],
            tokens: prompt_token_ids,
            path_len: vec![prompt_len],
            scratch: KvScratch::with_len(1),
        })
    }

    /// Number of nodes, root included.
    pub fn num_nodes(&self) -> usize {
        self.parent.len()
    }

    /// Budget left: `width` minus the trajectories retired so far, floored at 0 (an
    /// over-allocating rule such as beam search can retire more trajectories than the budget).
    pub fn remaining_budget(&self) -> u64 {
        self.budget.max(0) as u64
    }

    /// The cap on generated tokens per trajectory.
    pub fn max_tokens(&self) -> TokenCount {
        self.max_tokens
    }

    fn check(&self, what: &'static str, v: NodeId) -> Result<NodeId> {
        if v < self.num_nodes() {
            Ok(v)
        } else {
            Err(CoreError::UnknownNode {
                what,
                node: v,
                num_nodes: self.num_nodes(),
            })
        }
    }

    /// Appends one child of `parent` per entry of `steps` (its generated token ids), with its
    /// PRM score and finished flag, and returns the new ids (consecutive).
    /// `depth = parent.depth + 1`, `cum_tokens = parent.cum_tokens + len(step)`.
    /// Nothing is added if any argument is rejected.
    ///
    /// # Errors
    /// [`CoreError::UnknownNode`] for a bad parent, [`CoreError::ExpandFinished`] if the parent
    /// is finished, [`CoreError::LengthMismatch`] if `scores` or `finished` are not one entry per
    /// step, [`CoreError::NonFiniteScore`] for NaN or infinite scores.
    pub fn add_children(
        &mut self,
        parent: NodeId,
        steps: &[Vec<TokenId>],
        scores: &[f64],
        finished: &[bool],
    ) -> Result<Vec<NodeId>> {
        let p = self.check("parent", parent)?;
        same_len("scores", scores.len(), "steps", steps.len())?;
        same_len("finished", finished.len(), "steps", steps.len())?;
        finite_scores("scores", scores)?;
        if self.finished[p] {
            return Err(CoreError::ExpandFinished { node: p });
        }
        let mut cum_tokens = Vec::with_capacity(steps.len());
        let mut path_len = Vec::with_capacity(steps.len());
        for step in steps {
            let len = step.len() as TokenCount;
            cum_tokens.push(
                self.cum_tokens[p]
                    .checked_add(len)
                    .ok_or(CoreError::TokenOverflow)?,
            );
            path_len.push(
                self.path_len[p]
                    .checked_add(len)
                    .ok_or(CoreError::TokenOverflow)?,
            );
        }
        let first = self.num_nodes();
        for (i, step) in steps.iter().enumerate() {
            self.parent.push(Some(p));
            self.depth.push(self.depth[p] + 1);
            self.score.push(scores[i]);
            self.finished.push(finished[i]);
            self.retired_once.push(false);
            self.cum_tokens.push(cum_tokens[i]);
            self.tokens.extend_from_slice(step);
            self.step_start.push(self.tokens.len());
            self.path_len.push(path_len[i]);
        }
        self.scratch.grow(self.num_nodes());
        Ok((first..self.num_nodes()).collect())
    }

    /// Parent of `v`, `None` for the root.
    pub fn parent(&self, v: NodeId) -> Result<Option<NodeId>> {
        Ok(self.parent[self.check("v", v)?])
    }

    /// Depth of `v` (root 0).
    pub fn depth(&self, v: NodeId) -> Result<u32> {
        Ok(self.depth[self.check("v", v)?])
    }

    /// PRM score of `v`'s step (root 1.0).
    pub fn score(&self, v: NodeId) -> Result<f64> {
        Ok(self.score[self.check("v", v)?])
    }

    /// Whether `v` holds a final answer.
    pub fn is_finished(&self, v: NodeId) -> Result<bool> {
        Ok(self.finished[self.check("v", v)?])
    }

    /// Generated tokens on `v`'s root path (the prompt excluded).
    pub fn cum_tokens(&self, v: NodeId) -> Result<TokenCount> {
        Ok(self.cum_tokens[self.check("v", v)?])
    }

    /// Token ids of `v`'s own step (the prompt for the root).
    pub fn step_token_ids(&self, v: NodeId) -> Result<&[TokenId]> {
        let v = self.check("v", v)?;
        Ok(&self.tokens[self.step_start[v]..self.step_start[v + 1]])
    }

    /// Length of `v`'s own step (the prompt length for the root).
    pub fn step_len(&self, v: NodeId) -> Result<usize> {
        Ok(self.step_token_ids(v)?.len())
    }

    /// Node ids on the path root..v, root first.
    pub fn path(&self, v: NodeId) -> Result<Vec<NodeId>> {
        let v = self.check("v", v)?;
        let mut path = Vec::with_capacity(self.depth[v] as usize + 1);
        let mut u = Some(v);
        while let Some(x) = u {
            path.push(x);
            u = self.parent[x];
        }
        path.reverse();
        Ok(path)
    }

    /// Scores of the nodes on the path root..v, the root excluded (the trajectory's step scores).
    pub fn path_scores(&self, v: NodeId) -> Result<Vec<f64>> {
        Ok(self
            .path(v)?
            .into_iter()
            .skip(1)
            .map(|u| self.score[u])
            .collect())
    }

    /// The prompt followed by every step on the path root..v: the exact token ids a child of
    /// `v` is generated from.
    pub fn prompt_token_ids(&self, v: NodeId) -> Result<Vec<TokenId>> {
        let path = self.path(v)?;
        let mut ids = Vec::with_capacity(self.path_len[*path.last().unwrap_or(&0)] as usize);
        for u in path {
            ids.extend_from_slice(&self.tokens[self.step_start[u]..self.step_start[u + 1]]);
        }
        Ok(ids)
    }

    /// The parent array (`-1` for the root), the format of [`crate::kv`] and [`crate::program`].
    pub fn parents(&self) -> Vec<i64> {
        self.parent
            .iter()
            .map(|p| p.map_or(-1, |p| p as i64))
            .collect()
    }

    /// The ETS problem of a frontier of this tree (SPEC §5), built from the arena without
    /// exporting it: the candidates' scores are their PRM scores, and token costs use the step
    /// lengths with the prompt left out (the root's step costs 0 tokens).
    ///
    /// # Errors
    /// [`CoreError::UnknownNode`] for a bad candidate id, and the errors of
    /// [`crate::EtsInstance::from_parents`] other than those about the parent array: an empty,
    /// duplicated or non-frontier candidate list, `cluster_labels` of the wrong length, a budget
    /// below 1, a negative or non-finite lambda, a temperature that is not a finite number > 0.
    pub fn ets_instance(
        &self,
        candidates: &[NodeId],
        cluster_labels: Option<&[i64]>,
        params: EtsParams,
    ) -> Result<EtsInstance> {
        let mut scores = Vec::with_capacity(candidates.len());
        for &c in candidates {
            scores.push(self.score[self.check("candidates", c)?]);
        }
        EtsInstance::build(
            self.num_nodes(),
            |v| self.parent[v],
            |v| {
                if v == 0 {
                    0
                } else {
                    PrefixTree::step_len(self, v)
                }
            },
            candidates,
            scores,
            cluster_labels,
            params,
        )
    }

    /// Every node's step length; the root's entry is the prompt length if `include_prompt`,
    /// else 0.
    pub fn step_lengths(&self, include_prompt: bool) -> Vec<TokenCount> {
        let mut lengths: Vec<TokenCount> = self
            .step_start
            .windows(2)
            .map(|w| (w[1] - w[0]) as TokenCount)
            .collect();
        if !include_prompt {
            lengths[0] = 0;
        }
        lengths
    }

    /// Budget bookkeeping for the nodes just created (SPEC §3.2).
    ///
    /// Each node that is finished or whose `cum_tokens` reached `max_tokens` consumes one unit of
    /// budget and is returned in the second list (retired); the others are returned in the first
    /// list (the new frontier candidates). Both keep input order. Each node may be classified
    /// once; nothing changes if any id is rejected.
    ///
    /// # Errors
    /// [`CoreError::UnknownNode`], [`CoreError::DuplicateNode`] (within one call),
    /// [`CoreError::AlreadyRetired`] (a node passed in an earlier call).
    pub fn retire(&mut self, nodes: &[NodeId]) -> Result<(Vec<NodeId>, Vec<NodeId>)> {
        for (k, &v) in nodes.iter().enumerate() {
            let v = self.check("nodes", v)?;
            if self.retired_once[v] {
                return Err(CoreError::AlreadyRetired { node: v });
            }
            if nodes[..k].contains(&v) {
                return Err(CoreError::DuplicateNode {
                    what: "nodes",
                    node: v,
                });
            }
        }
        let (mut frontier, mut retired) = (Vec::new(), Vec::new());
        for &v in nodes {
            self.retired_once[v] = true;
            if self.ends_trajectory(self.cum_tokens[v], self.finished[v]) {
                self.budget -= 1;
                retired.push(v);
            } else {
                frontier.push(v);
            }
        }
        Ok((frontier, retired))
    }

    /// Whether a child of `parent` with `step_tokens` generated tokens and the `finished` flag
    /// would be retired by [`SearchTree::retire`], asked before the child exists (the search loop
    /// does not embed steps that can never be candidates).
    ///
    /// # Errors
    /// [`CoreError::UnknownNode`] for a bad parent.
    pub fn would_retire(&self, parent: NodeId, step_tokens: usize, finished: bool) -> Result<bool> {
        let p = self.check("parent", parent)?;
        let cum_tokens = self.cum_tokens[p].saturating_add(step_tokens as TokenCount);
        Ok(self.ends_trajectory(cum_tokens, finished))
    }

    /// The one retirement rule: a trajectory ends when it is finished or reaches `max_tokens`.
    fn ends_trajectory(&self, cum_tokens: TokenCount, finished: bool) -> bool {
        finished || cum_tokens >= self.max_tokens
    }

    /// Nodes with the finished flag (candidate answers), in id order.
    pub fn finished_nodes(&self) -> Vec<NodeId> {
        (0..self.num_nodes())
            .filter(|&v| self.finished[v])
            .collect()
    }

    /// KV sizes of the `live` set, the prompt counted (see [`crate::kv`]); same results as
    /// [`crate::kv::kv_sizes`] on `(parents(), step_lengths(true))`.
    ///
    /// # Errors
    /// [`CoreError::UnknownNode`] for a bad live id, [`CoreError::InvalidArgument`] for
    /// `block_size < 1`.
    pub fn kv(&mut self, live: &[NodeId], block_size: i64) -> Result<KvSizes> {
        let block_size = check_block_size(block_size)?;
        for &v in live {
            self.check("live", v)?;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let sizes = measure(&*self, live, block_size, &mut scratch);
        self.scratch = scratch;
        Ok(sizes)
    }
}

impl PrefixTree for SearchTree {
    fn parent(&self, v: NodeId) -> Option<NodeId> {
        self.parent[v]
    }
    fn step_len(&self, v: NodeId) -> TokenCount {
        (self.step_start[v + 1] - self.step_start[v]) as TokenCount
    }
    fn path_len(&self, v: NodeId) -> TokenCount {
        self.path_len[v]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{kv_sizes, naive_sizes};
    use crate::program::{NodeCost, ProgramInput};
    use crate::tests::SplitMix64;

    fn tree() -> SearchTree {
        // root prompt [1, 2, 3]; 1 = [10, 11], 2 = [20] (finished); 3 = [30, 31, 32] under 1.
        let mut t = SearchTree::new(vec![1, 2, 3], 4, 5).unwrap();
        assert_eq!(
            t.add_children(0, &[vec![10, 11], vec![20]], &[0.7, 0.9], &[false, true])
                .unwrap(),
            vec![1, 2]
        );
        assert_eq!(
            t.add_children(1, &[vec![30, 31, 32]], &[0.4], &[false])
                .unwrap(),
            vec![3]
        );
        t
    }

    #[test]
    fn root_only() {
        let mut t = SearchTree::new(vec![5, 6], 16, 1024).unwrap();
        assert_eq!((t.num_nodes(), t.remaining_budget()), (1, 16));
        assert_eq!(
            (
                t.parent(0).unwrap(),
                t.depth(0).unwrap(),
                t.score(0).unwrap()
            ),
            (None, 0, 1.0)
        );
        assert_eq!((t.cum_tokens(0).unwrap(), t.step_len(0).unwrap()), (0, 2));
        assert_eq!(t.prompt_token_ids(0).unwrap(), vec![5, 6]);
        assert!(t.path_scores(0).unwrap().is_empty());
        assert_eq!(t.step_lengths(true), vec![2]);
        assert_eq!(t.step_lengths(false), vec![0]);
        assert_eq!(
            t.kv(&[0], 4).unwrap(),
            KvSizes {
                tokens: 2,
                blocks: 1,
                unshared_tokens: 2
            }
        );
        assert_eq!(t.retire(&[0]).unwrap(), (vec![0], vec![]));
        assert!(t.finished_nodes().is_empty());
        // Empty prompt is allowed.
        let mut e = SearchTree::new(vec![], 1, 1).unwrap();
        assert_eq!(e.kv(&[0], 16).unwrap(), KvSizes::default());
    }

    #[test]
    fn accessors_and_paths() {
        let t = tree();
        assert_eq!(t.num_nodes(), 4);
        assert_eq!(t.parents(), vec![-1, 0, 0, 1]);
        assert_eq!(t.depth(3).unwrap(), 2);
        assert_eq!(t.cum_tokens(3).unwrap(), 5);
        assert_eq!(t.cum_tokens(2).unwrap(), 1);
        assert_eq!(t.path(3).unwrap(), vec![0, 1, 3]);
        assert_eq!(t.path_scores(3).unwrap(), vec![0.7, 0.4]);
        assert_eq!(t.step_token_ids(3).unwrap(), &[30, 31, 32]);
        assert_eq!(
            t.prompt_token_ids(3).unwrap(),
            vec![1, 2, 3, 10, 11, 30, 31, 32]
        );
        assert_eq!(t.step_lengths(true), vec![3, 2, 1, 3]);
        assert_eq!(t.step_lengths(false), vec![0, 2, 1, 3]);
        assert_eq!(t.finished_nodes(), vec![2]);
        assert!(t.is_finished(2).unwrap() && !t.is_finished(3).unwrap());
    }

    #[test]
    fn retire_consumes_budget_for_finished_and_truncated() {
        let mut t = tree();
        // would_retire predicts the rule before the children exist.
        assert!(!t.would_retire(1, 2, false).unwrap()); // 2 + 2 < 5
        assert!(t.would_retire(1, 3, false).unwrap()); // 2 + 3 = max_tokens
        assert!(t.would_retire(0, 1, true).unwrap());
        assert!(matches!(
            t.would_retire(9, 1, false),
            Err(CoreError::UnknownNode { node: 9, .. })
        ));
        // 2 is finished; 3 has cum_tokens 5 >= max_tokens 5; 1 stays.
        assert_eq!(t.retire(&[3, 1, 2]).unwrap(), (vec![1], vec![3, 2]));
        assert_eq!(t.remaining_budget(), 2);
        assert_eq!(
            t.retire(&[1]).unwrap_err(),
            CoreError::AlreadyRetired { node: 1 }
        );
        assert_eq!(t.retire(&[]).unwrap(), (vec![], vec![]));
        // Over-retirement floors the reported budget at 0.
        let ids = t
            .add_children(1, &[vec![1], vec![2], vec![3]], &[0.1; 3], &[true; 3])
            .unwrap();
        assert_eq!(t.retire(&ids).unwrap().1.len(), 3);
        assert_eq!(t.remaining_budget(), 0);
    }

    #[test]
    fn rejected_calls_change_nothing() {
        let mut t = tree();
        assert!(matches!(
            t.add_children(9, &[vec![1]], &[0.5], &[false]),
            Err(CoreError::UnknownNode { node: 9, .. })
        ));
        assert_eq!(
            t.add_children(2, &[vec![1]], &[0.5], &[false]).unwrap_err(),
            CoreError::ExpandFinished { node: 2 }
        );
        assert!(matches!(
            t.add_children(1, &[vec![1]], &[0.5, 0.2], &[false]),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.add_children(1, &[vec![1]], &[0.5], &[]),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(matches!(
            t.add_children(1, &[vec![1]], &[f64::NAN], &[false]),
            Err(CoreError::NonFiniteScore { .. })
        ));
        assert_eq!(t.num_nodes(), 4);
        assert_eq!(
            t.retire(&[1, 1]).unwrap_err(),
            CoreError::DuplicateNode {
                what: "nodes",
                node: 1
            }
        );
        assert!(matches!(
            t.retire(&[1, 7]),
            Err(CoreError::UnknownNode { node: 7, .. })
        ));
        assert_eq!(t.remaining_budget(), 4);
        assert_eq!(t.retire(&[1]).unwrap(), (vec![1], vec![]));
        assert!(matches!(
            t.kv(&[4], 16),
            Err(CoreError::UnknownNode { what: "live", .. })
        ));
        assert!(matches!(
            t.kv(&[1], 0),
            Err(CoreError::InvalidArgument { .. })
        ));
        assert!(t.add_children(1, &[], &[], &[]).unwrap().is_empty());
        assert!(SearchTree::new(vec![], 0, 10).is_err());
        assert!(SearchTree::new(vec![], 1, 0).is_err());
    }

    #[test]
    fn kv_agrees_with_free_functions_on_random_trees() {
        let mut rng = SplitMix64::new(42);
        for _ in 0..200 {
            let prompt: Vec<TokenId> = (0..rng.below(20)).map(|x| x as TokenId).collect();
            let mut t = SearchTree::new(prompt, 16, 1 << 40).unwrap();
            let n = 1 + rng.below(60) as usize;
            while t.num_nodes() < n {
                let p = rng.below(t.num_nodes() as u64) as usize;
                let steps: Vec<Vec<TokenId>> = (0..1 + rng.below(3))
                    .map(|_| vec![7; rng.below(12) as usize])
                    .collect();
                let k = steps.len();
                t.add_children(p, &steps, &vec![0.5; k], &vec![false; k])
                    .unwrap();
            }
            let parents = t.parents();
            let steps: Vec<i64> = t.step_lengths(true).iter().map(|&s| s as i64).collect();
            for _ in 0..5 {
                let live: Vec<NodeId> = (0..rng.below(10))
                    .map(|_| rng.below(t.num_nodes() as u64) as usize)
                    .collect();
                let live_i: Vec<i64> = live.iter().map(|&v| v as i64).collect();
                for bs in [1, 3, 16] {
                    let got = t.kv(&live, bs).unwrap();
                    assert_eq!(got, kv_sizes(&parents, &steps, &live_i, bs).unwrap());
                    assert_eq!(got, naive_sizes(&parents, &steps, &live_i, bs as u64));
                }
            }
        }
    }

    #[test]
    fn ets_instance_equals_the_parent_array_instance() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..100 {
            let mut t = SearchTree::new(vec![1; 1 + rng.below(9) as usize], 16, 1 << 40).unwrap();
            let mut frontier = vec![0];
            for _ in 0..1 + rng.below(4) {
                let mut next = Vec::new();
                for &v in &frontier {
                    let k = rng.below(4) as usize;
                    let steps: Vec<Vec<TokenId>> =
                        (0..k).map(|_| vec![3; rng.below(6) as usize]).collect();
                    let scores: Vec<f64> = (0..k).map(|_| rng.below(5) as f64 / 4.0).collect();
                    next.extend(t.add_children(v, &steps, &scores, &vec![false; k]).unwrap());
                }
                if next.is_empty() {
                    break;
                }
                frontier = next;
            }
            let labels: Vec<i64> = frontier.iter().map(|_| rng.below(3) as i64).collect();
            let params = EtsParams {
                budget: 1 + rng.below(16) as i64,
                lambda_b: [0.0, 1.0, 3.0][rng.below(3) as usize],
                lambda_s: [0.0, 1.5][rng.below(2) as usize],
                softmax_temperature: 0.2,
                cost: [NodeCost::Nodes, NodeCost::Tokens][rng.below(2) as usize],
            };
            let got = t.ets_instance(&frontier, Some(&labels), params).unwrap();
            let parents = t.parents();
            let candidates: Vec<i64> = frontier.iter().map(|&v| v as i64).collect();
            let scores: Vec<f64> = frontier.iter().map(|&v| t.score(v).unwrap()).collect();
            let steps: Vec<i64> = t.step_lengths(false).iter().map(|&s| s as i64).collect();
            let expected = EtsInstance::from_parents(&ProgramInput {
                parents: &parents,
                candidates: &candidates,
                scores: &scores,
                cluster_labels: Some(&labels),
                step_tokens: Some(&steps),
                params,
            })
            .unwrap();
            assert_eq!(got, expected);
        }
        let t = tree();
        let params = EtsParams {
            budget: 4,
            lambda_b: 1.0,
            lambda_s: 0.0,
            softmax_temperature: 0.2,
            cost: NodeCost::Nodes,
        };
        assert!(matches!(
            t.ets_instance(&[3, 9], None, params),
            Err(CoreError::UnknownNode { node: 9, .. })
        ));
        assert!(matches!(
            t.ets_instance(&[1, 3], None, params),
            Err(CoreError::CandidateIsAncestor { .. })
        ));
    }

    #[test]
    fn deep_tree() {
        let mut t = SearchTree::new(vec![0; 10], 1, 1_000_000).unwrap();
        let mut v = 0;
        for d in 1..=5000 {
            v = t.add_children(v, &[vec![1, 2]], &[0.5], &[false]).unwrap()[0];
            assert_eq!(t.depth(v).unwrap(), d);
        }
        assert_eq!(t.cum_tokens(v).unwrap(), 10_000);
        assert_eq!(t.prompt_token_ids(v).unwrap().len(), 10_010);
        assert_eq!(t.path(v).unwrap().len(), 5001);
        assert_eq!(t.kv(&[v, v - 1], 16).unwrap().tokens, 10_010);
    }
}
