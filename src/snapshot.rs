//! The snapshot of a trial: what it found, in a form that is the same on
//! every machine and device yet changes when a model does.
//!
//! # What a snapshot holds, and why
//!
//! The search is a chaotic ascent: over 200 steps, float rounding that
//! differs between the CPU and a GPU (or between gevaldi's engine and
//! candle's own ops, `GEVALDI_ENGINE=candle`) moves some samples to other
//! maxima. On an H200 the committed MNIST suite ended with a mean KL of
//! 2.793 against 2.717 on the CPU, although both searches were right. A
//! snapshot of per-sample results after the search would be red forever for
//! a team that develops on a GPU and gates on CPU runners. So a snapshot
//! holds two kinds of figure, each line marked by its key:
//!
//! - `start.*`: what the models do at the seed's starting latents z0 and on
//!   the baseline's prior samples, before any ascent step (and, for an
//!   ensemble, the vote on the test data). These are smooth functions of
//!   every model's weights, equal across devices to float rounding (1e-6
//!   measured), and a 1% change to one layer's weights moves them by far
//!   more than rounding does. They are compared within [`Tolerance::START`]:
//!   relative 1e-3 (absolute 1e-5 near zero).
//! - `search.*`: what the ascent found (the divergence after the search, the
//!   lift, dz, the set distance, regions of uncertainty). These are compared
//!   within [`Tolerance::SEARCH`], relative 25% (absolute 0.05): device and
//!   engine noise stays well inside it, a search that stops finding
//!   disagreement does not.
//!
//! Every other line (names, settings, thresholds, warnings) is compared as
//! text. Numbers are written with 6 significant digits (`start.*`) or 4
//! (`search.*`). A snapshot that is within tolerance of the stored one is
//! left as it is, so the file never churns between machines.
//!
//! # Files
//!
//! Snapshots live beside the config, one folder per config:
//! `snapshots/<config stem>/pair-<name>.snap` and `…/ensemble-<name>.snap`.
//! They are in insta's file format (a YAML header between `---` lines, then
//! the body), so `cargo insta review` and `cargo insta accept` work on them.
//! gevaldi compares them itself (insta's assertion has no tolerance, and
//! prints whole-file diffs and panics), following insta's environment:
//!
//! | `INSTA_UPDATE` | new snapshot | changed snapshot |
//! | --- | --- | --- |
//! | unset or `auto`, locally | writes `.snap.new`, fails | writes `.snap.new`, fails |
//! | unset or `auto`, with `CI` set | fails, writes nothing | fails, writes nothing |
//! | `no` | fails, writes nothing | fails, writes nothing |
//! | `new` | writes `.snap.new`, fails | writes `.snap.new`, fails |
//! | `unseen` | writes `.snap`, passes | writes `.snap.new`, fails |
//! | `always` or `force` | writes `.snap`, passes | writes `.snap`, passes |
//!
//! and `INSTA_FORCE_PASS=1` passes a changed snapshot (after writing what
//! the mode says). Files are written to a temporary file, flushed to disk
//! and renamed into place.

use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Statistic, Thresholds};
use crate::search::SearchOutcome;
use crate::verdict::{statistic, top};

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
    /// Mean divergence after / baseline mean.
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
}

