//! Regions of uncertainty (paper appendix F): DBSCAN over the latents of
//! an MDS dataset, with its radius chosen by a grid search.
//!
//! [`dbscan`] is the standard algorithm (Ester et al. 1996, as
//! scikit-learn's `DBSCAN` runs it), brute force. The radius `eps` is
//! chosen among candidates, by default the 10th, 20th, …, 90th percentiles
//! of every sample's distance to its `min_samples`-th nearest neighbour:
//! the candidate that finds the most regions while leaving at most half of
//! the samples as noise wins (the smaller eps on a tie). The candidates are
//! distances between samples, so a neighbourhood holds the points at
//! distance `<= eps`, both computed by [`distance`].

use crate::ensemble::MdsDataset;
use crate::model::argmax;

/// One region of uncertainty.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    /// Indices of its MDS samples, ascending.
    pub members: Vec<usize>,
    /// How many of its members have each condition (true label).
    pub conditions: Vec<usize>,
    /// The ensemble's predictions on its members, most common first:
    /// (class, count).
    pub predictions: Vec<(usize, usize)>,
}

/// The regions found, and how eps was chosen.
#[derive(Clone, Debug, PartialEq)]
pub struct Regions {
    /// The chosen radius.
    pub eps: f64,
    /// DBSCAN's minimum neighbourhood size.
    pub min_samples: usize,
    /// The regions, largest first.
    pub regions: Vec<Region>,
    /// Samples in no region.
    pub noise: usize,
    /// Every candidate tried: (eps, regions, noise).
    pub grid: Vec<(f64, usize, usize)>,
}

/// DBSCAN's labels: each point's cluster, or `None` for noise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clustering {
    /// Per point, its cluster (numbered 0.. in the order of each cluster's
    /// first core point), or `None` for noise.
    pub labels: Vec<Option<usize>>,
    /// The number of clusters.
    pub clusters: usize,
}

impl Clustering {
    /// The points of each cluster, ascending.
    pub fn members(&self) -> Vec<Vec<usize>> {
        let mut out = vec![Vec::new(); self.clusters];
        for (i, l) in self.labels.iter().enumerate() {
            if let Some(c) = l {
                out[*c].push(i);
            }
        }
        out
    }

    /// The number of noise points.
    pub fn noise(&self) -> usize {
        self.labels.iter().filter(|l| l.is_none()).count()
    }
}

/// The Euclidean distance of two points, in f64.
pub fn distance(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).powi(2))
        .sum::<f64>()
        .sqrt()
}

/// DBSCAN (Ester et al. 1996) over `points`, by brute force:
///
/// - a point is *core* when at least `min_samples` points, itself included,
///   lie within [`distance`] `<= eps` of it;
/// - the clusters are the connected components of the core points, two
///   core points connected when within `eps`;
/// - a non-core point within `eps` of a core point (a *border* point) joins
///   the cluster of the first cluster, in the order of their first core
///   points, that reaches it, as scikit-learn's `DBSCAN` assigns it;
/// - every other point is noise.
pub fn dbscan(points: &[Vec<f32>], eps: f64, min_samples: usize) -> Clustering {
    let n = points.len();
    let near = |i: usize, j: usize| distance(&points[i], &points[j]) <= eps;
    let mut counts = vec![1usize; n];
    for i in 0..n {
        for j in (i + 1)..n {
            if near(i, j) {
                counts[i] += 1;
                counts[j] += 1;
            }
        }
    }
    let core: Vec<bool> = counts.iter().map(|&c| c >= min_samples).collect();
    let mut labels: Vec<Option<usize>> = vec![None; n];
    let mut clusters = 0;
    let mut stack = Vec::new();
    for start in 0..n {
        if labels[start].is_some() || !core[start] {
            continue;
        }
        labels[start] = Some(clusters);
        stack.push(start);
        // Only core points are expanded; a border point keeps the first
        // cluster that labelled it.
        while let Some(p) = stack.pop() {
            for q in 0..n {
                if labels[q].is_none() && near(p, q) {
                    labels[q] = Some(clusters);
                    if core[q] {
                        stack.push(q);
                    }
                }
            }
        }
        clusters += 1;
    }
    Clustering { labels, clusters }
}

/// Clusters the MDS latents; `eps_grid` overrides the default candidates.
pub fn find_regions(mds: &MdsDataset, min_samples: usize, eps_grid: Option<&[f64]>) -> Regions {
    let n = mds.z.len();
    let candidates = match eps_grid {
        Some(g) => g.to_vec(),
        None => knn_percentiles(&mds.z, min_samples),
    };
    let fit = |eps: f64| dbscan(&mds.z, eps, min_samples);
    let mut grid = Vec::new();
    let mut best: Option<(f64, usize)> = None;
    for &eps in &candidates {
        let c = fit(eps);
        let noise = c.noise();
        grid.push((eps, c.clusters, noise));
        let acceptable = noise * 2 <= n;
        if acceptable && best.is_none_or(|(_, r)| c.clusters > r) {
            best = Some((eps, c.clusters));
        }
    }
    let eps = best.map_or_else(|| candidates.last().copied().unwrap_or(1.0), |(e, _)| e);
    let clustering = fit(eps);
    let noise = clustering.noise();
    let vote = mds.vote();
    let classes = vote.first().map_or(0, Vec::len);
    let mut regions: Vec<Region> = clustering
        .members()
        .into_iter()
        .map(|members| {
            let mut conditions = vec![0; classes];
            let mut predicted = vec![0; classes];
            for &i in &members {
                conditions[mds.labels[i]] += 1;
                predicted[argmax(&vote[i])] += 1;
            }
            let mut predictions: Vec<(usize, usize)> = predicted
                .into_iter()
                .enumerate()
                .filter(|(_, c)| *c > 0)
                .collect();
            predictions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            Region {
                members,
                conditions,
                predictions,
            }
        })
        .collect();
    regions.sort_by(|a, b| {
        b.members
            .len()
            .cmp(&a.members.len())
            .then(a.members.cmp(&b.members))
    });
    Regions {
        eps,
        min_samples,
        regions,
        noise,
        grid,
    }
}

