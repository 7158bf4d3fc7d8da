//! The JSON artifact of a trial, under the target directory: everything a
//! report needs later (z0, z, divergences, trajectory, predictions).

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::search::{Baseline, SampleRecord, StepRecord};
use crate::snapshot::Settings;

/// The artifact of one trial.
#[derive(Serialize)]
pub struct Artifact<'a> {
    /// The pair's name.
    pub pair: &'a str,
    /// The config file.
    pub config: &'a Path,
    /// The generator's name.
    pub generator: &'a str,
    /// The classifiers' names.
    pub models: &'a [String],
    /// The class names.
    pub class_names: &'a [String],
    /// The names of the measures in each sample's `measures_before` /
    /// `measures_after` and each step's `mean_measures`.
    pub measure_names: &'a [String],
    /// The search settings.
    pub settings: &'a Settings,
    /// Whether every threshold held.
    pub passed: bool,
    /// The broken thresholds.
    pub failures: &'a [String],
    /// Ascent steps taken.
    pub steps_run: usize,
    /// The lift.
    pub lift: f64,
    /// Per-step records.
    pub trajectory: &'a [StepRecord],
    /// The null baseline.
    pub baseline: &'a Baseline,
    /// Per-sample records (z0, z, divergences, probabilities, dz).
    pub samples: &'a [SampleRecord],
}

impl Artifact<'_> {
    /// Writes the artifact to `path` (creating its directory).
    pub fn write(&self, path: &Path) -> Result<()> {
        let io = |action, source| Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        }
        let json = serde_json::to_vec(self).map_err(|e| io("serialise", e.into()))?;
        std::fs::write(path, json).map_err(|e| io("write", e))
    }
}

/// The target directory of the running binary: `CARGO_TARGET_DIR` if set,
/// else the `target` directory above the executable
/// (`target/<profile>/deps/<test>` or `target/<profile>/examples/<name>`).
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
