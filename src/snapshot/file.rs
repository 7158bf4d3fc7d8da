//! Where a snapshot lives, what insta's environment says to do with it, and why a check fails.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::TrialId;

use super::*;

/// Where a trial's snapshot lives, and what its header says.
#[derive(Clone, Debug)]
pub struct SnapshotFile {
    /// `<config dir>/snapshots/<config stem>/<kind>-<name>.snap`.
    pub path: PathBuf,
    /// The file a gevaldi before 0.2 used: `<config dir>/snapshots/<name>.snap`.
    pub legacy: PathBuf,
    /// The trial.
    pub trial: TrialId,
    /// The config, as the header names it.
    pub config: PathBuf,
}

impl SnapshotFile {
    /// The snapshot of the trial `trial` of the config at `config`.
    pub fn new(config: &Path, trial: TrialId) -> Self {
        let (kind, name) = (trial.kind, &trial.name);
        let dir = config.parent().unwrap_or(Path::new("")).join("snapshots");
        let stem = config
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "gevaldi".into());
        SnapshotFile {
            path: dir.join(&stem).join(format!("{kind}-{name}.snap")),
            legacy: dir.join(format!("{name}.snap")),
            trial: trial.clone(),
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
    pub(super) fn contents(&self, body: &str) -> String {
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
            json_string(&self.trial.to_string()),
        )
    }
}

/// `s` as a double-quoted string (valid YAML).
pub(super) fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

/// The body of a snapshot file (after its header).
pub(super) fn body_of(contents: &str) -> &str {
    let Some(rest) = contents.strip_prefix("---\n") else {
        return contents;
    };
    match rest.find("\n---\n") {
        Some(i) => &rest[i + 5..],
        None => contents,
    }
}

/// The first key of the body of `contents` that a later line gives again:
/// the key, that line and the first one's (lines of the file, from 1).
pub(super) fn duplicate_key(contents: &str) -> Option<(String, usize, usize)> {
    let body = body_of(contents);
    let header = contents[..contents.len() - body.len()].lines().count();
    let mut seen = std::collections::HashMap::new();
    for (n, l) in body.lines().enumerate() {
        let Some((key, _)) = l.split_once(": ") else {
            continue;
        };
        let line = header + n + 1;
        if let Some(first) = seen.insert(key.trim(), line) {
            return Some((key.trim().to_string(), line, first));
        }
    }
    None
}

/// What insta's environment says to do with snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) enum Update {
    /// Write nothing.
    No,
    /// Write `.snap.new` (`INSTA_UPDATE` unset on a local run).
    #[default]
    New,
    /// Write `.snap` for new snapshots, `.snap.new` for changed ones.
    Unseen,
    /// Write `.snap`.
    Always,
}

impl Update {
    /// The mode `INSTA_UPDATE` (`None`: unset) names, on a CI run or not,
    /// read as insta 1.49 reads it (`1` is `always`; a value insta refuses
    /// is refused).
    fn of(value: Option<&str>, ci: bool) -> crate::Result<Self> {
        Ok(match value.unwrap_or_default() {
            "no" => Update::No,
            "new" => Update::New,
            "unseen" => Update::Unseen,
            "always" | "1" | "force" => Update::Always,
            "" | "auto" if ci => Update::No,
            "" | "auto" => Update::New,
            other => {
                return Err(crate::Error::setting(
                    "INSTA_UPDATE",
                    other,
                    "auto, always (or 1), force, new, unseen or no",
                ))
            }
        })
    }
}

/// What insta's environment variables say, read once per check.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct InstaEnv {
    /// Whether this is a CI run, as insta tells: `CI` set to anything but
    /// `false`, `0` or nothing, or, without `CI`, `TF_BUILD` set (Azure
    /// Pipelines).
    pub(super) ci: bool,
    /// What `INSTA_UPDATE` says, on a CI run or not.
    pub(super) update: Update,
    /// `INSTA_FORCE_PASS` set (to anything but `0`, `false` or nothing).
    pub(super) force_pass: bool,
    /// `INSTA_SNAPSHOT_REFERENCES_FILE`: where cargo-insta collects the
    /// snapshots the tests used (`cargo insta test --unreferenced=delete`
    /// deletes the others).
    pub(super) references: Option<PathBuf>,
}

impl InstaEnv {
    /// The process's environment.
    pub(super) fn from_env() -> crate::Result<Self> {
        Self::read(|key| std::env::var(key).ok())
    }

    /// The environment `var` gives (a variable's value, `None` when unset);
    /// a value insta refuses (`INSTA_UPDATE`, `INSTA_FORCE_PASS`) is refused.
    pub(super) fn read(var: impl Fn(&str) -> Option<String>) -> crate::Result<Self> {
        let ci = match var("CI").as_deref() {
            Some("" | "0" | "false") => false,
            Some(_) => true,
            None => var("TF_BUILD").is_some(),
        };
        let force_pass = match var("INSTA_FORCE_PASS").as_deref() {
            None | Some("" | "0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(crate::Error::setting(
                    "INSTA_FORCE_PASS",
                    other,
                    "1, or 0 or nothing (as insta reads it)",
                ))
            }
        };
        Ok(InstaEnv {
            ci,
            update: Update::of(var("INSTA_UPDATE").as_deref(), ci)?,
            force_pass,
            references: var("INSTA_SNAPSHOT_REFERENCES_FILE").map(PathBuf::from),
        })
    }
}

