//! KV-cache size of a set of live trajectories (SPEC §8.1).
//!
//! A live node `v` stands for the token sequence on its root path (the concatenation of the
//! steps root..v). With perfect prefix sharing, the KV cache holds every token position of the
//! union of those paths once ([`kv_tokens`]). An engine with block-granular prefix caching
//! (vLLM) shares only full blocks ([`kv_blocks`]); without any sharing every path is held in
//! full ([`kv_unshared_tokens`]).
//!
//! All three are computed by one walk (`measure`) that goes up from each live node and stops
//! at the first node already counted in this call, so a call costs O(size of the union), with
//! no allocation when the caller keeps a `KvScratch` (as [`crate::tree::SearchTree`] does).

use crate::error::{CoreError, Result};
use crate::tree::ParentTree;
use crate::types::{NodeId, TokenCount};

/// The three KV sizes of one live set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KvSizes {
    /// Tokens in the union of the live root paths, each node once ([`kv_tokens`]).
    pub tokens: TokenCount,
    /// Blocks held with block-granular prefix caching ([`kv_blocks`]).
    pub blocks: u64,
    /// Sum of the full path lengths of the distinct live nodes ([`kv_unshared_tokens`]).
    pub unshared_tokens: TokenCount,
}

/// What [`measure`] needs to know about a tree. Node ids passed in must be in range.
pub(crate) trait PrefixTree {
    /// Parent of `v`, `None` for the root.
    fn parent(&self, v: NodeId) -> Option<NodeId>;
    /// Tokens of `v`'s own step.
    fn step_len(&self, v: NodeId) -> TokenCount;
    /// Tokens on `v`'s root path, `v`'s step included.
    fn path_len(&self, v: NodeId) -> TokenCount;
}

/// Per-node epoch stamps reused across calls, so that a call allocates nothing.
#[derive(Debug, Clone, Default)]
pub(crate) struct KvScratch {
    in_union: Vec<u32>,
    is_live: Vec<u32>,
    epoch: u32,
}

impl KvScratch {
    /// Stamps for `n` nodes.
    pub(crate) fn with_len(n: usize) -> Self {
        KvScratch {
            in_union: vec![0; n],
            is_live: vec![0; n],
            epoch: 0,
        }
    }

    /// Makes room for `n` nodes (amortised, as nodes are added).
    pub(crate) fn grow(&mut self, n: usize) {
        if self.in_union.len() < n {
            self.in_union.resize(n, 0);
            self.is_live.resize(n, 0);
        }
    }

    /// Starts a new call: a fresh epoch, so that all stamps read as "not seen".
    fn begin(&mut self) -> u32 {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.in_union.fill(0);
            self.is_live.fill(0);
            self.epoch = 1;
        }
        self.epoch
    }
}

/// The KV sizes of `live` (duplicates count once). `block_size` must be >= 1 and the stamps in
/// `scratch` must cover every node.
pub(crate) fn measure(
    tree: &impl PrefixTree,
    live: &[NodeId],
    block_size: u64,
    scratch: &mut KvScratch,
) -> KvSizes {
    debug_assert!(block_size >= 1);
    let epoch = scratch.begin();
    let mut sizes = KvSizes::default();
    for &v in live {
        if scratch.is_live[v] == epoch {
            continue;
        }
        scratch.is_live[v] = epoch;
        let length = tree.path_len(v);
        sizes.unshared_tokens = sizes.unshared_tokens.saturating_add(length);
        // One private block holds the partial tail of this path.
        if !length.is_multiple_of(block_size) {
            sizes.blocks += 1;
        }
        let mut u = Some(v);
        while let Some(x) = u {
            if scratch.in_union[x] == epoch {
                break;
            }
            scratch.in_union[x] = epoch;
            let end = tree.path_len(x);
            let step = tree.step_len(x);
            sizes.tokens = sizes.tokens.saturating_add(step);
            // Full blocks whose last token lies in x: identified by (x, block index), shared by
            // every path through x.
            sizes.blocks += end / block_size - (end - step) / block_size;
            u = tree.parent(x);
        }
    }
    sizes
}

/// A checked parent array with its step and path lengths.
struct Prefixes {
    tree: ParentTree,
    step: Vec<TokenCount>,
    path: Vec<TokenCount>,
}

impl PrefixTree for Prefixes {
    fn parent(&self, v: NodeId) -> Option<NodeId> {
        self.tree.parent(v)
    }
    fn step_len(&self, v: NodeId) -> TokenCount {
        self.step[v]
    }
    fn path_len(&self, v: NodeId) -> TokenCount {
        self.path[v]
    }
}

/// Checks a KV block size.
pub(crate) fn check_block_size(block_size: i64) -> Result<u64> {
    u64::try_from(block_size)
        .ok()
        .filter(|&b| b >= 1)
        .ok_or_else(|| {
            CoreError::invalid(
                "block_size",
                block_size,
                "block_size must be >= 1 (the engine's KV block size in tokens, e.g. 16)",
            )
        })
}

