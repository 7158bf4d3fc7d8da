//! The records a run leaves under the target directory, one per trial:
//! everything the HTML report ([`crate::report`]) is built from, without
//! loading a model again.
//!
//! For a config `<dir>/<stem>.toml` they live in
//! `target/gevaldi/<dir name>/<stem>/` ([`artifact_dir`]):
//!
//! | trial | record | pictures |
//! | --- | --- | --- |
//! | `pair::<name>` | `<name>.json` | `<name>.png`: the grid of samples before and after |
//! | `ensemble::<name>` | `ensemble-<name>/ensemble.json` | `ensemble-<name>/regions.png`, and the MDS dataset (IDX, safetensors) |
//! | `tournament::<name>` | `tournament-<name>/tournament.json` | `tournament-<name>/<a>-vs-<b>.png`: the closest pairs' disagreements |
//! | `tournament::<name>::<a>-vs-<b>` (nextest only) | `tournament-<name>/pairs/<a>-vs-<b>.json` | none |
//! | any trial that stopped on an error | the same path, a [`Record::Error`] | none |
//!
//! and the report writes `index.html` and `plots/` beside them. Every file
//! is written to a temporary file in its directory and renamed into place
//! ([`write_atomic`]), so a reader (or a killed run) never sees half of one.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::{TrialId, TrialKind};
use crate::error::{Error, Result};
use crate::pca::Pca;
use crate::search::{Baseline, SampleRecord, StepRecord};
use crate::snapshot::{EnsembleSummary, Summary, TournamentSummary};

pub mod weights;

pub use weights::{FileDigest, ModelFiles};

/// The record of one trial, as written to its JSON file.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Record {
    /// A `[[pair]]` that ran its search.
    Pair(PairArtifact),
    /// An `[[ensemble]]` that searched its MDS dataset.
    Ensemble(EnsembleArtifact),
    /// A `[[tournament]]` that ran every ordered pair.
    Tournament(Box<TournamentArtifact>),
    /// One ordered pair of a tournament, run as a trial of its own (under
    /// nextest) for the verdict to read.
    TournamentPair(Box<TournamentPairArtifact>),
    /// A trial that stopped on an error before it had a result.
    Error(ErrorRecord),
}

/// The record of a tournament's pair trial,
/// `tournament-<name>/pairs/<a>-vs-<b>.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TournamentPairArtifact {
    /// The config file.
    pub config: PathBuf,
    /// The tournament's name.
    pub tournament: String,
    /// What the result depends on (settings, device, the models' and the
    /// generator's tables and weights files): the verdict reads the record
    /// only while it is current.
    pub fingerprint: String,
    /// The pair's result.
    pub result: crate::tournament::PairResult,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// When it was written.
    pub written_at: u64,
}

/// The record of a `[[tournament]]` trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TournamentArtifact {
    /// The config file.
    pub config: PathBuf,
    /// The snapshot's figures.
    pub summary: TournamentSummary,
    /// Every pair's MDS set, the win matrix and both rankings.
    pub outcome: crate::tournament::TournamentOutcome,
    /// The thresholds.
    pub thresholds: crate::tournament::TournamentThresholds,
    /// The test data the models' accuracies (and the SRCC) were measured
    /// on, where the declaration gave some. `None` in records written
    /// before it was recorded (and without test data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_data: Option<PathBuf>,
    /// The files the generator and the models read, with their digests.
    /// `None` in records written before they were recorded.
    #[serde(default)]
    pub weights: Option<Vec<ModelFiles>>,
    /// The generator's support, where it states one (BigGAN's truncation
    /// box). `None` in records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_support: Option<crate::model::LatentSupport>,
    /// The latents' coordinates outside that support, over every pair
    /// searched (under a divergence symmetric in its two models, one order
    /// of each): `None` where there is no support (and in older records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_support: Option<crate::search::OutsideSupport>,
    /// The class names.
    pub class_names: Vec<String>,
    /// Whether every threshold held and the snapshot matched.
    pub passed: bool,
    /// What failed: broken thresholds, a changed snapshot.
    pub failures: Vec<String>,
    /// Grids of the closest pairs' disagreements: (pair name `a-vs-b`,
    /// file name in the tournament's directory).
    pub grids: Vec<(String, String)>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// When it was written.
    pub written_at: u64,
}