/// Refuses insta's settings where insta would (`INSTA_UPDATE`,
/// `INSTA_FORCE_PASS`): a trial checks them before its search, so that a
/// mistyped value fails it at once rather than after the search.
pub(crate) fn check_insta_env() -> crate::Result<()> {
    InstaEnv::from_env().map(drop)
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
    /// The stored snapshot has a key on two lines (a bad merge): which one
    /// to compare with is not for gevaldi to guess.
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// The line (of the file, from 1) that gives it again.
        line: usize,
        /// The line that gave it first.
        first: usize,
    },
    /// The snapshot could not be named in cargo-insta's
    /// `INSTA_SNAPSHOT_REFERENCES_FILE` (which `cargo insta test
    /// --unreferenced=delete` reads to keep it).
    References {
        /// The snapshot.
        snapshot: PathBuf,
        /// The references file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
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

/// `path` as one word of a POSIX shell, for a command to paste: as it is
/// where it holds only characters no shell treats specially, else in single
/// quotes (a `'` inside as `'\''`). A config in `my suite/` made a `mv`
/// that split at the space.
fn shell_word(path: &Path) -> String {
    let s = path.display().to_string();
    let plain = |c: char| c.is_ascii_alphanumeric() || "/._-+:,@%=".contains(c);
    if !s.is_empty() && s.chars().all(plain) {
        s
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Lines of a changed snapshot shown; the rest are counted.
pub(super) const MISMATCHES_SHOWN: usize = 5;

impl fmt::Display for SnapshotProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let accept = |written: &Path, target: &Path| {
            format!(
                "accept it with `cargo insta accept` (cargo-insta: `cargo install cargo-insta`), \
                 or `mv {} {}`",
                shell_word(written),
                shell_word(target)
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
            SnapshotProblem::DuplicateKey {
                path,
                key,
                line,
                first,
            } => write!(
                f,
                "{}:{line}: `{key}` is given again (first on line {first}); a snapshot has one \
                 line per key (a bad merge?): delete the wrong one, or the file to write it anew",
                path.display()
            ),
            SnapshotProblem::References {
                snapshot,
                path,
                source,
            } => write!(
                f,
                "failed to name the snapshot `{}` in cargo-insta's \
                 INSTA_SNAPSHOT_REFERENCES_FILE `{}`: {source}",
                snapshot.display(),
                path.display()
            ),
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
pub(super) fn check(file: &SnapshotFile, body: &str) -> Result<(), SnapshotProblem> {
    check_allowing(file, body, &Unsettled::default())
}

/// [`check`], where the `warnings` lines may differ by the kinds in
/// `unsettled`, and the `search.ranking` lines by its unsettled splits
/// ([`super::compare_allowing`]).
pub(super) fn check_allowing(
    file: &SnapshotFile,
    body: &str,
    unsettled: &Unsettled,
) -> Result<(), SnapshotProblem> {
    let env = InstaEnv::from_env().map_err(|e| SnapshotProblem::Write(Box::new(e)))?;
    check_with(file, body, unsettled, &env)
}

/// [`check`] in the environment `env`.
pub(super) fn check_with(
    file: &SnapshotFile,
    body: &str,
    unsettled: &Unsettled,
    env: &InstaEnv,
) -> Result<(), SnapshotProblem> {
    let io = |path: &Path, action: &'static str| {
        let path = path.to_path_buf();
        move |source| SnapshotProblem::Io {
            path,
            action,
            source,
        }
    };
    if let Some(references) = &env.references {
        reference(&file.path, references).map_err(|source| SnapshotProblem::References {
            snapshot: file.path.clone(),
            path: references.clone(),
            source,
        })?;
    }
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
            if let Some((key, line, first)) = duplicate_key(&stored) {
                return Err(SnapshotProblem::DuplicateKey {
                    path: file.path.clone(),
                    key,
                    line,
                    first,
                });
            }
            let m = compare_allowing(body_of(&stored), body, unsettled);
            if m.is_empty() {
                // Within tolerance: the stored file stays as it is; a
                // pending version from an earlier run is obsolete.
                return remove_pending();
            }
            Some(m)
        }
    };
    let written = match (env.update, &mismatches) {
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
    let problem = match mismatches {
        None => SnapshotProblem::New {
            file: Box::new(file.clone()),
            written,
        },
        Some(mismatches) => SnapshotProblem::Changed {
            file: Box::new(file.clone()),
            mismatches,
            written,
        },
    };
    if env.force_pass {
        // As insta does (and `cargo insta test` sets it): a new or changed
        // snapshot is shown, and the test passes.
        eprintln!("warning: passed because INSTA_FORCE_PASS is set: {problem}");
        return Ok(());
    }
    Err(problem)
}

/// Appends `snapshot` to cargo-insta's references file, a line per
/// snapshot used, as insta does.
fn reference(snapshot: &Path, references: &Path) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(references)?;
    f.write_all(format!("{}\n", snapshot.display()).as_bytes())
}
