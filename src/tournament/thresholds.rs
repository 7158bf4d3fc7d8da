//! What a tournament must show to pass.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::verdict::Failure;

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
    /// This model must rank first: its score above every other's (a tie
    /// for first does not pass).
    pub champion: Option<String>,
    /// (model, r): the model must rank r-th or better (1 is the best),
    /// counting the models it ties with as above it
    /// ([`TournamentOutcome::pessimistic_rank`]).
    pub max_rank: Vec<(String, usize)>,
    /// (a, b): a must rank above b: a's score above b's (a tie does not
    /// pass).
    pub above: Vec<(String, String)>,
    /// Least win rates of one model against another.
    pub min_win_rate: Vec<MinWinRate>,
    /// The least Spearman correlation of the ranking's scores with the test
    /// accuracy (fails when it is undefined, e.g. without test data).
    pub min_srcc: Option<f64>,
}

impl From<&crate::config::TournamentDecl> for TournamentThresholds {
    fn from(t: &crate::config::TournamentDecl) -> Self {
        TournamentThresholds {
            ranking: t.ranking.into(),
            champion: t.champion.clone(),
            max_rank: t.max_rank.clone(),
            above: t.above.clone(),
            min_win_rate: t
                .min_win_rate
                .iter()
                .map(|w| MinWinRate {
                    model: w.model.clone(),
                    against: w.against.clone(),
                    min: w.min,
                })
                .collect(),
            min_srcc: t.min_srcc,
        }
    }
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
            // The last rank holds every model: a bound there never fails.
            if *r == 0 || *r >= models.len() {
                return Err(Error::setting(
                    format!("max_rank.{m}"),
                    r,
                    format!(
                        "1 to {} (every one of {} models ranks {} or better)",
                        models.len() - 1,
                        models.len(),
                        models.len()
                    ),
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

    /// The broken thresholds; empty when all hold.
    ///
    /// A tie passes no rank threshold: the ranks read are the pessimistic
    /// ones ([`TournamentOutcome::pessimistic_rank`]), which count every
    /// model whose score is equal within rounding
    /// ([`crate::ranking::score_levels`]) as above, instead of letting the
    /// tournament's order of the models decide. The ranking in the messages shows
    /// such models as `a ties with b (scores 0.5774 and 0.5774)`.
    pub fn check(&self, outcome: &TournamentOutcome) -> Vec<Failure> {
        let by = self.ranking;
        let order = shown_ranking(outcome, by);
        let rank = |m: &str| outcome.pessimistic_rank(m, by);
        let mut failures = Vec::new();
        if let Some(c) = &self.champion {
            if rank(c) != Some(1) {
                failures.push(Failure::Champion {
                    model: c.clone(),
                    ranking: by,
                    rank: rank(c),
                    order: order.clone(),
                });
            }
        }
        for (m, r) in &self.max_rank {
            if rank(m).is_none_or(|got| got > *r) {
                failures.push(Failure::MaxRank {
                    model: m.clone(),
                    ranking: by,
                    rank: rank(m),
                    max: *r,
                    order: order.clone(),
                });
            }
        }
        for (a, b) in &self.above {
            let ok = matches!((rank(a), rank(b)), (Some(x), Some(y)) if x < y);
            if !ok {
                failures.push(Failure::Above {
                    a: a.clone(),
                    b: b.clone(),
                    ranking: by,
                    rank_a: rank(a),
                    rank_b: rank(b),
                    order: order.clone(),
                });
            }
        }
        for w in &self.min_win_rate {
            let got = outcome.win_rate(&w.model, &w.against);
            if got.is_none_or(|r| r < w.min) {
                failures.push(Failure::MinWinRate {
                    model: w.model.clone(),
                    against: w.against.clone(),
                    rate: got,
                    min: w.min,
                });
            }
        }
        if let Some(min) = self.min_srcc {
            let srcc = outcome.srcc(by);
            if srcc.is_none_or(|s| s < min) {
                failures.push(Failure::MinSrcc {
                    ranking: by,
                    srcc,
                    min,
                });
            }
        }
        failures
    }
}

/// The ranking by `by`, best first, for the messages: each entry a model,
/// or the models whose scores are equal within rounding, in the
/// tournament's order, as `a ties with b and c (scores 0.5774, 0.5774 and
/// 0.5774)`.
fn shown_ranking(outcome: &TournamentOutcome, by: RankingMethod) -> Vec<String> {
    let scores = outcome.scores(by);
    let groups = outcome.tied_groups(by);
    let name = |i: &usize| outcome.models[*i].clone();
    groups
        .iter()
        .map(|g| match g.as_slice() {
            [first, rest @ ..] if !rest.is_empty() => format!(
                "{} ties with {} (scores {})",
                name(first),
                and_list(rest.iter().map(name).collect()),
                and_list(g.iter().map(|&i| format!("{:.4}", scores[i])).collect())
            ),
            _ => g.iter().map(name).collect(),
        })
        .collect()
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: Vec<String>) -> String {
    match items.split_last() {
        Some((last, init)) if !init.is_empty() => format!("{} and {last}", init.join(", ")),
        _ => items.concat(),
    }
}
