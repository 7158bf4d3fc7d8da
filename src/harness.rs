//! The cargo test harness: one libtest-mimic trial per `[[pair]]`
//! (`pair::<name>`), per `[[ensemble]]` (`ensemble::<name>`) and per
//! `[[tournament]]` (`tournament::<name>`) of a `gevaldi.toml`, and under
//! nextest one per pair each tournament searches (every ordered pair; one
//! order of each under a symmetric divergence)
//! (`tournament::<name>::<a>-vs-<b>`), so that `--partition` splits them.
//!
//! `gevaldi::main!` expands to a `main` that calls [`run`]; see the crate
//! docs. Listing (`--list`) loads no model; each trial loads only its own
//! models when it runs, so `--exact pair::x` (one nextest process per test)
//! builds only that trial's models. After the trials, the harness writes
//! the HTML report of the config ([`crate::report`]) and prints its path.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use libtest_mimic::{Arguments, Failed, Trial};

use crate::suite::Suite;
pub use crate::suite::{device, Registry};

/// Where the harness's own lines (the summaries, the report's path, a
/// tournament pair's wins) go: stdout beside libtest's lines, but stderr
/// under `--format json`, whose stdout must hold JSON events only.
#[derive(Clone, Copy)]
enum Output {
    Stdout,
    Stderr,
}

impl Output {
    fn for_format(format: Option<libtest_mimic::FormatSetting>) -> Self {
        match format {
            Some(libtest_mimic::FormatSetting::Json) => Output::Stderr,
            _ => Output::Stdout,
        }
    }

    fn line(self, line: &str) {
        match self {
            Output::Stdout => println!("{line}"),
            Output::Stderr => eprintln!("{line}"),
        }
    }
}

/// Under nextest (`NEXTEST` set), one trial per pair each tournament
/// searches ([`Suite::tournament_pairs`]),
/// `tournament::<name>::<a>-vs-<b>`: each runs its pair alone and writes
/// the pair's record, so that `--partition` spreads a
/// tournament's pairs over runners and the verdict `tournament::<name>`
/// only assembles the records it finds current (and runs the others).
/// Not listed under `cargo test`, which runs every trial in one process:
/// there the verdict runs every pair once.
fn tournament_pair_trials(
    suite: &Arc<Suite>,
    infos: &[crate::suite::TrialInfo],
    out: Output,
) -> Vec<Trial> {
    let mut trials = Vec::new();
    for info in infos {
        if info.id.kind != crate::config::TrialKind::Tournament {
            continue;
        }
        for pair in suite.tournament_pairs(&info.id.name) {
            let suite = Arc::clone(suite);
            let (name, ignored) = (info.id.name.clone(), info.ignored);
            let test = format!("{}::{pair}", info.id);
            trials.push(
                Trial::test(test, move || {
                    match suite.run_tournament_pair(&name, &pair, &|_, _| {}) {
                        Ok(r) => {
                            out.line(&format!(
                                "{}: {} wins, {} wins, {} ties",
                                r.name(),
                                r.wins_a,
                                r.wins_b,
                                r.ties
                            ));
                            Ok(())
                        }
                        Err(e) => Err(Failed::from(format!(
                            "tournament `{name}`, pair `{pair}`: {e}"
                        ))),
                    }
                })
                .with_ignored_flag(ignored),
            );
        }
    }
    trials
}

/// Runs the trials of the config at `config_path` with libtest's command
/// line, and returns the process's exit code (101 when a trial failed).
pub fn run(config_path: &str, registry: Registry) -> ExitCode {
    run_with_args(config_path, registry, Arguments::from_args())
}

