//! `cargo gevaldi`: runs a `gevaldi.toml` outside `cargo test`, with a
//! progress bar per trial and a summary table, and writes the HTML report.
//!
//! ```text
//! cargo gevaldi run [CONFIG] [--filter TEXT]...   run the trials, write the report
//! cargo gevaldi report [CONFIG]                   rebuild the report from the records
//! cargo gevaldi list [CONFIG]                     list the trials
//! cargo gevaldi init [DIR]                        write a starter suite into DIR (default .)
//! ```
//!
//! CONFIG defaults to `./gevaldi.toml` when there is one, else to the
//! built-in MNIST suite, which this binary carries and unpacks into the
//! user's cache directory (see [`builtin::cache_dir`]). Exit status: 0 when
//! every trial run passed, 1 when one failed, 2 for a usage or config
//! mistake.

mod builtin;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use gevaldi::config::{Config, TrialId};
use gevaldi::harness::Registry;
use gevaldi::suite::Suite;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

gevaldi::__gevaldi_allocator!();

const HELP: &str = "\
cargo-gevaldi: run gevaldi suites outside cargo test

Usage:
  cargo gevaldi run [CONFIG] [--filter TEXT]...   run the trials and write the HTML report
  cargo gevaldi report [CONFIG]                   rebuild the HTML report from the last records
  cargo gevaldi list [CONFIG]                     list the trials
  cargo gevaldi init [DIR]                        write a starter suite into DIR (default: .)

CONFIG is a gevaldi.toml. Without one: ./gevaldi.toml when there is one,
else a gevaldi.toml in a folder above, up to the package's root (the nearest
folder with a Cargo.toml), else the built-in MNIST suite, unpacked into
<cache>/gevaldi/<version>/mnist (<cache>: $XDG_CACHE_HOME, else ~/.cache;
~/Library/Caches on macOS, %LOCALAPPDATA% on Windows).

`init` writes the built-in MNIST suite as a starting point: gevaldi.toml, the
weights beside it, data/ and snapshots/. It overwrites nothing: when one of
these files exists it names it and stops.

Options:
  --filter TEXT   run only trials whose name contains TEXT (repeatable)
  -h, --help      print this help
  -V, --version   print the version

Models registered from Rust (tables without `arch`) are built by the test
target of `gevaldi::main!`: `list` and `report` show their trials, `run`
skips them (run them with `cargo test`) and runs the others.
The report is written to <target>/gevaldi/<config dir>/<config stem>/index.html,
where <target> is $CARGO_TARGET_DIR, else the target folder this binary was
built in, else (an installed cargo-gevaldi) the target folder of the config's
package as `cargo metadata` reports it, else ./target.
Exit status: 0 when every trial run passed, 1 when one failed, 2 for a
mistake in the command line or the config.";

#[derive(Debug, PartialEq)]
enum Command {
    Run {
        config: Option<PathBuf>,
        filters: Vec<String>,
    },
    Report {
        config: Option<PathBuf>,
    },
    List {
        config: Option<PathBuf>,
    },
    Init {
        dir: Option<PathBuf>,
    },
    Help,
    Version,
}

fn parse(args: impl IntoIterator<Item = std::ffi::OsString>) -> anyhow::Result<Command> {
    use lexopt::prelude::*;
    let mut args: Vec<std::ffi::OsString> = args.into_iter().collect();
    // `cargo gevaldi x` runs `cargo-gevaldi gevaldi x`.
    if args.first().is_some_and(|a| a == "gevaldi") {
        args.remove(0);
    }
    let mut parser = lexopt::Parser::from_args(args);
    let mut command: Option<String> = None;
    let mut config: Option<PathBuf> = None;
    let mut filters = Vec::new();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => return Ok(Command::Help),
            Short('V') | Long("version") => return Ok(Command::Version),
            Long("filter") => filters.push(parser.value()?.string()?),
            Value(v) if command.is_none() => command = Some(v.string()?),
            Value(v) if config.is_none() => config = Some(PathBuf::from(v)),
            Value(v) => bail!(
                "unexpected argument `{}`: one CONFIG at most (see --help)",
                v.to_string_lossy()
            ),
            other => return Err(other.unexpected().into()),
        }
    }
    match command.as_deref() {
        Some("run") => Ok(Command::Run { config, filters }),
        Some("report") | Some("list") | Some("init") if !filters.is_empty() => {
            bail!("--filter applies to `run` only")
        }
        Some("report") => Ok(Command::Report { config }),
        Some("list") => Ok(Command::List { config }),
        Some("init") => Ok(Command::Init { dir: config }),
        None => Ok(Command::Help),
        Some(other) => {
            bail!("unknown command `{other}`: expected run, report, list or init (see --help)")
        }
    }
}