/// All three KV sizes of the free-function API (see [`kv_tokens`], [`kv_blocks`],
/// [`kv_unshared_tokens`]); the arguments are checked as described there.
pub fn kv_sizes(
    parents: &[i64],
    step_tokens: &[i64],
    live: &[i64],
    block_size: i64,
) -> Result<KvSizes> {
    let block_size = check_block_size(block_size)?;
    let tree = ParentTree::from_parents(parents)?;
    let step = crate::types::token_counts(step_tokens, "step_tokens")?;
    let path = tree.path_lengths(&step)?;
    let live = tree.nodes("live", live)?;
    let mut scratch = KvScratch::with_len(tree.len());
    let prefixes = Prefixes { tree, step, path };
    Ok(measure(&prefixes, &live, block_size, &mut scratch))
}

/// The ETS KV metric (SPEC §8.1): the sum of `step_tokens[v]` over the union of the root
/// paths of the `live` nodes, each node once.
///
/// `parents[v]` is `v`'s parent index, `-1` for the (single) root; node order is free.
/// `step_tokens[v]` is the length of `v`'s step (the root's entry is the prompt length, or 0 to
/// leave the prompt out). Duplicate live entries count once; an empty live set gives 0.
///
/// # Errors
/// Malformed `parents` (see [`ParentTree::from_parents`]), `step_tokens` not one non-negative
/// entry per node, or a live id that is not a node.
pub fn kv_tokens(parents: &[i64], step_tokens: &[i64], live: &[i64]) -> Result<TokenCount> {
    Ok(kv_sizes(parents, step_tokens, live, 1)?.tokens)
}

/// KV blocks held by an engine with block-granular prefix caching for the `live` paths.
///
/// For a live path of total length `L`, its full blocks `b = 0..L / block_size` are identified by
/// (the node holding the block's last token, at position `(b + 1) * block_size - 1`, and `b`):
/// two paths share a full block exactly when they share its whole prefix. The result counts the
/// distinct full-block identities over all live paths plus one private partial block for each
/// distinct live path with `L % block_size != 0`.
///
/// # Errors
/// As [`kv_tokens`], and [`CoreError::InvalidArgument`] for `block_size < 1`.
pub fn kv_blocks(
    parents: &[i64],
    step_tokens: &[i64],
    live: &[i64],
    block_size: i64,
) -> Result<u64> {
    Ok(kv_sizes(parents, step_tokens, live, block_size)?.blocks)
}

/// The no-sharing total: the sum over the distinct live nodes of their full path lengths.
///
/// # Errors
/// As [`kv_tokens`].
pub fn kv_unshared_tokens(
    parents: &[i64],
    step_tokens: &[i64],
    live: &[i64],
) -> Result<TokenCount> {
    Ok(kv_sizes(parents, step_tokens, live, 1)?.unshared_tokens)
}

