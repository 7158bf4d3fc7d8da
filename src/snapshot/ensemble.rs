//! The snapshot of an `[[ensemble]]` trial: [`EnsembleSummary`].

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::TrialId;

use super::*;

/// The snapshot of an `[[ensemble]]` trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnsembleSummary {
    /// The ensemble's name.
    pub ensemble: String,
    /// The base learners.
    pub members: Vec<String>,
    /// The conditional generator.
    pub generator: String,
    /// The search's settings (divergence `js`).
    pub settings: Settings,
    /// K.
    pub samples: usize,
    /// The vote's metrics on the test data.
    pub test: MetricsSummary,
    /// The vote's mean negative log-likelihood of the test labels (natural
    /// log): a smooth figure of every member's weights.
    #[serde(default)]
    pub test_log_loss: f64,
    /// The vote's metrics on the MDS dataset.
    pub mds: MetricsSummary,
    /// The mean JS divergence among the members on the MDS dataset.
    #[serde(default)]
    pub mds_divergence: f64,
    /// DBSCAN's regions of uncertainty.
    pub regions: RegionsSummary,
}

/// Accuracy, macro AUC and macro F1.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// Accuracy.
    pub accuracy: f64,
    /// Macro one-vs-rest ROC AUC (`None`: undefined, every label the same).
    pub auc: Option<f64>,
    /// Macro F1.
    pub f1: f64,
}

impl From<&crate::ensemble::Metrics> for MetricsSummary {
    fn from(m: &crate::ensemble::Metrics) -> Self {
        MetricsSummary {
            accuracy: m.accuracy,
            auc: m.auc,
            f1: m.f1,
        }
    }
}

impl MetricsSummary {
    pub(super) fn line(&self, digits: usize) -> String {
        format!(
            "accuracy {}, auc {}, f1 {}",
            sig(self.accuracy, digits),
            self.auc.map_or("undefined".into(), |a| sig(a, digits)),
            sig(self.f1, digits)
        )
    }
}

/// DBSCAN's result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegionsSummary {
    /// The chosen eps.
    pub eps: f64,
    /// The number of regions.
    pub count: usize,
    /// Samples in no region.
    pub noise: usize,
    /// The largest regions: size, conditions present, the vote's most
    /// common prediction, and the indices of a few example samples (images
    /// in the exported `mds-images-idx3-ubyte`). In the record and the
    /// report, not in the snapshot (which samples land where is chaotic).
    pub largest: Vec<String>,
}

impl RegionsSummary {
    /// The summary of `regions`, naming classes with `class_names`.
    pub fn new(regions: &crate::regions::Regions, class_names: &[String]) -> Self {
        RegionsSummary {
            eps: regions.eps,
            count: regions.regions.len(),
            noise: regions.noise,
            largest: regions
                .regions
                .iter()
                .take(SAMPLES_SHOWN)
                .map(|r| {
                    let conditions: Vec<String> = r
                        .conditions
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(c, n)| format!("{}×{n}", class_names[c]))
                        .collect();
                    let (p, n) = r.predictions[0];
                    let examples: Vec<String> =
                        r.members.iter().take(3).map(|i| format!("#{i}")).collect();
                    format!(
                        "{} samples, conditions {}, predicted {} ×{n}, e.g. {}",
                        r.members.len(),
                        conditions.join(" "),
                        class_names[p],
                        examples.join(" ")
                    )
                })
                .collect(),
        }
    }
}

impl EnsembleSummary {
    /// The snapshot's body (see [`Summary::body`]).
    pub fn body(&self) -> String {
        let mut b = Body::default();
        b.text("trial", TrialId::ensemble(&self.ensemble).to_string());
        b.text("members", self.members.join(", "));
        b.text("generator", &self.generator);
        b.text("settings", self.settings.line());
        b.text("samples", self.samples.to_string());
        b.text(
            "start.test",
            format!(
                "{}, log_loss {}",
                self.test.line(6),
                sig(self.test_log_loss, 6)
            ),
        );
        b.text("search.mds", self.mds.line(4));
        b.text(
            "search.mds_divergence",
            format!("js mean {}", sig(self.mds_divergence, 4)),
        );
        b.text(
            "search.regions",
            format!(
                "{} regions, {} noise, eps {}",
                self.regions.count,
                self.regions.noise,
                sig(self.regions.eps, 4)
            ),
        );
        b.0
    }

    /// Checks the summary against `snapshots/<config
    /// stem>/ensemble-<name>.snap`, as [`Summary::check_snapshot`] does.
    pub fn check_snapshot(&self, config: &Path) -> Result<(), SnapshotProblem> {
        check(
            &SnapshotFile::new(config, TrialId::ensemble(&self.ensemble)),
            &self.body(),
        )
    }
}

/// The vote's mean negative log-likelihood of `labels` (probabilities
/// floored at 1e-30).
pub fn log_loss(probs: &[Vec<f32>], labels: &[usize]) -> f64 {
    let total: f64 = probs
        .iter()
        .zip(labels)
        .map(|(p, &l)| -(f64::from(p[l]).max(1e-30)).ln())
        .sum();
    total / labels.len().max(1) as f64
}
