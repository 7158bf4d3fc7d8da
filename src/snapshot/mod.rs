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
//!   relative 1e-3 (absolute 1e-5 near zero), but for the classes a
//!   `start.sample.*` line names, which are compared exactly.
//! - `search.*`: what the ascent found (the divergence after the search, the
//!   lift, dz, the set distance, regions of uncertainty). These are compared
//!   within [`Tolerance::SEARCH`], relative 25% (absolute 0.05): device and
//!   engine noise stays well inside it, a search that stops finding
//!   disagreement does not.
//!
//! Every other line (names, settings, thresholds, warnings) is compared as
//! text, except that the `warnings` lines may differ by a warning whose
//! figure the new search left within [`Tolerance::SEARCH`] of its
//! threshold ([`unsettled_warnings`]): each warning is decided by figures
//! of the ascent, which move between machines as much as `search.*` does. Numbers are written with 6 significant digits (`start.*`) or 4
//! (`search.*`). A snapshot that is within tolerance of the stored one is
//! left as it is, so the file never churns between machines.
//!
//! # Files
//!
//! Snapshots live beside the config, one folder per config:
//! `snapshots/<config stem>/pair-<name>.snap`, `…/ensemble-<name>.snap` and
//! `…/tournament-<name>.snap`.
//! They are in insta's file format (a YAML header between `---` lines, then
//! the body), so `cargo insta review` and `cargo insta accept` work on them.
//! gevaldi compares them itself (insta's assertion has no tolerance, and
//! prints whole-file diffs and panics), following insta's environment:
//!
//! | `INSTA_UPDATE` | new snapshot | changed snapshot |
//! | --- | --- | --- |
//! | unset or `auto`, locally | writes `.snap.new`, fails | writes `.snap.new`, fails |
//! | unset or `auto`, with `CI` set (or `TF_BUILD` without `CI`) | fails, writes nothing | fails, writes nothing |
//! | `no` | fails, writes nothing | fails, writes nothing |
//! | `new` | writes `.snap.new`, fails | writes `.snap.new`, fails |
//! | `unseen` | writes `.snap`, passes | writes `.snap.new`, fails |
//! | `always` (or `1`) or `force` | writes `.snap`, passes | writes `.snap`, passes |
//!
//! (another value fails the trial, naming the values insta takes);
//! and `INSTA_FORCE_PASS=1` passes a new or changed snapshot (after writing
//! what the mode says), as insta does (`cargo insta test` sets it). Each
//! check names its snapshot in cargo-insta's `INSTA_SNAPSHOT_REFERENCES_FILE`
//! where it is set, so that `cargo insta test --unreferenced=delete` keeps
//! it. A stored snapshot that gives a key on two lines (a bad merge) fails,
//! naming the file, the line and the key, and nothing is written. Files are
//! written to a temporary file, flushed to disk and renamed into place.

mod compare;
mod ensemble;
mod file;
mod pair;
mod ranking;
mod text;
mod tournament;
mod warnings;

pub use self::compare::{compare, compare_allowing, Mismatch, Tolerance, Unsettled};
pub use self::ensemble::{log_loss, EnsembleSummary, MetricsSummary, RegionsSummary};
pub(crate) use self::file::check_insta_env;
use self::file::{check, check_allowing};
pub use self::file::{SnapshotFile, SnapshotProblem};
pub use self::pair::{
    BeforeAfter, SampleSummary, SetDistanceSummary, Settings, Stats, Summary, ThresholdSummary,
    WarningSummary, SAMPLES_SHOWN,
};
pub use self::ranking::TierBoundary;
use self::text::*;
pub use self::tournament::{tiers, TournamentSummary, TIER_SE};
pub use self::warnings::unsettled as unsettled_warnings;

#[cfg(test)]
mod tests;
