//! The snapshot of a `[[pair]]` trial: [`Summary`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::{Statistic, Thresholds, TrialId};
use crate::search::SearchOutcome;
use crate::verdict::{statistic, top};

use super::*;

/// Samples whose predictions at z0 the snapshot lists.
pub const SAMPLES_SHOWN: usize = 5;

/// The snapshot of one pair trial (also kept in its record, unrounded).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    /// The trial's pair name.
    pub pair: String,
    /// The classifiers, in order.
    pub models: Vec<String>,
    /// The generator.
    pub generator: String,
    /// The search's settings.
    pub settings: Settings,
    /// Ascent steps taken.
    pub steps_run: usize,
    /// Divergence statistics before and after the search.
    pub divergence: BeforeAfter,
    /// The null baseline.
    pub baseline: Stats,
    /// Mean divergence after / baseline mean: NaN where both are 0 (`null`
    /// in the record), ∞ where only the baseline is (`null` too: read back
    /// as NaN, see [`Summary::lift_value`]).
    #[serde(with = "crate::artifact::non_finite_as_null")]
    pub lift: f64,
    /// Mean ‖z − z0‖ / ‖z‖.
    pub mean_dz: f64,
    /// The fraction of samples whose models' top classes differ after the
    /// search.
    #[serde(default)]
    pub disagreement: f64,
    /// The hierarchical set distance of the models' top-n predictions.
    pub set_distance: Option<SetDistanceSummary>,
    /// The thresholds checked.
    pub thresholds: ThresholdSummary,
    /// The first samples' top predictions, before and after.
    pub samples: Vec<SampleSummary>,
    /// What looked wrong about the ascent (it fell, or z ran away).
    #[serde(default)]
    pub warnings: Vec<WarningSummary>,
    /// The kinds of warning whose figures this search left within
    /// [`Tolerance::SEARCH`] of their thresholds, raised or not
    /// ([`unsettled_warnings`]): the snapshot's `warnings` line may differ
    /// from the stored one by these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unsettled_warnings: Vec<crate::search::AscentWarningKind>,
}

/// A warning about the ascent ([`crate::search::AscentWarning`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WarningSummary {
    /// What happened, without figures (the snapshot holds this, by
    /// name).
    pub kind: crate::search::AscentWarningKind,
    /// The whole warning, with its figures and what to try.
    pub message: String,
}

/// Search settings as snapshotted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// `divergence`: its name (a `js` with weights of its own, which only
    /// the library's API gives, is `js` here too).
    pub divergence: crate::config::DivergenceKind,
    /// `optimizer`: its name (Adam's betas are not snapshotted).
    pub optimizer: crate::config::OptimizerKind,
    /// `lr`.
    pub lr: f64,
    /// `lambda`.
    pub lambda: f64,
    /// `batch`.
    pub batch: usize,
    /// `steps`.
    pub steps: usize,
    /// `seed`.
    pub seed: u64,
    /// `early_stop`: its window and tolerance, where set (it changes where
    /// the search stops, so it is on the line too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub early_stop: Option<(usize, f64)>,
}

impl Settings {
    /// The settings of a search.
    pub fn of(c: &crate::search::SearchConfig) -> Self {
        Settings {
            divergence: c.divergence.kind(),
            optimizer: c.optimizer.kind(),
            lr: c.lr,
            lambda: c.lambda,
            batch: c.batch,
            steps: c.steps,
            seed: c.seed,
            early_stop: c.early_stop.as_ref().map(|e| (e.window, e.tolerance)),
        }
    }

    pub(crate) fn line(&self) -> String {
        let mut line = format!(
            "{}, {}, lr {}, lambda {}, batch {}, steps {}, seed {}",
            self.divergence,
            self.optimizer,
            self.lr,
            self.lambda,
            self.batch,
            self.steps,
            self.seed
        );
        if let Some((window, tolerance)) = self.early_stop {
            line += &format!(", early_stop window {window} tolerance {tolerance}");
        }
        line
    }
}

/// Statistics of per-sample values.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    fn of(values: &[f64]) -> Self {
        Stats {
            mean: statistic(values, Statistic::Mean),
            median: statistic(values, Statistic::Quantile(0.5)),
            max: statistic(values, Statistic::Max),
        }
    }
}

/// Before and after the search.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeforeAfter {
    /// At z0.
    pub before: Stats,
    /// At the final z.
    pub after: Stats,
}