/// The record of a `[[pair]]` trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairArtifact {
    /// The config file.
    pub config: PathBuf,
    /// The snapshot: settings, statistics, thresholds, first samples.
    pub summary: Summary,
    /// Whether every threshold held and the snapshot matched.
    pub passed: bool,
    /// What failed: broken thresholds, a changed snapshot.
    pub failures: Vec<String>,
    /// The class names.
    pub class_names: Vec<String>,
    /// The names of the measures in each sample's `measures_before` /
    /// `measures_after` and each step's `mean_measures`.
    pub measure_names: Vec<String>,
    /// Per-step records (step 0 is the start).
    pub trajectory: Vec<StepRecord>,
    /// The null baseline.
    pub baseline: Baseline,
    /// Per-sample records (z0, z, divergences, probabilities, dz).
    pub samples: Vec<SampleRecord>,
    /// The grid picture, relative to the record's directory, if drawn.
    pub grid: Option<String>,
    /// The samples in the grid, most divergent first.
    pub grid_samples: Vec<usize>,
    /// The files the generator and the models read, with their digests.
    /// `None` in records written before they were recorded.
    #[serde(default)]
    pub weights: Option<Vec<ModelFiles>>,
    /// The label hierarchy's files, with their digests
    /// ([`weights::hierarchy_files`]; empty for the flat hierarchy). `None`
    /// in records written before they were recorded.
    #[serde(default)]
    pub hierarchy: Option<Vec<(String, FileDigest)>>,
    /// Each sample's class condition, for a class-conditional generator.
    #[serde(default)]
    pub conditions: Option<Vec<usize>>,
    /// The generator's support, where it states one (BigGAN's truncation
    /// box, with its truncation): each sample's `outside_support` counts
    /// against it. `None` in records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_support: Option<crate::model::LatentSupport>,
    /// Wall-clock seconds the trial took.
    pub seconds: f64,
    /// When it was written, seconds since the Unix epoch.
    pub written_at: u64,
}

impl PairArtifact {
    /// The final latents' coordinates outside the generator's support,
    /// where the record has one and any lie outside.
    pub fn outside_support(&self) -> Option<crate::search::OutsideSupport> {
        let support = self.latent_support?;
        crate::search::OutsideSupport::of(&self.summary.generator, support, &self.samples).noted()
    }
}

/// The record of an `[[ensemble]]` trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnsembleArtifact {
    /// The config file.
    pub config: PathBuf,
    /// The snapshot: settings, metrics on the test and MDS data, regions.
    pub summary: EnsembleSummary,
    /// Whether every threshold held and the snapshot matched.
    pub passed: bool,
    /// What failed.
    pub failures: Vec<String>,
    /// The class names.
    pub class_names: Vec<String>,
    /// The thresholds and what else of the declaration the verdict read.
    /// `None` in records written before they were recorded.
    #[serde(default)]
    pub thresholds: Option<EnsembleThresholds>,
    /// The files the generator and the members read, with their digests.
    /// `None` in records written before they were recorded.
    #[serde(default)]
    pub weights: Option<Vec<ModelFiles>>,
    /// Each MDS sample's condition (its true label).
    pub labels: Vec<usize>,
    /// Each MDS sample's latent.
    pub z: Vec<Vec<f32>>,
    /// The generator's support, where it states one (BigGAN's truncation
    /// box). `None` in records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latent_support: Option<crate::model::LatentSupport>,
    /// Each MDS sample's count of latent coordinates outside that support;
    /// `None` where there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outside_support: Option<Vec<usize>>,
    /// Each MDS sample's JS divergence among the members.
    pub divergence: Vec<f64>,
    /// `[member][sample][class]` probabilities.
    pub member_probs: Vec<Vec<Vec<f32>>>,
    /// The regions of uncertainty: their samples, largest region first.
    pub regions: Vec<Vec<usize>>,
    /// The latents on the top two principal axes, when the generator has an
    /// encoder and a training split is present (paper fig. 5).
    pub latent_map: Option<LatentMap>,
    /// The picture of example samples per region, relative to the record's
    /// directory, if drawn.
    pub grid: Option<String>,
    /// Wall-clock seconds the trial took.
    pub seconds: f64,
    /// When it was written, seconds since the Unix epoch.
    pub written_at: u64,
}

