//! Property tests of the public API on arbitrary input (proptest): every call returns, nothing
//! panics (a panic would reach Python as `PanicException`, which `except Exception` misses), bad
//! input is a `CoreError` with a message, and good input keeps the documented invariants.
//! An independent oracle says which inputs are valid; results are checked against it.

use _core::{
    beam_allocation, cluster_labels, dvts_allocation, kv_sizes, reallocate_kept, rebase_allocation,
    EtsInstance, EtsParams, NodeCost, ProgramInput, SearchTree,
};
use proptest::prelude::*;

/// Small node ids and values around the edges of validity, plus anything at all now and then.
fn small_i64(hi: i64) -> impl Strategy<Value = i64> {
    prop_oneof![8 => -2..=hi, 1 => any::<i64>()]
}

fn score() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => -5.0..5.0f64,
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => any::<f64>(),
    ]
}

/// A valid tree of 1..=n nodes (ids shuffled: parents may follow children) or arbitrary values.
fn parents() -> impl Strategy<Value = Vec<i64>> {
    let valid = (1usize..12)
        .prop_flat_map(|n| {
            let ids = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
            (ids, proptest::collection::vec(any::<prop::sample::Index>(), n))
        })
        .prop_map(|(ids, picks)| {
            let mut parents = vec![-1i64; ids.len()];
            for k in 1..ids.len() {
                parents[ids[k]] = ids[picks[k].index(k)] as i64; // an earlier-created node
            }
            parents
        });
    prop_oneof![3 => valid, 1 => proptest::collection::vec(small_i64(12), 0..12)]
}

