//! DVTS allocation (SPEC §6): one surviving node per independent subtree.

use crate::error::{finite_scores, same_len, CoreError, Result};
use crate::types::ChildCount;

/// DVTS children counts per candidate, in input order.
///
/// `groups[i]` is the subtree (group) of candidate `i`, an index into `group_budgets`. For each
/// group present among the candidates, its best-scoring candidate (equal scores: lower index)
/// gets `group_budgets[g]` children, or 0 if that budget is <= 0; every other candidate gets 0.
///
/// # Errors
/// [`CoreError::LengthMismatch`] if `groups` and `scores` differ in length;
/// [`CoreError::UnknownGroup`] for a group id outside `0..len(group_budgets)`;
/// [`CoreError::NonFiniteScore`] for NaN or infinite scores.
pub fn dvts_allocation(
    groups: &[i64],
    scores: &[f64],
    group_budgets: &[i64],
) -> Result<Vec<ChildCount>> {
    same_len("groups", groups.len(), "scores", scores.len())?;
    finite_scores("scores", scores)?;
    let mut best: Vec<Option<usize>> = vec![None; group_budgets.len()];
    for (i, &g) in groups.iter().enumerate() {
        let slot = usize::try_from(g)
            .ok()
            .filter(|&g| g < group_budgets.len())
            .ok_or(CoreError::UnknownGroup {
                index: i,
                group: g,
                num_groups: group_budgets.len(),
            })?;
        match best[slot] {
            Some(j) if scores[j] >= scores[i] => {}
            _ => best[slot] = Some(i),
        }
    }
    let mut counts = vec![0; scores.len()];
    for (g, winner) in best.iter().enumerate() {
        if let Some(i) = *winner {
            counts[i] = ChildCount::try_from(group_budgets[g]).unwrap_or(0);
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_of_each_group_gets_its_budget() {
        let groups = [0, 0, 1, 1, 2, 0];
        let scores = [0.3, 0.8, 0.5, 0.5, 0.1, 0.8];
        // group 0: tie 0.8 between 1 and 5 -> index 1; group 1: tie -> index 2; group 2: index 4.
        let a = dvts_allocation(&groups, &scores, &[4, 3, 5, 9]).unwrap();
        assert_eq!(a, vec![0, 4, 3, 0, 5, 0]);
    }

    #[test]
    fn spent_groups_get_nothing() {
        let a = dvts_allocation(&[0, 1], &[0.9, 0.4], &[0, -2]).unwrap();
        assert_eq!(a, vec![0, 0]);
    }

    #[test]
    fn empty_and_single() {
        assert!(dvts_allocation(&[], &[], &[4]).unwrap().is_empty());
        assert_eq!(dvts_allocation(&[0], &[0.2], &[7]).unwrap(), vec![7]);
    }

    #[test]
    fn rejects_unknown_groups_and_bad_lengths() {
        assert!(matches!(
            dvts_allocation(&[0, 2], &[0.1, 0.2], &[1, 1]),
            Err(CoreError::UnknownGroup {
                index: 1,
                group: 2,
                ..
            })
        ));
        assert!(matches!(
            dvts_allocation(&[-1], &[0.1], &[1]),
            Err(CoreError::UnknownGroup { .. })
        ));
        assert!(matches!(
            dvts_allocation(&[0], &[0.1, 0.2], &[1]),
            Err(CoreError::LengthMismatch { .. })
        ));
    }
}
