//! Step embeddings -> flat cluster labels (SPEC §5.4).
//!
//! Average-linkage agglomerative clustering with cosine distance, cut at a distance threshold
//! with SciPy's `fcluster(Z, t, criterion="distance")` semantics: two points share a cluster
//! iff the dendrogram joins them at a height <= `t`. Average linkage has no inversions, so this
//! is the same as merging while the closest pair of clusters is at most `t` apart.
//!
//! The dendrogram is built with the nearest-neighbour-chain algorithm (O(n²) time after the
//! O(n² · dim) distance matrix) and Lance-Williams updates
//! `d(k, i∪j) = (|i| d(k,i) + |j| d(k,j)) / (|i| + |j|)`, all in f64 like SciPy. Labels are
//! numbered `0..K` in order of first appearance (SciPy numbers them `1..=K` in dendrogram order).
//!
//! Zero vectors have no direction: their cosine distance to every point (another zero vector
//! included) is taken as 1.0, where SciPy would produce NaN and refuse to cluster.

use crate::error::{CoreError, Result};
use crate::types::ClusterId;

/// Cluster labels of `n = len(embeddings) / 4 / dim` rows of little-endian float32 values
/// (numpy's `arr.astype('<f4').tobytes()`), cut at cosine distance `threshold`.
///
/// `n = 0` gives `[]`, `n = 1` gives `[0]`.
///
/// # Errors
/// [`CoreError::InvalidArgument`] for `dim < 1` or a NaN threshold;
/// [`CoreError::EmbeddingShape`] if the byte length is not a multiple of `4 * dim`;
/// [`CoreError::NonFiniteEmbedding`] for NaN or infinite components.
pub fn cluster_labels(embeddings: &[u8], dim: i64, threshold: f64) -> Result<Vec<ClusterId>> {
    let dim = usize::try_from(dim)
        .ok()
        .filter(|&d| d >= 1)
        .ok_or_else(|| CoreError::invalid("dim", dim, "dim (the embedding width) must be >= 1"))?;
    let row_bytes = dim
        .checked_mul(4)
        .ok_or_else(|| CoreError::invalid("dim", dim, "dim is too large"))?;
    if !embeddings.len().is_multiple_of(row_bytes) {
        return Err(CoreError::EmbeddingShape {
            bytes: embeddings.len(),
            row_bytes,
        });
    }
    let values = embeddings
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    cluster_values(values, dim, threshold)
}

/// Shared body: `values` holds whole rows of `dim >= 1` components.
fn cluster_values(
    values: impl ExactSizeIterator<Item = f32>,
    dim: usize,
    threshold: f64,
) -> Result<Vec<ClusterId>> {
    if threshold.is_nan() {
        return Err(CoreError::invalid(
            "threshold",
            threshold,
            "threshold must be a number (the paper uses 0.05)",
        ));
    }
    let mut rows: Vec<f64> = Vec::with_capacity(values.len());
    for (pos, value) in values.enumerate() {
        if !value.is_finite() {
            return Err(CoreError::NonFiniteEmbedding {
                row: pos / dim,
                col: pos % dim,
                value,
            });
        }
        rows.push(value as f64);
    }
    let n = rows.len() / dim;
    if n <= 1 {
        return Ok(vec![0; n]);
    }
    let mut dist = cosine_distances(&rows, dim);
    let merges = nn_chain_average(&mut dist, n);
    // Union the pairs joined at height <= threshold, then number groups by first appearance.
    let mut uf = UnionFind::new(n);
    for &(a, b, h) in &merges {
        if h <= threshold {
            uf.union(a, b);
        }
    }
    let mut label_of_root = vec![usize::MAX; n];
    let mut next = 0;
    Ok((0..n)
        .map(|v| {
            let r = uf.find(v);
            if label_of_root[r] == usize::MAX {
                label_of_root[r] = next;
                next += 1;
            }
            label_of_root[r]
        })
        .collect())
}

/// Full symmetric n×n matrix of cosine distances `1 - cos`, clamped to `[0, 2]`; 1.0 for any
/// pair involving a zero vector; 0 on the diagonal.
fn cosine_distances(rows: &[f64], dim: usize) -> Vec<f64> {
    let n = rows.len() / dim;
    let norms: Vec<f64> = rows.chunks_exact(dim).map(|r| dot(r, r).sqrt()).collect();
    let mut dist = vec![0.0; n * n];
    for i in 0..n {
        let ri = &rows[i * dim..(i + 1) * dim];
        for j in (i + 1)..n {
            let d = if norms[i] == 0.0 || norms[j] == 0.0 {
                1.0
            } else {
                let rj = &rows[j * dim..(j + 1) * dim];
                (1.0 - dot(ri, rj) / (norms[i] * norms[j])).clamp(0.0, 2.0)
            };
            dist[i * n + j] = d;
            dist[j * n + i] = d;
        }
    }
    dist
}

