//! The digests of the files a trial's models read (their weights, and the
//! files a registered model's table names), recorded with the trial so
//! that `cargo gevaldi report` can tell a record of models retrained since
//! the run; the tournament's pair fingerprint holds the same digests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{self, ModelDecl};

/// A file's size and the SHA-256 of its bytes: what a search reads of it,
/// whatever its path or modification time. (The tournament's fingerprints
/// held those once, and every CI runner's fresh checkout, whose files get
/// the checkout's time, made the pair records gathered from the other
/// runners stale.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Its size in bytes (0 when it cannot be read).
    pub size: u64,
    /// SHA-256 of its bytes, as hex; `None` when it cannot be read.
    pub sha256: Option<String>,
}

impl FileDigest {
    /// The digest of the file at `path`, read once per process while its
    /// size and modification time stay the same (a weights file is read by
    /// every trial that uses it).
    pub fn of(path: &Path) -> Self {
        let meta = std::fs::metadata(path).ok();
        let size = meta.as_ref().map_or(0, |m| m.len());
        let mtime = meta
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        static DIGESTS: std::sync::OnceLock<Digests> = std::sync::OnceLock::new();
        let digests = DIGESTS.get_or_init(Default::default);
        let key = (path.to_path_buf(), size, mtime);
        let cached = digests.lock().ok().and_then(|d| d.get(&key).cloned());
        let sha256 = cached.unwrap_or_else(|| {
            let digest = sha256(path);
            if let Ok(mut d) = digests.lock() {
                d.insert(key, digest.clone());
            }
            digest
        });
        FileDigest { size, sha256 }
    }
}

/// `1234 bytes, digest <hex>` (`digest unreadable` for a file that cannot
/// be read), as the tournament's pair fingerprint holds it.
impl std::fmt::Display for FileDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let digest = self.sha256.as_deref().unwrap_or("unreadable");
        write!(f, "{} bytes, digest {digest}", self.size)
    }
}

/// The digests [`FileDigest::of`] has read, by path, size and
/// modification time.
type Digests = std::sync::Mutex<std::collections::HashMap<(PathBuf, u64, u128), Option<String>>>;

/// SHA-256 of a file's bytes, read a MiB at a time; `None` when it cannot
/// be read.
fn sha256(path: &Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut file = std::fs::File::open(path).ok()?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(format!("{:x}", hasher.finalize()))
}

/// The files a model's table names: its `weights`, and each string of a
/// registered model's free-form keys that names a file beside the config
/// (a registration reads `file = …` with `get_path`), each with its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelFiles {
    /// The model's table name.
    pub model: String,
    /// Whether the model is registered from Rust: its code is in no file,
    /// and only the files its table names can be checked.
    pub registered: bool,
    /// (key, digest), `weights` first, then the free-form keys in name
    /// order.
    pub files: Vec<(String, FileDigest)>,
    /// The rest of its table, as text: the architecture,
    /// `preprocess`, `truncation`, `transform_input` and a registered
    /// model's keys. `None` in records written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<String>,
}

impl ModelFiles {
    /// The files `decl` names, with their digests now.
    pub fn of(decl: &ModelDecl) -> Self {
        let table = &decl.table;
        let mut files: Vec<(String, FileDigest)> = table
            .weights
            .iter()
            .map(|w| ("weights".to_string(), FileDigest::of(w)))
            .collect();
        let mut keys: Vec<&str> = table.keys().collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(v) = table.get(key) {
                files_of(key, v, &table.dir, &mut files);
            }
        }
        ModelFiles {
            model: decl.name.clone(),
            registered: decl.builtin.is_none(),
            files,
            table: Some(self::table(decl)),
        }
    }

    /// The files of the generator `generator` and the classifiers `models`
    /// of `config`, in that order (a name the config lacks is left out).
    pub fn of_trial(config: &config::Config, generator: &str, models: &[String]) -> Vec<Self> {
        let generator = config.generator(generator);
        let classifiers = models.iter().filter_map(|m| config.classifier(m));
        generator
            .into_iter()
            .chain(classifiers)
            .map(Self::of)
            .collect()
    }
}

/// The files of the config's label hierarchy (`classes`, `edges`,
/// `names`), each with its key and digest; empty for the flat hierarchy. A
/// pair's set distances, which `max_set_distance` bounds, read them.
pub fn hierarchy_files(config: &config::Config) -> Vec<(String, FileDigest)> {
    let Some(h) = &config.hierarchy else {
        return Vec::new();
    };
    let files = [("classes", Some(&h.classes)), ("edges", Some(&h.edges))];
    (files.into_iter())
        .chain([("names", h.names.as_ref())])
        .filter_map(|(key, path)| Some((key.to_string(), FileDigest::of(path?))))
        .collect()
}

/// What of a model's table but its files changes what it computes, as
/// text: the architecture, `preprocess`, `truncation`, `transform_input`
/// and a registered model's keys (in name order).
fn table(d: &ModelDecl) -> String {
    // Every field, so that a new one is not forgotten here.
    let ModelDecl {
        name: _,
        builtin,
        table,
        preprocess,
        truncation,
        transform_input,
        optional: _,
        line: _,
    } = d;
    let arch = builtin
        .as_ref()
        .map_or("registered".to_string(), |(a, _)| a.name().to_string());
    let mut keys: Vec<String> = table
        .keys()
        .filter_map(|k| Some(format!("{k} = {:?}", table.get(k)?)))
        .collect();
    keys.sort();
    format!(
        "{arch}; preprocess {preprocess:?}; truncation {truncation:?}; transform_input \
         {transform_input:?}; keys {{{}}}",
        keys.join(", ")
    )
}

/// The files that the strings in `v` (of `key`) name, resolved against
/// `dir`.
pub(crate) fn files_of(
    key: &str,
    v: &config::TableValue,
    dir: &Path,
    out: &mut Vec<(String, FileDigest)>,
) {
    use config::TableValue;
    match v {
        TableValue::String(s) if !s.is_empty() => {
            let path = dir.join(s);
            if path.is_file() {
                out.push((key.to_string(), FileDigest::of(&path)));
            }
        }
        TableValue::Array(items) => items.iter().for_each(|v| files_of(key, v, dir, out)),
        TableValue::Table(entries) => entries.iter().for_each(|(_, v)| files_of(key, v, dir, out)),
        _ => {}
    }
}