/// A warning about the ascent ([`crate::search::AscentWarning`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WarningSummary {
    /// What happened, without figures (the snapshot holds this).
    pub kind: String,
    /// The whole warning, with its figures and what to try.
    pub message: String,
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

    fn line(&self) -> String {
        format!(
            "{}, {}, lr {}, lambda {}, batch {}, steps {}, seed {}",
            self.divergence,
            self.optimizer,
            self.lr,
            self.lambda,
            self.batch,
            self.steps,
            self.seed
        )
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
        let n = thresholds.top_n;
        let measure = outcome
            .measure_names
            .iter()
            .position(|m| *m == crate::verdict::set_distance_name(n));
        let predictions = |probs: &[Vec<f32>]| -> Vec<String> {
            probs
                .iter()
                .map(|p| {
                    let (k, v) = top(p);
                    format!("{} ({v:.4})", outcome.class_names[k])
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
                    .probs_after
                    .iter()
                    .map(|p| crate::model::argmax(p))
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
                    divergence: [s.divergence_before, s.divergence_after],
                    set_distance: measure.map(|m| [s.measures_before[m], s.measures_after[m]]),
                    before: predictions(&s.probs_before),
                    after: predictions(&s.probs_after),
                })
                .collect(),
            warnings: outcome
                .warnings()
                .iter()
                .map(|w| WarningSummary {
                    kind: w.kind().to_string(),
                    message: w.to_string(),
                })
                .collect(),
        }
    }

    /// The snapshot's body: one `key: value` line each (see the module
    /// docs for what the keys' prefixes mean).
    pub fn body(&self) -> String {
        let mut b = Body::default();
        b.text("trial", format!("pair::{}", self.pair));
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
        check(
            &SnapshotFile::new(config, TrialKind::Pair, &self.pair),
            &self.body(),
        )
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
    /// Macro one-vs-rest ROC AUC.
    pub auc: f64,
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
    fn line(&self, digits: usize) -> String {
        format!(
            "accuracy {}, auc {}, f1 {}",
            sig(self.accuracy, digits),
            sig(self.auc, digits),
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
        b.text("trial", format!("ensemble::{}", self.ensemble));
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
            &SnapshotFile::new(config, TrialKind::Ensemble, &self.ensemble),
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

fn opt(v: Option<f64>) -> String {
    v.map_or("~".into(), |v| v.to_string())
}

fn warnings(w: &[WarningSummary]) -> String {
    if w.is_empty() {
        "none".into()
    } else {
        let kinds: Vec<&str> = w.iter().map(|w| w.kind.as_str()).collect();
        kinds.join(", ")
    }
}

/// `v` with `digits` significant digits, in plain decimal notation where
/// that is short, trailing zeros dropped; `NaN`, `inf`, `-inf` as such.
fn sig(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-5..=9).contains(&magnitude) {
        return format!("{:.*e}", digits.saturating_sub(1), v);
    }
    let decimals = digits as i32 - 1 - magnitude;
    let s = if decimals >= 0 {
        format!("{v:.*}", decimals as usize)
    } else {
        let unit = 10f64.powi(-decimals);
        format!("{:.0}", (v / unit).round() * unit)
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A snapshot body being built.
#[derive(Default)]
struct Body(String);

impl Body {
    fn text(&mut self, key: &str, value: impl AsRef<str>) {
        let _ = writeln!(self.0, "{key}: {}", value.as_ref());
    }
}

/// How closely two numbers of a snapshot line must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative to the larger magnitude.
    pub relative: f64,
    /// Absolute, for values near zero.
    pub absolute: f64,
}

impl Tolerance {
    /// `start.*` lines: figures before any ascent step.
    pub const START: Tolerance = Tolerance {
        relative: 1e-3,
        absolute: 1e-5,
    };
    /// `search.*` lines: figures after the chaotic ascent.
    pub const SEARCH: Tolerance = Tolerance {
        relative: 0.25,
        absolute: 0.05,
    };
    /// Any other line: compared as text.
    pub const EXACT: Tolerance = Tolerance {
        relative: 0.0,
        absolute: 0.0,
    };

    /// The tolerance of a line by its key.
    pub fn of_key(key: &str) -> Tolerance {
        if key.starts_with("start.") {
            Tolerance::START
        } else if key.starts_with("search.") {
            Tolerance::SEARCH
        } else {
            Tolerance::EXACT
        }
    }

    fn holds(self, a: f64, b: f64) -> bool {
        if a == b {
            return true;
        }
        (a - b).abs() <= self.absolute + self.relative * a.abs().max(b.abs())
    }
}

/// A line of a snapshot that differs from the stored one beyond its
/// tolerance.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// The line's key (or `(line N)` for a line without a key).
    pub key: String,
    /// The stored value (`None`: the line is new).
    pub stored: Option<String>,
    /// The new value (`None`: the line is gone).
    pub found: Option<String>,
    /// The largest relative difference of a number on the line, when the
    /// line differs by its numbers only.
    pub relative: Option<f64>,
    /// The tolerance of the line.
    pub tolerance: Tolerance,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.stored),
            show(&self.found)
        )?;
        match self.relative {
            Some(r) => write!(
                f,
                "  (differs by {r:.1e} relative, tolerance {:.0e})",
                self.tolerance.relative
            ),
            None => Ok(()),
        }
    }
}