/// The set distance of the top-n predictions, before and after.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetDistanceSummary {
    /// n.
    pub top_n: usize,
    /// At z0.
    pub before: Stats,
    /// At the final z.
    pub after: Stats,
}

/// Thresholds as snapshotted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ThresholdSummary {
    /// `max_divergence`, if set.
    pub max_divergence: Option<f64>,
    /// What it bounds: in the record `"max"`, `"mean"` or `"quantile
    /// <q>"`, as the snapshot's line shows it.
    #[serde(with = "statistic_text")]
    pub statistic: Statistic,
    /// `min_lift`, if set.
    pub min_lift: Option<f64>,
    /// `max_set_distance`, if set.
    pub max_set_distance: Option<f64>,
}

/// serde for a [`Statistic`] as its text (`max`, `mean`, `quantile 0.9`:
/// its `Display`), as records held it when it was a string.
mod statistic_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::config::{Statistic, StatisticKind};

    pub(super) fn serialize<S: Serializer>(s: &Statistic, ser: S) -> Result<S::Ok, S::Error> {
        ser.collect_str(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Statistic, D::Error> {
        let text = String::deserialize(d)?;
        let (name, q) = match text.split_once(' ') {
            Some((name, q)) => (name, Some(q)),
            None => (text.as_str(), None),
        };
        let bad = || {
            D::Error::invalid_value(
                serde::de::Unexpected::Str(&text),
                &"max, mean or quantile <q>",
            )
        };
        match (StatisticKind::from_name(name), q) {
            (Some(StatisticKind::Max), None) => Ok(Statistic::Max),
            (Some(StatisticKind::Mean), None) => Ok(Statistic::Mean),
            (Some(StatisticKind::Quantile), Some(q)) => {
                q.parse().map(Statistic::Quantile).map_err(|_| bad())
            }
            _ => Err(bad()),
        }
    }
}

/// One sample's predictions, as "class (probability)" per model.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SampleSummary {
    /// The sample's index in the batch.
    pub index: usize,
    /// Divergence at z0 and at z.
    pub divergence: [f64; 2],
    /// Set distance of the top-n predictions at z0 and at z.
    pub set_distance: Option<[f64; 2]>,
    /// Each model's top prediction at z0.
    pub before: Vec<String>,
    /// Each model's top prediction at z.
    pub after: Vec<String>,
}

impl Summary {
    /// The lift; where a record read back holds none (`null`: it was not
    /// finite), mean after / baseline again, which tells ∞ from 0 / 0.
    pub fn lift_value(&self) -> f64 {
        if self.lift.is_nan() {
            self.divergence.after.mean / self.baseline.mean
        } else {
            self.lift
        }
    }

    /// The summary of a finished trial.
    pub fn new(
        pair: &str,
        generator: &str,
        outcome: &SearchOutcome,
        thresholds: &Thresholds,
    ) -> Self {
        let before: Vec<f64> = outcome
            .samples
            .iter()
            .map(|s| s.divergence_before)
            .collect();
        let after: Vec<f64> = outcome.samples.iter().map(|s| s.divergence_after).collect();
        let n = thresholds.top_n;
        let measure = outcome
            .measure_names
            .iter()
            .position(|m| *m == crate::verdict::set_distance_name(n));
        // The top class's probability with the digits of its line's
        // section: 6 significant at z0 (`start.*`, compared within 1e-3
        // relative: 4 decimals, 1e-4 apart, were more than that near 0.01,
        // a 1000-class model's), 4 after the search.
        let predictions = |log_probs: &[Vec<f32>], digits: usize| -> Vec<String> {
            log_probs
                .iter()
                .map(|lp| {
                    let (k, v) = top(lp);
                    format!("{} ({})", outcome.class_names[k], sig(v as f64, digits))
                })
                .collect()
        };
        let measured = |m: usize, after: bool| -> Vec<f64> {
            outcome
                .samples
                .iter()
                .map(|s| {
                    if after {
                        s.measures_after[m]
                    } else {
                        s.measures_before[m]
                    }
                })
                .collect()
        };
        let disagreeing = outcome
            .samples
            .iter()
            .filter(|s| {
                let tops: Vec<usize> = s
                    .log_probs_after
                    .iter()
                    .map(|lp| crate::model::argmax(lp))
                    .collect();
                tops.windows(2).any(|w| w[0] != w[1])
            })
            .count();
        Summary {
            pair: pair.to_string(),
            models: outcome.model_names.clone(),
            generator: generator.to_string(),
            settings: Settings::of(&outcome.config),
            steps_run: outcome.steps_run,
            divergence: BeforeAfter {
                before: Stats::of(&before),
                after: Stats::of(&after),
            },
            baseline: Stats::of(&outcome.baseline.divergences),
            lift: outcome.lift(),
            mean_dz: outcome.mean_dz(),
            disagreement: disagreeing as f64 / outcome.samples.len().max(1) as f64,
            set_distance: measure.map(|m| SetDistanceSummary {
                top_n: n,
                before: Stats::of(&measured(m, false)),
                after: Stats::of(&measured(m, true)),
            }),
            thresholds: ThresholdSummary {
                max_divergence: thresholds.max_divergence,
                statistic: thresholds.statistic,
                min_lift: thresholds.min_lift,
                max_set_distance: thresholds.max_set_distance,
            },
            samples: outcome
                .samples
                .iter()
                .take(SAMPLES_SHOWN)
                .enumerate()
                .map(|(index, s)| SampleSummary {
                    index,
                    divergence: [s.divergence_before, s.divergence_after],
                    set_distance: measure.map(|m| [s.measures_before[m], s.measures_after[m]]),
                    before: predictions(&s.log_probs_before, 6),
                    after: predictions(&s.log_probs_after, 4),
                })
                .collect(),
            warnings: outcome
                .warnings()
                .iter()
                .map(|w| WarningSummary {
                    kind: w.kind(),
                    message: w.to_string(),
                })
                .collect(),
            unsettled_warnings: unsettled_warnings(&outcome.warning_figures()),
        }
    }

