//! The Rust core of `ets_async`: search-tree bookkeeping, KV-size accounting, allocation rules,
//! ETS program construction and step clustering for ETS tree search (Hooper et al.,
//! arXiv 2502.13575) and its baselines.
//!
//! Everything here is pure, synchronous and deterministic: plain slices in, plain vectors out,
//! no I/O and no Python types. The Python extension `ets_async._core` is a thin layer over this
//! crate in `py.rs`, compiled only with the `python` feature; `cargo test` needs no interpreter.
//! Every rejected input is a [`CoreError`] whose message says what to fix.
//!
//! | module | job | spec |
//! |---|---|---|
//! | [`allocation`] | REBASE, ETS re-allocation, beam search, DVTS children counts | SPEC §4, §5.6, §6 |
//! | [`program`] | the ETS selection problem: exact tree DP, or HiGHS arrays | SPEC §5 |
//! | [`cluster`] | average-linkage cosine clustering of step embeddings | SPEC §5.4 |
//! | [`kv`] | KV size of live trajectories (tokens, blocks, unshared) | SPEC §8.1 |
//! | [`tree`] | checked parent arrays and the live per-problem [`tree::SearchTree`] | SPEC §3 |
//!
//! REBASE's allocation hands out the whole budget, front-loaded on the best-scoring candidates:
//!
//! ```
//! use _core::rebase_allocation;
//!
//! let counts = rebase_allocation(&[0.9, 0.5, 0.5, 0.1], 16, 0.2).unwrap();
//! assert_eq!(counts, vec![13, 1, 2, 0]); // equal scores: the later candidate is served first
//! assert_eq!(counts.iter().sum::<u64>(), 16);
//!
//! // Bad input is an error that says what to fix, never a panic.
//! let err = rebase_allocation(&[0.5, f64::NAN], 16, 0.2).unwrap_err();
//! assert!(err.to_string().contains("scores[1]"));
//! ```

pub mod allocation;
pub mod cluster;
pub mod error;
pub mod kv;
pub mod program;
pub mod tree;
pub mod types;

#[cfg(feature = "python")]
mod py;

pub use allocation::{
    beam_allocation, dvts_allocation, reallocate_kept, rebase_allocation, TieOrder,
};
pub use cluster::cluster_labels;
pub use error::{CoreError, Result};
pub use kv::{kv_blocks, kv_sizes, kv_tokens, kv_unshared_tokens, KvSizes};
pub use program::{EtsInstance, EtsParams, EtsProgram, NodeCost, ProgramInput};
pub use tree::{ParentTree, SearchTree};

#[cfg(test)]
pub(crate) mod tests {
    //! Test helpers shared by the modules' tests, and cross-module checks.

    /// SplitMix64: a tiny deterministic generator, so tests need no dependency.
    pub(crate) struct SplitMix64(u64);

    impl SplitMix64 {
        pub(crate) fn new(seed: u64) -> Self {
            SplitMix64(seed)
        }
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in `0..n` (n > 0; the modulo bias is irrelevant for tests).
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next_u64() % n
        }
        /// Uniform in `[0, 1)`.
        pub(crate) fn unit(&mut self) -> f64 {
            (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// A random tree of `n` nodes with shuffled ids (parents may have larger ids than children).
    /// Returns the parent array and the id of each creation-order node.
    pub(crate) fn random_tree(rng: &mut SplitMix64, n: usize) -> (Vec<i64>, Vec<usize>) {
        let mut ids: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            ids.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut parents = vec![-1i64; n];
        for k in 1..n {
            let p = rng.below(k as u64) as usize;
            parents[ids[k]] = ids[p] as i64;
        }
        (parents, ids)
    }

    #[test]
    fn random_trees_are_valid_trees() {
        let mut rng = SplitMix64::new(1);
        for n in 1..50 {
            let (parents, ids) = random_tree(&mut rng, n);
            let tree = crate::ParentTree::from_parents(&parents).unwrap();
            assert_eq!(tree.root(), ids[0]);
            assert_eq!(tree.len(), n);
        }
    }

    #[test]
    fn generator_is_deterministic_and_spread() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(5);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(5);
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        let mut r = SplitMix64::new(9);
        let mean = (0..10_000).map(|_| r.unit()).sum::<f64>() / 10_000.0;
        assert!((mean - 0.5).abs() < 0.02);
    }

    #[test]
    fn ets_pipeline_on_a_toy_frontier() {
        // Instance -> exact kept set (no coverage: the tree DP) -> re-allocation.
        let parents = [-1, 0, 0, 1, 1, 2];
        let candidates = [3, 4, 5];
        let scores = [0.9, 0.2, 0.6];
        let instance = crate::EtsInstance::from_parents(&crate::ProgramInput {
            parents: &parents,
            candidates: &candidates,
            scores: &scores,
            cluster_labels: None,
            step_tokens: None,
            params: crate::EtsParams {
                budget: 8,
                lambda_b: 1.0,
                lambda_s: 0.0,
                softmax_temperature: 0.2,
                cost: crate::NodeCost::Nodes,
            },
        })
        .unwrap();
        assert_eq!(instance.num_candidates(), 3);
        // REBASE gives (7, 0, 1) of 8: the 0.2 leaf is worth nothing and is dropped; the 0.6
        // leaf (1/8) does not pay for its own parent (2 nodes of 6, cost 1/3).
        let kept = instance.exact_kept().unwrap().to_vec();
        assert_eq!(kept, vec![true, false, false]);
        let counts = instance.reallocate(&kept).unwrap();
        assert_eq!(counts, vec![8, 0, 0]);
        let kv = crate::kv_tokens(&parents, &[5, 1, 1, 1, 1, 1], &[3, 5]).unwrap();
        assert_eq!(kv, 9);
    }
}