/// A piece of a snapshot line: a number or the text between numbers.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    Number(f64),
    Text(&'a str),
}

/// Splits `s` into numbers and text. A number starts at a digit (or a
/// minus sign before one) that does not continue a word, so `cnn_a`,
/// `bag_0` and `top-5` stay text.
fn tokens(s: &str) -> Vec<Token<'_>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let continues_word = |i: usize| {
        i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"_-.".contains(&bytes[i - 1]))
    };
    while i < bytes.len() {
        let starts_number = (bytes[i].is_ascii_digit()
            || (bytes[i] == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            && !continues_word(i);
        if !starts_number {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < bytes.len()
            && (bytes[j].is_ascii_digit()
                || bytes[j] == b'.'
                || bytes[j] == b'e'
                || ((bytes[j] == b'-' || bytes[j] == b'+') && bytes[j - 1] == b'e'))
        {
            j += 1;
        }
        // A number must not run into a word ("3d", "1st").
        let ends_word = j < bytes.len() && (bytes[j].is_ascii_alphabetic() || bytes[j] == b'_');
        match s[i..j].parse::<f64>() {
            Ok(v) if !ends_word => {
                if text_start < i {
                    out.push(Token::Text(&s[text_start..i]));
                }
                out.push(Token::Number(v));
                text_start = j;
            }
            _ => {}
        }
        i = j;
    }
    if text_start < s.len() {
        out.push(Token::Text(&s[text_start..]));
    }
    out
}

/// Compares one line's values; `Ok(())` within tolerance, else the largest
/// relative difference of its numbers (`None` when the text differs).
fn compare_values(stored: &str, found: &str, tolerance: Tolerance) -> Result<(), Option<f64>> {
    if stored == found {
        return Ok(());
    }
    let (a, b) = (tokens(stored), tokens(found));
    if a.len() != b.len() {
        return Err(None);
    }
    let mut worst: Option<f64> = None;
    for (x, y) in a.iter().zip(&b) {
        match (x, y) {
            (Token::Text(x), Token::Text(y)) if x == y => {}
            (Token::Number(x), Token::Number(y)) => {
                if !tolerance.holds(*x, *y) {
                    let r = (x - y).abs() / x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
                    worst = Some(worst.map_or(r, |w: f64| w.max(r)));
                }
            }
            _ => return Err(None),
        }
    }
    match worst {
        None => Ok(()),
        Some(r) => Err(Some(r)),
    }
}

fn lines(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| match l.split_once(": ") {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (format!("(line {})", n + 1), l.trim().to_string()),
        })
        .collect()
}

/// The lines of `found` that differ from `stored` beyond their tolerance,
/// in the order of `found` (then lines only `stored` has).
pub fn compare(stored: &str, found: &str) -> Vec<Mismatch> {
    let (old, new) = (lines(stored), lines(found));
    let mut out = Vec::new();
    for (key, value) in &new {
        let tolerance = Tolerance::of_key(key);
        match old.iter().find(|(k, _)| k == key) {
            None => out.push(Mismatch {
                key: key.clone(),
                stored: None,
                found: Some(value.clone()),
                relative: None,
                tolerance,
            }),
            Some((_, was)) => {
                if let Err(relative) = compare_values(was, value, tolerance) {
                    out.push(Mismatch {
                        key: key.clone(),
                        stored: Some(was.clone()),
                        found: Some(value.clone()),
                        relative,
                        tolerance,
                    });
                }
            }
        }
    }
    for (key, was) in &old {
        if !new.iter().any(|(k, _)| k == key) {
            out.push(Mismatch {
                key: key.clone(),
                stored: Some(was.clone()),
                found: None,
                relative: None,
                tolerance: Tolerance::of_key(key),
            });
        }
    }
    out
}

/// The kind of trial a snapshot belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrialKind {
    /// A `[[pair]]`.
    Pair,
    /// An `[[ensemble]]`.
    Ensemble,
}

