//! Expert similarities and groupings (docs/methods.md §8.5 "Clustering"): REAM pseudo-pruning
//! (§6.3 step 4), nearest-centroid grouping (M-SMoE, REAM with `C = 0`) and average-linkage
//! agglomerative clustering (HC-SMoE). Distances are row-major `N × N` f64 matrices; every
//! tie goes to the lower index (or the earlier centroid) so groupings are deterministic.

/// Cosines `G_ij / √(G_ii G_jj)` of the vectors whose Gram matrix is `gram` (`n × n`); a zero
/// vector has cosine 0 with everything.
pub fn gram_cosines(gram: &[f64], n: usize) -> Vec<f64> {
    let norms: Vec<f64> = (0..n).map(|i| gram[i * n + i].max(0.0).sqrt()).collect();
    let mut cos = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            let d = norms[i] * norms[j];
            cos[i * n + j] = if d > 0.0 { gram[i * n + j] / d } else { 0.0 };
        }
    }
    cos
}

/// Gram matrix `V Vᵀ` of the rows of `vectors` (`n × dim`, row-major).
pub fn row_gram(vectors: &[f64], n: usize) -> Vec<f64> {
    let dim = vectors.len().checked_div(n).unwrap_or(0);
    let row = |i: usize| &vectors[i * dim..(i + 1) * dim];
    let mut gram = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            gram[i * n + j] = row(i).iter().zip(row(j)).map(|(a, b)| a * b).sum();
        }
    }
    gram
}

/// Euclidean distances between the rows of `vectors` (`n × dim`, row-major), from their Gram.
pub fn euclidean_distances(vectors: &[f64], n: usize) -> Vec<f64> {
    let g = row_gram(vectors, n);
    let mut d = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            d[i * n + j] = (g[i * n + i] + g[j * n + j] - 2.0 * g[i * n + j])
                .max(0.0)
                .sqrt();
        }
    }
    d
}

/// REAM logit-profile similarity δ_g as the code computes it (§6.3 step 3): L2-normalised
/// profiles, Euclidean distance `√(2 − 2 cos)`, divided by the largest pairwise distance,
/// `1 − d/d_max`. Equal profiles everywhere give 1.
pub fn logit_similarity(logit_gram: &[f64], n: usize) -> Vec<f64> {
    let d: Vec<f64> = gram_cosines(logit_gram, n)
        .iter()
        .map(|c| (2.0 - 2.0 * c).max(0.0).sqrt())
        .collect();
    let d_max = d.iter().cloned().fold(0.0, f64::max);
    d.iter()
        .map(|&x| if d_max > 0.0 { 1.0 - x / d_max } else { 1.0 })
        .collect()
}

/// Pseudo-pruning (REAM §6.3 step 4): each centroid, in the order given (decreasing saliency),
/// absorbs the unassigned non-centroids nearest to it until its group holds `group_size`
/// experts counting itself (the code's convention, §6.7 item 4), however far they are (§6.7
/// item 5). Returns one group per centroid, centroid first, then absorbed experts by distance.
/// The caller guarantees `centroids.len() · group_size ≥ n`.
pub fn pseudo_prune_groups(
    distance: &[f64],
    n: usize,
    centroids: &[usize],
    group_size: usize,
) -> Vec<Vec<usize>> {
    let mut assigned = vec![false; n];
    centroids.iter().for_each(|&c| assigned[c] = true);
    centroids
        .iter()
        .map(|&c| {
            let mut free: Vec<usize> = (0..n).filter(|&j| !assigned[j]).collect();
            free.sort_by(|&a, &b| distance[c * n + a].total_cmp(&distance[c * n + b]));
            let mut group = vec![c];
            for j in free.into_iter().take(group_size.saturating_sub(1)) {
                assigned[j] = true;
                group.push(j);
            }
            group
        })
        .collect()
}

/// Every non-centroid joins its nearest centroid (M-SMoE; REAM with `C = 0`, "MC-SMoE-style");
/// ties go to the earlier centroid. Groups list the centroid first, then members by index.
pub fn nearest_centroid_groups(distance: &[f64], n: usize, centroids: &[usize]) -> Vec<Vec<usize>> {
    let mut groups: Vec<Vec<usize>> = centroids.iter().map(|&c| vec![c]).collect();
    for j in (0..n).filter(|j| !centroids.contains(j)) {
        let best = (0..centroids.len())
            .min_by(|&a, &b| {
                distance[centroids[a] * n + j]
                    .total_cmp(&distance[centroids[b] * n + j])
                    .then(a.cmp(&b))
            })
            .expect("at least one centroid");
        groups[best].push(j);
    }
    groups
}

