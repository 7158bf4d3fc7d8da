//! The insta snapshot of a trial: a deterministic, rounded YAML summary that
//! changes when a model's behaviour changes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Statistic, Thresholds};
use crate::search::SearchOutcome;
use crate::verdict::{statistic, top};

/// Samples whose predictions the snapshot lists.
pub const SAMPLES_SHOWN: usize = 5;

/// Values are rounded to this many decimals, so that last-bit differences
/// between CPUs do not churn snapshots.
const DECIMALS: i32 = 3;

/// The snapshot of one trial.
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
    /// Mean divergence after / baseline mean.
    pub lift: f64,
    /// Mean ‖z − z0‖ / ‖z‖.
    pub mean_dz: f64,
    /// The hierarchical set distance of the models' top-n predictions.
    pub set_distance: Option<SetDistanceSummary>,
    /// The thresholds checked.
    pub thresholds: ThresholdSummary,
    /// The first samples' top predictions, before and after.
    pub samples: Vec<SampleSummary>,
}

/// Search settings as snapshotted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    /// `divergence`.
    pub divergence: String,
    /// `optimizer`.
    pub optimizer: String,
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
}

impl Settings {
    /// The settings of a search.
    pub fn of(c: &crate::search::SearchConfig) -> Self {
        Settings {
            divergence: c.divergence.name().to_string(),
            optimizer: c.optimizer.name().to_string(),
            lr: c.lr,
            lambda: c.lambda,
            batch: c.batch,
            steps: c.steps,
            seed: c.seed,
        }
    }
}

/// Statistics of per-sample divergences.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// Maximum.
    pub max: f64,
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
    /// What it bounds.
    pub statistic: String,
    /// `min_lift`, if set.
    pub min_lift: Option<f64>,
    /// `max_set_distance`, if set.
    pub max_set_distance: Option<f64>,
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

fn round(v: f64) -> f64 {
    let scale = 10f64.powi(DECIMALS);
    let r = (v * scale).round() / scale;
    if r == 0.0 {
        0.0 // no "-0.0"
    } else {
        r
    }
}

fn stats(values: &[f64]) -> Stats {
    Stats {
        mean: round(statistic(values, Statistic::Mean)),
        median: round(statistic(values, Statistic::Quantile(0.5))),
        max: round(statistic(values, Statistic::Max)),
    }
}

impl Summary {
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
        let c = &outcome.config;
        let n = thresholds.top_n;
        let measure = outcome
            .measure_names
            .iter()
            .position(|m| *m == crate::verdict::set_distance_name(n));
        let pick = |values: &[f64], m: usize| values[m];
        let predictions = |probs: &[Vec<f32>]| -> Vec<String> {
            probs
                .iter()
                .map(|p| {
                    let (k, v) = top(p);
                    format!("{} ({:.2})", outcome.class_names[k], v)
                })
                .collect()
        };
        Summary {
            pair: pair.to_string(),
            models: outcome.model_names.clone(),
            generator: generator.to_string(),
            settings: Settings::of(c),
            steps_run: outcome.steps_run,
            divergence: BeforeAfter {
                before: stats(&before),
                after: stats(&after),
            },
            baseline: stats(&outcome.baseline.divergences),
            lift: round(outcome.lift()),
            mean_dz: round(outcome.mean_dz()),
            set_distance: measure.map(|m| SetDistanceSummary {
                top_n: n,
                before: stats(
                    &outcome
                        .samples
                        .iter()
                        .map(|s| pick(&s.measures_before, m))
                        .collect::<Vec<_>>(),
                ),
                after: stats(
                    &outcome
                        .samples
                        .iter()
                        .map(|s| pick(&s.measures_after, m))
                        .collect::<Vec<_>>(),
                ),
            }),
            thresholds: ThresholdSummary {
                max_divergence: thresholds.max_divergence,
                statistic: match thresholds.statistic {
                    Statistic::Max => "max".into(),
                    Statistic::Mean => "mean".into(),
                    Statistic::Quantile(q) => format!("quantile {q}"),
                },
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
                    divergence: [round(s.divergence_before), round(s.divergence_after)],
                    set_distance: measure.map(|m| {
                        [
                            round(pick(&s.measures_before, m)),
                            round(pick(&s.measures_after, m)),
                        ]
                    }),
                    before: predictions(&s.probs_before),
                    after: predictions(&s.probs_after),
                })
                .collect(),
        }
    }

    /// Asserts the summary against `<dir>/snapshots/<name>.snap` with insta,
    /// binding insta's settings on this thread (trials run on worker
    /// threads). Returns the assertion's message instead of panicking.
    ///
    /// insta's usual rules apply: locally a new or changed snapshot writes
    /// `<name>.snap.new` for `cargo insta review` and fails; with `CI` set
    /// (or `INSTA_UPDATE=no`) it fails and writes nothing.
    pub fn assert_snapshot(&self, name: &str, dir: &Path, config: &Path) -> Result<(), String> {
        assert_yaml(self, name, dir, config, "pair")
    }
}

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
    /// The vote's metrics on the MDS dataset.
    pub mds: MetricsSummary,
    /// DBSCAN's regions of uncertainty.
    pub regions: RegionsSummary,
}

