//! Issue 16: snapshots that travel. The committed snapshots pass with
//! gevaldi's engine, with candle's own ops (`GEVALDI_ENGINE=candle`) and on
//! the engine's device-generic path (`GEVALDI_ENGINE=generic`, what a GPU
//! runs), yet a 1% change to one layer's weights, another
//! seed and another divergence are each caught; a first run reports a new
//! snapshot as new, in a few lines, and `cargo insta accept` accepts it.
//!
//! The tests change process-wide environment variables (`GEVALDI_ENGINE`,
//! `INSTA_UPDATE`, `CI`), so each holds one lock for its whole run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use candle_core::{safetensors, Device, Tensor};
use common::CaseDir;
use gevaldi::config::TrialId;
use gevaldi::suite::{Registry, Suite, TrialError, TrialReport};

static ENV: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/mnist").join(name)
}

/// Sets the environment a CI run has, with `engine` chosen.
fn ci_env(engine: &str) {
    std::env::set_var("GEVALDI_ENGINE", engine);
    std::env::set_var("INSTA_UPDATE", "no");
    std::env::remove_var("INSTA_FORCE_PASS");
}

/// A trial's outcome as these tests read it.
#[derive(Debug)]
struct TrialOutcome {
    passed: bool,
    /// What failed (thresholds, snapshot, warnings, artifact), or the error.
    message: Option<String>,
}

impl From<Result<TrialReport, TrialError>> for TrialOutcome {
    fn from(result: Result<TrialReport, TrialError>) -> Self {
        match result {
            Ok(report) => TrialOutcome {
                passed: report.passed(),
                message: report.failure_message(),
            },
            Err(error) => TrialOutcome {
                passed: false,
                message: Some(error.to_string()),
            },
        }
    }
}

/// Runs the pair `pair` of the config.
fn run(config: &Path, pair: &str) -> TrialOutcome {
    let suite = Suite::load(config, Registry::new()).unwrap();
    suite.run_trial(&TrialId::pair(pair), &|_, _| {}).into()
}

fn all_trials(config: &Path) -> Vec<TrialOutcome> {
    let suite = Suite::load(config, Registry::new()).unwrap();
    suite
        .trials()
        .into_iter()
        .filter(|t| !t.ignored)
        .map(|t| suite.run_trial(&t.id, &|_, _| {}).into())
        .collect()
}

/// A copy of tests/snapshot/quick.toml in a fresh directory, with its
/// committed snapshot, `edit` applied to the TOML text, and absolute paths
/// to the fixtures' weights (or to `cnn_b`, when given).
fn quick_copy(tag: &str, edit: impl Fn(String) -> String, cnn_b: Option<&Path>) -> CaseDir {
    let dir = CaseDir::fresh(&format!("gevaldi-policy-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("snapshots/quick")).unwrap();
    let toml = std::fs::read_to_string(root().join("tests/snapshot/quick.toml")).unwrap();
    let fixtures = root().join("fixtures/mnist");
    let mut toml = toml.replace("../../fixtures/mnist/", &format!("{}/", fixtures.display()));
    if let Some(b) = cnn_b {
        let original = fixture("cnn_b.safetensors").display().to_string();
        assert!(toml.contains(&original));
        toml = toml.replace(&original, &b.display().to_string());
    }
    std::fs::write(dir.join("quick.toml"), edit(toml)).unwrap();
    std::fs::copy(
        root().join("tests/snapshot/snapshots/quick/pair-p.snap"),
        dir.join("snapshots/quick/pair-p.snap"),
    )
    .unwrap();
    dir
}

fn assert_snapshot_caught(outcome: &TrialOutcome, expected_key: &str) {
    assert!(!outcome.passed, "{outcome:?}");
    let message = outcome.message.as_deref().unwrap_or_default();
    println!("{message}");
    assert!(
        message.contains("snapshot `") && message.contains("changed:"),
        "{message}"
    );
    assert!(
        message.contains(&format!("  {expected_key}: ")),
        "{message}"
    );
}

#[test]
fn the_committed_quick_snapshot_passes_with_every_engine() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    let config = root().join("tests/snapshot/quick.toml");
    for engine in ["auto", "candle", "generic"] {
        ci_env(engine);
        let outcome = run(&config, "p");
        assert!(outcome.passed, "engine {engine}: {outcome:?}");
    }
}

#[test]
fn the_committed_suite_passes_on_candles_ops_and_on_the_generic_path() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    for engine in ["candle", "generic"] {
        ci_env(engine);
        let outcomes = all_trials(&fixture("gevaldi.toml"));
        // The two pairs, the ensemble and the 7-model tournament.
        assert_eq!(outcomes.len(), 4);
        for o in &outcomes {
            assert!(o.passed, "engine {engine}: {o:?}");
        }
    }
}