/// The oracle's view of a parent array: the root paths if it is one tree, else None.
fn root_paths(parents: &[i64]) -> Option<Vec<Vec<usize>>> {
    let n = parents.len();
    if n == 0 || parents.iter().filter(|&&p| p == -1).count() != 1 {
        return None;
    }
    if parents.iter().any(|&p| p < -1 || p >= n as i64) {
        return None;
    }
    let mut paths = Vec::with_capacity(n);
    for v in 0..n {
        let mut path = vec![v];
        let mut at = v;
        while parents[at] != -1 {
            at = parents[at] as usize;
            if path.len() > n {
                return None; // a cycle
            }
            path.push(at);
        }
        path.reverse();
        paths.push(path);
    }
    Some(paths)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn kv_sizes_are_an_error_exactly_for_bad_input(
        (parents, tokens) in parents().prop_flat_map(|parents| {
            let n = parents.len();
            let token = prop_oneof![12 => 0i64..80, 1 => small_i64(80)];
            let lengths = prop_oneof![6 => Just(n), 1 => 0..13usize];
            (Just(parents), lengths.prop_flat_map(move |len| proptest::collection::vec(token.clone(), len)))
        }),
        live in proptest::collection::vec(prop_oneof![8 => 0i64..12, 1 => small_i64(13)], 0..6),
        block_size in small_i64(40),
    ) {
        let got = kv_sizes(&parents, &tokens, &live, block_size);
        let paths = root_paths(&parents);
        let valid_tokens = paths.as_ref().is_some_and(|p| p.len() == tokens.len()) && tokens.iter().all(|&t| t >= 0);
        let valid = valid_tokens && block_size >= 1 && live.iter().all(|&v| v >= 0 && (v as usize) < parents.len());
        let fits = valid && paths.as_ref().unwrap().iter().all(|path| path.iter().map(|&v| tokens[v] as u128).sum::<u128>() <= u64::MAX as u128);
        match got {
            Err(err) => {
                prop_assert!(!err.to_string().is_empty());
                prop_assert!(!fits, "valid input rejected: {}", err);
            }
            Ok(sizes) => {
                prop_assert!(fits, "invalid input accepted");
                let paths = paths.unwrap();
                let mut union = std::collections::BTreeSet::new();
                let mut longest = 0u128;
                for &v in &live {
                    union.extend(paths[v as usize].iter().copied());
                    longest = longest.max(paths[v as usize].iter().map(|&u| tokens[u] as u128).sum());
                }
                let union_tokens: u128 = union.iter().map(|&u| tokens[u] as u128).sum();
                prop_assert_eq!(sizes.tokens as u128, union_tokens);
                prop_assert!(sizes.tokens as u128 >= longest && sizes.unshared_tokens >= sizes.tokens);
            }
        }
    }

    #[test]
    fn rebase_and_kept_reallocation_hand_out_exactly_the_budget(
        scores in proptest::collection::vec(score(), 0..10),
        kept in proptest::collection::vec(any::<bool>(), 0..10),
        budget in prop_oneof![4 => -2i64..300, 1 => any::<i64>()],
        temperature in prop_oneof![4 => 0.01..2.0f64, 1 => any::<f64>(), 1 => Just(0.0)],
    ) {
        let valid = scores.iter().all(|s| s.is_finite()) && budget >= 0 && temperature.is_finite() && temperature > 0.0;
        match rebase_allocation(&scores, budget, temperature) {
            Ok(counts) => {
                prop_assert!(valid);
                prop_assert_eq!(counts.len(), scores.len());
                let expected = if scores.is_empty() { 0 } else { budget as u64 };
                prop_assert_eq!(counts.iter().map(|&c| c as u128).sum::<u128>(), expected as u128);
            }
            Err(err) => prop_assert!(!valid && !err.to_string().is_empty()),
        }
        let kept_valid = valid && kept.len() == scores.len() && kept.iter().any(|&k| k);
        match reallocate_kept(&scores, &kept, budget, temperature) {
            Ok(counts) => {
                prop_assert!(kept_valid);
                prop_assert_eq!(counts.iter().map(|&c| c as u128).sum::<u128>(), budget as u128);
                prop_assert!(counts.iter().zip(&kept).all(|(&c, &k)| k || c == 0));
            }
            Err(err) => prop_assert!(!kept_valid && !err.to_string().is_empty()),
        }
    }

    #[test]
    fn beam_and_dvts_allocations_never_panic(
        scores in proptest::collection::vec(score(), 0..10),
        budget in prop_oneof![4 => -2i64..300, 1 => any::<i64>()],
        keep in proptest::option::of(small_i64(12)),
        groups in proptest::collection::vec(small_i64(4), 0..10),
        group_budgets in proptest::collection::vec(small_i64(50), 0..5),
    ) {
        let finite = scores.iter().all(|s| s.is_finite());
        match beam_allocation(&scores, budget, keep) {
            Ok(counts) => {
                prop_assert!(finite && budget >= 0 && keep.is_none_or(|k| k >= 1));
                let winners = counts.iter().filter(|&&c| c > 0).count() as u64;
                prop_assert!(winners <= keep.map_or(u64::MAX, |k| k as u64));
                prop_assert!(counts.iter().all(|&c| c == 0 || c == counts.iter().copied().max().unwrap()));
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
        match dvts_allocation(&groups, &scores, &group_budgets) {
            Ok(counts) => {
                prop_assert!(finite && groups.len() == scores.len());
                for (g, &b) in group_budgets.iter().enumerate() {
                    let given: u64 = counts.iter().zip(&groups).filter(|(_, &x)| x == g as i64).map(|(&c, _)| c).sum();
                    let present = groups.contains(&(g as i64));
                    prop_assert_eq!(given, if present { b.max(0) as u64 } else { 0 });
                }
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn ets_programs_are_built_or_rejected(
        parents in parents(),
        candidates in proptest::collection::vec(small_i64(12), 0..6),
        scores in proptest::collection::vec(score(), 0..6),
        labels in proptest::option::of(proptest::collection::vec(small_i64(3), 0..6)),
        budget in small_i64(20),
        lambdas in (prop_oneof![3 => 0.0..2.0f64, 1 => any::<f64>()], prop_oneof![3 => 0.0..2.0f64, 1 => any::<f64>()]),
        temperature in prop_oneof![4 => 0.01..2.0f64, 1 => any::<f64>()],
        tokens in proptest::option::of(proptest::collection::vec(small_i64(50), 0..13)),
        by_tokens in any::<bool>(),
    ) {
        let input = ProgramInput {
            parents: &parents,
            candidates: &candidates,
            scores: &scores,
            cluster_labels: labels.as_deref(),
            step_tokens: tokens.as_deref(),
            params: EtsParams {
                budget,
                lambda_b: lambdas.0,
                lambda_s: lambdas.1,
                softmax_temperature: temperature,
                cost: if by_tokens { NodeCost::Tokens } else { NodeCost::Nodes },
            },
        };
        match EtsInstance::from_parents(&input).and_then(|instance| instance.program()) {
            Ok(program) => {
                prop_assert!(root_paths(&parents).is_some() && budget >= 1 && !candidates.is_empty());
                prop_assert_eq!(program.num_x, candidates.len());
                prop_assert_eq!(program.a_start.len(), program.num_col + 1);
                prop_assert_eq!(program.a_index.len(), program.a_value.len());
                prop_assert!(program.a_index.iter().all(|&r| r >= 0 && (r as usize) < program.num_row));
                prop_assert!(program.col_cost.iter().chain(&program.a_value).all(|x| x.is_finite()));
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn clustering_any_bytes_never_panics(
        bytes in proptest::collection::vec(any::<u8>(), 0..200),
        dim in prop_oneof![4 => -1i64..6, 1 => any::<i64>()],
        threshold in prop_oneof![3 => 0.0..2.0f64, 1 => any::<f64>()],
    ) {
        match cluster_labels(&bytes, dim, threshold) {
            Ok(labels) => {
                let rows = bytes.len() / 4 / dim as usize;
                prop_assert_eq!(labels.len(), rows);
                // labels are 0..K in order of first appearance
                let mut next = 0;
                for &label in &labels {
                    prop_assert!(label <= next);
                    if label == next { next += 1; }
                }
            }
            Err(err) => prop_assert!(!err.to_string().is_empty()),
        }
    }

    #[test]
    fn a_search_tree_survives_any_sequence_of_calls(
        prompt in proptest::collection::vec(0u32..50_000, 0..20),
        width in small_i64(8),
        max_tokens in small_i64(200),
        ops in proptest::collection::vec(op(), 0..25),
    ) {
        let Ok(mut tree) = SearchTree::new(prompt, width, max_tokens) else { return Ok(()) };
        prop_assert!(width >= 1 && max_tokens >= 1);
        for op in ops {
            let before = tree.num_nodes();
            match op {
                Op::Add { parent, steps, scores, finished } => {
                    let added = tree.add_children(parent, &steps, &scores, &finished);
                    match added {
                        Ok(ids) => prop_assert_eq!(ids, (before..before + steps.len()).collect::<Vec<_>>()),
                        Err(err) => {
                            prop_assert_eq!(tree.num_nodes(), before, "a rejected add changed the tree");
                            prop_assert!(!err.to_string().is_empty());
                        }
                    }
                }
                Op::Retire(nodes) => {
                    // what would_retire said of each node as a step of its parent (None: the root or unknown)
                    let predicted: Vec<Option<bool>> = nodes
                        .iter()
                        .map(|&v| match (tree.parent(v), tree.step_len(v), tree.is_finished(v)) {
                            (Ok(Some(p)), Ok(len), Ok(finished)) => tree.would_retire(p, len, finished).ok(),
                            _ => None,
                        })
                        .collect();
                    if let Ok((frontier, retired)) = tree.retire(&nodes) {
                        prop_assert_eq!(frontier.len() + retired.len(), nodes.len());
                        for (&v, &said) in nodes.iter().zip(&predicted) {
                            if let Some(said) = said {
                                prop_assert_eq!(said, retired.contains(&v), "would_retire disagrees with retire on {}", v);
                            }
                        }
                    }
                }
                Op::Kv(live, block_size) => {
                    if let Ok(sizes) = tree.kv(&live, block_size) {
                        prop_assert!(sizes.unshared_tokens >= sizes.tokens);
                    }
                }
                Op::Path(v) => {
                    if let Ok(path) = tree.path(v) {
                        prop_assert_eq!(path.first().copied(), Some(0));
                        prop_assert_eq!(tree.path_scores(v).map(|s| s.len()).ok(), Some(path.len() - 1));
                        let cum: u64 = path[1..].iter().map(|&u| tree.step_len(u).unwrap() as u64).sum();
                        prop_assert_eq!(tree.cum_tokens(v).ok(), Some(cum));
                    }
                }
            }
            prop_assert!(tree.num_nodes() >= before);
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        parent: usize,
        steps: Vec<Vec<u32>>,
        scores: Vec<f64>,
        finished: Vec<bool>,
    },
    Retire(Vec<usize>),
    Kv(Vec<usize>, i64),
    Path(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (
            0usize..10,
            proptest::collection::vec(proptest::collection::vec(0u32..100, 0..6), 0..4),
            proptest::collection::vec(score(), 0..4),
            proptest::collection::vec(any::<bool>(), 0..4),
        )
            .prop_map(|(parent, steps, scores, finished)| Op::Add { parent, steps, scores, finished }),
        2 => proptest::collection::vec(0usize..12, 0..5).prop_map(Op::Retire),
        1 => (proptest::collection::vec(0usize..12, 0..5), small_i64(33)).prop_map(|(l, b)| Op::Kv(l, b)),
        1 => (0usize..12).prop_map(Op::Path),
    ]
}
