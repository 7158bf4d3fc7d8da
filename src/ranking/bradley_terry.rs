//! Bradley–Terry maximum likelihood with standard errors (see the
//! [module docs](super)).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::win_matrix::{order_by_score, WinMatrix};

/// Wins added to every ordered pair when the Bradley–Terry MLE does not
/// exist.
pub const BT_PSEUDO_WINS: f64 = 0.5;

/// A Bradley–Terry fit (see the [module docs](super)).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BradleyTerry {
    /// Each model's strength θ_i (log scale, Σ θ_i = 0): P(i beats j) =
    /// 1 / (1 + exp(θ_j − θ_i)).
    pub theta: Vec<f64>,
    /// The standard error of each θ_i.
    pub se: Vec<f64>,
    /// The covariance of θ (N×N); the standard error of θ_i − θ_j is
    /// √(cov_ii + cov_jj − 2 cov_ij).
    pub covariance: Vec<Vec<f64>>,
    /// Model indices, best first.
    pub order: Vec<usize>,
    /// 0 when the fit is the maximum likelihood estimate of the counts;
    /// [`BT_PSEUDO_WINS`] when it does not exist and that many wins were
    /// added to every ordered pair.
    pub pseudo_wins: f64,
    /// Newton steps taken.
    pub iterations: usize,
}

impl BradleyTerry {
    /// The standard error of θ_i − θ_j.
    pub fn se_of_difference(&self, i: usize, j: usize) -> f64 {
        let c = &self.covariance;
        (c[i][i] + c[j][j] - 2.0 * c[i][j]).max(0.0).sqrt()
    }
}

/// Whether every model reaches every other along "beat at least once"
/// edges: the condition for the Bradley–Terry MLE to exist.
pub fn strongly_connected(wins: &WinMatrix) -> bool {
    let n = wins.len();
    let reach = |forward: bool| {
        let mut seen = vec![false; n];
        let mut stack = vec![0];
        seen[0] = true;
        while let Some(i) = stack.pop() {
            for (j, seen_j) in seen.iter_mut().enumerate() {
                let edge = if forward {
                    wins.get(i, j)
                } else {
                    wins.get(j, i)
                };
                if edge > 0 && !*seen_j {
                    *seen_j = true;
                    stack.push(j);
                }
            }
        }
        seen.into_iter().all(|s| s)
    };
    n > 0 && reach(true) && reach(false)
}

/// The Bradley–Terry fit of `wins`. Needs at least 2 models.
pub fn bradley_terry(wins: &WinMatrix) -> Result<BradleyTerry> {
    let n = wins.len();
    if n < 2 {
        return Err(Error::setting("wins", format!("{n} models"), "at least 2"));
    }
    let pseudo_wins = if strongly_connected(wins) {
        0.0
    } else {
        BT_PSEUDO_WINS
    };
    let w: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            (0..n)
                .map(|j| {
                    if i == j {
                        0.0
                    } else {
                        wins.get(i, j) as f64 + pseudo_wins
                    }
                })
                .collect()
        })
        .collect();
    let mut theta = vec![0.0; n];
    let mut ll = log_likelihood(&w, &theta);
    let mut iterations = 0;
    for _ in 0..200 {
        let (grad, info) = score_and_information(&w, &theta);
        let step = solve(&shifted(&info), &grad);
        iterations += 1;
        let mut t = 1.0;
        let mut improved = false;
        while t > 1e-10 {
            let cand: Vec<f64> = theta.iter().zip(&step).map(|(a, d)| a + t * d).collect();
            let cand_ll = log_likelihood(&w, &cand);
            if cand_ll >= ll {
                theta = cand;
                ll = cand_ll;
                improved = true;
                break;
            }
            t /= 2.0;
        }
        let moved = step.iter().fold(0.0, |m: f64, d| m.max((t * d).abs()));
        if !improved || moved < 1e-13 {
            break;
        }
    }
    let mean = theta.iter().sum::<f64>() / n as f64;
    for t in &mut theta {
        *t -= mean;
    }
    let (_, info) = score_and_information(&w, &theta);
    let covariance = pseudo_inverse(&info);
    let se = (0..n).map(|i| covariance[i][i].max(0.0).sqrt()).collect();
    Ok(BradleyTerry {
        order: order_by_score(&theta),
        theta,
        se,
        covariance,
        pseudo_wins,
        iterations,
    })
}

/// log σ(x), without overflow.
fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn log_likelihood(w: &[Vec<f64>], theta: &[f64]) -> f64 {
    let mut ll = 0.0;
    for (i, row) in w.iter().enumerate() {
        for (j, &wij) in row.iter().enumerate() {
            if wij > 0.0 {
                ll += wij * log_sigmoid(theta[i] - theta[j]);
            }
        }
    }
    ll
}

/// The gradient of the log-likelihood and the Fisher information.
fn score_and_information(w: &[Vec<f64>], theta: &[f64]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = theta.len();
    let mut grad = vec![0.0; n];
    let mut info = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in i + 1..n {
            let games = w[i][j] + w[j][i];
            if games == 0.0 {
                continue;
            }
            let p = sigmoid(theta[i] - theta[j]);
            grad[i] += w[i][j] - games * p;
            grad[j] -= w[i][j] - games * p;
            let c = games * p * (1.0 - p);
            info[i][i] += c;
            info[j][j] += c;
            info[i][j] -= c;
            info[j][i] -= c;
        }
    }
    (grad, info)
}

/// info + J/N, J the all-ones matrix: invertible when the comparison graph
/// is connected (info's null space is then the constant vectors).
fn shifted(info: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = info.len() as f64;
    info.iter()
        .map(|row| row.iter().map(|x| x + 1.0 / n).collect())
        .collect()
}

/// The pseudo-inverse of an information matrix with null space span(1):
/// (info + J/N)⁻¹ − J/N.
fn pseudo_inverse(info: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = info.len();
    let a = shifted(info);
    let columns: Vec<Vec<f64>> = (0..n)
        .map(|k| {
            let e: Vec<f64> = (0..n).map(|i| if i == k { 1.0 } else { 0.0 }).collect();
            solve(&a, &e)
        })
        .collect();
    (0..n)
        .map(|i| (0..n).map(|j| columns[j][i] - 1.0 / n as f64).collect())
        .collect()
}

/// Solves a x = b by Gaussian elimination with partial pivoting (small,
/// well-conditioned systems only).
fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| row.iter().copied().chain([bi]).collect())
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))
            .unwrap_or(col);
        m.swap(col, pivot);
        let (top, rest) = m.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for r in rest {
            let f = r[col] / pivot_row[col];
            for (x, p) in r[col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= f * p;
            }
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (m[row][n] - s) / m[row][row];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_solver_inverts_a_small_system() {
        // [[2, 1], [1, 3]] x = [3, 5]: x = [4/5, 7/5].
        let x = solve(&[vec![2.0, 1.0], vec![1.0, 3.0]], &[3.0, 5.0]);
        assert!(
            (x[0] - 0.8).abs() < 1e-15 && (x[1] - 1.4).abs() < 1e-15,
            "{x:?}"
        );
    }

    #[test]
    fn log_sigmoid_is_finite_far_out() {
        assert!((log_sigmoid(-800.0) + 800.0).abs() < 1e-9);
        assert!(log_sigmoid(800.0).abs() < 1e-300);
        assert!((log_sigmoid(0.0) + 2f64.ln()).abs() < 1e-15);
    }
}