#[test]
fn a_one_percent_change_to_one_layer_is_caught() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    ci_env("auto");
    let dir = CaseDir::fresh(&format!("gevaldi-policy-scaled-{}", std::process::id()));
    let mut tensors = safetensors::load(fixture("cnn_b.safetensors"), &Device::Cpu).unwrap();
    let w: &Tensor = &tensors["conv1.weight"];
    let scaled = (w * 1.01).unwrap();
    tensors.insert("conv1.weight".into(), scaled);
    let changed = dir.join("cnn_b.safetensors");
    safetensors::save(&tensors, &changed).unwrap();

    let same = quick_copy("same", |t| t, None);
    assert!(run(&same.join("quick.toml"), "p").passed);
    let config = quick_copy("weights", |t| t, Some(&changed));
    assert_snapshot_caught(&run(&config.join("quick.toml"), "p"), "start.divergence");
}

#[test]
fn another_seed_and_another_divergence_are_caught() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    ci_env("auto");
    let seed = quick_copy("seed", |t| t.replace("seed = 0", "seed = 1"), None);
    assert_snapshot_caught(&run(&seed.join("quick.toml"), "p"), "settings");
    let js = quick_copy(
        "js",
        |t| t.replace("divergence = \"kl\"", "divergence = \"js\""),
        None,
    );
    assert_snapshot_caught(&run(&js.join("quick.toml"), "p"), "settings");
}

#[test]
fn a_first_run_reports_a_new_snapshot_and_cargo_insta_accepts_it() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    ci_env("auto");
    let dir = quick_copy("first", |t| t, None);
    let snap = dir.join("snapshots/quick/pair-p.snap");
    std::fs::remove_file(&snap).unwrap();
    let config = dir.join("quick.toml");

    // Under CI nothing is written, and the message says what to do.
    std::env::remove_var("INSTA_UPDATE");
    std::env::set_var("CI", "true");
    let outcome = run(&config, "p");
    std::env::remove_var("CI");
    let message = outcome.message.unwrap();
    assert!(
        message.contains("new snapshot for pair::p: `")
            && message.contains("does not exist, and none was written (CI or INSTA_UPDATE=no)"),
        "{message}"
    );
    assert!(!snap.exists() && !dir.join("snapshots/quick/pair-p.snap.new").exists());

    // Locally: a `.snap.new` and the command that accepts it, in a few
    // lines, with no panic, backtrace or staging path.
    std::env::set_var("INSTA_UPDATE", "new");
    let outcome = run(&config, "p");
    assert!(!outcome.passed);
    let message = outcome.message.unwrap();
    let pending = dir.join("snapshots/quick/pair-p.snap.new");
    assert!(pending.is_file());
    assert!(
        message.contains(&format!(
            "new snapshot for pair::p: written to `{}`; accept it with `cargo insta accept`",
            pending.display()
        )),
        "{message}"
    );
    assert!(message.lines().count() <= 3, "{message}");
    for bad in [
        "panicked",
        "backtrace",
        "staging",
        "does not match",
        "Stopped on",
    ] {
        assert!(!message.contains(bad), "{bad}: {message}");
    }

    // cargo-insta accepts it (README: `cargo install cargo-insta`), in a
    // package as a model repository is one.
    std::fs::write(
        dir.join("Cargo.toml"),
        "[package]\nname = \"suite\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(dir.join("src/lib.rs"), "").unwrap();
    let status = Command::new("cargo")
        .args(["insta", "accept", "--workspace-root"])
        .arg(&*dir)
        .current_dir(&dir)
        .status()
        .expect("cargo runs");
    assert!(
        status.success(),
        "`cargo insta accept` failed: is cargo-insta installed (cargo install cargo-insta; \
         .ci/run installs it)?"
    );
    assert!(snap.is_file() && !pending.exists());
    std::env::set_var("INSTA_UPDATE", "no");
    let outcome = run(&config, "p");
    assert!(outcome.passed, "{outcome:?}");
}

#[test]
fn an_older_gevaldis_snapshot_is_named_in_the_first_run() {
    let _env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    ci_env("auto");
    let dir = quick_copy("legacy", |t| t, None);
    std::fs::remove_file(dir.join("snapshots/quick/pair-p.snap")).unwrap();
    std::fs::write(dir.join("snapshots/p.snap"), "---\n---\npair: p\n").unwrap();
    let message = run(&dir.join("quick.toml"), "p").message.unwrap();
    assert!(
        message.contains(&format!(
            "`{}` is the snapshot of an older gevaldi",
            dir.join("snapshots/p.snap").display()
        )),
        "{message}"
    );
}
