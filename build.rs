//! Passes on to the crate:
//!
//! - the optimisation level this crate is compiled with (`GEVALDI_OPT_LEVEL`),
//!   for the harness, which warns when the search would run unoptimised. A
//!   `[profile.dev.package."*"] opt-level = 3` in a user's Cargo.toml
//!   compiles gevaldi and candle at level 3 while `debug_assertions` stays
//!   on, so `cfg!(debug_assertions)` cannot tell;
//! - a digest of gevaldi's source (`GEVALDI_SOURCE_DIGEST`: SHA-256 of
//!   `Cargo.toml` and every file under `src/` and `gevaldi-config/src/`,
//!   paths and bytes, the first 16 hex digits), which a tournament pair
//!   record's fingerprint holds: gevaldi is used from a path or a git
//!   checkout, whose version stays 0.1.0 through every change, so a record
//!   searched by an older gevaldi read as current.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let level = std::env::var("OPT_LEVEL").unwrap_or_default();
    println!("cargo:rustc-env=GEVALDI_OPT_LEVEL={level}");

    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let mut files = vec![root.join("Cargo.toml")];
    for dir in ["src", "gevaldi-config/src"] {
        let dir = root.join(dir);
        if dir.is_dir() {
            // A directory: cargo reruns this when any file under it changes.
            println!("cargo:rerun-if-changed={}", dir.display());
            collect(&dir, &mut files);
        }
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in &files {
        let name = file.strip_prefix(&root).unwrap_or(file);
        hasher.update(name.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(file).unwrap_or_default());
        hasher.update([0]);
    }
    let digest = format!("{:x}", hasher.finalize());
    println!("cargo:rustc-env=GEVALDI_SOURCE_DIGEST={}", &digest[..16]);
}

/// Every file under `dir`, recursively.
fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path);
        }
    }
}
