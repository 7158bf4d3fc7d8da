//! Principal component analysis for the 2-D pictures of latents (paper
//! fig. 5): the training data's latents and an MDS dataset's, on the top two
//! principal axes of the training latents.
//!
//! Latents have a handful of dimensions (4 to 16 here), so the covariance
//! matrix is tiny; its eigenvectors come from cyclic Jacobi rotations
//! (deterministic, every axis to rounding however close the variances),
//! each with its largest entry made positive. (The maintained PCA crates,
//! linfa-reduction among them, bring a linear-algebra back end and a long
//! build for what is here a d × d eigenproblem with d ≤ 16.)

/// Principal axes fitted to a set of points.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Pca {
    /// The mean of the fitted points.
    pub mean: Vec<f64>,
    /// The principal axes, unit vectors, largest variance first.
    pub components: Vec<Vec<f64>>,
    /// The variance along each axis (the sum of squares over n, not n − 1
    /// as scikit-learn's `explained_variance_`).
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
        let (values, vectors) = symmetric_eigen(cov);
        let mut by_variance: Vec<usize> = (0..d).collect();
        by_variance.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        let mut components = Vec::new();
        let mut variances = Vec::new();
        for &e in by_variance.iter().take(k.min(d)) {
            let mut v: Vec<f64> = (0..d).map(|i| vectors[i][e]).collect();
            let largest = (0..d)
                .max_by(|&a, &b| v[a].abs().total_cmp(&v[b].abs()))
                .unwrap_or(0);
            if v[largest] < 0.0 {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            components.push(v);
            variances.push(values[e].max(0.0));
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

/// The eigenvalues and eigenvectors (the columns of the second) of a
/// symmetric matrix, by cyclic Jacobi rotations: every eigenpair to
/// rounding, whatever the gaps between the eigenvalues.
fn symmetric_eigen(mut a: Vec<Vec<f64>>) -> (Vec<f64>, Vec<Vec<f64>>) {
    let d = a.len();
    let mut v: Vec<Vec<f64>> = (0..d)
        .map(|i| (0..d).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect();
    for _ in 0..100 {
        let off: f64 = (0..d)
            .flat_map(|i| (0..d).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        let scale: f64 = (0..d).map(|i| a[i][i] * a[i][i]).sum();
        if off <= f64::EPSILON * f64::EPSILON * scale || off == 0.0 {
            break;
        }
        for p in 0..d {
            for q in (p + 1)..d {
                if a[p][q] == 0.0 {
                    continue;
                }
                // The rotation that zeroes a[p][q] (Golub & Van Loan 8.5.2).
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in a.iter_mut() {
                    let (akp, akq) = (row[p], row[q]);
                    row[p] = c * akp - s * akq;
                    row[q] = s * akp + c * akq;
                }
                let (row_p, row_q) = (a[p].clone(), a[q].clone());
                for (k, (apk, aqk)) in row_p.into_iter().zip(row_q).enumerate() {
                    a[p][k] = c * apk - s * aqk;
                    a[q][k] = s * apk + c * aqk;
                }
                for row in v.iter_mut() {
                    let (vkp, vkq) = (row[p], row[q]);
                    row[p] = c * vkp - s * vkq;
                    row[q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..d).map(|i| a[i][i]).collect(), v)
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

    /// Against numpy's SVD of the centred points (`bench/pca_reference.py`):
    /// the top three axes (the cloud has rank 3) and their variances.
    #[test]
    fn matches_numpys_svd_on_a_five_dimensional_cloud() {
        let points: Vec<Vec<f32>> = (0..30)
            .map(|i| {
                (0..5)
                    .map(|j| {
                        let (i, jf) = (i as f64, j as f64);
                        let extra = if j == 2 { 0.1 * i } else { 0.0 };
                        ((0.7 * i + 1.3 * jf * jf).sin() * (jf + 1.0) + extra) as f32
                    })
                    .collect()
            })
            .collect();
        let variances = [24.607828040580884, 1.8749315646976994, 0.6167537213588782];
        let components = [
            [
                -0.059325770293668256,
                0.21227381760599506,
                -0.4160592598123257,
                -0.5396084123900666,
                0.6979525291453076,
            ],
            [
                0.46574242908044555,
                0.6992230190387119,
                0.020426980005575357,
                0.49464860889301565,
                0.22153250688937687,
            ],
            [
                -0.03761571631721944,
                0.08143749011432795,
                0.9091080413307714,
                -0.2580697180947224,
                0.3144448805117681,
            ],
        ];
        let pca = Pca::fit(&points, 3);
        for k in 0..3 {
            assert!(
                (pca.variances[k] - variances[k]).abs() < 1e-9,
                "{:?}",
                pca.variances
            );
            for (a, b) in pca.components[k].iter().zip(components[k]) {
                assert!((a - b).abs() < 1e-9, "axis {k}: {:?}", pca.components[k]);
            }
        }
    }

    /// Regression: the axes came from power iteration from the fixed start
    /// (1, 2, …, d): where that start is (nearly) an eigenvector of a
    /// smaller variance and the variances are close, 1000 iterations never
    /// left it, and the first "principal" axis was the second, variances
    /// in increasing order. Variances 1.01 along (2, −1)/√5 and 1 along
    /// (1, 2)/√5: read [1.0, 1.01], axes swapped.
    #[test]
    fn the_largest_variance_comes_first_whatever_the_start() {
        let (a, b) = ((2.0f64 * 1.01).sqrt(), 2f64.sqrt());
        let r5 = 5f64.sqrt();
        let (u1, u2) = ([2.0 / r5, -1.0 / r5], [1.0 / r5, 2.0 / r5]);
        let points: Vec<Vec<f32>> = [(a, 0.0), (-a, 0.0), (0.0, b), (0.0, -b)]
            .iter()
            .map(|(s, t)| (0..2).map(|i| (s * u1[i] + t * u2[i]) as f32).collect())
            .collect();
        let pca = Pca::fit(&points, 2);
        assert!(
            (pca.variances[0] - 1.01).abs() < 1e-6,
            "{:?}",
            pca.variances
        );
        assert!((pca.variances[1] - 1.0).abs() < 1e-6, "{:?}", pca.variances);
        let c = &pca.components[0];
        assert!(
            (c[0] - u1[0]).abs() < 1e-6 && (c[1] - u1[1]).abs() < 1e-6,
            "{c:?}"
        );
    }
}
