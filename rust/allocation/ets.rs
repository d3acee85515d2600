//! ETS's final re-allocation (SPEC §5.6): REBASE restricted to the candidates the ETS
//! program kept.

use super::{order_by_score, sequential_ceil, TieOrder};
use crate::error::{finite_scores, same_len, temperature, CoreError, Result};
use crate::types::{budget as check_budget, ChildCount};

/// Children counts per candidate after the ETS program chose the `kept` subset.
///
/// Exactly [`super::rebase_allocation`]'s sequential-ceil rule over the kept candidates only:
/// pruned candidates have weight `exp(-inf) = 0` and get 0, kept ones share the whole `budget`
/// in softmax proportion (same tie order: equal scores, later index first). Kept candidates
/// that rank low may still get 0. Counts sum exactly to `budget`.
///
/// # Errors
/// [`CoreError::NothingKept`] if no entry of `kept` is true (the ETS program always keeps one);
/// [`CoreError::LengthMismatch`] if `kept` and `scores` differ in length; as
/// [`super::rebase_allocation`] for scores, budget and temperature.
pub fn reallocate_kept(
    scores: &[f64],
    kept: &[bool],
    budget: i64,
    softmax_temperature: f64,
) -> Result<Vec<ChildCount>> {
    same_len("kept", kept.len(), "scores", scores.len())?;
    finite_scores("scores", scores)?;
    let t = temperature(softmax_temperature)?;
    let b = check_budget(budget)?;
    if !kept.iter().any(|&k| k) {
        return Err(CoreError::NothingKept);
    }
    let order = order_by_score(
        scores,
        (0..scores.len()).filter(|&i| kept[i]),
        TieOrder::LaterFirst,
    );
    Ok(sequential_ceil(scores, &order, b, t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::allocation::rebase_allocation;

    #[test]
    fn all_kept_equals_rebase() {
        let scores = [0.9, 0.5, 0.5, 0.1, 0.77, 0.12];
        for budget in [0, 1, 7, 16, 64] {
            assert_eq!(
                reallocate_kept(&scores, &[true; 6], budget, 0.2).unwrap(),
                rebase_allocation(&scores, budget, 0.2).unwrap()
            );
        }
    }

    #[test]
    fn pruned_budget_flows_to_kept_nodes() {
        let scores = [0.9, 0.5, 0.5, 0.1];
        let kept = [false, true, true, true];
        let a = reallocate_kept(&scores, &kept, 16, 0.2).unwrap();
        assert_eq!(a[0], 0);
        assert_eq!(a.iter().sum::<u64>(), 16);
        // Equal scores 0.5: index 2 is ranked first, ceil(16 / 2.135) = 8; then index 1 gets
        // ceil(8 / 1.135) = 8 and index 3 (score 0.1) nothing.
        assert_eq!(a, vec![0, 8, 8, 0]);
    }

    #[test]
    fn single_kept_takes_everything() {
        assert_eq!(
            reallocate_kept(&[0.1, 0.9], &[true, false], 5, 0.2).unwrap(),
            vec![5, 0]
        );
    }

    #[test]
    fn nothing_kept_or_wrong_length_is_an_error() {
        assert_eq!(
            reallocate_kept(&[0.1, 0.9], &[false, false], 5, 0.2).unwrap_err(),
            CoreError::NothingKept
        );
        assert_eq!(
            reallocate_kept(&[], &[], 5, 0.2).unwrap_err(),
            CoreError::NothingKept
        );
        assert!(matches!(
            reallocate_kept(&[0.1], &[true, true], 5, 0.2),
            Err(CoreError::LengthMismatch { .. })
        ));
    }
}
