//! What running a trial gives: a [`TrialReport`] when it ran to its
//! verdict (passed or not), a [`TrialError`] when it stopped before. The
//! harness, `cargo gevaldi` and the tests format these; none of them reads
//! a message back.

use std::fmt;
use std::path::PathBuf;

use crate::config::{DivergenceKind, TrialId};
use crate::error::Error;
use crate::search::{AscentWarning, OutsideSupport};
use crate::snapshot::SnapshotProblem;
use crate::tournament::RankingMethod;
use crate::verdict::Failure;

/// The figures of a trial's one-line summary.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Figures {
    /// A pair's search.
    Pair {
        /// The divergence.
        divergence: DivergenceKind,
        /// Its mean before the search.
        mean_before: f64,
        /// Its mean after the search.
        mean_after: f64,
        /// Its max after the search.
        max_after: f64,
        /// The null baseline's mean.
        baseline: f64,
        /// The prior samples the baseline's mean is over.
        baseline_samples: usize,
        /// Mean after / baseline.
        lift: f64,
        /// Ascent steps taken.
        steps: usize,
    },
    /// An ensemble's MDS dataset.
    Ensemble {
        /// The vote's accuracy on the test data.
        test_accuracy: f64,
        /// Its accuracy on the MDS dataset.
        mds_accuracy: f64,
        /// The MDS dataset's size.
        samples: usize,
        /// The regions of uncertainty found.
        regions: usize,
    },
    /// A tournament's ranking.
    Tournament {
        /// The ranking the thresholds read, best first, in tiers of tied
        /// models ([`TournamentOutcome::ranking_tiers`](crate::tournament::TournamentOutcome::ranking_tiers)).
        ranking: Vec<Vec<String>>,
        /// Which ranking that is.
        ranking_method: RankingMethod,
        /// The SRCC of that ranking with the test accuracy, when defined.
        srcc: Option<f64>,
        /// Whether the tournament was given `test_data` (without, there is
        /// no test accuracy to correlate with).
        test_data: bool,
        /// Ordered pairs searched.
        pairs: usize,
        /// MDS samples per pair.
        samples: usize,
    },
}

/// A trial that ran to its verdict.
#[derive(Debug)]
pub struct TrialReport {
    /// The trial.
    pub id: TrialId,
    /// Its figures.
    pub figures: Figures,
    /// The thresholds it broke; empty when they all held.
    pub failures: Vec<Failure>,
    /// The worst samples of the broken thresholds, as lines that each begin
    /// with a line break (empty when none broke).
    pub details: String,
    /// Why its snapshot does not match, if it does not.
    pub snapshot: Option<SnapshotProblem>,
    /// What looked wrong about the ascent even if it passed.
    pub warnings: Vec<AscentWarning>,
    /// The latent coordinates a pair's search left outside its generator's
    /// support (BigGAN's truncation box), when any did: a note, not a
    /// failure.
    pub outside_support: Option<OutsideSupport>,
    /// Its record (a pair) or record directory (an ensemble).
    pub artifact: PathBuf,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl TrialReport {
    /// Whether every threshold held and the snapshot matched.
    pub fn passed(&self) -> bool {
        self.failures.is_empty() && self.snapshot.is_none()
    }

    /// The summary without the trial's name: its figures and its time.
    pub fn result(&self) -> String {
        match &self.figures {
            Figures::Pair {
                divergence: d,
                mean_before,
                mean_after,
                max_after,
                baseline,
                baseline_samples,
                lift,
                steps,
            } => format!(
                "mean {d} {mean_before:.4} -> {mean_after:.4} (max {max_after:.4}), baseline \
                 {baseline:.4}, lift {}, {} in {:.1} s",
                crate::verdict::lift_text(*lift, 1, *baseline_samples),
                crate::report::count(*steps, "step"),
                self.seconds
            ),
            Figures::Ensemble {
                test_accuracy,
                mds_accuracy,
                samples,
                regions,
            } => format!(
                "accuracy {:.1}% on the test data, {:.1}% on {}, {} of uncertainty, in {:.1} s",
                100.0 * test_accuracy,
                100.0 * mds_accuracy,
                crate::report::count(*samples, "MDS sample"),
                crate::report::count(*regions, "region"),
                self.seconds
            ),
            Figures::Tournament {
                ranking,
                ranking_method,
                srcc,
                test_data,
                pairs,
                samples,
            } => format!(
                "{} by {}, {}, {pairs} pairs x {} in {:.1} s",
                crate::tournament::ranking_line(ranking),
                ranking_method.name(),
                match (srcc, test_data) {
                    (Some(s), _) => format!("SRCC with test accuracy {s:.3}"),
                    (None, true) => "SRCC with test accuracy undefined".into(),
                    (None, false) => "no SRCC (no test_data given)".into(),
                },
                crate::report::count(*samples, "sample"),
                self.seconds
            ),
        }
    }

    /// What failed, when it failed: the broken thresholds and their worst
    /// samples, the snapshot's difference, the warnings, and where the
    /// artifact is. `None` when it passed.
    pub fn failure_message(&self) -> Option<String> {
        if self.passed() {
            return None;
        }
        let mut problems: Vec<String> = Vec::new();
        if !self.failures.is_empty() {
            let lines: Vec<String> = self.failures.iter().map(Failure::to_string).collect();
            problems.push(lines.join("\n") + &self.details);
        }
        problems.extend(self.snapshot.iter().map(ToString::to_string));
        let mut warned: String = self
            .warnings
            .iter()
            .map(|w| format!("\nwarning: {w}"))
            .collect();
        if let Some(o) = &self.outside_support {
            warned.push_str(&format!("\nnote: {o}"));
        }
        Some(format!(
            "{}{warned}\nartifact: {}",
            problems.join("\n"),
            self.artifact.display()
        ))
    }
}

impl fmt::Display for TrialReport {
    /// `pair::<name>: <result>`, the one-line summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.id, self.result())
    }
}

