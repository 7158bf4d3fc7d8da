//! The snapshot of a `[[tournament]]` trial: [`TournamentSummary`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::TrialId;
use crate::tournament::TournamentOutcome;

use super::*;

/// How many standard errors of their difference two neighbours' strengths
/// must be apart for their order to show in the snapshot's ranking.
pub const TIER_SE: f64 = 2.0;

/// The snapshot of a `[[tournament]]` trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TournamentSummary {
    /// The tournament's name.
    pub tournament: String,
    /// The models, in config order.
    pub models: Vec<String>,
    /// The conditional generator.
    pub generator: String,
    /// The search's settings.
    pub settings: Settings,
    /// MDS samples per ordered pair.
    pub samples: usize,
    /// Each model's accuracy on the test data, when given.
    pub test_accuracy: Option<Vec<f64>>,
    /// Each model's accuracy against the conditions at the starting
    /// latents, over all its pairs (before any ascent step).
    pub start_accuracy: Vec<f64>,
    /// The Bradley–Terry ranking in tiers: neighbours whose strengths are
    /// within [`TIER_SE`] standard errors share a tier (`{a, b}`).
    pub tiers: String,
    /// (model, Bradley–Terry θ), in config order (so that a swap within
    /// noise changes numbers within tolerance, not the line's text).
    pub theta: Vec<(String, f64)>,
    /// (a, b, a's share of the decided samples), one per unordered pair
    /// (a before b in config order).
    pub win_rates: Vec<(String, String, Option<f64>)>,
    /// SRCC of the MAD and the Bradley–Terry ranking with test accuracy.
    pub srcc: (Option<f64>, Option<f64>),
    /// The Bradley–Terry order's neighbours, strongest first, with the
    /// tiers' splits and whether each is unsettled
    /// ([`TierBoundary`]): the snapshot's `search.ranking` line may differ
    /// from the stored one by the unsettled splits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tier_boundaries: Vec<TierBoundary>,
}

impl TournamentSummary {
    /// The summary of `outcome`.
    pub fn new(
        name: &str,
        generator: &str,
        settings: Settings,
        samples: usize,
        outcome: &TournamentOutcome,
    ) -> Self {
        let bt = &outcome.bradley_terry;
        let n = outcome.models.len();
        let mut win_rates = Vec::new();
        for i in 0..n {
            for j in i + 1..n {
                win_rates.push((
                    outcome.models[i].clone(),
                    outcome.models[j].clone(),
                    outcome.wins.win_rate(i, j),
                ));
            }
        }
        TournamentSummary {
            tournament: name.to_string(),
            models: outcome.models.clone(),
            generator: generator.to_string(),
            settings,
            samples,
            test_accuracy: outcome.test_accuracy.clone(),
            start_accuracy: outcome.start_accuracy.clone(),
            tiers: tiers(outcome),
            theta: outcome
                .models
                .iter()
                .cloned()
                .zip(bt.theta.iter().copied())
                .collect(),
            win_rates,
            srcc: (outcome.srcc_power, outcome.srcc_bradley_terry),
            tier_boundaries: tier_boundaries(outcome),
        }
    }

    /// The snapshot's body (see [`Summary::body`]).
    pub fn body(&self) -> String {
        let mut b = Body::default();
        let n = self.models.len();
        b.text("trial", TrialId::tournament(&self.tournament).to_string());
        b.text("models", self.models.join(", "));
        b.text("generator", &self.generator);
        b.text("settings", self.settings.line());
        b.text(
            "samples",
            format!("{} per ordered pair ({} pairs)", self.samples, n * (n - 1)),
        );
        let per_model = |values: &[f64], digits| {
            let parts: Vec<String> = self
                .models
                .iter()
                .zip(values)
                .map(|(m, v)| format!("{m} {}", sig(*v, digits)))
                .collect();
            parts.join(", ")
        };
        if let Some(t) = &self.test_accuracy {
            b.text("start.test_accuracy", per_model(t, 6));
        }
        b.text("start.accuracy", per_model(&self.start_accuracy, 6));
        b.text("search.ranking", &self.tiers);
        let theta: Vec<String> = self
            .theta
            .iter()
            .map(|(m, t)| format!("{m} {}", sig(*t, 4)))
            .collect();
        b.text("search.theta", theta.join(", "));
        let rates: Vec<String> = self
            .win_rates
            .iter()
            .map(|(a, c, r)| format!("{a}/{c} {}", r.map_or("~".into(), |r| sig(r, 4))))
            .collect();
        b.text("search.win_rate", rates.join(", "));
        b.text(
            "search.srcc",
            format!(
                "mad {}, bradley-terry {}",
                self.srcc.0.map_or("~".into(), |s| sig(s, 4)),
                self.srcc.1.map_or("~".into(), |s| sig(s, 4))
            ),
        );
        b.0
    }

    /// Checks the summary against `snapshots/<config
    /// stem>/tournament-<name>.snap`, as [`Summary::check_snapshot`] does.
    pub fn check_snapshot(&self, config: &Path) -> Result<(), SnapshotProblem> {
        check_allowing(
            &SnapshotFile::new(config, TrialId::tournament(&self.tournament)),
            &self.body(),
            &Unsettled {
                ranking: self.tier_boundaries.clone(),
                ..Unsettled::default()
            },
        )
    }
}

/// The Bradley–Terry order with braces around runs of neighbours whose
/// strengths differ by less than [`TIER_SE`] standard errors of their
/// difference: `cnn_b > cnn_a > {bag_4, bag_0, bag_1}`. Only an order
/// that the samples establish shows; a swap within noise does not change
/// the line.
pub fn tiers(outcome: &TournamentOutcome) -> String {
    let mut groups: Vec<Vec<&str>> = Vec::new();
    let boundaries = tier_boundaries(outcome);
    let first = outcome.bradley_terry.order.first();
    let upper = first.map(|&i| outcome.models[i].as_str());
    let lowers = boundaries.iter().map(|b| (b.lower.as_str(), b.split));
    for (name, split) in upper.map(|u| (u, true)).into_iter().chain(lowers) {
        match groups.last_mut() {
            Some(g) if !split => g.push(name),
            _ => groups.push(vec![name]),
        }
    }
    let names: Vec<String> = groups
        .into_iter()
        .map(|mut members| {
            if members.len() == 1 {
                members[0].to_string()
            } else {
                // Within a tier the order is noise: config order, so that
                // the line does not change with it.
                members.sort_by_key(|m| outcome.index(m));
                format!("{{{}}}", members.join(", "))
            }
        })
        .collect();
    names.join(" > ")
}

/// The Bradley–Terry order's neighbours, strongest first, each split into
/// two tiers or not by [`TIER_SE`] ([`TierBoundary::new`]): what [`tiers`]
/// writes and what a snapshot's `search.ranking` line is compared by.
fn tier_boundaries(outcome: &TournamentOutcome) -> Vec<TierBoundary> {
    let bt = &outcome.bradley_terry;
    bt.order
        .windows(2)
        .map(|w| {
            let (upper, lower) = (w[0], w[1]);
            TierBoundary::new(
                &outcome.models[upper],
                &outcome.models[lower],
                bt.theta[upper] - bt.theta[lower],
                bt.se_of_difference(upper, lower),
            )
        })
        .collect()
}
