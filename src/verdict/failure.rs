//! [`Failure`]: a threshold a trial broke, and its message.

use std::fmt;

use super::{beside, describe};
use crate::config::{DivergenceKind, Statistic};
use crate::tournament::RankingMethod;

/// A threshold a trial broke, with the figures that broke it. Adding a
/// threshold kind is a variant here, its check
/// ([`Verdict::check`](super::Verdict::check),
/// [`ensemble_failures`](super::ensemble_failures) or
/// [`TournamentThresholds::check`](crate::tournament::TournamentThresholds::check))
/// and its arm in `Display`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Failure {
    /// `max_divergence`: the statistic of the divergences is above it.
    MaxDivergence {
        /// The statistic checked.
        statistic: Statistic,
        /// The divergence.
        divergence: DivergenceKind,
        /// Its value after the search.
        value: f64,
        /// The threshold.
        max: f64,
    },
    /// `min_lift`: the lift is below it.
    MinLift {
        /// The divergence.
        divergence: DivergenceKind,
        /// The baseline's mean divergence.
        baseline: f64,
        /// The lift.
        lift: f64,
        /// The threshold.
        min: f64,
    },
    /// `min_lift` over a baseline it cannot rest on: fewer than
    /// [`MIN_BASELINE_SAMPLES`](gevaldi_config::MIN_BASELINE_SAMPLES)
    /// prior samples, or a mean of 0 or not finite (a lift over it passes
    /// any threshold, or none, and says nothing).
    UnusableBaseline {
        /// The divergence.
        divergence: DivergenceKind,
        /// The prior samples the baseline is over (the search's batch).
        samples: usize,
        /// The baseline's mean divergence.
        mean: f64,
        /// The threshold.
        min: f64,
    },
    /// `max_set_distance`: the statistic of the set distances is above it.
    MaxSetDistance {
        /// The statistic checked.
        statistic: Statistic,
        /// The n of the top-n predictions.
        top_n: usize,
        /// Its value after the search.
        value: f64,
        /// The threshold.
        max: f64,
    },
    /// `min_mds_accuracy`: the vote's accuracy on the MDS dataset is below it.
    MinMdsAccuracy {
        /// The accuracy on the MDS dataset.
        accuracy: f64,
        /// The threshold.
        min: f64,
    },
    /// `max_accuracy_drop`: test accuracy − MDS accuracy is above it.
    MaxAccuracyDrop {
        /// The accuracy on the test data.
        test: f64,
        /// The accuracy on the MDS dataset.
        mds: f64,
        /// The threshold.
        max: f64,
    },
    /// `min_accuracy_drop`: test accuracy − MDS accuracy is below it.
    MinAccuracyDrop {
        /// The accuracy on the test data.
        test: f64,
        /// The accuracy on the MDS dataset.
        mds: f64,
        /// The threshold.
        min: f64,
    },
    /// `max_regions`: DBSCAN finds more regions of uncertainty.
    MaxRegions {
        /// The regions found.
        regions: usize,
        /// The threshold.
        max: usize,
    },
    /// `champion`: the model does not rank first.
    Champion {
        /// The model.
        model: String,
        /// The ranking read.
        ranking: RankingMethod,
        /// Its rank (1 is the best).
        rank: Option<usize>,
        /// The ranking, best first.
        order: Vec<String>,
    },
    /// `max_rank`: the model ranks below it.
    MaxRank {
        /// The model.
        model: String,
        /// The ranking read.
        ranking: RankingMethod,
        /// Its rank.
        rank: Option<usize>,
        /// The threshold.
        max: usize,
        /// The ranking, best first.
        order: Vec<String>,
    },
    /// `above`: `a` does not rank above `b`.
    Above {
        /// The model that must rank higher.
        a: String,
        /// The model that must rank lower.
        b: String,
        /// The ranking read.
        ranking: RankingMethod,
        /// a's rank.
        rank_a: Option<usize>,
        /// b's rank.
        rank_b: Option<usize>,
        /// The ranking, best first.
        order: Vec<String>,
    },
    /// `min_win_rate`: the model won a smaller share of the samples decided
    /// against `against` (`None`: none was decided).
    MinWinRate {
        /// The model.
        model: String,
        /// Its opponent.
        against: String,
        /// Its share of the decided samples.
        rate: Option<f64>,
        /// The threshold.
        min: f64,
    },
    /// `min_srcc`: the SRCC of the ranking with the test accuracy is below
    /// it (`None`: undefined).
    MinSrcc {
        /// The ranking read.
        ranking: RankingMethod,
        /// The SRCC.
        srcc: Option<f64>,
        /// The threshold.
        min: f64,
    },
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::MaxDivergence {
                statistic,
                divergence,
                value,
                max,
            } => write!(
                f,
                "{} {divergence} after the search is {}, above max_divergence = {max}",
                describe(*statistic),
                beside(*value, *max, 4)
            ),
            Failure::MinLift {
                divergence,
                baseline,
                lift,
                min,
            } if lift.is_nan() && *baseline == 0.0 => write!(
                f,
                "the lift is undefined: {divergence} is 0 after the search and over the \
                 baseline (the models agree on every sample), below min_lift = {min}"
            ),
            Failure::MinLift {
                divergence,
                baseline,
                lift,
                min,
            } => write!(
                f,
                "the lift (mean {divergence} after the search / baseline {baseline:.4}) is \
                 {}, below min_lift = {min}: the search found too little",
                beside(*lift, *min, 2)
            ),
            Failure::UnusableBaseline {
                divergence,
                samples,
                mean,
                min,
            } => {
                let over = crate::report::count(*samples, "prior sample");
                let least = gevaldi_config::MIN_BASELINE_SAMPLES;
                if *samples < least {
                    write!(
                        f,
                        "min_lift = {min} cannot be checked: the baseline is the mean \
                         {divergence} over {over} (one per sample of the batch), too few to \
                         mean anything; the lift needs a batch of at least {least}"
                    )
                } else {
                    write!(
                        f,
                        "min_lift = {min} cannot be checked: the baseline (the mean \
                         {divergence} over {over}) is {mean}, so the lift over it means \
                         nothing"
                    )
                }
            }
            Failure::MaxSetDistance {
                statistic,
                top_n,
                value,
                max,
            } => write!(
                f,
                "{} set distance of the top-{top_n} predictions after the search is {}, \
                 above max_set_distance = {max}",
                describe(*statistic),
                beside(*value, *max, 4)
            ),
            Failure::MinMdsAccuracy { accuracy, min } => write!(
                f,
                "the ensemble's accuracy on its MDS dataset is {}, below \
                 min_mds_accuracy = {min}",
                beside(*accuracy, *min, 4)
            ),
            Failure::MaxAccuracyDrop { test, mds, max } => write!(
                f,
                "the accuracy drops by {} from the test data ({test:.4}) to the MDS dataset \
                 ({mds:.4}), above max_accuracy_drop = {max}",
                beside(test - mds, *max, 4)
            ),
            Failure::MinAccuracyDrop { test, mds, min } => write!(
                f,
                "the accuracy drops by only {} from the test data ({test:.4}) to the MDS \
                 dataset ({mds:.4}), below min_accuracy_drop = {min}: the search found too little",
                beside(test - mds, *min, 4)
            ),
            Failure::MaxRegions { regions, max } => write!(
                f,
                "DBSCAN finds {} of uncertainty, above max_regions = {max}",
                crate::report::count(*regions, "region")
            ),
            Failure::Champion {
                model,
                ranking,
                rank,
                order,
            } => write!(
                f,
                "champion `{model}` ranks {} by {}, not first: {}",
                place(*rank),
                ranking.name(),
                order.join(" > ")
            ),
            Failure::MaxRank {
                model,
                ranking,
                rank,
                max,
                order,
            } => write!(
                f,
                "`{model}` ranks {} by {}, below max_rank = {max}: {}",
                place(*rank),
                ranking.name(),
                order.join(" > ")
            ),
            Failure::Above {
                a,
                b,
                ranking,
                rank_a,
                rank_b,
                order,
            } => write!(
                f,
                "`{a}` ranks {} by {}, not above `{b}` ({}): {}",
                place(*rank_a),
                ranking.name(),
                place(*rank_b),
                order.join(" > ")
            ),
            Failure::MinWinRate {
                model,
                against,
                rate,
                min,
            } => {
                let got = rate.map_or("no sample (none was decided)".into(), |r| {
                    format!("{}%", beside(100.0 * r, 100.0 * min, 1))
                });
                write!(
                    f,
                    "`{model}` won {got} of the samples decided against `{against}`, below \
                     min_win_rate = {min}"
                )
            }
            Failure::MinSrcc { ranking, srcc, min } => {
                let got = srcc.map_or("undefined".into(), |s| beside(s, *min, 3));
                write!(
                    f,
                    "the SRCC of the {} ranking with the test accuracy is {got}, below \
                     min_srcc = {min}",
                    ranking.name()
                )
            }
        }
    }
}

/// `#r`, or where a model that is not in the ranking stands.
fn place(rank: Option<usize>) -> String {
    match rank {
        Some(r) => format!("#{r}"),
        None => "nowhere (not a model of the tournament)".into(),
    }
}