/// Why a trial stopped before its verdict.
#[derive(Debug)]
#[non_exhaustive]
pub enum TrialErrorKind {
    /// The config has no entry of that kind and name.
    NotInConfig,
    /// An error: loading a model, the search, writing the record, ….
    Failed(Box<Error>),
    /// A model (or gevaldi) panicked, with this message.
    Panicked(String),
}

/// A trial that stopped before its verdict. It leaves an error record in
/// place of its result (see [`crate::artifact::Record::Error`]).
#[derive(Debug)]
pub struct TrialError {
    /// The trial.
    pub id: TrialId,
    /// The config, and the line of the trial's entry (0 when it has none).
    pub location: (PathBuf, usize),
    /// What stopped it.
    pub kind: TrialErrorKind,
    /// Why its error record could not be written, if so.
    pub record: Option<Box<Error>>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

impl TrialError {
    /// The message, without the record's own error: what the error record
    /// holds.
    pub fn message(&self) -> String {
        let (path, line) = &self.location;
        let entry = self.id.kind.name();
        let at = format!("{entry} `{}` ({}:{line})", self.id.name, path.display());
        match &self.kind {
            TrialErrorKind::NotInConfig => format!(
                "no [[{entry}]] named `{}` in {}",
                self.id.name,
                path.display()
            ),
            TrialErrorKind::Failed(e) => format!("{at}: {e}"),
            TrialErrorKind::Panicked(m) => format!("{at}: panicked: {m}"),
        }
    }
}

impl fmt::Display for TrialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())?;
        if let Some(e) = &self.record {
            write!(f, "\n(and {e})")?;
        }
        Ok(())
    }
}

impl std::error::Error for TrialError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn tournament(srcc: Option<f64>, test_data: bool) -> TrialReport {
        TrialReport {
            id: TrialId::tournament("t"),
            figures: Figures::Tournament {
                ranking: vec![vec!["a".into(), "b".into(), "c".into()]],
                ranking_method: RankingMethod::Mad,
                srcc,
                test_data,
                pairs: 6,
                samples: 20,
            },
            failures: Vec::new(),
            details: String::new(),
            snapshot: None,
            warnings: Vec::new(),
            outside_support: None,
            artifact: PathBuf::new(),
            seconds: 1.0,
        }
    }

    /// The latents left outside the generator's support are a note of a
    /// failed trial's message too (a passing one's is printed by the
    /// harness), not a failure of their own, and not in the one-line
    /// summary.
    #[test]
    fn latents_outside_the_support_are_noted_not_failed() {
        let mut report = tournament(Some(0.5), true);
        let o = OutsideSupport::of_counts(
            "big",
            crate::model::LatentSupport::TruncatedNormal {
                truncation: 0.4,
                cut: 2.0,
            },
            &[3, 0],
            128,
        );
        report.outside_support = Some(o);
        assert!(report.passed());
        assert_eq!(report.failure_message(), None);
        assert!(!report.to_string().contains("latent"));
        report.snapshot = Some(crate::snapshot::SnapshotProblem::DuplicateKey {
            path: PathBuf::from("s.snap"),
            key: "lift".into(),
            line: 2,
            first: 1,
        });
        let message = report.failure_message().unwrap();
        assert!(
            message.contains(
                "\nnote: 3 of 2×128 latent coordinates (in 1 of 2 samples) ended outside \
                 generator `big`'s truncation box |z| ≤ 0.8 (truncation 0.4); the images \
                 there are beyond what the generator was sampled on\nartifact: "
            ),
            "{message}"
        );
    }

    /// Regression: a search of `steps = 1` read "1 steps", a tournament of
    /// `samples = 1` "x 1 samples".
    #[test]
    fn one_step_and_one_sample_are_singular() {
        let mut report = tournament(None, false);
        if let Figures::Tournament { samples, .. } = &mut report.figures {
            *samples = 1;
        }
        assert!(
            report.result().ends_with(", 6 pairs x 1 sample in 1.0 s"),
            "{}",
            report.result()
        );
        report.figures = Figures::Pair {
            divergence: crate::config::DivergenceKind::Kl,
            mean_before: 0.1,
            mean_after: 0.2,
            max_after: 0.3,
            baseline: 0.1,
            baseline_samples: 64,
            lift: 2.0,
            steps: 1,
        };
        assert!(
            report.result().ends_with(", 1 step in 1.0 s"),
            "{}",
            report.result()
        );
    }

    /// Regression: a tournament without `test_data` read "SRCC with test
    /// accuracy undefined", as if its SRCC had been tried.
    #[test]
    fn a_tournament_without_test_data_says_so_instead_of_an_undefined_srcc() {
        assert_eq!(
            tournament(None, false).result(),
            "a = b = c by mad, no SRCC (no test_data given), 6 pairs x 20 samples in 1.0 s"
        );
        assert!(tournament(None, true)
            .result()
            .contains(", SRCC with test accuracy undefined, "));
        assert!(tournament(Some(0.5), true)
            .result()
            .contains(", SRCC with test accuracy 0.500, "));
    }
}
