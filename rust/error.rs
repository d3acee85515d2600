//! The one error type of the crate. Every rejected input has its own variant whose message says
//! what was wrong and what to pass instead. The Python glue maps every variant to
//! `ets_async._core.CoreError`, a subclass of `ValueError`.

/// Result type used throughout the crate.
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

/// Every way an input to the core can be rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The parent array is empty.
    #[error("parents is empty: a tree needs at least its root, e.g. parents = [-1]")]
    EmptyTree,
    /// A parent index is neither -1 nor a valid node index.
    #[error("parents[{node}] = {parent} is out of range: use -1 for the root or a node index in 0..{len}")]
    ParentOutOfRange {
        node: usize,
        parent: i64,
        len: usize,
    },
    /// No entry of the parent array is -1.
    #[error("parents has no root: exactly one entry must be -1")]
    NoRoot,
    /// More than one entry of the parent array is -1.
    #[error("parents has more than one root (nodes {first} and {second} are -1): exactly one entry must be -1")]
    MultipleRoots { first: usize, second: usize },
    /// Following parent pointers from some node loops forever.
    #[error("parents contains a cycle through node {node}: every node must reach the root by following parents")]
    Cycle { node: usize },
    /// A node id is negative.
    #[error("{what}: node id {value} is negative; node ids are >= 0 (-1 marks the root only in parents)")]
    NegativeNodeId { what: &'static str, value: i64 },
    /// A node id does not exist.
    #[error("{what}: node {node} does not exist; node ids are 0..{num_nodes}")]
    UnknownNode {
        what: &'static str,
        node: usize,
        num_nodes: usize,
    },
    /// A node id appears twice where each node may appear once.
    #[error("{what} lists node {node} more than once: pass each node once")]
    DuplicateNode { what: &'static str, node: usize },
    /// Two argument lists that must be parallel have different lengths.
    #[error("{what} has {len} entries but {other} has {other_len}: pass exactly one entry of {what} per entry of {other}")]
    LengthMismatch {
        what: &'static str,
        len: usize,
        other: &'static str,
        other_len: usize,
    },
    /// A score is NaN or infinite.
    #[error("{what}[{index}] = {value} is not a finite number: scores must be finite (NaN and infinities are rejected)")]
    NonFiniteScore {
        what: &'static str,
        index: usize,
        value: f64,
    },
    /// A token count is negative.
    #[error("{what}[{index}] = {value} is negative: token counts must be >= 0")]
    NegativeTokenCount {
        what: &'static str,
        index: usize,
        value: i64,
    },
    /// A token id does not fit in 32 bits.
    #[error("{what}[{index}] = {value} is not a token id: token ids must be in 0..=4294967295")]
    TokenIdOutOfRange {
        what: &'static str,
        index: usize,
        value: i64,
    },
    /// A sum of token counts does not fit in 64 bits.
    #[error(
        "token counts along a root-to-node path overflow 64 bits: pass realistic step lengths"
    )]
    TokenOverflow,
    /// A budget is negative.
    #[error("budget = {value} is negative: pass the number of children to hand out (>= 0)")]
    NegativeBudget { value: i64 },
    /// A scalar argument is outside its allowed range.
    #[error("{name} = {value} is invalid: {requirement}")]
    InvalidArgument {
        name: &'static str,
        value: String,
        requirement: &'static str,
    },
    /// `reallocate_kept` was asked to hand out a budget but no candidate is kept.
    #[error(
        "kept has no true entry: keep at least one candidate (the ETS program always keeps one)"
    )]
    NothingKept,
    /// A list that must not be empty is empty.
    #[error("{what} is empty: {requirement}")]
    Empty {
        what: &'static str,
        requirement: &'static str,
    },
    /// A candidate lies above another candidate.
    #[error("candidate {ancestor} is an ancestor of candidate {descendant}: candidates must be a frontier (no candidate may lie on another candidate's root path)")]
    CandidateIsAncestor { ancestor: usize, descendant: usize },
    /// `cost="tokens"` without `step_tokens`.
    #[error("cost=\"tokens\" needs step_tokens (one token count per node, indexed like parents); pass step_tokens or use cost=\"nodes\"")]
    MissingStepTokens,
    /// The node-cost name is unknown.
    #[error("cost = {got:?} is unknown: use \"nodes\" or \"tokens\"")]
    UnknownCost { got: String },
    /// A DVTS group id has no budget entry.
    #[error("groups[{index}] = {group} is not a group: group ids must be in 0..{num_groups} (one entry of group_budgets per group)")]
    UnknownGroup {
        index: usize,
        group: i64,
        num_groups: usize,
    },
    /// The embedding buffer does not hold whole rows of float32 values.
    #[error("embeddings has {bytes} bytes, not a multiple of 4 * dim = {row_bytes}: pass row-major little-endian float32 rows of length dim (numpy: arr.astype('<f4').tobytes())")]
    EmbeddingShape { bytes: usize, row_bytes: usize },
    /// An embedding component is NaN or infinite.
    #[error("embedding row {row}, column {col} is {value}: embeddings must be finite")]
    NonFiniteEmbedding { row: usize, col: usize, value: f32 },
    /// The ETS program has more nonzeros than HiGHS's 32-bit indices can address.
    #[error("the ETS program has {nonzeros} nonzeros, more than HiGHS's 32-bit indices address: select on a smaller frontier")]
    ProgramTooLarge { nonzeros: usize },
    /// A node that is finished was given children.
    #[error("node {node} is finished (it holds a final answer) and cannot be expanded: only expand unfinished frontier nodes")]
    ExpandFinished { node: usize },
    /// A node was passed to `retire` twice.
    #[error("node {node} was already passed to retire: classify each new node exactly once")]
    AlreadyRetired { node: usize },
}

