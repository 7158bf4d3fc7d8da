//! Regions of uncertainty (paper appendix F): DBSCAN over the latents of
//! an MDS dataset, with its radius chosen by a grid search.
//!
//! DBSCAN comes from the `petal-clustering` crate. The radius `eps` is
//! chosen among candidates, by default the 10th, 20th, …, 90th percentiles
//! of every sample's distance to its `min_samples`-th nearest neighbour:
//! the candidate that finds the most regions while leaving at most half of
//! the samples as noise wins (the smaller eps on a tie).

use ndarray::Array2;
use petal_clustering::{Dbscan, Fit};
use petal_neighbors::distance::Euclidean;

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

/// Clusters the MDS latents; `eps_grid` overrides the default candidates.
pub fn find_regions(mds: &MdsDataset, min_samples: usize, eps_grid: Option<&[f64]>) -> Regions {
    let n = mds.z.len();
    let d = mds.z.first().map_or(0, Vec::len);
    let points = Array2::from_shape_fn((n, d), |(i, j)| mds.z[i][j] as f64);
    let candidates = match eps_grid {
        Some(g) => g.to_vec(),
        None => knn_percentiles(&mds.z, min_samples),
    };
    let fit = |eps: f64| Dbscan::new(eps, min_samples, Euclidean::default()).fit(&points, None);
    let mut grid = Vec::new();
    let mut best: Option<(f64, usize)> = None;
    for &eps in &candidates {
        let (clusters, noise) = fit(eps);
        grid.push((eps, clusters.len(), noise.len()));
        let acceptable = noise.len() * 2 <= n;
        if acceptable && best.is_none_or(|(_, r)| clusters.len() > r) {
            best = Some((eps, clusters.len()));
        }
    }
    let eps = best.map_or_else(|| candidates.last().copied().unwrap_or(1.0), |(e, _)| e);
    let (clusters, noise) = fit(eps);
    let vote = mds.vote();
    let classes = vote.first().map_or(0, Vec::len);
    let mut regions: Vec<Region> = clusters
        .into_values()
        .map(|mut members| {
            members.sort_unstable();
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
        noise: noise.len(),
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
                .map(|j| {
                    z[i].iter()
                        .zip(&z[j])
                        .map(|(a, b)| ((a - b) as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
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
        }
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