/// The 10th, 20th, …, 90th percentiles of each point's distance to its
/// k-th nearest neighbour (brute force).
fn knn_percentiles(z: &[Vec<f32>], k: usize) -> Vec<f64> {
    let n = z.len();
    if n < 2 {
        return vec![1.0];
    }
    let k = k.clamp(1, n - 1);
    let mut kth: Vec<f64> = (0..n)
        .map(|i| {
            let mut d: Vec<f64> = (0..n)
                .filter(|&j| j != i)
                .map(|j| distance(&z[i], &z[j]))
                .collect();
            d.select_nth_unstable_by(k - 1, f64::total_cmp);
            d[k - 1]
        })
        .collect();
    kth.sort_by(f64::total_cmp);
    (1..10).map(|p| kth[(p * (n - 1)) / 10]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    fn dataset(z: Vec<Vec<f32>>, labels: Vec<usize>) -> MdsDataset {
        let n = z.len();
        MdsDataset {
            labels: labels.clone(),
            z,
            x: Tensor::zeros(1, candle_core::DType::F32, &Device::Cpu).unwrap(),
            member_probs: vec![labels
                .iter()
                .map(|&l| {
                    let mut p = vec![0.0; 3];
                    p[(l + 1) % 3] = 1.0;
                    p
                })
                .collect()],
            divergence: vec![0.0; n],
            output_range: (0.0, 1.0),
        }
    }

    /// The bound the config refuses `max_regions` at
    /// ([`gevaldi_config::most_dbscan_clusters`]) holds: DBSCAN reaches it
    /// where border points are shared (two core points sharing three
    /// border points are two clusters of five points at min_samples = 4,
    /// above 5 / 4), and never exceeds it on random points at any eps.
    #[test]
    fn dbscan_never_finds_more_clusters_than_the_configs_bound() {
        use gevaldi_config::most_dbscan_clusters as most;
        // Three border points on a triangle of circumradius 0.6 (1.04
        // apart), two core points 0.7 above and below it (1.4 apart, 0.92
        // from each border point).
        let (r, h) = (0.6f32, 0.7f32);
        let mut points = vec![vec![0.0, 0.0, h], vec![0.0, 0.0, -h]];
        for k in 0..3 {
            let a = k as f32 * 2.0 * std::f32::consts::PI / 3.0;
            points.push(vec![r * a.cos(), r * a.sin(), 0.0]);
        }
        let c = dbscan(&points, 1.0, 4);
        assert_eq!(c.clusters, 2);
        assert_eq!(most(5, 4), 2);
        assert!(5 / 4 < c.clusters);
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for _ in 0..300 {
            let n = rng.random_range(1..40);
            let dim = rng.random_range(1..6);
            let points: Vec<Vec<f32>> = (0..n)
                .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
                .collect();
            let eps = rng.random_range(0.05..1.5);
            for m in 1..=n + 1 {
                let c = dbscan(&points, eps, m);
                assert!(c.clusters <= most(n, m), "n {n} m {m}: {}", c.clusters);
            }
        }
        assert_eq!(
            (most(10, 11), most(10, 10), most(10, 1), most(10, 2)),
            (0, 1, 10, 5)
        );
    }

    #[test]
    fn two_blobs_and_an_outlier_make_two_regions() {
        let mut z = Vec::new();
        let mut labels = Vec::new();
        for i in 0..10 {
            z.push(vec![i as f32 * 0.01, 0.0]);
            labels.push(0);
            z.push(vec![5.0 + i as f32 * 0.01, 5.0]);
            labels.push(1);
        }
        z.push(vec![50.0, -50.0]);
        labels.push(2);
        let r = find_regions(&dataset(z, labels), 3, Some(&[0.001, 0.5, 100.0]));
        assert_eq!(r.eps, 0.5);
        assert_eq!(r.regions.len(), 2);
        assert_eq!(r.noise, 1);
        assert_eq!(r.regions[0].members.len(), 10);
        assert_eq!(r.regions[0].conditions, [10, 0, 0]);
        // The toy "ensemble" predicts label + 1.
        assert_eq!(r.regions[0].predictions, [(1, 10)]);
        assert_eq!(r.grid.len(), 3);
        assert_eq!(r.grid[2].1, 1, "a huge eps merges everything");
    }
}
