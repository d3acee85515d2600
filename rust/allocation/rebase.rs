//! REBASE's allocation rule (SPEC §4): a softmax over PRM scores, rounded by sequential ceil.

use super::{order_by_score, sequential_ceil, TieOrder};
use crate::error::{finite_scores, temperature, Result};
use crate::types::{budget as check_budget, ChildCount};

/// REBASE children counts per candidate, in input order, summing exactly to `budget`.
///
/// Candidates are ranked by score, highest first; equal scores put the later input index first
/// (the original sorts ascending, then reverses). Each in turn receives
/// `ceil(b * e_i / S)` children (clamped to `[0, b]`), where `e_i = exp(r_i / T)` in float32,
/// `S` is the sum of the weights not yet visited and `b` the budget not yet handed out.
/// See [`crate::allocation`] for the exact arithmetic (the maximum score is subtracted before
/// `exp`, which leaves the ratios unchanged and avoids float32 overflow).
///
/// Empty `scores` give an empty result; `budget == 0` gives all zeros.
///
/// # Errors
/// [`crate::CoreError::NonFiniteScore`] for NaN or infinite scores,
/// [`crate::CoreError::InvalidArgument`] for a temperature that is not a finite number > 0,
/// [`crate::CoreError::NegativeBudget`] for `budget < 0`.
pub fn rebase_allocation(
    scores: &[f64],
    budget: i64,
    softmax_temperature: f64,
) -> Result<Vec<ChildCount>> {
    rebase_allocation_with_ties(scores, budget, softmax_temperature, TieOrder::LaterFirst)
}

/// [`rebase_allocation`] with an explicit tie order (ETS's outcome scores use
/// [`TieOrder::EarlierFirst`], SPEC §5.2).
pub(crate) fn rebase_allocation_with_ties(
    scores: &[f64],
    budget: i64,
    softmax_temperature: f64,
    ties: TieOrder,
) -> Result<Vec<ChildCount>> {
    finite_scores("scores", scores)?;
    let t = temperature(softmax_temperature)?;
    let b = check_budget(budget)?;
    let order = order_by_score(scores, 0..scores.len(), ties);
    Ok(sequential_ceil(scores, &order, b, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::CoreError;

    #[test]
    fn brief_example_sums_to_budget() {
        let a = rebase_allocation(&[0.9, 0.5, 0.5, 0.1], 16, 0.2).unwrap();
        assert_eq!(a, vec![13, 1, 2, 0]);
        assert_eq!(a.iter().sum::<u64>(), 16);
    }

    #[test]
    fn ties_give_the_later_candidate_the_larger_share() {
        // Equal scores, odd budget: ceil(3 * 1/2) = 2 goes to the later index.
        assert_eq!(rebase_allocation(&[0.5, 0.5], 3, 0.2).unwrap(), vec![1, 2]);
        assert_eq!(
            rebase_allocation_with_ties(&[0.5, 0.5], 3, 0.2, TieOrder::EarlierFirst).unwrap(),
            vec![2, 1]
        );
        // Four equal scores, budget 2: ceil(2/4) = 1 to index 3, then ceil(1/3) = 1 to index 2.
        assert_eq!(
            rebase_allocation(&[0.7; 4], 2, 0.2).unwrap(),
            vec![0, 0, 1, 1]
        );
    }

    #[test]
    fn exact_sums_over_many_budgets_and_temperatures() {
        let scores = [0.91, 0.13, 0.55, 0.55, 0.42, 0.99, 0.0, 0.73, 0.31, 0.66];
        for budget in 0..300 {
            for t in [0.01, 0.2, 1.0, 50.0] {
                let a = rebase_allocation(&scores, budget, t).unwrap();
                assert_eq!(a.len(), scores.len());
                assert_eq!(
                    a.iter().sum::<u64>(),
                    budget as u64,
                    "budget {budget} T {t}"
                );
                // The best candidate never gets less than anyone else.
                assert!(a.iter().all(|&n| n <= a[5]));
            }
        }
    }

    #[test]
    fn empty_single_and_zero_budget() {
        assert!(rebase_allocation(&[], 16, 0.2).unwrap().is_empty());
        assert_eq!(rebase_allocation(&[0.3], 16, 0.2).unwrap(), vec![16]);
        assert_eq!(rebase_allocation(&[0.3, 0.9], 0, 0.2).unwrap(), vec![0, 0]);
    }

    #[test]
    fn low_temperature_gives_everything_to_the_best() {
        assert_eq!(
            rebase_allocation(&[0.2, 0.9, 0.5], 64, 1e-4).unwrap(),
            vec![0, 64, 0]
        );
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            rebase_allocation(&[0.1, f64::NAN], 4, 0.2),
            Err(CoreError::NonFiniteScore { index: 1, .. })
        ));
        assert!(matches!(
            rebase_allocation(&[0.1], 4, 0.0),
            Err(CoreError::InvalidArgument {
                name: "softmax_temperature",
                ..
            })
        ));
        assert!(matches!(
            rebase_allocation(&[0.1], 4, -0.2),
            Err(CoreError::InvalidArgument { .. })
        ));
        assert_eq!(
            rebase_allocation(&[0.1], -1, 0.2).unwrap_err(),
            CoreError::NegativeBudget { value: -1 }
        );
    }
}
