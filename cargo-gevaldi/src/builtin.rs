//! The built-in MNIST suite, compiled into the binary: the `gevaldi.toml`,
//! weights, data and snapshots of gevaldi's `fixtures/mnist`. `cargo gevaldi`
//! unpacks it into the user's cache directory to run it when there is no
//! `./gevaldi.toml`, and `cargo gevaldi init` writes it into a folder as a
//! starter suite.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

macro_rules! files {
    ($($path:literal),* $(,)?) => {
        &[$(
            (
                $path,
                include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/mnist/", $path))
                    as &[u8],
            ),
        )*]
    };
}

/// Every file of the suite: its path relative to the suite's folder, and its
/// bytes.
pub const FILES: &[(&str, &[u8])] = files![
    "gevaldi.toml",
    "vae.safetensors",
    "cvae.safetensors",
    "cnn_a.safetensors",
    "cnn_b.safetensors",
    "bag_0.safetensors",
    "bag_1.safetensors",
    "bag_2.safetensors",
    "bag_3.safetensors",
    "bag_4.safetensors",
    "data/README.md",
    "data/test-images-idx3-ubyte.gz",
    "data/test-labels-idx1-ubyte.gz",
    "data/train-images-idx3-ubyte.gz",
    "data/train-labels-idx1-ubyte.gz",
    "snapshots/gevaldi/pair-cnn_a-vs-cnn_b.snap",
    "snapshots/gevaldi/pair-cnn_b-vs-cnn_a.snap",
    "snapshots/gevaldi/ensemble-bagging.snap",
    "snapshots/gevaldi/tournament-mnist.snap",
];

/// The first lines of the `gevaldi.toml` that `init` writes, in place of the
/// fixtures' own comment.
const STARTER_HEADER: &str = "\
# A starter gevaldi suite, written by `cargo gevaldi init`: the paper's MNIST
# experiment (two CNNs compared on a VAE's latent space, a bagging ensemble
# searched with a conditional VAE, and a tournament ranking the CNNs and the
# ensemble's members, MAD competition), with gevaldi's MNIST weights,
# trained on the digits in data/ (see data/README.md for their licence).
# Paths are relative to this file.
#
#   cargo gevaldi run     run every trial, print a table, write the HTML report
#   cargo gevaldi list    list the trials
#
# To test your own models: declare them below (a built-in `arch` and its
# `weights`, or a table without `arch` registered from Rust in a
# `gevaldi::main!` test target), and point the [[pair]] entries at them.
# Snapshots of each trial's figures live in snapshots/.
";

/// The folder the built-in suite is unpacked into:
/// `<cache>/gevaldi/<version>/mnist`, where `<cache>` is `$XDG_CACHE_HOME`,
/// else `%LOCALAPPDATA%` on Windows, `~/Library/Caches` on macOS and
/// `~/.cache` elsewhere (the system's temporary folder without a home).
pub fn cache_dir() -> PathBuf {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let cache = env("XDG_CACHE_HOME")
        .or_else(|| {
            if cfg!(windows) {
                env("LOCALAPPDATA")
            } else if cfg!(target_os = "macos") {
                home.map(|h| h.join("Library/Caches"))
            } else {
                home.map(|h| h.join(".cache"))
            }
        })
        .unwrap_or_else(std::env::temp_dir);
    cache
        .join("gevaldi")
        .join(env!("CARGO_PKG_VERSION"))
        .join("mnist")
}

/// Unpacks the suite into [`cache_dir`] (rewriting any file that differs
/// from this binary's copy) and returns the path of its `gevaldi.toml`.
pub fn unpack() -> anyhow::Result<PathBuf> {
    let dir = cache_dir();
    for (path, bytes) in FILES {
        let target = dir.join(path);
        if std::fs::read(&target).is_ok_and(|b| b == *bytes) {
            continue;
        }
        write_atomic(&target, bytes).with_context(|| {
            format!(
                "failed to unpack the built-in MNIST suite into {}",
                dir.display()
            )
        })?;
    }
    Ok(dir.join("gevaldi.toml"))
}

/// Writes the suite into `dir` as a starter suite, refusing to overwrite
/// anything: returns the files written, relative to `dir`.
pub fn init(dir: &Path) -> anyhow::Result<Vec<&'static str>> {
    let taken: Vec<String> = FILES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| dir.join(p).symlink_metadata().is_ok())
        .map(|p| p.to_string())
        .collect();
    if !taken.is_empty() {
        bail!(
            "failed to write a starter suite into {}: {} already there, and init overwrites \
             nothing (move {} away, or run `cargo gevaldi init` in an empty folder)",
            dir.display(),
            taken.join(", "),
            if taken.len() == 1 { "it" } else { "them" },
        );
    }
    for (path, bytes) in FILES {
        let target = dir.join(path);
        let bytes: std::borrow::Cow<[u8]> = if *path == "gevaldi.toml" {
            starter_toml(bytes).into_bytes().into()
        } else {
            (*bytes).into()
        };
        // `create_new`: a file that appeared since the check is not
        // overwritten either.
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("failed to create {}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&target)
            .with_context(|| format!("failed to create {}", target.display()))?;
        std::io::Write::write_all(&mut file, &bytes)
            .with_context(|| format!("failed to write {}", target.display()))?;
    }
    Ok(FILES.iter().map(|(p, _)| *p).collect())
}

/// The fixtures' `gevaldi.toml` with the starter's comment on top.
fn starter_toml(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let body = text.trim_start_matches('\n');
    // Drop the fixtures' leading comment (it speaks of the repository).
    let body: String = body
        .lines()
        .skip_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    format!("{STARTER_HEADER}{body}")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = parent.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_starter_toml_keeps_every_table_and_drops_the_repository_comment() {
        let (_, bytes) = FILES[0];
        let original = String::from_utf8_lossy(bytes);
        let starter = starter_toml(bytes);
        assert!(starter.starts_with(STARTER_HEADER));
        assert!(!starter.contains("committed\n# fixtures"), "{starter}");
        let tables = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with('['))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(tables(&starter), tables(&original));
        assert!(tables(&original).len() > 10);
    }
}