/// The config to use: the one given, else `gevaldi.toml` here or in the
/// folders above up to the package's root (the nearest one with a
/// `Cargo.toml`, as cargo finds its manifest), else the built-in MNIST
/// suite (unpacked).
fn resolve(config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(c) = config {
        return Ok(c);
    }
    let local = PathBuf::from("gevaldi.toml");
    if local.is_file() {
        return Ok(local);
    }
    if let Ok(here) = std::env::current_dir() {
        for dir in here.ancestors() {
            let found = dir.join("gevaldi.toml");
            if dir != here && found.is_file() {
                eprintln!("using {} (no gevaldi.toml here)", found.display());
                return Ok(found);
            }
            if dir.join("Cargo.toml").is_file() {
                break;
            }
        }
    }
    let builtin = builtin::unpack()?;
    eprintln!(
        "no gevaldi.toml here (nor above, up to the package's root): running the built-in MNIST \
         suite {} (`cargo gevaldi init` writes a copy here to edit)",
        builtin.display()
    );
    Ok(builtin)
}

/// Unless `CARGO_TARGET_DIR` is set or this binary lies in a cargo target
/// folder (one with cargo's `CACHEDIR.TAG`), sets `CARGO_TARGET_DIR` to
/// the target folder of the package that holds `config`, as cargo reports
/// it ([`cargo_target_dir`]), else to `./target`: an installed `cargo
/// gevaldi` writes its records and report where `cargo test` writes the
/// package's, rather than beside itself or into the folder it was run in.
fn choose_target_dir(config: &Path) {
    if std::env::var_os("CARGO_TARGET_DIR").is_some() {
        return;
    }
    let built_in_target = gevaldi::artifact::target_dir()
        .join("CACHEDIR.TAG")
        .is_file();
    if built_in_target {
        return;
    }
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    let config = cwd.join(config);
    let dir = config.parent().unwrap_or(&cwd);
    let target = cargo_target_dir(dir).unwrap_or_else(|| cwd.join("target"));
    std::env::set_var("CARGO_TARGET_DIR", target);
}

/// The target folder cargo builds the package that holds `dir` into, as
/// `cargo metadata` reports it (the workspace's root, a `build.target-dir`
/// of a cargo config file). `None` outside any package (no `Cargo.toml` at
/// or above `dir`), and where cargo cannot tell, which is said on stderr.
fn cargo_target_dir(dir: &Path) -> Option<PathBuf> {
    dir.ancestors().find(|d| d.join("Cargo.toml").is_file())?;
    // `CARGO` is the cargo that ran this subcommand.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let asked = std::process::Command::new(&cargo)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| e.to_string())
        .and_then(|out| {
            if !out.status.success() {
                let why = String::from_utf8_lossy(&out.stderr);
                return Err(why.trim().to_string());
            }
            let metadata: serde_json::Value =
                serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
            metadata["target_directory"]
                .as_str()
                .map(PathBuf::from)
                .ok_or_else(|| "no `target_directory` in its answer".to_string())
        });
    match asked {
        Ok(target) => Some(target),
        Err(why) => {
            eprintln!(
                "warning: failed to ask `{} metadata` for the target folder of the package \
                 in {} ({why}): using ./target",
                Path::new(&cargo).display(),
                dir.display()
            );
            None
        }
    }
}