/// [`run`] with the given libtest arguments instead of the process's.
pub fn run_with_args(config_path: &str, registry: Registry, mut args: Arguments) -> ExitCode {
    crate::suite::prepare_process();
    let suite = match Suite::load(config_path, registry) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(101);
        }
    };
    let from_env = match requested_threads(
        args.test_threads,
        std::env::var("RUST_TEST_THREADS").ok().as_deref(),
    ) {
        Ok(from_env) => from_env,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(101);
        }
    };
    // Listing opens no device (nor loads any model).
    let cuda = if args.list {
        false
    } else {
        match suite.device() {
            Ok(d) => d.is_cuda(),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(101);
            }
        }
    };
    let (threads, note) = trial_threads(args.test_threads, from_env, cuda);
    args.test_threads = Some(threads);
    if let Some(note) = note {
        if !args.list {
            eprintln!("{note}");
        }
    }
    if let Some(warning) = slow_build_warning(env!("GEVALDI_OPT_LEVEL")) {
        if !args.list {
            eprintln!("{warning}");
        }
    }
    let infos = suite.trials();
    if !args.list {
        for t in &infos {
            if let Some(why) = &t.skipped {
                eprintln!("note: {} is ignored: {why}", t.id);
            }
        }
    }
    let out = Output::for_format(args.format);
    let summaries = Arc::new(Mutex::new(Vec::new()));
    let pair_trials = if std::env::var_os("NEXTEST").is_some() {
        tournament_pair_trials(&suite, &infos, out)
    } else {
        Vec::new()
    };
    let trials: Vec<Trial> = infos
        .into_iter()
        .map(|info| {
            let (suite, summaries) = (Arc::clone(&suite), Arc::clone(&summaries));
            let id = info.id;
            Trial::test(id.to_string(), move || {
                match suite.run_trial(&id, &|_, _| {}) {
                    Ok(report) => match report.failure_message() {
                        None => {
                            let mut summaries = summaries.lock().expect("summaries");
                            summaries.push(report.to_string());
                            summaries.extend(
                                report
                                    .warnings
                                    .iter()
                                    .map(|w| format!("warning: {id}: {w}")),
                            );
                            summaries.extend(
                                report
                                    .outside_support
                                    .iter()
                                    .map(|o| format!("note: {id}: {o}")),
                            );
                            Ok(())
                        }
                        Some(message) => Err(Failed::from(format!("{report}\n{message}"))),
                    },
                    Err(error) => Err(Failed::from(error.to_string())),
                }
            })
            .with_ignored_flag(info.ignored)
        })
        .chain(pair_trials)
        .collect();
    // Every trial, a tournament's pairs under nextest included: the report
    // is written when any of them ran (under nextest, each process runs
    // one, and the rest count as filtered out).
    let count = trials.len() as u64;
    let conclusion = libtest_mimic::run(&args, trials);
    // Printed after libtest's lines rather than between "test x ..." and "ok".
    for line in summaries.lock().expect("summaries").iter() {
        out.line(line);
    }
    if !args.list && conclusion.num_filtered_out < count {
        match suite.write_report() {
            Ok(written) => out.line(&format!("gevaldi report: {}", written.index.display())),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    conclusion.exit_code()
}

/// [`run`] for the config at `relative`, a path relative to the package:
/// under `CARGO_MANIFEST_DIR` (which `cargo test` and `cargo nextest` set
/// for test processes), else under the current directory. What
/// `gevaldi::main!` calls, so that a test binary holds no path of the
/// machine it was built on.
pub fn run_in_package(relative: &str, registry: Registry) -> ExitCode {
    let package = std::env::var_os("CARGO_MANIFEST_DIR").map(std::path::PathBuf::from);
    let root = package.clone().or_else(|| std::env::current_dir().ok());
    let config = match &root {
        Some(dir) => dir.join(relative),
        None => std::path::PathBuf::from(relative),
    };
    if !config.is_file() {
        eprintln!(
            "error: failed to find the config `{relative}` of this gevaldi harness: looked for \
             `{}` ({}). Run it with `cargo test` or `cargo nextest run`, which set \
             CARGO_MANIFEST_DIR to the package's directory, or set CARGO_MANIFEST_DIR yourself.",
            config.display(),
            if package.is_some() {
                "relative to CARGO_MANIFEST_DIR"
            } else {
                "CARGO_MANIFEST_DIR is not set, so relative to the current directory"
            }
        );
        return ExitCode::from(101);
    }
    run(&config.to_string_lossy(), registry)
}

/// The warning for a harness whose gevaldi (and, under the same
/// `[profile.*.package."*"]` override, candle) was compiled at the
/// optimisation level `opt_level` (cargo's `OPT_LEVEL`: `0` to `3`, `s`,
/// `z`), or `None`.
///
/// How many trials run at once, from `--test-threads` and
/// `RUST_TEST_THREADS` (the flag first), and a note when a request is
/// overruled: one at a time unless asked otherwise (a GPU runs one search
/// at a time, and on the CPU candle already spreads every op over all
/// cores, so parallel trials only oversubscribe them), and always one on a
/// CUDA device, whose trials share one candle device: threads sharing it
/// hung this project's tests on an H200 (candle 0.11; README, "On a GPU").
/// nextest runs each trial in a process of its own and is not affected.
fn trial_threads(flag: Option<usize>, env: Option<usize>, cuda: bool) -> (usize, Option<String>) {
    let asked = flag.or(env).unwrap_or(1).max(1);
    if cuda && asked > 1 {
        let note = format!(
            "note: trials on a CUDA device run one at a time ({asked} test threads asked for): \
             threads sharing candle's CUDA device hung; nextest runs each trial in its own \
             process"
        );
        return (1, Some(note));
    }
    (asked, None)
}

/// `RUST_TEST_THREADS` as a count, refusing what libtest refuses: a
/// `--test-threads` of 0, and a `RUST_TEST_THREADS` that is not a positive
/// integer (both were taken for the default).
fn requested_threads(flag: Option<usize>, env: Option<&str>) -> Result<Option<usize>, String> {
    if flag == Some(0) {
        return Err("argument for --test-threads must not be 0".into());
    }
    match env {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(format!(
                "RUST_TEST_THREADS is `{v}`, should be a positive integer"
            )),
        },
    }
}

