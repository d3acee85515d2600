//! Allocation rules: how many children each frontier candidate receives.
//!
//! Every rule is a pure function of plain slices and returns one count per candidate, in input
//! order. The shared machinery lives here: the score orderings (whose tie order matters for
//! reproducing the original code bit for bit) and REBASE's sequential-ceil softmax rounding
//! (SPEC §4), which both [`rebase_allocation`] and [`reallocate_kept`] use.
//!
//! | rule | file | spec |
//! |---|---|---|
//! | [`rebase_allocation`] | `allocation/rebase.rs` | §4 |
//! | [`reallocate_kept`] | `allocation/ets.rs` | §5.6 |
//! | [`beam_allocation`] | `allocation/beam.rs` | §6 |
//! | [`dvts_allocation`] | `allocation/dvts.rs` | §6 |

mod beam;
mod dvts;
mod ets;
mod rebase;

pub use beam::beam_allocation;
pub use dvts::dvts_allocation;
pub use ets::reallocate_kept;
pub use rebase::rebase_allocation;
pub(crate) use rebase::rebase_allocation_with_ties;

use crate::types::ChildCount;
use std::cmp::Ordering;

/// Order of candidates with equal scores when sorting by score, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TieOrder {
    /// Equal scores: the later input index comes first. This is Python's
    /// `sorted(key=score)` followed by `.reverse()`, used by REBASE's `select_softmax` and by
    /// ETS's final re-allocation (SPEC §4 step 1, §5.6).
    LaterFirst,
    /// Equal scores keep input order (Python's stable `sorted(key=score, reverse=True)`), used by
    /// ETS's outcome scores O_i (SPEC §5.2), beam search and DVTS.
    EarlierFirst,
}

/// Indices `subset` sorted by score, highest first, with the given tie order.
///
/// Scores must be free of NaN (callers validate); `-0.0` and `0.0` compare equal, as in Python.
pub(crate) fn order_by_score(
    scores: &[f64],
    subset: impl Iterator<Item = usize>,
    ties: TieOrder,
) -> Vec<usize> {
    let mut order: Vec<usize> = subset.collect();
    order.sort_by(|&a, &b| {
        let by_score = scores[b].partial_cmp(&scores[a]).unwrap_or(Ordering::Equal);
        by_score.then_with(|| match ties {
            TieOrder::LaterFirst => b.cmp(&a),
            TieOrder::EarlierFirst => a.cmp(&b),
        })
    });
    order
}

/// REBASE's sequential-ceil softmax rounding (SPEC §4 steps 2-4) over the candidates in
/// `order` (already sorted, highest score first); candidates not in `order` get 0.
///
/// Arithmetic, chosen to follow the original float32 torch code:
/// * weights `w_i = (r_i - r_max) / T` are evaluated in f64 and rounded to f32, where `r_max` is
///   the highest score in `order`. Subtracting `r_max` leaves every ratio `e_i / S` unchanged
///   mathematically but keeps `exp` from overflowing f32 when `r / T` exceeds about 88;
/// * `e_i = exp(w_i)`, the running sum `S` (summed in `order`), the share `b * e_i / S` and its
///   `ceil` are computed in f32, and `S -= e_i` after each candidate, as in the original;
/// * each share is clamped to `[0, b]` (SPEC §4 notes the float32 cancellation that can make
///   `b * e_i / S` exceed `b`);
/// * if `S` is no longer a finite number > 0, the next candidate takes the whole remaining budget,
///   and the last candidate in `order` always takes what is left, so the counts sum exactly to
///   `budget` (in exact arithmetic the last share is `ceil(b * e / e) = b` anyway).
pub(crate) fn sequential_ceil(
    scores: &[f64],
    order: &[usize],
    budget: ChildCount,
    temperature: f64,
) -> Vec<ChildCount> {
    let mut counts = vec![0; scores.len()];
    if order.is_empty() || budget == 0 {
        return counts;
    }
    let r_max = order
        .iter()
        .map(|&i| scores[i])
        .fold(f64::NEG_INFINITY, f64::max);
    // w = (r - max) / T rounded to f32, then exp evaluated in f64 and rounded to f32: the correctly
    // rounded f32 exp (f32::exp may be off by an ulp, which moves shares that sit on an integer).
    let weights: Vec<f32> = order
        .iter()
        .map(|&i| f64::from(((scores[i] - r_max) / temperature) as f32).exp() as f32)
        .collect();
    let mut sum: f32 = weights.iter().sum();
    let mut left = budget;
    let last = order.len() - 1;
    for (pos, (&i, &e)) in order.iter().zip(&weights).enumerate() {
        if left == 0 {
            break;
        }
        let n = if pos == last || !(sum.is_finite() && sum > 0.0) {
            left
        } else {
            let share = (left as f32) * e / sum;
            // `as` saturates: NaN -> 0, +inf -> u64::MAX; the clamp below bounds it by `left`.
            (share.ceil().max(0.0) as ChildCount).min(left)
        };
        counts[i] = n;
        left -= n;
        sum -= e;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ties_later_first_and_earlier_first() {
        let scores = [0.5, 0.9, 0.5, 0.1, 0.9];
        assert_eq!(
            order_by_score(&scores, 0..5, TieOrder::LaterFirst),
            vec![4, 1, 2, 0, 3]
        );
        assert_eq!(
            order_by_score(&scores, 0..5, TieOrder::EarlierFirst),
            vec![1, 4, 0, 2, 3]
        );
        assert_eq!(
            order_by_score(&scores, [3, 0, 2].into_iter(), TieOrder::LaterFirst),
            vec![2, 0, 3]
        );
        assert!(order_by_score(&scores, std::iter::empty(), TieOrder::LaterFirst).is_empty());
        // -0.0 == 0.0, so the tie rule decides.
        assert_eq!(
            order_by_score(&[-0.0, 0.0], 0..2, TieOrder::EarlierFirst),
            vec![0, 1]
        );
    }

    #[test]
    fn sequential_ceil_sums_exactly_and_front_loads() {
        let scores = [0.9, 0.5, 0.5, 0.1];
        let order = order_by_score(&scores, 0..4, TieOrder::LaterFirst);
        let counts = sequential_ceil(&scores, &order, 16, 0.2);
        assert_eq!(counts.iter().sum::<u64>(), 16);
        // e = [1, exp(-2), exp(-2), exp(-4)] -> S ~ 1.2890; ceil(16 / 1.289) = 13, then the
        // later 0.5 (index 2) gets ceil(3 * 0.1353 / 0.2890) = 2, index 1 gets the last 1.
        assert_eq!(counts, vec![13, 1, 2, 0]);
    }

    #[test]
    fn sequential_ceil_edge_cases() {
        assert_eq!(sequential_ceil(&[0.3, 0.7], &[1, 0], 0, 0.2), vec![0, 0]);
        assert_eq!(sequential_ceil(&[0.3, 0.7], &[], 5, 0.2), vec![0, 0]);
        assert_eq!(sequential_ceil(&[0.3], &[0], 7, 0.2), vec![7]);
        // Huge r / T would overflow f32 exp without subtracting the maximum.
        let counts = sequential_ceil(&[1000.0, 999.0], &[0, 1], 10, 0.01);
        assert_eq!(counts, vec![10, 0]);
        let counts = sequential_ceil(&[5e6, 5e6], &[1, 0], 3, 1.0);
        assert_eq!(counts, vec![1, 2]);
    }
}