impl EnsembleArtifact {
    /// The MDS latents' coordinates outside the generator's support, where
    /// the record has one and any lie outside.
    pub fn outside_support(&self) -> Option<crate::search::OutsideSupport> {
        let support = self.latent_support?;
        let counts = self.outside_support.as_deref();
        let latents =
            (self.z.iter().enumerate()).map(|(i, z)| (counts.map(|c| c[i]), z.as_slice()));
        crate::search::OutsideSupport::of_latents(&self.summary.generator, support, latents).noted()
    }
}

/// What an ensemble's verdict reads of its declaration besides the
/// settings its summary holds: the thresholds, DBSCAN's `min_samples` and
/// the test data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleThresholds {
    /// `min_mds_accuracy`.
    pub min_mds_accuracy: Option<f64>,
    /// `max_accuracy_drop`.
    pub max_accuracy_drop: Option<f64>,
    /// `min_accuracy_drop`.
    pub min_accuracy_drop: Option<f64>,
    /// `max_regions`.
    pub max_regions: Option<usize>,
    /// `min_samples`: DBSCAN's neighbourhood size.
    pub min_samples: usize,
    /// `test_data`, resolved.
    pub test_data: PathBuf,
}

impl From<&crate::config::EnsembleDecl> for EnsembleThresholds {
    fn from(e: &crate::config::EnsembleDecl) -> Self {
        EnsembleThresholds {
            min_mds_accuracy: e.min_mds_accuracy,
            max_accuracy_drop: e.max_accuracy_drop,
            min_accuracy_drop: e.min_accuracy_drop,
            max_regions: e.max_regions,
            min_samples: e.min_samples,
            test_data: e.test_data.clone(),
        }
    }
}

/// Latents projected on the top two principal axes of the training data's
/// latents (the encoder's means).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LatentMap {
    /// The principal axes.
    pub axes: Pca,
    /// The training data, projected: `[n][2]`.
    pub train: Vec<Vec<f64>>,
    /// The training labels.
    pub train_labels: Vec<usize>,
    /// The MDS samples, projected: `[K][2]`.
    pub mds: Vec<Vec<f64>>,
}

/// A trial that stopped on an error (a missing weights file, a shape that
/// does not fit, a NaN): recorded so that the report shows it rather than
/// an older result.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// The trial, e.g. `pair::a-vs-b`.
    pub trial: String,
    /// The error, as the test printed it.
    pub message: String,
    /// When it was written, seconds since the Unix epoch.
    pub written_at: u64,
}

impl Record {
    /// Writes the record as JSON at `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| Error::Io {
            action: "serialise a record to",
            path: path.to_path_buf(),
            cause: e.into(),
        })?;
        write_atomic(path, &json)
    }

    /// Reads the record at `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            action: "read",
            path: path.to_path_buf(),
            cause: source,
        })?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Io {
            action: "parse the gevaldi record (written by an older gevaldi? rerun the trial)",
            path: path.to_path_buf(),
            cause: e.into(),
        })
    }

    /// Whether the trial passed.
    pub fn passed(&self) -> bool {
        match self {
            Record::Pair(p) => p.passed,
            Record::Ensemble(e) => e.passed,
            Record::Tournament(t) => t.passed,
            Record::TournamentPair(_) => true,
            Record::Error(_) => false,
        }
    }
}