impl TrialKind {
    fn prefix(self) -> &'static str {
        match self {
            TrialKind::Pair => "pair",
            TrialKind::Ensemble => "ensemble",
        }
    }
}

/// Where a trial's snapshot lives, and what its header says.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    /// `<config dir>/snapshots/<config stem>/<kind>-<name>.snap`.
    pub path: PathBuf,
    /// The file a gevaldi before 0.2 used: `<config dir>/snapshots/<name>.snap`.
    pub legacy: PathBuf,
    /// `pair::<name>` or `ensemble::<name>`.
    pub trial: String,
    /// The config, as the header names it.
    pub config: PathBuf,
}

impl SnapshotFile {
    /// The snapshot of trial `name` of `kind` in the config at `config`.
    pub fn new(config: &Path, kind: TrialKind, name: &str) -> Self {
        let dir = config.parent().unwrap_or(Path::new("")).join("snapshots");
        let stem = config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "gevaldi".into());
        SnapshotFile {
            path: dir
                .join(&stem)
                .join(format!("{}-{name}.snap", kind.prefix())),
            legacy: dir.join(format!("{name}.snap")),
            trial: format!("{}::{name}", kind.prefix()),
            config: config.to_path_buf(),
        }
    }

    /// `<path>.new`, where a snapshot waiting for review goes.
    pub fn pending(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(".new");
        PathBuf::from(p)
    }

    /// The whole file: insta's header, then `body`.
    fn contents(&self, body: &str) -> String {
        let config = self
            .config
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!(
            "---\nsource: {}\ndescription: {}\nexpression: {}\n---\n{body}",
            json_string(&config),
            json_string(&format!(
                "gevaldi trial {}; start.* lines compared within 1e-3, search.* within 25% \
                 (see gevaldi::snapshot)",
                self.trial
            )),
            json_string(&self.trial),
        )
    }
}

/// `s` as a double-quoted string (valid YAML).
fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The body of a snapshot file (after its header).
fn body_of(contents: &str) -> &str {
    let Some(rest) = contents.strip_prefix("---\n") else {
        return contents;
    };
    match rest.find("\n---\n") {
        Some(i) => &rest[i + 5..],
        None => contents,
    }
}

/// What insta's environment says to do with snapshots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Update {
    /// Write nothing.
    No,
    /// Write `.snap.new`.
    New,
    /// Write `.snap` for new snapshots, `.snap.new` for changed ones.
    Unseen,
    /// Write `.snap`.
    Always,
}

impl Update {
    fn from_env() -> Self {
        let ci = std::env::var("CI")
            .map(|v| !matches!(v.as_str(), "" | "0" | "false"))
            .unwrap_or(false);
        match std::env::var("INSTA_UPDATE").unwrap_or_default().as_str() {
            "no" => Update::No,
            "new" => Update::New,
            "unseen" => Update::Unseen,
            "always" | "force" => Update::Always,
            _ if ci => Update::No,
            _ => Update::New,
        }
    }
}

fn force_pass() -> bool {
    std::env::var("INSTA_FORCE_PASS").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"))
}

/// Why a trial's snapshot did not pass.
#[derive(Debug)]
#[non_exhaustive]
pub enum SnapshotProblem {
    /// There is no snapshot yet.
    New {
        /// The snapshot.
        file: Box<SnapshotFile>,
        /// Where the proposed snapshot was written (`None` under CI or
        /// `INSTA_UPDATE=no`).
        written: Option<PathBuf>,
    },
    /// The snapshot differs beyond its tolerances.
    Changed {
        /// The snapshot.
        file: Box<SnapshotFile>,
        /// The lines that differ, in order.
        mismatches: Vec<Mismatch>,
        /// Where the new snapshot was written, if anywhere.
        written: Option<PathBuf>,
    },
    /// A snapshot file could not be written (the error names it).
    Write(Box<crate::Error>),
    /// A snapshot file could not be read or removed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// The error.
        source: std::io::Error,
    },
}