/// Accuracy, macro AUC and macro F1, rounded.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MetricsSummary {
    /// Accuracy.
    pub accuracy: f64,
    /// Macro one-vs-rest ROC AUC.
    pub auc: f64,
    /// Macro F1.
    pub f1: f64,
}

impl From<&crate::ensemble::Metrics> for MetricsSummary {
    fn from(m: &crate::ensemble::Metrics) -> Self {
        MetricsSummary {
            accuracy: round(m.accuracy),
            auc: round(m.auc),
            f1: round(m.f1),
        }
    }
}

/// DBSCAN's result, rounded.
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
    /// in the exported `mds-images-idx3-ubyte`).
    pub largest: Vec<String>,
}

impl RegionsSummary {
    /// The summary of `regions`, naming classes with `class_names`.
    pub fn new(regions: &crate::regions::Regions, class_names: &[String]) -> Self {
        RegionsSummary {
            eps: round(regions.eps),
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
    /// Asserts the summary against `<dir>/snapshots/<name>.snap`, as
    /// [`Summary::assert_snapshot`] does.
    pub fn assert_snapshot(&self, name: &str, dir: &Path, config: &Path) -> Result<(), String> {
        assert_yaml(self, name, dir, config, "ensemble")
    }
}

fn assert_yaml<T: Serialize>(
    value: &T,
    name: &str,
    dir: &Path,
    config: &Path,
    kind: &str,
) -> Result<(), String> {
    let snapshots = dir.join("snapshots");
    let staging = Staging::new(&snapshots, name).map_err(|e| {
        format!(
            "failed to prepare the snapshot `{}`: {e}",
            snapshots.join(format!("{name}.snap")).display()
        )
    })?;
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(&staging.dir);
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.set_input_file(config);
    settings.set_description(format!("gevaldi trial {kind}::{name}"));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        settings.bind(|| insta::assert_yaml_snapshot!(name.to_string(), value));
    }));
    let published = staging.publish(result.is_ok());
    let result = result.map_err(|payload| {
        let msg = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        format!(
            "snapshot `{}` does not match ({msg}): review with `cargo insta review`, \
             or accept with INSTA_UPDATE=always",
            snapshots.join(format!("{name}.snap")).display()
        )
    });
    match (result, published) {
        (r, Ok(())) => r,
        (_, Err(e)) => Err(format!(
            "failed to write the snapshot `{}`: {e}",
            snapshots.join(format!("{name}.snap")).display()
        )),
    }
}

/// Where insta writes a trial's snapshot before it is moved into place.
///
/// insta writes `.snap` and `.snap.new` files in place; a run killed while
/// it writes would leave half a snapshot. Here insta works in a private
/// directory beside the snapshots (`.gevaldi-staging-<pid>-<name>`, seeded
/// with the current snapshot), and what it wrote is renamed into place: a
/// reader, or a killed run, sees the old file or the new one. Directories
/// left by killed runs are removed by the next run.
struct Staging {
    snapshots: PathBuf,
    dir: PathBuf,
    file: String,
}

const STAGING_PREFIX: &str = ".gevaldi-staging-";

impl Staging {
    fn new(snapshots: &Path, name: &str) -> std::io::Result<Self> {
        remove_stale_staging(snapshots);
        let dir = snapshots.join(format!("{STAGING_PREFIX}{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let file = format!("{name}.snap");
        let current = snapshots.join(&file);
        if current.is_file() {
            std::fs::copy(&current, dir.join(&file))?;
        }
        Ok(Staging {
            snapshots: snapshots.to_path_buf(),
            dir,
            file,
        })
    }

    /// Renames what insta wrote (a new or updated `.snap`, a `.snap.new`)
    /// into the snapshot directory; after a match, removes a stale
    /// `.snap.new` as insta would.
    fn publish(self, matched: bool) -> std::io::Result<()> {
        let result = (|| {
            for file in [self.file.clone(), format!("{}.new", self.file)] {
                let (staged, target) = (self.dir.join(&file), self.snapshots.join(&file));
                if !staged.is_file() {
                    continue;
                }
                let same = std::fs::read(&target).ok() == Some(std::fs::read(&staged)?);
                if !same {
                    std::fs::rename(&staged, &target)?;
                }
            }
            let pending = self.snapshots.join(format!("{}.new", self.file));
            if matched && !self.dir.join(format!("{}.new", self.file)).exists() && pending.exists()
            {
                std::fs::remove_file(pending)?;
            }
            Ok(())
        })();
        let _ = std::fs::remove_dir_all(&self.dir);
        result
    }
}

/// Removes staging directories of processes that are gone (Linux; elsewhere
/// they stay until removed by hand).
fn remove_stale_staging(snapshots: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(snapshots) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(STAGING_PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