/// serde for an `f64` that may be NaN or infinite (a pair's lift of 0 / 0
/// or x / 0), which JSON cannot hold: written as `null`, read back as NaN
/// (serde_json wrote `null` already, and then could not read it back).
pub(crate) mod non_finite_as_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
    }
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (created if needed), flushed to disk and renamed into place (`tempfile`'s
/// `persist`): readers see the old file or the new one, never a part of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let io = |action, source| Error::Io {
        action,
        path: path.to_path_buf(),
        cause: source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_stale_temporaries(dir, &name);
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}.{}.", std::process::id()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| io("create a temporary file for", e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| io("write a temporary file for", e))?;
    tmp.persist(path)
        .map_err(|e| io("move into place", e.error))?;
    // The rename is on disk once the directory is synced too (where a
    // directory can be opened as a file: Unix; best effort).
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes `.<name>.<pid>.*.tmp` files of processes that are gone (a run
/// killed while it wrote), where process ids can be checked (`/proc`);
/// elsewhere they stay, hidden, and harmless: readers never see them.
fn remove_stale_temporaries(dir: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.");
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file
            .strip_prefix(&prefix)
            .filter(|rest| rest.ends_with(".tmp"))
            .and_then(|rest| rest.split('.').next())
        else {
            continue;
        };
        if !pid.is_empty()
            && pid.bytes().all(|b| b.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The directory of the tournament `name`'s record and pictures.
pub fn tournament_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("tournament-{name}"))
}

/// The record of the tournament `name`.
pub fn tournament_record(dir: &Path, name: &str) -> PathBuf {
    tournament_dir(dir, name).join("tournament.json")
}

/// The directory of the records of the config at `config`:
/// `<target>/gevaldi/<name of the config's directory>/<config's stem>`,
/// unless another config of that folder name and stem has claimed it (two
/// `mnist/gevaldi.toml` in different places overwrote each other's records
/// and report): then `<target>/gevaldi/<folder name>-<8 hex digits>/<stem>`,
/// the digits a hash of where the config is. A suite claims its directory
/// when it runs ([`claim_artifact_dir`]); this only looks.
pub fn artifact_dir(config: &Path) -> PathBuf {
    resolve_artifact_dir(&target_dir(), config, false)
}

/// [`artifact_dir`], claimed for `config` (a file `.config` there names it)
/// where no other config has claimed it.
pub fn claim_artifact_dir(config: &Path) -> PathBuf {
    resolve_artifact_dir(&target_dir(), config, true)
}

/// The claim's file, beside the records.
const CLAIM: &str = ".config";

fn resolve_artifact_dir(target: &Path, config: &Path, claim: bool) -> PathBuf {
    let name = |p: Option<&std::ffi::OsStr>| {
        p.map(|n| n.to_string_lossy().into_owned())
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "suite".into())
    };
    // Where the config is, however its path is spelt (`./gevaldi.toml`,
    // `../gevaldi.toml`: the folder was named "suite" for those).
    let absolute = std::fs::canonicalize(config)
        .unwrap_or_else(|_| std::env::current_dir().unwrap_or_default().join(config));
    let dir = absolute.parent().map(Path::to_path_buf).unwrap_or_default();
    let (folder, stem) = (name(dir.file_name()), name(config.file_stem()));
    let plain = target.join("gevaldi").join(&folder).join(&stem);
    // Its ID: relative to the target directory's parent (the workspace,
    // which moves with it) where it lies inside it.
    let workspace = target.parent().and_then(|p| std::fs::canonicalize(p).ok());
    let id = match workspace
        .as_deref()
        .and_then(|w| absolute.strip_prefix(w).ok())
    {
        Some(relative) => relative.to_string_lossy().replace('\\', "/"),
        None => absolute.to_string_lossy().into_owned(),
    };
    match std::fs::read_to_string(plain.join(CLAIM)) {
        Ok(owner) if owner.trim_end() != id => {
            // FNV-1a, 32 bits: a stable name, not a security measure.
            let hash = id.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            target
                .join("gevaldi")
                .join(format!("{folder}-{hash:08x}"))
                .join(stem)
        }
        Ok(_) => plain,
        Err(_) => {
            if claim && std::fs::create_dir_all(&plain).is_ok() {
                // A failed write leaves the directory unclaimed, as before.
                let _ = write_atomic(&plain.join(CLAIM), format!("{id}\n").as_bytes());
            }
            plain
        }
    }
}

/// The record of the pair `name` in `dir`.
pub fn pair_record(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// The directory of the ensemble `name`'s record and exports in `dir`.
pub fn ensemble_dir(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("ensemble-{name}"))
}