/// Dot product with sixteen independent accumulators, reduced pairwise: enough independent
/// add chains for the compiler to keep the vector units busy, and a fixed summation order, so
/// results are bit-identical on every x86-64 (no FMA contraction in Rust).
fn dot(a: &[f64], b: &[f64]) -> f64 {
    const K: usize = 16;
    let mut acc = [0.0f64; K];
    let (ca, cb) = (a.chunks_exact(K), b.chunks_exact(K));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for l in 0..K {
            acc[l] += x[l] * y[l];
        }
    }
    let mut width = K;
    while width > 1 {
        width /= 2;
        for l in 0..width {
            acc[l] += acc[l + width];
        }
    }
    acc[0] + tail
}

/// Nearest-neighbour-chain average linkage over the full distance matrix `dist` (destroyed).
/// Returns the n - 1 merges as (a point of one side, a point of the other side, height).
/// Ties prefer the previous chain element, then the lowest index, like SciPy's `nn_chain`.
fn nn_chain_average(dist: &mut [f64], n: usize) -> Vec<(usize, usize, f64)> {
    let mut size = vec![1usize; n];
    // Active clusters, ascending (so that scans meet ties in index order).
    let mut active: Vec<usize> = (0..n).collect();
    let mut merges = Vec::with_capacity(n - 1);
    let mut chain: Vec<usize> = Vec::with_capacity(n);
    while active.len() > 1 {
        if chain.is_empty() {
            chain.push(active[0]);
        }
        let (x, y, height) = loop {
            let x = chain[chain.len() - 1];
            let prev = (chain.len() >= 2).then(|| chain[chain.len() - 2]);
            let row = &dist[x * n..(x + 1) * n];
            let (mut y, mut best) = match prev {
                Some(p) => (p, row[p]),
                None => (usize::MAX, f64::INFINITY),
            };
            for &i in &active {
                if i != x && row[i] < best {
                    best = row[i];
                    y = i;
                }
            }
            if Some(y) == prev {
                break (x, y, best);
            }
            chain.push(y);
        };
        chain.truncate(chain.len() - 2);
        // Merge x into y (y keeps the merged cluster).
        let (sx, sy) = (size[x] as f64, size[y] as f64);
        for &k in &active {
            if k != x && k != y {
                let d = (sx * dist[k * n + x] + sy * dist[k * n + y]) / (sx + sy);
                dist[k * n + y] = d;
                dist[y * n + k] = d;
            }
        }
        if let Ok(pos) = active.binary_search(&x) {
            active.remove(pos);
        }
        size[y] += size[x];
        merges.push((x, y, height));
    }
    merges
}