/// Lines of a changed snapshot shown; the rest are counted.
const MISMATCHES_SHOWN: usize = 5;

impl fmt::Display for SnapshotProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accept = |written: &Path, target: &Path| {
            format!(
                "accept it with `cargo insta accept` (cargo-insta: `cargo install cargo-insta`), \
                 or `mv {} {}`",
                written.display(),
                target.display()
            )
        };
        match self {
            SnapshotProblem::New { file, written } => {
                write!(f, "new snapshot for {}: ", file.trial)?;
                match written {
                    Some(w) => {
                        write!(f, "written to `{}`; {}", w.display(), accept(w, &file.path))?
                    }
                    None => write!(
                        f,
                        "`{}` does not exist, and none was written (CI or INSTA_UPDATE=no); \
                         run the tests once where snapshots may be written, accept, and commit it",
                        file.path.display()
                    )?,
                }
                if file.legacy.is_file() {
                    write!(
                        f,
                        "\n(`{}` is the snapshot of an older gevaldi: snapshots are now one folder \
                         per config and hold other figures; delete it once the new one is accepted)",
                        file.legacy.display()
                    )?;
                }
                Ok(())
            }
            SnapshotProblem::Changed {
                file,
                mismatches,
                written,
            } => {
                writeln!(
                    f,
                    "snapshot `{}` changed: {} line(s) beyond their tolerance (stored -> now):",
                    file.path.display(),
                    mismatches.len()
                )?;
                for m in mismatches.iter().take(MISMATCHES_SHOWN) {
                    writeln!(f, "  {m}")?;
                }
                if mismatches.len() > MISMATCHES_SHOWN {
                    writeln!(f, "  and {} more", mismatches.len() - MISMATCHES_SHOWN)?;
                }
                match written {
                    Some(w) if *w == file.path => {
                        write!(f, "the snapshot was updated (INSTA_UPDATE)")
                    }
                    Some(w) => write!(
                        f,
                        "new version in `{}`: review with `cargo insta review`; {}",
                        w.display(),
                        accept(w, &file.path)
                    ),
                    None => write!(
                        f,
                        "nothing was written (CI or INSTA_UPDATE=no); if the change is intended, \
                         rerun where snapshots may be written and accept it"
                    ),
                }
            }
            SnapshotProblem::Write(e) => write!(f, "{e}"),
            SnapshotProblem::Io {
                path,
                action,
                source,
            } => write!(
                f,
                "failed to {action} the snapshot `{}`: {source}",
                path.display()
            ),
        }
    }
}