impl CoreError {
    /// Builds [`CoreError::InvalidArgument`] from any displayable value.
    pub fn invalid(
        name: &'static str,
        value: impl std::fmt::Display,
        requirement: &'static str,
    ) -> Self {
        CoreError::InvalidArgument {
            name,
            value: value.to_string(),
            requirement,
        }
    }
}

/// Checks that two parallel lists have the same length.
pub(crate) fn same_len(
    what: &'static str,
    len: usize,
    other: &'static str,
    other_len: usize,
) -> Result<()> {
    if len == other_len {
        Ok(())
    } else {
        Err(CoreError::LengthMismatch {
            what,
            len,
            other,
            other_len,
        })
    }
}

/// Checks that every score is finite.
pub(crate) fn finite_scores(what: &'static str, scores: &[f64]) -> Result<()> {
    match scores.iter().position(|s| !s.is_finite()) {
        None => Ok(()),
        Some(index) => Err(CoreError::NonFiniteScore {
            what,
            index,
            value: scores[index],
        }),
    }
}

/// Checks a softmax temperature (finite and > 0).
pub(crate) fn temperature(value: f64) -> Result<f64> {
    if value.is_finite() && value > 0.0 {
        Ok(value)
    } else {
        Err(CoreError::invalid(
            "softmax_temperature",
            value,
            "the softmax temperature must be a finite number > 0 (the paper uses 0.2)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_fix() {
        let e = CoreError::ParentOutOfRange {
            node: 3,
            parent: 9,
            len: 5,
        };
        assert_eq!(
            e.to_string(),
            "parents[3] = 9 is out of range: use -1 for the root or a node index in 0..5"
        );
        let e = CoreError::LengthMismatch {
            what: "scores",
            len: 2,
            other: "candidates",
            other_len: 3,
        };
        assert!(e
            .to_string()
            .contains("scores has 2 entries but candidates has 3"));
        assert!(CoreError::UnknownCost {
            got: "bytes".into()
        }
        .to_string()
        .contains("\"nodes\" or \"tokens\""));
    }

    #[test]
    fn helpers_accept_good_and_reject_bad_input() {
        assert!(same_len("a", 2, "b", 2).is_ok());
        assert!(matches!(
            same_len("a", 1, "b", 2),
            Err(CoreError::LengthMismatch {
                len: 1,
                other_len: 2,
                ..
            })
        ));
        assert!(finite_scores("scores", &[0.0, 1.0, -3.5]).is_ok());
        assert!(matches!(
            finite_scores("scores", &[0.0, f64::NAN]),
            Err(CoreError::NonFiniteScore { index: 1, .. })
        ));
        assert!(finite_scores("scores", &[f64::INFINITY]).is_err());
        assert_eq!(temperature(0.2).unwrap(), 0.2);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = temperature(bad).unwrap_err();
            assert!(
                err.to_string().starts_with("softmax_temperature = "),
                "{err}"
            );
        }
    }
}
