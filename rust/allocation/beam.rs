//! Beam search allocation (SPEC §6).

use super::{order_by_score, TieOrder};
use crate::error::{finite_scores, CoreError, Result};
use crate::types::{budget as check_budget, ChildCount};

/// Beam-search children counts per candidate, in input order.
///
/// `keep` defaults to `ceil(sqrt(budget))`. The `keep` best candidates by score (equal scores:
/// lower input index first) each get `ceil(budget / keep)` children, all others 0, so the total
/// may exceed `budget`, as in the original. Depth 0 is the caller's business: there the root
/// alone receives the whole budget, which this rule would not give it.
///
/// # Errors
/// [`CoreError::InvalidArgument`] if `keep` is given and < 1; as
/// [`super::rebase_allocation`] for scores and budget.
pub fn beam_allocation(scores: &[f64], budget: i64, keep: Option<i64>) -> Result<Vec<ChildCount>> {
    finite_scores("scores", scores)?;
    let b = check_budget(budget)?;
    let keep = match keep {
        Some(k) if k >= 1 => k as u64,
        Some(k) => {
            return Err(CoreError::invalid(
                "keep",
                k,
                "keep must be >= 1, or None for ceil(sqrt(budget))",
            ))
        }
        None => ceil_sqrt(b),
    };
    let mut counts = vec![0; scores.len()];
    if b == 0 {
        return Ok(counts);
    }
    let each = b.div_ceil(keep);
    let order = order_by_score(scores, 0..scores.len(), TieOrder::EarlierFirst);
    for &i in order
        .iter()
        .take(usize::try_from(keep).unwrap_or(usize::MAX))
    {
        counts[i] = each;
    }
    Ok(counts)
}

/// The smallest `k` with `k * k >= n`.
fn ceil_sqrt(n: u64) -> u64 {
    let mut k = (n as f64).sqrt() as u64;
    while k.saturating_mul(k) < n {
        k += 1;
    }
    while k > 0 && (k - 1).saturating_mul(k - 1) >= n {
        k -= 1;
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_sqrt_is_exact() {
        let expected = [
            (0, 0),
            (1, 1),
            (2, 2),
            (4, 2),
            (5, 3),
            (15, 4),
            (16, 4),
            (17, 5),
            (256, 16),
            (257, 17),
        ];
        for (n, k) in expected {
            assert_eq!(ceil_sqrt(n), k, "n = {n}");
        }
        assert_eq!(ceil_sqrt(u64::MAX), 1 << 32);
    }

    #[test]
    fn default_keep_is_ceil_sqrt_budget() {
        // budget 16 -> keep 4, each gets 4; ties broken by lower index.
        let a = beam_allocation(&[0.1, 0.9, 0.5, 0.5, 0.5, 0.8], 16, None).unwrap();
        assert_eq!(a, vec![0, 4, 4, 4, 0, 4]);
        assert_eq!(a.iter().sum::<u64>(), 16);
    }

    #[test]
    fn total_may_exceed_budget() {
        // budget 10 -> keep 4, each ceil(10/4) = 3 -> 12 in total.
        let a = beam_allocation(&[0.4, 0.3, 0.2, 0.1, 0.0], 10, None).unwrap();
        assert_eq!(a, vec![3, 3, 3, 3, 0]);
    }

    #[test]
    fn explicit_keep_fewer_candidates_empty_and_zero_budget() {
        assert_eq!(
            beam_allocation(&[0.2, 0.7, 0.7], 8, Some(2)).unwrap(),
            vec![0, 4, 4]
        );
        assert_eq!(beam_allocation(&[0.2], 16, None).unwrap(), vec![4]);
        assert!(beam_allocation(&[], 16, None).unwrap().is_empty());
        assert_eq!(beam_allocation(&[0.2, 0.3], 0, None).unwrap(), vec![0, 0]);
        assert_eq!(
            beam_allocation(&[0.2, 0.3], 5, Some(100)).unwrap(),
            vec![1, 1]
        );
    }

    #[test]
    fn rejects_bad_keep_and_scores() {
        assert!(matches!(
            beam_allocation(&[0.2], 4, Some(0)),
            Err(CoreError::InvalidArgument { name: "keep", .. })
        ));
        assert!(matches!(
            beam_allocation(&[f64::NAN], 4, None),
            Err(CoreError::NonFiniteScore { .. })
        ));
        assert!(matches!(
            beam_allocation(&[0.1], -4, None),
            Err(CoreError::NegativeBudget { .. })
        ));
    }
}
