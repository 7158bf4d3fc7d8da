//! Principal component analysis for the 2-D pictures of latents (paper
//! fig. 5): the training data's latents and an MDS dataset's, on the top two
//! principal axes of the training latents.
//!
//! Latents have a handful of dimensions (4 to 16 here), so the covariance
//! matrix is tiny; its top eigenvectors come from power iteration with
//! deflation, deterministic (fixed start vector, fixed iteration count), each
//! with its largest entry made positive. (The maintained PCA crates,
//! linfa-reduction among them, bring a linear-algebra back end and a long
//! build for what is here a d × d eigenproblem with d ≤ 16.)

/// Principal axes fitted to a set of points.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pca {
    /// The mean of the fitted points.
    pub mean: Vec<f64>,
    /// The principal axes, unit vectors, largest variance first.
    pub components: Vec<Vec<f64>>,
    /// The variance along each axis.
    pub variances: Vec<f64>,
}

impl Pca {
    /// Fits the top `k` principal axes of `points` (rows of equal length).
    pub fn fit(points: &[Vec<f32>], k: usize) -> Pca {
        let n = points.len().max(1) as f64;
        let d = points.first().map_or(0, Vec::len);
        let mut mean = vec![0.0; d];
        for p in points {
            for (m, v) in mean.iter_mut().zip(p) {
                *m += *v as f64 / n;
            }
        }
        let mut cov = vec![vec![0.0; d]; d];
        for p in points {
            for i in 0..d {
                let a = p[i] as f64 - mean[i];
                for j in 0..d {
                    cov[i][j] += a * (p[j] as f64 - mean[j]) / n;
                }
            }
        }
        let mut components = Vec::new();
        let mut variances = Vec::new();
        for _ in 0..k.min(d) {
            let mut v: Vec<f64> = (1..=d).map(|i| i as f64).collect();
            normalise(&mut v);
            for _ in 0..1000 {
                let mut next: Vec<f64> = (0..d)
                    .map(|i| (0..d).map(|j| cov[i][j] * v[j]).sum())
                    .collect();
                if normalise(&mut next) == 0.0 {
                    break;
                }
                v = next;
            }
            let largest = (0..d)
                .max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()))
                .unwrap_or(0);
            if v[largest] < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            let lambda: f64 = (0..d)
                .map(|i| v[i] * (0..d).map(|j| cov[i][j] * v[j]).sum::<f64>())
                .sum();
            for i in 0..d {
                for j in 0..d {
                    cov[i][j] -= lambda * v[i] * v[j];
                }
            }
            components.push(v);
            variances.push(lambda);
        }
        Pca {
            mean,
            components,
            variances,
        }
    }

    /// The coordinates of `points` on the axes.
    pub fn project(&self, points: &[Vec<f32>]) -> Vec<Vec<f64>> {
        points
            .iter()
            .map(|p| {
                self.components
                    .iter()
                    .map(|c| {
                        c.iter()
                            .zip(p)
                            .zip(&self.mean)
                            .map(|((c, v), m)| c * (*v as f64 - m))
                            .sum()
                    })
                    .collect()
            })
            .collect()
    }
}

fn normalise(v: &mut [f64]) -> f64 {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_axes_of_a_stretched_cloud() {
        // Points at ±3 along (1, 1)/√2 and ±1 along (1, -1)/√2, centred at
        // (5, -2): variances 9 and 1.
        let s = std::f32::consts::FRAC_1_SQRT_2;
        let mut points = Vec::new();
        for (a, b) in [(3.0, 1.0), (-3.0, 1.0), (3.0, -1.0), (-3.0, -1.0)] {
            points.push(vec![5.0 + s * (a + b), -2.0 + s * (a - b)]);
        }
        let pca = Pca::fit(&points, 2);
        assert!((pca.mean[0] - 5.0).abs() < 1e-6 && (pca.mean[1] + 2.0).abs() < 1e-6);
        assert!((pca.variances[0] - 9.0).abs() < 1e-4, "{:?}", pca.variances);
        assert!((pca.variances[1] - 1.0).abs() < 1e-4, "{:?}", pca.variances);
        let c = &pca.components[0];
        assert!(
            (c[0] - s as f64).abs() < 1e-4 && (c[1] - s as f64).abs() < 1e-4,
            "{c:?}"
        );
        let projected = pca.project(&points);
        assert!((projected[0][0] - 3.0).abs() < 1e-4, "{projected:?}");
        assert!((projected[0][1].abs() - 1.0).abs() < 1e-4, "{projected:?}");
    }
}
