//! What a tournament must show to pass.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::outcome::{RankingMethod, TournamentOutcome};

/// A model's least share of the samples decided against another.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinWinRate {
    /// The model.
    pub model: String,
    /// Its opponent.
    pub against: String,
    /// The least share, in [0, 1].
    pub min: f64,
}

/// The thresholds of a tournament. Every one is optional; the default
/// checks nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TournamentThresholds {
    /// The ranking the rank thresholds read. (Default: MAD's.)
    pub ranking: RankingMethod,
    /// This model must rank first.
    pub champion: Option<String>,
    /// (model, r): the model must rank r-th or better (1 is the best).
    pub max_rank: Vec<(String, usize)>,
    /// (a, b): a must rank above b.
    pub above: Vec<(String, String)>,
    /// Least win rates of one model against another.
    pub min_win_rate: Vec<MinWinRate>,
    /// The least Spearman correlation of the ranking's scores with the test
    /// accuracy (fails when it is undefined, e.g. without test data).
    pub min_srcc: Option<f64>,
}

impl TournamentThresholds {
    /// Checks that every model named is one of `models` and every number is
    /// in range.
    pub fn validate(&self, models: &[String]) -> Result<()> {
        let known = |key: &str, m: &str| {
            if models.iter().any(|x| x == m) {
                Ok(())
            } else {
                Err(Error::setting(
                    key,
                    format!("{m:?}"),
                    format!("one of the tournament's models ({})", models.join(", ")),
                ))
            }
        };
        if let Some(c) = &self.champion {
            known("champion", c)?;
        }
        for (m, r) in &self.max_rank {
            known("max_rank", m)?;
            if *r == 0 || *r > models.len() {
                return Err(Error::setting(
                    format!("max_rank.{m}"),
                    r,
                    format!("1 to {}", models.len()),
                ));
            }
        }
        for (a, b) in &self.above {
            known("above", a)?;
            known("above", b)?;
        }
        for w in &self.min_win_rate {
            known("min_win_rate", &w.model)?;
            known("min_win_rate", &w.against)?;
            if w.model == w.against || !(0.0..=1.0).contains(&w.min) {
                return Err(Error::setting(
                    format!("min_win_rate.{}.{}", w.model, w.against),
                    w.min,
                    "a number in [0, 1] against another model",
                ));
            }
        }
        if let Some(s) = self.min_srcc {
            if !(-1.0..=1.0).contains(&s) {
                return Err(Error::setting("min_srcc", s, "a number in [-1, 1]"));
            }
        }
        Ok(())
    }

    /// What the outcome breaks, one message per threshold; empty when all
    /// hold.
    pub fn check(&self, outcome: &TournamentOutcome) -> Vec<String> {
        let by = self.ranking;
        let method = by.name();
        let ranking = outcome.ranking(by).join(" > ");
        let rank = |m: &str| outcome.rank(m, by);
        let mut failures = Vec::new();
        if let Some(c) = &self.champion {
            if rank(c) != Some(1) {
                failures.push(format!(
                    "champion `{c}` ranks {} by {method}, not first: {ranking}",
                    place(rank(c))
                ));
            }
        }
        for (m, r) in &self.max_rank {
            if rank(m).is_none_or(|got| got > *r) {
                failures.push(format!(
                    "`{m}` ranks {} by {method}, below the max_rank {r}: {ranking}",
                    place(rank(m))
                ));
            }
        }
        for (a, b) in &self.above {
            let ok = matches!((rank(a), rank(b)), (Some(x), Some(y)) if x < y);
            if !ok {
                failures.push(format!(
                    "`{a}` ranks {} by {method}, not above `{b}` ({}): {ranking}",
                    place(rank(a)),
                    place(rank(b))
                ));
            }
        }
        for w in &self.min_win_rate {
            let got = outcome.win_rate(&w.model, &w.against);
            if got.is_none_or(|r| r < w.min) {
                let got = got.map_or("undefined (no sample decided)".into(), |r| {
                    format!("{:.1}%", 100.0 * r)
                });
                failures.push(format!(
                    "`{}` won {got} of the samples decided against `{}`, below min_win_rate {:.1}%",
                    w.model,
                    w.against,
                    100.0 * w.min
                ));
            }
        }
        if let Some(min) = self.min_srcc {
            let srcc = match by {
                RankingMethod::Mad => outcome.srcc_power,
                RankingMethod::BradleyTerry => outcome.srcc_bradley_terry,
            };
            if srcc.is_none_or(|s| s < min) {
                let got = srcc.map_or("undefined".into(), |s| format!("{s:.3}"));
                failures.push(format!(
                    "the SRCC of the {method} ranking with the test accuracy is {got}, below min_srcc {min:.3}"
                ));
            }
        }
        failures
    }
}

fn place(rank: Option<usize>) -> String {
    match rank {
        Some(r) => format!("#{r}"),
        None => "nowhere (not a model of the tournament)".into(),
    }
}
