//! Named primitives shared by every module, and the conversions from the signed integers that
//! arrive from Python (where `-1` and negative values are possible) to these types.

use crate::error::{CoreError, Result};

/// Index of a node: its position in a parent array or in a [`crate::tree::SearchTree`] arena.
pub type NodeId = usize;
/// Index of a semantic cluster, `0..K`.
pub type ClusterId = usize;
/// A number of tokens: a step length, a path length or a KV size.
pub type TokenCount = u64;
/// A vocabulary token id.
pub type TokenId = u32;
/// A number of children handed to one candidate (a share of the budget).
pub type ChildCount = u64;

/// Converts a node id received as a signed integer; negative ids are rejected.
pub fn node_id(value: i64, what: &'static str) -> Result<NodeId> {
    NodeId::try_from(value).map_err(|_| CoreError::NegativeNodeId { what, value })
}

/// Converts a list of node ids received as signed integers (see [`node_id`]).
pub fn node_ids(values: &[i64], what: &'static str) -> Result<Vec<NodeId>> {
    values.iter().map(|&v| node_id(v, what)).collect()
}

/// Converts token counts received as signed integers; negative counts are rejected.
pub fn token_counts(values: &[i64], what: &'static str) -> Result<Vec<TokenCount>> {
    values
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            TokenCount::try_from(value).map_err(|_| CoreError::NegativeTokenCount {
                what,
                index,
                value,
            })
        })
        .collect()
}

/// Converts token ids received as signed integers; each must lie in `0..=u32::MAX`.
pub fn token_ids(values: &[i64], what: &'static str) -> Result<Vec<TokenId>> {
    values
        .iter()
        .enumerate()
        .map(|(index, &value)| {
            TokenId::try_from(value).map_err(|_| CoreError::TokenIdOutOfRange {
                what,
                index,
                value,
            })
        })
        .collect()
}

/// Converts a budget received as a signed integer; negative budgets are rejected.
pub fn budget(value: i64) -> Result<ChildCount> {
    ChildCount::try_from(value).map_err(|_| CoreError::NegativeBudget { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_reject_negatives_and_name_the_argument() {
        assert_eq!(node_ids(&[0, 3, 7], "live").unwrap(), vec![0, 3, 7]);
        let err = node_ids(&[1, -1], "live").unwrap_err();
        assert_eq!(
            err,
            CoreError::NegativeNodeId {
                what: "live",
                value: -1
            }
        );
        assert!(err.to_string().contains("live"));
    }

    #[test]
    fn token_counts_and_ids_are_range_checked() {
        assert_eq!(token_counts(&[0, 5], "step_tokens").unwrap(), vec![0, 5]);
        assert!(matches!(
            token_counts(&[3, -2], "step_tokens"),
            Err(CoreError::NegativeTokenCount {
                index: 1,
                value: -2,
                ..
            })
        ));
        assert_eq!(
            token_ids(&[0, 4_294_967_295], "steps").unwrap(),
            vec![0, u32::MAX]
        );
        assert!(token_ids(&[4_294_967_296], "steps").is_err());
        assert!(token_ids(&[-1], "steps").is_err());
        assert!(token_ids(&[], "steps").unwrap().is_empty());
    }

    #[test]
    fn budget_accepts_zero_and_rejects_negative() {
        assert_eq!(budget(0).unwrap(), 0);
        assert_eq!(budget(256).unwrap(), 256);
        assert_eq!(
            budget(-1).unwrap_err(),
            CoreError::NegativeBudget { value: -1 }
        );
    }
}