    /// The snapshot's body: one `key: value` line each (see the module
    /// docs for what the keys' prefixes mean).
    pub fn body(&self) -> String {
        let mut b = Body::default();
        b.text("trial", TrialId::pair(&self.pair).to_string());
        b.text("models", self.models.join(", "));
        b.text("generator", &self.generator);
        b.text("settings", self.settings.line());
        let t = &self.thresholds;
        b.text(
            "thresholds",
            format!(
                "max_divergence {}, statistic {}, min_lift {}, max_set_distance {}",
                opt(t.max_divergence),
                t.statistic,
                opt(t.min_lift),
                opt(t.max_set_distance)
            ),
        );
        let d = &self.settings.divergence;
        let stats = |s: &Stats, digits| {
            format!(
                "mean {}, median {}, max {}",
                sig(s.mean, digits),
                sig(s.median, digits),
                sig(s.max, digits)
            )
        };
        b.text(
            "start.divergence",
            format!("{d} {}", stats(&self.divergence.before, 6)),
        );
        b.text(
            "start.baseline",
            format!("{d} {}", stats(&self.baseline, 6)),
        );
        if let Some(s) = &self.set_distance {
            b.text(
                "start.set_distance",
                format!(
                    "top-{} mean {}, max {}",
                    s.top_n,
                    sig(s.before.mean, 6),
                    sig(s.before.max, 6)
                ),
            );
        }
        for s in &self.samples {
            let predictions: Vec<String> = self
                .models
                .iter()
                .zip(&s.before)
                .map(|(m, p)| format!("{m} {p}"))
                .collect();
            b.text(
                &format!("start.sample.{}", s.index),
                format!(
                    "{d} {}; {}",
                    sig(s.divergence[0], 6),
                    predictions.join(", ")
                ),
            );
        }
        b.text("search.steps_run", self.steps_run.to_string());
        b.text(
            "search.divergence",
            format!(
                "{d} mean {}, median {}",
                sig(self.divergence.after.mean, 4),
                sig(self.divergence.after.median, 4)
            ),
        );
        b.text("search.lift", sig(self.lift, 4));
        b.text("search.mean_dz", sig(self.mean_dz, 4));
        b.text("search.disagreement", sig(self.disagreement, 4));
        if let Some(s) = &self.set_distance {
            b.text(
                "search.set_distance",
                format!("top-{} mean {}", s.top_n, sig(s.after.mean, 4)),
            );
        }
        b.text("warnings", warnings(&self.warnings));
        b.0
    }

    /// Checks the summary against its snapshot `snapshots/<config
    /// stem>/pair-<name>.snap` beside `config` (see the module docs).
    pub fn check_snapshot(&self, config: &Path) -> Result<(), SnapshotProblem> {
        check_allowing(
            &SnapshotFile::new(config, TrialId::pair(&self.pair)),
            &self.body(),
            &Unsettled {
                warnings: self.unsettled_warnings.clone(),
                ..Unsettled::default()
            },
        )
    }
}
