//! Trees of partial solutions.
//!
//! * [`ParentTree`]: a parent array (`parents[v]` = parent index, `-1` for the root) checked once
//!   to be a single tree (exactly one root, every index in range, no cycles). The free functions
//!   of [`crate::kv`] and [`crate::program`] take plain parent arrays and check them with this.
//! * [`SearchTree`]: the live, growing tree of one problem's search (an arena of nodes holding
//!   token ids, scores and budget bookkeeping).

mod search;

pub use search::SearchTree;

use crate::error::{CoreError, Result};
use crate::types::{NodeId, TokenCount};

/// A parent array checked to form exactly one tree.
///
/// Node order is free: a parent index may be larger than its child's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentTree {
    parent: Vec<Option<NodeId>>,
    root: NodeId,
    /// Every node once, each parent before its children.
    topological: Vec<NodeId>,
}

impl ParentTree {
    /// Checks `parents` (`-1` for the root, else a node index) and builds the tree.
    ///
    /// # Errors
    /// [`CoreError::EmptyTree`], [`CoreError::ParentOutOfRange`], [`CoreError::NoRoot`],
    /// [`CoreError::MultipleRoots`] or [`CoreError::Cycle`].
    pub fn from_parents(parents: &[i64]) -> Result<Self> {
        let n = parents.len();
        if n == 0 {
            return Err(CoreError::EmptyTree);
        }
        let mut parent = Vec::with_capacity(n);
        let mut root = None;
        for (v, &p) in parents.iter().enumerate() {
            if p == -1 {
                if let Some(first) = root {
                    return Err(CoreError::MultipleRoots { first, second: v });
                }
                root = Some(v);
                parent.push(None);
            } else {
                match usize::try_from(p) {
                    Ok(p) if p < n => parent.push(Some(p)),
                    _ => {
                        return Err(CoreError::ParentOutOfRange {
                            node: v,
                            parent: p,
                            len: n,
                        })
                    }
                }
            }
        }
        let root = root.ok_or(CoreError::NoRoot)?;
        // Walk up from every node until a node already placed; nodes on the current walk are
        // "open", and reaching an open node again is a cycle.
        const NEW: u8 = 0;
        const OPEN: u8 = 1;
        let mut state = vec![NEW; n];
        let mut topological = Vec::with_capacity(n);
        let mut walk = Vec::new();
        for v in 0..n {
            let mut u = Some(v);
            while let Some(x) = u {
                match state[x] {
                    NEW => {
                        state[x] = OPEN;
                        walk.push(x);
                        u = parent[x];
                    }
                    OPEN => return Err(CoreError::Cycle { node: x }),
                    _ => break,
                }
            }
            while let Some(x) = walk.pop() {
                state[x] = 2;
                topological.push(x);
            }
        }
        Ok(ParentTree {
            parent,
            root,
            topological,
        })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.parent.len()
    }

    /// Always false: a checked tree has at least its root.
    pub fn is_empty(&self) -> bool {
        self.parent.is_empty()
    }

    /// The root node.
    pub fn root(&self) -> NodeId {
        self.root
    }

    /// Parent of `v` (`None` for the root). Panics if `v` is out of range.
    pub fn parent(&self, v: NodeId) -> Option<NodeId> {
        self.parent[v]
    }

    /// Every node once, each parent before its children.
    pub fn topological_order(&self) -> &[NodeId] {
        &self.topological
    }

    /// Checks a node id received as a signed integer.
    pub fn node(&self, what: &'static str, value: i64) -> Result<NodeId> {
        let v = crate::types::node_id(value, what)?;
        if v < self.len() {
            Ok(v)
        } else {
            Err(CoreError::UnknownNode {
                what,
                node: v,
                num_nodes: self.len(),
            })
        }
    }

    /// Checks a list of node ids received as signed integers.
    pub fn nodes(&self, what: &'static str, values: &[i64]) -> Result<Vec<NodeId>> {
        values.iter().map(|&v| self.node(what, v)).collect()
    }

    /// Nodes on the path from the root to `v`, root first.
    pub fn path(&self, v: NodeId) -> Vec<NodeId> {
        let mut path = vec![v];
        let mut u = v;
        while let Some(p) = self.parent[u] {
            path.push(p);
            u = p;
        }
        path.reverse();
        path
    }