/// Only level 0 warns: it leaves the search's loops unvectorised and runs
/// it about 15 times slower (the dev profile's default; see the README).
/// Levels 1, 2, 3, `s` and `z` optimise those loops and do not warn. The
/// level is what matters, not `debug_assertions`: the README's fix,
/// `[profile.dev.package."*"] opt-level = 3`, leaves `debug_assertions` on.
fn slow_build_warning(opt_level: &str) -> Option<&'static str> {
    (opt_level == "0").then_some(
        "warning: gevaldi was compiled without optimisations (opt-level 0); the search runs \
         about 15x slower so. Add to Cargo.toml:\n\n[profile.dev.package.\"*\"]\n\
         opt-level = 3\n\n[profile.test.package.\"*\"]\nopt-level = 3\n\nor run with \
         --release.\n",
    )
}

#[cfg(test)]
mod tests {
    use super::{requested_threads, slow_build_warning, trial_threads};

    /// Regression: `--test-threads 0` and `RUST_TEST_THREADS=abc` were
    /// taken for the default; libtest refuses both.
    #[test]
    fn thread_counts_libtest_refuses_are_refused() {
        assert_eq!(requested_threads(None, None), Ok(None));
        assert_eq!(requested_threads(Some(3), Some("2")), Ok(Some(2)));
        assert_eq!(
            requested_threads(Some(0), None),
            Err("argument for --test-threads must not be 0".to_string())
        );
        for bad in ["abc", "0", "", "-1", "2.5"] {
            let e = requested_threads(None, Some(bad)).unwrap_err();
            assert_eq!(
                e,
                format!("RUST_TEST_THREADS is `{bad}`, should be a positive integer")
            );
        }
    }

    #[test]
    fn trials_run_one_at_a_time_unless_asked_and_always_on_cuda() {
        assert_eq!(trial_threads(None, None, false), (1, None));
        assert_eq!(trial_threads(Some(4), None, false), (4, None));
        assert_eq!(trial_threads(None, Some(3), false), (3, None));
        assert_eq!(trial_threads(Some(2), Some(3), false), (2, None));
        assert_eq!(trial_threads(None, None, true), (1, None));
        assert_eq!(trial_threads(Some(1), None, true), (1, None));
        let (n, note) = trial_threads(Some(4), None, true);
        assert_eq!(n, 1);
        let note = note.expect("a request overruled is said");
        assert!(
            note.starts_with("note: trials on a CUDA device run one at a time (4 test threads"),
            "{note}"
        );
        assert_eq!(trial_threads(None, Some(8), true).0, 1);
    }

    #[test]
    fn only_an_unoptimised_build_warns() {
        let warning = slow_build_warning("0").expect("opt-level 0 warns");
        assert!(warning
            .starts_with("warning: gevaldi was compiled without optimisations (opt-level 0)"));
        assert!(warning.contains("[profile.dev.package.\"*\"]\nopt-level = 3"));
        for level in ["1", "2", "3", "s", "z"] {
            assert_eq!(slow_build_warning(level), None, "opt-level {level}");
        }
    }

    #[test]
    fn the_build_script_passes_the_opt_level_on() {
        // This crate's own test build: release (3) or the dev profile (0).
        let level = env!("GEVALDI_OPT_LEVEL");
        assert!(
            ["0", "1", "2", "3", "s", "z"].contains(&level),
            "GEVALDI_OPT_LEVEL = {level:?}"
        );
        if !cfg!(debug_assertions) {
            // The release profile's default level (this repository sets none).
            assert_eq!(level, "3");
        }
    }
}