/// Compares `body` with the stored snapshot and writes what insta's
/// environment says.
fn check(file: &SnapshotFile, body: &str) -> Result<(), SnapshotProblem> {
    let io = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |source| SnapshotProblem::Io {
            path,
            action,
            source,
        }
    };
    let pending = file.pending();
    let remove_pending = || match std::fs::remove_file(&pending) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&pending, "remove")(e)),
        _ => Ok(()),
    };
    let stored = match std::fs::read_to_string(&file.path) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&file.path, "read")(e)),
    };
    // `None`: no snapshot yet.
    let mismatches = match stored {
        None => None,
        Some(stored) => {
            let m = compare(body_of(&stored), body);
            if m.is_empty() {
                // Within tolerance: the stored file stays as it is; a
                // pending version from an earlier run is obsolete.
                return remove_pending();
            }
            Some(m)
        }
    };
    let written = match (Update::from_env(), &mismatches) {
        (Update::No, _) => None,
        (Update::Unseen, None) | (Update::Always, _) => Some(file.path.clone()),
        (Update::New | Update::Unseen, _) => Some(pending.clone()),
    };
    if let Some(w) = &written {
        crate::artifact::write_atomic(w, file.contents(body).as_bytes())
            .map_err(|e| SnapshotProblem::Write(Box::new(e)))?;
        if *w == file.path {
            return remove_pending();
        }
    }
    match mismatches {
        None => Err(SnapshotProblem::New {
            file: Box::new(file.clone()),
            written,
        }),
        Some(_) if force_pass() => Ok(()),
        Some(mismatches) => Err(SnapshotProblem::Changed {
            file: Box::new(file.clone()),
            mismatches,
            written,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sig_writes_significant_digits() {
        assert_eq!(sig(0.108431234, 6), "0.108431");
        assert_eq!(sig(2.7174, 4), "2.717");
        assert_eq!(sig(26.5281, 4), "26.53");
        assert_eq!(sig(1.0, 4), "1");
        assert_eq!(sig(0.0, 6), "0");
        assert_eq!(sig(-0.00001, 2), "-0.00001");
        assert_eq!(sig(1234567.0, 3), "1230000");
        assert_eq!(sig(1.5e-9, 3), "1.50e-9");
        assert_eq!(sig(f64::NAN, 3), "NaN");
    }

    #[test]
    fn tokens_keep_names_whole() {
        assert_eq!(
            tokens("cnn_a 1 (0.8213), bag_0 top-5 mean -2.5e-3"),
            vec![
                Token::Text("cnn_a "),
                Token::Number(1.0),
                Token::Text(" ("),
                Token::Number(0.8213),
                Token::Text("), bag_0 top-5 mean "),
                Token::Number(-2.5e-3),
            ]
        );
        assert_eq!(tokens("3d"), vec![Token::Text("3d")]);
    }

    #[test]
    fn tolerances_follow_the_key() {
        let stored =
            "trial: pair::p\nstart.divergence: kl mean 0.108431, max 0.944\nsearch.lift: 26.53\n";
        // Rounding noise at the start, device noise after the search: a match.
        let noise =
            "trial: pair::p\nstart.divergence: kl mean 0.108432, max 0.944\nsearch.lift: 24.1\n";
        assert!(compare(stored, noise).is_empty());
        // A 1% change at the start is caught, with its relative size.
        let changed =
            "trial: pair::p\nstart.divergence: kl mean 0.109515, max 0.944\nsearch.lift: 26.53\n";
        let m = compare(stored, changed);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].key, "start.divergence");
        let r = m[0].relative.unwrap();
        assert!((r - 0.0099).abs() < 1e-3, "{r}");
        // The search collapsing is caught too.
        let collapsed =
            "trial: pair::p\nstart.divergence: kl mean 0.108431, max 0.944\nsearch.lift: 1.2\n";
        assert_eq!(compare(stored, collapsed)[0].key, "search.lift");
        // Text is exact: another class, another divergence.
        let other =
            "trial: pair::p\nstart.divergence: js mean 0.108431, max 0.944\nsearch.lift: 26.53\n";
        assert_eq!(compare(stored, other)[0].relative, None);
        // Lines gone or new.
        let m = compare(
            stored,
            "trial: pair::p\nsearch.lift: 26.53\nwarnings: none\n",
        );
        let keys: Vec<&str> = m.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["warnings", "start.divergence"]);
    }

    #[test]
    fn exact_lines_compare_numbers_exactly() {
        let m = compare(
            "settings: kl, lr 0.05, seed 0\n",
            "settings: kl, lr 0.05, seed 1\n",
        );
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].key, "settings");
    }

    #[test]
    fn a_nan_never_matches() {
        let m = compare("start.x: 1\n", "start.x: NaN\n");
        assert_eq!(m.len(), 1);
        assert!(!Tolerance::SEARCH.holds(f64::NAN, f64::NAN));
    }

    #[test]
    fn body_is_read_back_from_insta_files() {
        let file = SnapshotFile::new(Path::new("/x/gevaldi.toml"), TrialKind::Pair, "p");
        assert_eq!(file.path, Path::new("/x/snapshots/gevaldi/pair-p.snap"));
        assert_eq!(
            file.pending(),
            Path::new("/x/snapshots/gevaldi/pair-p.snap.new")
        );
        assert_eq!(file.legacy, Path::new("/x/snapshots/p.snap"));
        let body = "trial: pair::p\nsearch.lift: 2\n";
        assert_eq!(body_of(&file.contents(body)), body);
    }
}