fn main() -> ExitCode {
    gevaldi::prepare_process();
    match parse(std::env::args_os().skip(1)) {
        Err(e) => {
            eprintln!("error: {e}\n\nRun `cargo gevaldi --help` for usage.");
            ExitCode::from(2)
        }
        Ok(Command::Help) => {
            println!("{HELP}");
            ExitCode::SUCCESS
        }
        Ok(Command::Version) => {
            println!("cargo-gevaldi {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(command) => match execute(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Loads the config. Models registered from Rust are not at hand here: a
/// trial that needs one is listed, reported, and skipped by `run`.
fn load(config: Option<PathBuf>) -> anyhow::Result<Suite> {
    let path = resolve(config)?;
    choose_target_dir(&path);
    Ok(Suite::load(&path, Registry::without_rust_models())?)
}

/// The models of the trial `id` that are registered from Rust, as
/// "classifier `x`".
fn rust_models(config: &Config, id: &TrialId) -> Vec<String> {
    let Some((generator, classifiers)) = config.models(id) else {
        return Vec::new();
    };
    std::iter::once(generator)
        .chain(classifiers)
        .filter(|d| d.builtin.is_none())
        .map(|d| format!("{} `{}`", d.table.kind(), d.name))
        .collect()
}

/// Each of `items` once, in their first order (a model that seven trials
/// use was listed seven times).
fn each_once<'a>(items: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item.as_str()) {
            out.push(item);
        }
    }
    out
}

/// Why `run` skips a trial with models registered from Rust.
fn rust_skip_reason(models: &[String]) -> String {
    format!(
        "skipped: {} {} registered from Rust, so this trial runs under `cargo test` (the test \
         target of `gevaldi::main!`)",
        models.join(" and "),
        if models.len() == 1 { "is" } else { "are" }
    )
}

fn execute(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::List { config } => {
            let suite = load(config)?;
            for t in suite.trials() {
                let rust = rust_models(suite.config(), &t.id);
                let note = if t.ignored {
                    " (ignored)"
                } else if !rust.is_empty() {
                    " (registered from Rust: runs under cargo test)"
                } else {
                    ""
                };
                println!("{}{note}", t.id);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Report { config } => {
            let suite = load(config)?;
            let w = suite.write_report().context("failed to write the report")?;
            println!(
                "{} trial{}: {} passed, {} failed, {} without a record",
                w.trials,
                if w.trials == 1 { "" } else { "s" },
                w.passed,
                w.failed,
                w.missing
            );
            if !w.stale_records.is_empty() {
                println!(
                    "{} of the trials have a stale record, of other settings, thresholds, \
                     models or weights than the config declares now: their verdicts are not \
                     counted; rerun them",
                    w.stale_records.len()
                );
                for (id, differences) in &w.stale_records {
                    let differences: Vec<String> =
                        differences.iter().map(ToString::to_string).collect();
                    println!("  {id}: {}", differences.join("; "));
                }
            }
            println!("report: {}", w.index.display());
            if w.missing > 0 {
                // A run under another CARGO_TARGET_DIR (or build.target-dir)
                // wrote its records elsewhere: say where these were sought.
                println!(
                    "records sought in {}: {} of the trials had none there (not run yet, \
                     skipped, ignored, or run with another target folder)",
                    w.index.parent().unwrap_or(Path::new(".")).display(),
                    w.missing
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Run { config, filters } => run(load(config)?, &filters),
        Command::Init { dir } => {
            let dir = dir.unwrap_or_else(|| PathBuf::from("."));
            let written = builtin::init(&dir)?;
            let shown = if dir == Path::new(".") {
                String::new()
            } else {
                format!("{}/", dir.display())
            };
            println!(
                "wrote a starter gevaldi suite ({} files) into {}: {shown}gevaldi.toml, its \
                 weights, {shown}data/ and {shown}snapshots/",
                written.len(),
                if shown.is_empty() {
                    "this folder".to_string()
                } else {
                    dir.display().to_string()
                }
            );
            let cd = if shown.is_empty() {
                String::new()
            } else {
                format!("cd {} && ", dir.display())
            };
            println!(
                "next: `{cd}cargo gevaldi run` runs it; edit gevaldi.toml to test your models"
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Help | Command::Version => unreachable!("handled in main"),
    }
}

fn run(suite: Suite, filters: &[String]) -> anyhow::Result<ExitCode> {
    let trials: Vec<_> = suite
        .trials()
        .into_iter()
        .filter(|t| {
            let name = t.id.to_string();
            filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
        })
        .collect();
    if trials.is_empty() {
        bail!("no trial matches the filters {filters:?}");
    }
    let needs_rust: Vec<Vec<String>> = trials
        .iter()
        .map(|t| rust_models(suite.config(), &t.id))
        .collect();
    if needs_rust.iter().all(|m| !m.is_empty()) {
        let models = each_once(needs_rust.iter().flatten());
        bail!(
            "every trial selected uses models registered from Rust ({}), which only the test \
             target of `gevaldi::main!` builds: run them with `cargo test`",
            models.join(", ")
        );
    }
    eprintln!(
        "running {} trial{} of {} on {:?}; records under {}",
        trials.len(),
        if trials.len() == 1 { "" } else { "s" },
        suite.config().path.display(),
        suite.device()?,
        suite.artifact_dir().display()
    );
    let interactive = std::io::stderr().is_terminal();
    let mut rows: Vec<Row> = Vec::new();
    for (t, rust) in trials.iter().zip(&needs_rust) {
        if t.ignored || !rust.is_empty() {
            let why = if rust.is_empty() {
                t.skipped
                    .clone()
                    .unwrap_or_else(|| "ignored (ignore = true)".into())
            } else {
                rust_skip_reason(rust)
            };
            if !t.ignored {
                eprintln!("skip   {}: {why}", t.id);
            }
            rows.push(Row {
                id: t.id.clone(),
                verdict: Verdict::Ignored,
                seconds: 0.0,
                result: why,
                warnings: Vec::new(),
                notes: Vec::new(),
            });
            continue;
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if !interactive {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        bar.set_style(
            ProgressStyle::with_template("{prefix:.bold} [{bar:30}] {pos}/{len} steps, {elapsed}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(t.id.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        let outcome = suite.run_trial(&t.id, &|done, total| {
            if bar.length() != Some(total) {
                bar.set_length(total);
            }
            bar.set_position(done);
        });
        bar.finish_and_clear();
        let (row, message) = match outcome {
            Ok(report) => (
                Row {
                    id: t.id.clone(),
                    verdict: if report.passed() {
                        Verdict::Passed
                    } else {
                        Verdict::Failed
                    },
                    seconds: report.seconds,
                    result: report.result(),
                    warnings: report.warnings.iter().map(ToString::to_string).collect(),
                    notes: report
                        .outside_support
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                },
                report.failure_message(),
            ),
            Err(error) => {
                let message = error.to_string();
                (
                    Row {
                        id: t.id.clone(),
                        verdict: Verdict::Failed,
                        seconds: error.seconds,
                        // The first line; the whole message is printed below.
                        result: message.lines().next().unwrap_or_default().to_string(),
                        warnings: Vec::new(),
                        notes: Vec::new(),
                    },
                    Some(message),
                )
            }
        };
        eprintln!(
            "{} {} ({:.1} s)",
            if row.verdict == Verdict::Failed {
                "FAILED"
            } else {
                "ok    "
            },
            row.id,
            row.seconds
        );
        if let Some(m) = &message {
            eprintln!("{}", indent(m));
        }
        rows.push(row);
    }
    print_table(&rows);
    for row in &rows {
        for w in &row.warnings {
            println!("warning: {}: {w}", row.id);
        }
        for n in &row.notes {
            println!("note: {}: {n}", row.id);
        }
    }
    let report = suite.write_report().context("failed to write the report")?;
    println!("report: {}", report.index.display());
    let failed = rows.iter().filter(|r| r.verdict == Verdict::Failed).count();
    if failed > 0 {
        let s = if rows.len() == 1 { "" } else { "s" };
        println!("{failed} of {} trial{s} failed", rows.len());
        Ok(ExitCode::from(1))
    } else {
        Ok(ExitCode::SUCCESS)
    }
}

/// A trial's line in the summary table.
struct Row {
    id: TrialId,
    verdict: Verdict,
    seconds: f64,
    /// Its figures, or why it failed or was skipped.
    result: String,
    warnings: Vec<String>,
    /// What a passing trial should still say (latents left outside the
    /// generator's support).
    notes: Vec<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Passed,
    Failed,
    Ignored,
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The summary table: trial, verdict, seconds, result.
fn print_table(rows: &[Row]) {
    let names: Vec<String> = rows.iter().map(|r| r.id.to_string()).collect();
    let width = names.iter().map(String::len).max().unwrap_or(5).max(5);
    println!();
    println!(
        "{:<width$}  {:<7}  {:>8}  result",
        "trial", "verdict", "seconds"
    );
    for (row, name) in rows.iter().zip(&names) {
        let verdict = match row.verdict {
            Verdict::Ignored => "ignored",
            Verdict::Passed => "passed",
            Verdict::Failed => "FAILED",
        };
        println!(
            "{name:<width$}  {verdict:<7}  {:>8.1}  {}",
            row.seconds, row.result
        );
    }
    println!();
}

#[cfg(test)]
mod tests {

    /// Regression: the models registered from Rust were listed once per
    /// trial that uses them.
    #[test]
    fn models_are_listed_once_each() {
        let names: Vec<String> = ["classifier `a`", "classifier `b`", "classifier `a`"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            super::each_once(&names),
            ["classifier `a`", "classifier `b`"]
        );
    }
    use super::*;

    fn args(list: &[&str]) -> Vec<std::ffi::OsString> {
        list.iter().map(Into::into).collect()
    }

    #[test]
    fn cargo_passes_the_subcommand_name_first() {
        let direct = parse(args(&["run", "a.toml"])).unwrap();
        let via_cargo = parse(args(&["gevaldi", "run", "a.toml"])).unwrap();
        assert_eq!(direct, via_cargo);
        assert_eq!(
            direct,
            Command::Run {
                config: Some("a.toml".into()),
                filters: vec![]
            }
        );
    }

    #[test]
    fn filters_repeat_and_mistakes_are_named() {
        assert_eq!(
            parse(args(&["run", "--filter", "a", "--filter=b"])).unwrap(),
            Command::Run {
                config: None,
                filters: vec!["a".into(), "b".into()]
            }
        );
        let e = parse(args(&["rnu"])).unwrap_err().to_string();
        assert!(e.contains("unknown command `rnu`"), "{e}");
        let e = parse(args(&["run", "a", "b"])).unwrap_err().to_string();
        assert!(e.contains("unexpected argument `b`"), "{e}");
        let e = parse(args(&["run", "--bogus"])).unwrap_err().to_string();
        assert!(e.contains("--bogus"), "{e}");
        assert_eq!(parse(args(&[])).unwrap(), Command::Help);
    }
}