/// Average-linkage agglomerative clustering down to `clusters` clusters (HC-SMoE): repeatedly
/// join the two clusters with the smallest mean pairwise distance, updating distances by the
/// Lance–Williams rule `d(k, i∪j) = (|i| d(k,i) + |j| d(k,j)) / (|i|+|j|)`. `O(n³)`, fine for
/// `n ≤ 512`. Clusters come back ordered by their smallest member, members ascending.
pub fn average_linkage(distance: &[f64], n: usize, clusters: usize) -> Vec<Vec<usize>> {
    let mut members: Vec<Option<Vec<usize>>> = (0..n).map(|i| Some(vec![i])).collect();
    let mut d = distance.to_vec();
    for _ in clusters..n {
        let alive: Vec<usize> = (0..n).filter(|&i| members[i].is_some()).collect();
        let mut best = (f64::INFINITY, 0, 0);
        for (a, &i) in alive.iter().enumerate() {
            for &j in &alive[a + 1..] {
                if d[i * n + j] < best.0 {
                    best = (d[i * n + j], i, j);
                }
            }
        }
        let (_, i, j) = best;
        let absorbed = members[j].take().expect("alive cluster");
        let (si, sj) = (
            members[i].as_ref().map_or(0, Vec::len) as f64,
            absorbed.len() as f64,
        );
        for &k in alive.iter().filter(|&&k| k != i && k != j) {
            let merged = (si * d[k * n + i] + sj * d[k * n + j]) / (si + sj);
            d[k * n + i] = merged;
            d[i * n + k] = merged;
        }
        members[i].as_mut().expect("alive cluster").extend(absorbed);
    }
    members
        .into_iter()
        .flatten()
        .map(|mut c| {
            c.sort_unstable();
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points on a line at 0, 1, 10, 11, 30: distances |x_i − x_j|.
    fn line() -> (Vec<f64>, usize) {
        let x = [0.0f64, 1.0, 10.0, 11.0, 30.0];
        let n = x.len();
        let d = (0..n * n).map(|k| (x[k / n] - x[k % n]).abs()).collect();
        (d, n)
    }

    #[test]
    fn average_linkage_joins_nearest_clusters() {
        let (d, n) = line();
        assert_eq!(
            average_linkage(&d, n, 3),
            vec![vec![0, 1], vec![2, 3], vec![4]]
        );
        // {0,1} to {2,3} averages 10; {2,3} to {4} averages 19.5.
        assert_eq!(average_linkage(&d, n, 2), vec![vec![0, 1, 2, 3], vec![4]]);
        assert_eq!(average_linkage(&d, n, 5).len(), 5);
    }

    #[test]
    fn pseudo_pruning_lets_the_first_centroid_absorb_its_nearest() {
        let (d, n) = line();
        // Centroid 4 first: it absorbs the two nearest free experts (3, then 2) however far.
        assert_eq!(
            pseudo_prune_groups(&d, n, &[4, 0], 3),
            vec![vec![4, 3, 2], vec![0, 1]]
        );
        assert_eq!(
            nearest_centroid_groups(&d, n, &[4, 0]),
            vec![vec![4], vec![0, 1, 2, 3]]
        );
        // Group size 1 keeps centroids alone (keep-all).
        assert_eq!(
            pseudo_prune_groups(&d, n, &[0, 1, 2, 3, 4], 1),
            (0..5).map(|i| vec![i]).collect::<Vec<_>>()
        );
    }

    #[test]
    fn logit_similarity_is_one_for_equal_profiles_and_zero_for_the_farthest() {
        // Profiles (1,0), (2,0), (0,1): 0 and 1 are parallel, 2 is orthogonal.
        let v = [1.0, 0.0, 2.0, 0.0, 0.0, 1.0];
        let s = logit_similarity(&row_gram(&v, 3), 3);
        assert!((s[1] - 1.0).abs() < 1e-12);
        assert!(s[2].abs() < 1e-12);
        assert!((euclidean_distances(&v, 3)[1] - 1.0).abs() < 1e-12);
    }
}
