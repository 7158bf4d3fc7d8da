//! MAD competition's global ranking by power iteration (see the
//! [module docs](super)).

use serde::{Deserialize, Serialize};

use super::win_matrix::{order_by_score, WinMatrix};

/// Added to both counts of a pair with a zero count, for MAD's ratios.
pub const MAD_ZERO_CORRECTION: f64 = 0.5;

/// MAD competition's global ranking: the principal eigenvector of the
/// pairwise ratio matrix (see the [module docs](super)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PowerRanking {
    /// Each model's entry of the principal eigenvector (unit L2 norm,
    /// positive): higher is better.
    pub scores: Vec<f64>,
    /// Model indices, best first.
    pub order: Vec<usize>,
    /// The principal eigenvalue, ≥ N; N exactly when the ratios are
    /// consistent (`B[i][j]·B[j][k] = B[i][k]`).
    pub eigenvalue: f64,
    /// Power iterations run.
    pub iterations: usize,
    /// Pairs (i < j) whose counts held a zero and got
    /// [`MAD_ZERO_CORRECTION`].
    pub corrected_pairs: usize,
}

/// The pairwise ratio matrix B of MAD's `temp_rank_imgnet`, with the zero
/// correction; also returns how many pairs were corrected.
pub fn mad_matrix(wins: &WinMatrix) -> (Vec<Vec<f64>>, usize) {
    let n = wins.len();
    // MAD fills the upper triangle and mirrors it: B[j][i] = 1 / B[i][j].
    let ratio = |i: usize, j: usize| {
        let (a, c) = (wins.get(i, j) as f64, wins.get(j, i) as f64);
        if a == 0.0 || c == 0.0 {
            (a + MAD_ZERO_CORRECTION) / (c + MAD_ZERO_CORRECTION)
        } else {
            a / c
        }
    };
    let b = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| match i.cmp(&j) {
                    std::cmp::Ordering::Equal => 1.0,
                    std::cmp::Ordering::Less => ratio(i, j),
                    std::cmp::Ordering::Greater => 1.0 / ratio(j, i),
                })
                .collect()
        })
        .collect();
    let corrected = (0..n)
        .flat_map(|i| (i + 1..n).map(move |j| (i, j)))
        .filter(|&(i, j)| wins.get(i, j) == 0 || wins.get(j, i) == 0)
        .count();
    (b, corrected)
}

/// MAD's global ranking of the models of `wins` by power iteration.
pub fn power_ranking(wins: &WinMatrix) -> PowerRanking {
    let n = wins.len();
    let (b, corrected_pairs) = mad_matrix(wins);
    let mut v = vec![1.0 / (n.max(1) as f64).sqrt(); n];
    let mut eigenvalue = 0.0;
    let mut iterations = 0;
    while iterations < 10_000 && n > 0 {
        let next: Vec<f64> = b
            .iter()
            .map(|row| row.iter().zip(&v).map(|(x, y)| x * y).sum())
            .collect();
        eigenvalue = next.iter().map(|x| x * x).sum::<f64>().sqrt();
        let next: Vec<f64> = next.iter().map(|x| x / eigenvalue).collect();
        let moved = next
            .iter()
            .zip(&v)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        v = next;
        iterations += 1;
        if moved < 1e-14 {
            break;
        }
    }
    PowerRanking {
        order: order_by_score(&v),
        scores: v,
        eigenvalue,
        iterations,
        corrected_pairs,
    }
}