    /// For every node, the sum of `step_tokens` over its root path (itself included).
    ///
    /// # Errors
    /// [`CoreError::LengthMismatch`] if `step_tokens` is not one entry per node,
    /// [`CoreError::TokenOverflow`] if a sum overflows.
    pub fn path_lengths(&self, step_tokens: &[TokenCount]) -> Result<Vec<TokenCount>> {
        crate::error::same_len("step_tokens", step_tokens.len(), "parents", self.len())?;
        let mut lengths: Vec<TokenCount> = vec![0; self.len()];
        for &v in &self.topological {
            let above = self.parent[v].map_or(0, |p| lengths[p]);
            lengths[v] = above
                .checked_add(step_tokens[v])
                .ok_or(CoreError::TokenOverflow)?;
        }
        Ok(lengths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_node_tree() {
        let t = ParentTree::from_parents(&[-1]).unwrap();
        assert_eq!((t.len(), t.root(), t.parent(0)), (1, 0, None));
        assert_eq!(t.topological_order(), &[0]);
        assert_eq!(t.path(0), vec![0]);
        assert_eq!(t.path_lengths(&[7]).unwrap(), vec![7]);
    }

    #[test]
    fn unordered_parents_are_allowed() {
        // 3 is the root; 0 -> 2 -> 3, 1 -> 3, 4 -> 0.
        let t = ParentTree::from_parents(&[2, 3, 3, -1, 0]).unwrap();
        assert_eq!(t.root(), 3);
        let order = t.topological_order();
        assert_eq!(order.len(), 5);
        let pos = |v: usize| order.iter().position(|&x| x == v).unwrap();
        for v in 0..5 {
            if let Some(p) = t.parent(v) {
                assert!(pos(p) < pos(v));
            }
        }
        assert_eq!(t.path(4), vec![3, 2, 0, 4]);
        assert_eq!(
            t.path_lengths(&[1, 10, 100, 1000, 5]).unwrap(),
            vec![1101, 1010, 1100, 1000, 1106]
        );
    }

    #[test]
    fn deep_chain() {
        let n = 100_000;
        let parents: Vec<i64> = (0..n as i64).map(|v| v - 1).collect();
        let t = ParentTree::from_parents(&parents).unwrap();
        let lengths = t.path_lengths(&vec![2; n]).unwrap();
        assert_eq!(lengths[n - 1], 2 * n as u64);
        assert_eq!(t.path(n - 1).len(), n);
    }

    #[test]
    fn rejects_malformed_parent_arrays() {
        assert_eq!(
            ParentTree::from_parents(&[]).unwrap_err(),
            CoreError::EmptyTree
        );
        assert_eq!(
            ParentTree::from_parents(&[0]).unwrap_err(),
            CoreError::NoRoot
        );
        assert_eq!(
            ParentTree::from_parents(&[-1, -1]).unwrap_err(),
            CoreError::MultipleRoots {
                first: 0,
                second: 1
            }
        );
        assert_eq!(
            ParentTree::from_parents(&[-1, 5]).unwrap_err(),
            CoreError::ParentOutOfRange {
                node: 1,
                parent: 5,
                len: 2
            }
        );
        assert!(matches!(
            ParentTree::from_parents(&[-1, -2]),
            Err(CoreError::ParentOutOfRange { .. })
        ));
        // 1 -> 2 -> 1 is a cycle next to a valid root.
        assert!(matches!(
            ParentTree::from_parents(&[-1, 2, 1]),
            Err(CoreError::Cycle { .. })
        ));
        assert!(matches!(
            ParentTree::from_parents(&[-1, 1]),
            Err(CoreError::Cycle { node: 1 })
        ));
    }

    #[test]
    fn node_checks_and_overflow() {
        let t = ParentTree::from_parents(&[-1, 0]).unwrap();
        assert_eq!(t.nodes("live", &[1, 0]).unwrap(), vec![1, 0]);
        assert_eq!(
            t.node("live", 2).unwrap_err(),
            CoreError::UnknownNode {
                what: "live",
                node: 2,
                num_nodes: 2
            }
        );
        assert!(matches!(
            t.node("live", -1),
            Err(CoreError::NegativeNodeId { .. })
        ));
        assert_eq!(
            t.path_lengths(&[u64::MAX, 1]).unwrap_err(),
            CoreError::TokenOverflow
        );
        assert!(matches!(
            t.path_lengths(&[1]),
            Err(CoreError::LengthMismatch { .. })
        ));
    }
}
