//! Spearman's rank correlation with ties.

use crate::error::{Error, Result};

use super::win_matrix::score_levels;

/// Ranks 1..n with ties given the mean of the ranks they span.
pub fn average_ranks(values: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = rank;
        }
        i = j + 1;
    }
    ranks
}

/// Spearman's rank correlation of `x` and `y` (average ranks for ties).
///
/// `Ok(None)` when it is undefined: fewer than 2 values, or all values of
/// one side equal. An error when the lengths differ or a value is NaN or
/// infinite.
pub fn spearman(x: &[f64], y: &[f64]) -> Result<Option<f64>> {
    if x.len() != y.len() {
        return Err(Error::setting(
            "spearman",
            format!("{} values against {}", x.len(), y.len()),
            "two lists of the same length",
        ));
    }
    if let Some(v) = x.iter().chain(y).find(|v| !v.is_finite()) {
        return Err(Error::setting(
            "spearman",
            format!("a value of {v}"),
            "finite values",
        ));
    }
    if x.len() < 2 {
        return Ok(None);
    }
    let (rx, ry) = (average_ranks(x), average_ranks(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (a, b) in rx.iter().zip(&ry) {
        sxy += (a - mx) * (b - my);
        sxx += (a - mx) * (a - mx);
        syy += (b - my) * (b - my);
    }
    if sxx == 0.0 || syy == 0.0 {
        return Ok(None);
    }
    Ok(Some(sxy / (sxx * syy).sqrt()))
}

/// Spearman's rank correlation of a ranking's `scores` with `y`, scores
/// equal within rounding ([`score_levels`]) counting as ties, as they do in
/// the ranking's order: the last-bit noise between scores that are equal in
/// exact arithmetic does not rank them. Otherwise as [`spearman`]
/// (`Ok(None)` when every score is equal within rounding).
pub fn spearman_of_scores(scores: &[f64], y: &[f64]) -> Result<Option<f64>> {
    if scores.iter().any(|s| !s.is_finite()) {
        // The error for the value.
        return spearman(scores, y);
    }
    // A level's rank among the scores is the negated level's.
    let levels: Vec<f64> = score_levels(scores)
        .into_iter()
        .map(|l| -(l as f64))
        .collect();
    spearman(&levels, y)
}
