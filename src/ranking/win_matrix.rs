//! The win matrix of a tournament, and orders by score.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Counts of who was right where the other was wrong, between N models.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WinMatrix {
    wins: Vec<Vec<u64>>,
}

impl WinMatrix {
    /// An N×N matrix of zeros.
    pub fn zeros(n: usize) -> Self {
        WinMatrix {
            wins: vec![vec![0; n]; n],
        }
    }

    /// The matrix `wins[i][j]`: square, with zeros on the diagonal.
    pub fn new(wins: Vec<Vec<u64>>) -> Result<Self> {
        let n = wins.len();
        if let Some(i) = wins.iter().position(|row| row.len() != n) {
            return Err(Error::setting(
                "wins",
                format!("a matrix of {n} rows whose row {i} has {}", wins[i].len()),
                "a square matrix",
            ));
        }
        if let Some(i) = (0..n).find(|&i| wins[i][i] != 0) {
            return Err(Error::setting(
                format!("wins[{i}][{i}]"),
                wins[i][i],
                "0 (a model does not play itself)",
            ));
        }
        Ok(WinMatrix { wins })
    }

    /// The number of models N.
    pub fn len(&self) -> usize {
        self.wins.len()
    }

    /// Whether there are no models.
    pub fn is_empty(&self) -> bool {
        self.wins.is_empty()
    }

    /// Samples on which model i was right and model j wrong.
    pub fn get(&self, i: usize, j: usize) -> u64 {
        self.wins[i][j]
    }

    /// Adds `count` wins of i over j. Panics when i = j or out of range.
    pub fn add(&mut self, i: usize, j: usize, count: u64) {
        assert_ne!(i, j, "a model does not play itself");
        self.wins[i][j] += count;
    }

    /// The rows, `wins[i][j]`.
    pub fn rows(&self) -> &[Vec<u64>] {
        &self.wins
    }

    /// All wins of model i.
    pub fn total_wins(&self, i: usize) -> u64 {
        self.wins[i].iter().sum()
    }

    /// i's share of the decided samples between i and j,
    /// `wins[i][j] / (wins[i][j] + wins[j][i])`; `None` when none was decided.
    pub fn win_rate(&self, i: usize, j: usize) -> Option<f64> {
        let n = self.wins[i][j] + self.wins[j][i];
        (n > 0).then(|| self.wins[i][j] as f64 / n as f64)
    }
}

/// How close two scores must be to count as equal, relative to max(1, the
/// largest |score|): the iterations leave rounding noise far below it
/// between scores that are equal in exact arithmetic (the three models of
/// a symmetric cycle differ in the last bit), and it must not decide their
/// order, their SRCC or a rank threshold.
pub const SCORE_TOLERANCE: f64 = 1e-12;

/// Each score's level, 0 for the highest: scores equal within rounding
/// share a level, and a higher level means a strictly lower score.
///
/// The one definition of "equal within rounding" of the rankings: sorted
/// from the highest, a score shares the level of the one before it when
/// it is at most [`SCORE_TOLERANCE`] × max(1, the largest finite |score|)
/// below it (so a run of such neighbours shares one level). NaN comes
/// last, each on a level of its own.
pub fn score_levels(scores: &[f64]) -> Vec<usize> {
    let tolerance = scores
        .iter()
        .filter(|s| s.is_finite())
        .fold(1.0f64, |m, s| m.max(s.abs()))
        * SCORE_TOLERANCE;
    let mut by_score: Vec<usize> = (0..scores.len()).collect();
    by_score.sort_by(|&a, &b| {
        (scores[a].is_nan().cmp(&scores[b].is_nan()))
            .then(scores[b].total_cmp(&scores[a]))
            .then(a.cmp(&b))
    });
    let mut levels = vec![0; scores.len()];
    let mut level = 0;
    for w in by_score.windows(2) {
        let gap = scores[w[0]] - scores[w[1]];
        // A NaN gap (a NaN score, ∞ − ∞) starts a level too.
        if gap.is_nan() || gap > tolerance {
            level += 1;
        }
        levels[w[1]] = level;
    }
    levels
}

/// Model indices by score, highest first; scores equal within rounding
/// ([`score_levels`]) keep index order.
pub fn order_by_score(scores: &[f64]) -> Vec<usize> {
    let levels = score_levels(scores);
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by_key(|&i| (levels[i], i));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_win_matrix_refuses_a_ragged_or_self_playing_matrix() {
        let e = WinMatrix::new(vec![vec![0, 1], vec![1]]).unwrap_err();
        assert!(e.to_string().contains("row 1 has 1"), "{e}");
        let e = WinMatrix::new(vec![vec![0, 1], vec![1, 2]]).unwrap_err();
        assert!(e.to_string().contains("wins[1][1]"), "{e}");
    }

    #[test]
    fn win_rates_are_shares_of_decided_samples() {
        let w = WinMatrix::new(vec![vec![0, 3, 0], vec![1, 0, 0], vec![0, 0, 0]]).unwrap();
        assert_eq!(w.win_rate(0, 1), Some(0.75));
        assert_eq!(w.win_rate(1, 0), Some(0.25));
        assert_eq!(w.win_rate(0, 2), None);
        assert_eq!(w.total_wins(0), 3);
    }

    #[test]
    fn equal_scores_keep_index_order() {
        assert_eq!(order_by_score(&[1.0, 2.0, 1.0, 3.0]), [3, 1, 0, 2]);
        // Rounding noise does not order equal scores; a real gap does.
        assert_eq!(order_by_score(&[0.5, 0.5 + 1e-15, 0.5 - 1e-15]), [0, 1, 2]);
        assert_eq!(order_by_score(&[0.5, 0.5 + 1e-9]), [1, 0]);
    }

    #[test]
    fn scores_equal_within_rounding_share_a_level() {
        // The symmetric cycle's power scores: equal in exact arithmetic,
        // one ulp apart in f64.
        let s: f64 = 0.577_350_269_189_625_7;
        let cycle = [s, f64::from_bits(s.to_bits() + 1), s];
        assert_eq!(score_levels(&cycle), [0, 0, 0]);
        assert_eq!(score_levels(&[1.0, 3.0, 1.0, 2.0]), [2, 0, 2, 1]);
        // A tie is a tie wherever it falls on the grid of the tolerance
        // (rounding to multiples of it would split this pair).
        let edge = 0.5e-12;
        assert_eq!(score_levels(&[edge - 1e-17, edge + 1e-17, 0.7]), [1, 1, 0]);
        // The tolerance scales with the largest |score|, and NaN is last.
        assert_eq!(score_levels(&[1e6, 1e6 + 1e-7, -1.0]), [0, 0, 1]);
        assert_eq!(score_levels(&[f64::NAN, 0.0, 0.0]), [1, 0, 0]);
    }
}