/// Reference implementation for tests: literal block identities, one path at a time.
#[cfg(test)]
pub(crate) fn naive_sizes(
    parents: &[i64],
    step_tokens: &[i64],
    live: &[i64],
    block_size: u64,
) -> KvSizes {
    use std::collections::BTreeSet;
    let tree = ParentTree::from_parents(parents).unwrap();
    let mut live: Vec<usize> = live.iter().map(|&v| v as usize).collect();
    live.sort_unstable();
    live.dedup();
    let mut union = BTreeSet::new();
    let mut blocks = BTreeSet::new();
    let mut partial = 0;
    let mut unshared = 0;
    for &v in &live {
        // token position -> node holding it
        let mut owner = Vec::new();
        for u in tree.path(v) {
            union.insert(u);
            owner.extend(std::iter::repeat_n(u, step_tokens[u] as usize));
        }
        let length = owner.len() as u64;
        unshared += length;
        for b in 0..length / block_size {
            blocks.insert((owner[((b + 1) * block_size - 1) as usize], b));
        }
        if !length.is_multiple_of(block_size) {
            partial += 1;
        }
    }
    let tokens = union.iter().map(|&u| step_tokens[u] as u64).sum();
    KvSizes {
        tokens,
        blocks: blocks.len() as u64 + partial,
        unshared_tokens: unshared,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::SplitMix64;

    #[test]
    fn hand_worked_tree() {
        // root(4) -> 1(3) -> 3(5); root -> 2(6). Block size 4.
        let parents = [-1, 0, 0, 1];
        let steps = [4, 3, 6, 5];
        // Paths: 3 = 4+3+5 = 12 tokens, 2 = 4+6 = 10 tokens.
        assert_eq!(kv_tokens(&parents, &steps, &[3, 2]).unwrap(), 18);
        assert_eq!(kv_unshared_tokens(&parents, &steps, &[3, 2]).unwrap(), 22);
        // Path 3 full blocks: b0 ends at 3 (root), b1 ends at 7 (node 3: positions 7..12), b2 ends
        // at 11 (node 3). Path 2: b0 (root, shared), b1 ends at 7 (node 2), partial tail (10 % 4).
        // Distinct full: (0,0), (3,1), (3,2), (2,1) = 4, plus 1 partial = 5.
        assert_eq!(kv_blocks(&parents, &steps, &[3, 2], 4).unwrap(), 5);
        assert_eq!(kv_blocks(&parents, &steps, &[3, 2], 1).unwrap(), 18);
    }

    #[test]
    fn duplicates_empty_and_single_node() {
        let parents = [-1, 0, 0];
        let steps = [2, 3, 4];
        assert_eq!(
            kv_sizes(&parents, &steps, &[1, 1, 1], 2).unwrap(),
            kv_sizes(&parents, &steps, &[1], 2).unwrap()
        );
        assert_eq!(
            kv_sizes(&parents, &steps, &[], 16).unwrap(),
            KvSizes::default()
        );
        let root_only = kv_sizes(&[-1], &[5], &[0], 4).unwrap();
        assert_eq!(
            root_only,
            KvSizes {
                tokens: 5,
                blocks: 2,
                unshared_tokens: 5
            }
        );
        // A live ancestor adds its own partial block even though its tokens are already counted.
        let s = kv_sizes(&parents, &steps, &[0, 1], 4).unwrap();
        assert_eq!(s.tokens, 5);
        assert_eq!(s.unshared_tokens, 7);
        // Full block (node 1, b0); a partial tail for path 0 (2 tokens) and for path 1 (5 tokens).
        assert_eq!(s.blocks, 3);
    }

    #[test]
    fn zero_length_steps_and_deep_chain() {
        let n = 2000usize;
        let parents: Vec<i64> = (0..n as i64).map(|v| v - 1).collect();
        let steps: Vec<i64> = (0..n as i64).map(|v| v % 3).collect();
        let total: i64 = steps.iter().sum();
        let s = kv_sizes(&parents, &steps, &[n as i64 - 1, 5, 1000], 16).unwrap();
        assert_eq!(s.tokens, total as u64);
        let naive = naive_sizes(&parents, &steps, &[n as i64 - 1, 5, 1000], 16);
        assert_eq!(s, naive);
    }

    #[test]
    fn agrees_with_naive_on_random_trees() {
        let mut rng = SplitMix64::new(7);
        for _ in 0..300 {
            let n = 1 + rng.below(40) as usize;
            let (parents, _) = crate::tests::random_tree(&mut rng, n);
            let steps: Vec<i64> = (0..n).map(|_| rng.below(9) as i64).collect();
            let live: Vec<i64> = (0..rng.below(8))
                .map(|_| rng.below(n as u64) as i64)
                .collect();
            for bs in [1u64, 2, 3, 4, 16] {
                let got = kv_sizes(&parents, &steps, &live, bs as i64).unwrap();
                assert_eq!(
                    got,
                    naive_sizes(&parents, &steps, &live, bs),
                    "parents {parents:?} steps {steps:?} live {live:?} bs {bs}"
                );
            }
        }
    }

    #[test]
    fn scratch_epochs_survive_wraparound() {
        let parents = [-1, 0, 0];
        let steps = [1, 2, 3];
        let tree = ParentTree::from_parents(&parents).unwrap();
        let path = tree.path_lengths(&[1, 2, 3]).unwrap();
        let prefixes = Prefixes {
            tree,
            step: vec![1, 2, 3],
            path,
        };
        let mut scratch = KvScratch::with_len(3);
        scratch.epoch = u32::MAX - 1;
        for _ in 0..4 {
            let s = measure(&prefixes, &[1, 2], 2, &mut scratch);
            assert_eq!(s, naive_sizes(&parents, &steps, &[1, 2], 2));
        }
        assert!(scratch.epoch >= 1 && scratch.epoch < 4);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            kv_tokens(&[-1, 0], &[1], &[1]),
            Err(CoreError::LengthMismatch { .. })
        ));
        assert!(matches!(
            kv_tokens(&[-1, 0], &[1, -1], &[1]),
            Err(CoreError::NegativeTokenCount { index: 1, .. })
        ));
        assert!(matches!(
            kv_tokens(&[-1, 0], &[1, 1], &[2]),
            Err(CoreError::UnknownNode { node: 2, .. })
        ));
        assert!(matches!(
            kv_tokens(&[-1, 0], &[1, 1], &[-1]),
            Err(CoreError::NegativeNodeId { .. })
        ));
        assert!(matches!(
            kv_blocks(&[-1], &[1], &[0], 0),
            Err(CoreError::InvalidArgument {
                name: "block_size",
                ..
            })
        ));
        assert!(matches!(
            kv_tokens(&[0], &[1], &[0]),
            Err(CoreError::NoRoot)
        ));
    }
}