/// Union-find with path halving.
struct UnionFind {
    parent: Vec<usize>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n).collect(),
        }
    }
    fn find(&mut self, mut v: usize) -> usize {
        while self.parent[v] != v {
            self.parent[v] = self.parent[self.parent[v]];
            v = self.parent[v];
        }
        v
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.parent[ra.max(rb)] = ra.min(rb);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::SplitMix64;

    fn bytes(rows: &[Vec<f32>]) -> Vec<u8> {
        rows.iter()
            .flatten()
            .flat_map(|v| v.to_le_bytes())
            .collect()
    }

    /// Textbook O(n³) average linkage: repeatedly merge the closest pair (lowest indices on
    /// ties) while its average distance is <= t, recomputing averages from point distances.
    fn naive(rows: &[Vec<f32>], t: f64) -> Vec<usize> {
        let dim = rows[0].len();
        let flat: Vec<f64> = rows.iter().flatten().map(|&v| v as f64).collect();
        let d = cosine_distances(&flat, dim);
        let n = rows.len();
        let mut clusters: Vec<Vec<usize>> = (0..n).map(|i| vec![i]).collect();
        loop {
            let mut best: Option<(f64, usize, usize)> = None;
            for a in 0..clusters.len() {
                for b in a + 1..clusters.len() {
                    let mut s = 0.0;
                    for &i in &clusters[a] {
                        for &j in &clusters[b] {
                            s += d[i * n + j];
                        }
                    }
                    let avg = s / (clusters[a].len() * clusters[b].len()) as f64;
                    if best.is_none_or(|(bd, _, _)| avg < bd) {
                        best = Some((avg, a, b));
                    }
                }
            }
            match best {
                Some((avg, a, b)) if avg <= t => {
                    let moved = clusters.remove(b);
                    clusters[a].extend(moved);
                }
                _ => break,
            }
        }
        let mut label = vec![0; n];
        for (k, c) in clusters.iter().enumerate() {
            for &i in c {
                label[i] = k;
            }
        }
        // Renumber by first appearance.
        let mut map = std::collections::HashMap::new();
        label
            .iter()
            .map(|l| {
                let next = map.len();
                *map.entry(*l).or_insert(next)
            })
            .collect()
    }

    #[test]
    fn empty_and_single() {
        assert!(cluster_labels(&[], 3, 0.05).unwrap().is_empty());
        assert_eq!(
            cluster_labels(&bytes(&[vec![1.0, 2.0, 3.0]]), 3, 0.05).unwrap(),
            vec![0]
        );
    }

    #[test]
    fn direction_not_length_decides() {
        let rows = vec![
            vec![1.0, 0.0],
            vec![0.0, 1.0],
            vec![2.0, 0.01], // ~ row 0
            vec![0.02, 5.0], // ~ row 1
            vec![-1.0, 0.0],
        ];
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 0.05).unwrap(),
            vec![0, 1, 0, 1, 2]
        );
        // Everything within distance 2 of everything: one cluster.
        assert_eq!(cluster_labels(&bytes(&rows), 2, 2.0).unwrap(), vec![0; 5]);
        // Negative threshold: every point alone (identical points are at distance 0 > -1).
        assert_eq!(
            cluster_labels(&bytes(&[vec![1.0, 0.0], vec![1.0, 0.0]]), 2, -1.0).unwrap(),
            vec![0, 1]
        );
        // Zero threshold still joins identical directions.
        assert_eq!(
            cluster_labels(&bytes(&[vec![1.0, 1.0], vec![3.0, 3.0]]), 2, 0.0).unwrap(),
            vec![0, 0]
        );
    }

    #[test]
    fn average_not_single_linkage() {
        // a, b, c at 0, 60 and 130 degrees: d(a,b) = 0.5, d(b,c) = 1 - cos 70 ~ 0.658,
        // d(a,c) = 1 - cos 130 ~ 1.643. Single linkage at t = 0.7 would join all three; average
        // linkage joins a, b at 0.5 and c only at (1.643 + 0.658) / 2 ~ 1.15.
        let deg = |a: f64| vec![a.to_radians().cos() as f32, a.to_radians().sin() as f32];
        let rows = vec![deg(0.0), deg(60.0), deg(130.0)];
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 0.45).unwrap(),
            vec![0, 1, 2]
        );
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 0.7).unwrap(),
            vec![0, 0, 1]
        );
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 1.1).unwrap(),
            vec![0, 0, 1]
        );
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 1.2).unwrap(),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn zero_vectors_are_at_distance_one() {
        let rows = vec![vec![0.0, 0.0], vec![0.0, 0.0], vec![1.0, 0.0]];
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 0.5).unwrap(),
            vec![0, 1, 2]
        );
        assert_eq!(
            cluster_labels(&bytes(&rows), 2, 1.0).unwrap(),
            vec![0, 0, 0]
        );
    }

    #[test]
    fn agrees_with_naive_average_linkage() {
        let mut rng = SplitMix64::new(11);
        for case in 0..150 {
            let n = 2 + rng.below(14) as usize;
            let dim = 1 + rng.below(5) as usize;
            // A few centres with small noise, so that there is structure near the threshold.
            let centres: Vec<Vec<f32>> = (0..1 + rng.below(4))
                .map(|_| (0..dim).map(|_| rng.unit() as f32 * 2.0 - 1.0).collect())
                .collect();
            let rows: Vec<Vec<f32>> = (0..n)
                .map(|_| {
                    let c = &centres[rng.below(centres.len() as u64) as usize];
                    c.iter()
                        .map(|&x| x + (rng.unit() as f32 - 0.5) * 0.3)
                        .collect()
                })
                .collect();
            for t in [0.01, 0.05, 0.2, 0.7] {
                assert_eq!(
                    cluster_labels(&bytes(&rows), dim as i64, t).unwrap(),
                    naive(&rows, t),
                    "case {case} t {t}"
                );
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            cluster_labels(&[0; 12], 0, 0.05),
            Err(CoreError::InvalidArgument { name: "dim", .. })
        ));
        assert!(matches!(
            cluster_labels(&[0; 12], 2, 0.05),
            Err(CoreError::EmbeddingShape {
                bytes: 12,
                row_bytes: 8
            })
        ));
        assert!(matches!(
            cluster_labels(&[0; 8], 2, f64::NAN),
            Err(CoreError::InvalidArgument {
                name: "threshold",
                ..
            })
        ));
        let nan = bytes(&[vec![1.0, 0.0], vec![f32::NAN, 1.0]]);
        assert!(matches!(
            cluster_labels(&nan, 2, 0.05),
            Err(CoreError::NonFiniteEmbedding { row: 1, col: 0, .. })
        ));
        let inf = bytes(&[vec![1.0, f32::INFINITY]]);
        assert!(matches!(
            cluster_labels(&inf, 2, 0.05),
            Err(CoreError::NonFiniteEmbedding { row: 0, col: 1, .. })
        ));
    }
}