/// The record of the ensemble `name` in `dir`.
pub fn ensemble_record(dir: &Path, name: &str) -> PathBuf {
    ensemble_dir(dir, name).join("ensemble.json")
}

/// The record of the trial `id` in `dir`: a pair's, an ensemble's or a
/// tournament's.
pub fn record_path(dir: &Path, id: &TrialId) -> PathBuf {
    match id.kind {
        TrialKind::Pair => pair_record(dir, &id.name),
        TrialKind::Ensemble => ensemble_record(dir, &id.name),
        TrialKind::Tournament => tournament_record(dir, &id.name),
    }
}

/// The target directory of the running binary: `CARGO_TARGET_DIR` if set,
/// else the `target` directory above the executable
/// (`target/<profile>/deps/<test>`, `target/<profile>/examples/<name>` or
/// `target/<profile>/<bin>`).
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir
        .file_name()
        .is_some_and(|n| n == "deps" || n == "examples")
    {
        dir.pop();
    }
    dir.pop(); // the profile directory
    if dir.as_os_str().is_empty() {
        PathBuf::from("target")
    } else {
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: two configs `<a>/mnist/gevaldi.toml` and
    /// `<b>/mnist/gevaldi.toml` shared one records directory, so each run
    /// overwrote the other's records and report. The first claims it, the
    /// second gets its own, and each finds its own again.
    #[test]
    fn configs_of_one_folder_name_in_two_places_keep_their_records_apart() {
        let root = std::env::temp_dir().join(format!("gevaldi-claim-{}", std::process::id()));
        let target = root.join("target");
        let config = |place: &str| {
            let dir = root.join(place).join("mnist");
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("gevaldi.toml");
            std::fs::write(&path, "").unwrap();
            path
        };
        let (a, b) = (config("exp"), config("base"));
        let plain = target.join("gevaldi").join("mnist").join("gevaldi");
        assert_eq!(resolve_artifact_dir(&target, &a, false), plain);
        assert_eq!(resolve_artifact_dir(&target, &a, true), plain);
        let claim = std::fs::read_to_string(plain.join(CLAIM)).unwrap();
        assert_eq!(claim, "exp/mnist/gevaldi.toml\n");
        let other = resolve_artifact_dir(&target, &b, true);
        assert_ne!(other, plain);
        assert!(
            other.starts_with(target.join("gevaldi")),
            "{}",
            other.display()
        );
        assert!(other.ends_with("gevaldi"), "{}", other.display());
        assert_eq!(resolve_artifact_dir(&target, &b, false), other);
        assert_eq!(resolve_artifact_dir(&target, &a, false), plain);
        // Regression: a path through `..` named the folder "suite", so the
        // records of one config went to two places by how it was spelt.
        let sub = a.parent().unwrap().join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        let spelt = sub.join("..").join("gevaldi.toml");
        assert_eq!(resolve_artifact_dir(&target, &spelt, false), plain);
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn atomic_writes_replace_the_file_and_leave_no_temporary() {
        let dir = std::env::temp_dir().join(format!("gevaldi-atomic-{}", std::process::id()));
        let path = dir.join("sub").join("a.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn temporaries_of_dead_writers_are_removed() {
        let dir = std::env::temp_dir().join(format!("gevaldi-stale-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Process ids stay below 2^22 on Linux: this writer is gone.
        let stale = dir.join(".a.json.4294967295.x1y2.tmp");
        let other = dir.join(".b.json.4294967295.x1y2.tmp");
        std::fs::write(&stale, b"half").unwrap();
        std::fs::write(&other, b"half").unwrap();
        write_atomic(&dir.join("a.json"), b"new").unwrap();
        if Path::new("/proc/self").exists() {
            assert!(!stale.exists());
        }
        assert!(other.exists(), "only temporaries of the file written go");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_error_record_round_trips_and_fails() {
        let r = Record::Error(ErrorRecord {
            trial: "pair::x".into(),
            message: "failed to read `w.safetensors`".into(),
            written_at: 1,
        });
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains(r#""kind":"error""#), "{json}");
        let back: Record = serde_json::from_str(&json).unwrap();
        assert!(!back.passed());
        assert!(matches!(back, Record::Error(e) if e.trial == "pair::x"));
    }
}
