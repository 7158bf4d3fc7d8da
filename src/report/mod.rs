//! The HTML report of a config: `index.html` in the config's artifact
//! directory ([`crate::artifact::artifact_dir`]), built from the latest
//! record of every trial, with its pictures beside it.
//!
//! For each trial, in config order: its verdict and what failed, its
//! settings and thresholds, the figures of its snapshot, and
//!
//! - for a pair: the grid of its most divergent samples before and after
//!   the search (`<pair>.png`, drawn by the trial), and plots over the
//!   ascent steps of the divergence (mean and max), of dz, and of the set
//!   distance of the top-1/3/5 predictions (`plots/*.svg`, paper fig. 2, 3);
//! - for an ensemble: its metrics on the test data and on the MDS dataset,
//!   its regions of uncertainty with example samples
//!   (`ensemble-<name>/regions.png`), and the scatter of the MDS latents by
//!   region over the training data's latents (paper fig. 5);
//! - for a tournament: its ranking with θ ± 1.96 SE, the win rates as a
//!   heatmap in ranking order with the counts, and grids of the closest
//!   pairs' disagreements (`tournament-<name>/<a>-vs-<b>.png`).
//!
//! A trial without a record ("not run yet") or whose run stopped on an
//! error is listed as such; one whose record is of other settings,
//! thresholds, models or weights than the config declares now is listed
//! as stale, with what differs ([`Difference`]), and its verdict is not
//! counted. The page has no script and loads nothing but
//! the pictures beside it, so it opens from disk without a server.

use std::fmt::Write as _;
use std::path::PathBuf;

use crate::artifact::{self, artifact_dir, write_atomic, Record};
use crate::config::{Config, TrialId};
use crate::error::Result;

/// Training points drawn under an ensemble's latent scatter, at most.
pub const BACKGROUND_POINTS: usize = 2000;

/// What [`write`] wrote.
#[derive(Clone, Debug)]
pub struct Written {
    /// The report's `index.html`.
    pub index: PathBuf,
    /// Trials in the config.
    pub trials: usize,
    /// Trials whose latest record passed.
    pub passed: usize,
    /// Trials whose latest record failed or stopped on an error.
    pub failed: usize,
    /// Trials without a record.
    pub missing: usize,
    /// Trials whose record is of other settings, thresholds or models than
    /// the config declares now (an edit of the TOML since the run), or of
    /// weights whose bytes have changed since, each with what differs:
    /// not counted as passed or failed.
    pub stale_records: Vec<(TrialId, Vec<Difference>)>,
}

/// One trial as the report shows it.
enum Entry {
    Record(Box<Record>),
    /// No record, or one that cannot be read: (path, why).
    Missing(PathBuf, String),
}

/// Writes the report of `config` from the records in its artifact
/// directory; plots are redrawn from the records each time.
pub fn write(config: &Config) -> Result<Written> {
    let dir = artifact_dir(&config.path);
    let trials: Vec<(TrialId, PathBuf)> = config
        .trials()
        .into_iter()
        .map(|id| {
            let record = artifact::record_path(&dir, &id);
            (id, record)
        })
        .collect();
    let now = artifact::now();
    let mut written = Written {
        index: dir.join("index.html"),
        trials: trials.len(),
        passed: 0,
        failed: 0,
        missing: 0,
        stale_records: Vec::new(),
    };
    let mut overview = String::new();
    let mut sections = String::new();
    for (id, path) in &trials {
        let name = &id.to_string();
        let skipped = config.skip_reason(id);
        let entry = if let Some(why) = &skipped {
            // A record of an earlier run with the weights is stale now.
            Entry::Missing(path.clone(), why.clone())
        } else if path.exists() {
            match Record::read(path) {
                Ok(r) => Entry::Record(Box::new(r)),
                Err(e) => Entry::Missing(path.clone(), e.to_string()),
            }
        } else {
            Entry::Missing(path.clone(), "not run yet".into())
        };
        // An ignored trial's record is of a run with `--ignored`, or of an
        // earlier run (with other settings, maybe): shown, but not its
        // verdict, and not counted as one.
        let ignored = config.ignored(id);
        // A record of another trial than the config declares now (its
        // threshold edited, a model retrained since the run) keeps the
        // verdict of that run.
        let differences = match &entry {
            Entry::Record(r) => stale::differences(config, id, r),
            Entry::Missing(..) => Vec::new(),
        };
        let is_stale = !ignored && !differences.is_empty();
        let (verdict, class) = match &entry {
            Entry::Record(_) if ignored => ("ignored", "missing"),
            Entry::Record(_) if is_stale => ("stale", "missing"),
            Entry::Record(r) if r.passed() => ("passed", "pass"),
            Entry::Record(r) if matches!(**r, Record::Error(_)) => ("error", "fail"),
            Entry::Record(_) => ("failed", "fail"),
            Entry::Missing(..) if ignored => ("ignored", "missing"),
            Entry::Missing(..) if skipped.is_some() => ("skipped", "missing"),
            Entry::Missing(..) => ("no record", "missing"),
        };
        match class {
            "pass" => written.passed += 1,
            "fail" => written.failed += 1,
            _ if is_stale => written
                .stale_records
                .push((id.clone(), differences.clone())),
            _ => written.missing += 1,
        }
        let anchor = anchor(id);
        let body = match &entry {
            Entry::Record(r) => match r.as_ref() {
                Record::Pair(p) => pair_section(&dir, p, now)?,
                Record::Ensemble(e) => ensemble_section(&dir, e, now)?,
                Record::Tournament(t) => tournament_section(&dir, t, now),
                Record::TournamentPair(p) => format!(
                    "<p>A record of the pair <code>{}</code> of tournament <code>{}</code>, not \
                     of a trial's verdict.</p>",
                    esc(&p.result.name()),
                    esc(&p.tournament)
                ),
                Record::Error(e) => format!(
                    "<p>The trial stopped on an error {}:</p><pre>{}</pre>",
                    age(e.written_at, now),
                    esc(&e.message)
                ),
            },
            Entry::Missing(_, why) if skipped.is_some() => {
                format!("<p>Skipped: {}.</p>", esc(why))
            }
            Entry::Missing(path, why) => format!(
                "<p>No record at <code>{}</code>: {}. Run the trial (<code>cargo test</code> or \
                 <code>cargo gevaldi run</code>) to fill this in.</p>",
                esc(&path.display().to_string()),
                esc(why)
            ),
        };
        let stale_note = format!(
            "its record is of another trial than the config declares now ({}): its verdict \
             is that run's; rerun the trial (`cargo test` or `cargo gevaldi run`)",
            differences
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        );
        let body = if is_stale {
            format!(
                "<p class=\"stale\">Stale: {}.</p>\n{body}",
                esc(&stale_note)
            )
        } else {
            body
        };
        let registered = match &entry {
            Entry::Record(r) => stale::unchecked(r),
            Entry::Missing(..) => Vec::new(),
        };
        let body = if registered.is_empty() {
            body
        } else {
            let names: Vec<String> = registered
                .iter()
                .map(|m| format!("<code>{}</code>", esc(m)))
                .collect();
            format!(
                "<p>The code of {} (registered from Rust) cannot be checked against the run's: \
                 only the files its table names are; rerun the trial after a change of it.</p>\n{body}",
                names.join(", ")
            )
        };
        let body = if ignored {
            format!(
                "<p>Ignored (<code>ignore = true</code>): not run by default, and not counted; \
                 what is below is its last record, if any.</p>\n{body}"
            )
        } else {
            body
        };
        let headline = match &entry {
            Entry::Record(r) if ignored => format!("ignored; its last record: {}", headline(r)),
            Entry::Record(r) if is_stale => format!("{stale_note}; it read: {}", headline(r)),
            Entry::Record(r) => headline(r),
            Entry::Missing(_, why) => why.clone(),
        };
        let _ = writeln!(
            overview,
            "<tr><td><a href=\"#{anchor}\"><code>{}</code></a></td><td class=\"{class}\">{verdict}</td><td>{}</td></tr>",
            esc(name),
            esc(&headline)
        );
        let _ = writeln!(
            sections,
            "<section class=\"trial\" id=\"{anchor}\" data-trial=\"{}\" data-verdict=\"{verdict}\">\n\
             <h2><code>{}</code> <span class=\"badge {class}\">{verdict}</span></h2>\n{body}</section>",
            esc(name),
            esc(name)
        );
    }
    let config_name = esc(&config.path.display().to_string());
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>gevaldi report: {config_name}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n\
         <h1>gevaldi report</h1>\n\
         <p>Config <code>{config_name}</code>: {}, {} passed, {} failed, {} without a record (not run, skipped or ignored){}.</p>\n\
         <table class=\"overview\">\n<tr><th>trial</th><th>verdict</th><th>result</th></tr>\n{overview}</table>\n\
         {sections}\
         <footer>Written by gevaldi {} from the records in <code>{}</code>.</footer>\n</body>\n</html>\n",
        count(written.trials, "trial"),
        written.passed,
        written.failed,
        written.missing,
        if !written.stale_records.is_empty() {
            format!(
                ", {} with a stale record (of other settings than the config's)",
                written.stale_records.len()
            )
        } else {
            String::new()
        },
        env!("CARGO_PKG_VERSION"),
        esc(&dir.display().to_string()),
    );
    write_atomic(&written.index, html.as_bytes())?;
    Ok(written)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;\
padding:0 1em;color:#222}h1{margin-bottom:.2em}section.trial{border-top:2px solid #ddd;\
margin-top:2em;padding-top:.5em}table{border-collapse:collapse;margin:.5em 0}table.heatmap td{min-width:3.5em;text-align:center}\
td.self{background:#999}td,th{border:1px \
solid #ccc;padding:.2em .6em;text-align:left}td.num{text-align:right;font-variant-numeric:\
tabular-nums}.badge{font-size:.6em;padding:.15em .5em;border-radius:.3em;vertical-align:middle}\
.badge.pass,td.pass{background:#dff3df;color:#1a6b1a}.badge.fail,td.fail{background:#f8dcdc;\
color:#9b1c1c}.badge.missing,td.missing{background:#eee;color:#555}figure{margin:1em 0}\
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#555}\
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{width:560px;max-width:100%}\
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}ul.failures li{color:#9b1c1c}ul.warnings li{color:#8a5a00}p.outside-support{color:#8a5a00}p.stale{color:#8a5a00}";

/// `n` and the noun, plural unless n is 1: "1 region", "39 regions".
pub(crate) fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn headline(r: &Record) -> String {
    match r {
        Record::Pair(p) => {
            let s = &p.summary;
            format!(
                "mean {} {:.3} → {:.3} (max {:.3}), baseline {:.3}, lift {}",
                s.settings.divergence,
                s.divergence.before.mean,
                s.divergence.after.mean,
                s.divergence.after.max,
                s.baseline.mean,
                crate::verdict::lift_text(s.lift_value(), 1, s.settings.batch)
            )
        }
        Record::Ensemble(e) => {
            let s = &e.summary;
            format!(
                "vote accuracy {:.1}% on the test data, {:.1}% on {}; {} of uncertainty",
                100.0 * s.test.accuracy,
                100.0 * s.mds.accuracy,
                count(s.samples, "MDS sample"),
                count(s.regions.count, "region")
            )
        }
        Record::Tournament(t) => {
            let o = &t.outcome;
            format!(
                "{} by {}; {} × {}",
                o.ranking_line(t.thresholds.ranking),
                t.thresholds.ranking.name(),
                count(o.searches(), "pair"),
                count(t.summary.samples, "sample")
            )
        }
        Record::TournamentPair(p) => {
            format!("pair {} of tournament {}", p.result.name(), p.tournament)
        }
        Record::Error(e) => e.message.lines().next().unwrap_or_default().to_string(),
    }
}

mod ensemble;
mod html;
mod pair;
mod stale;
pub use stale::Difference;
#[cfg(test)]
mod tests;
mod tournament;

use self::ensemble::ensemble_section;
use self::html::*;
use self::pair::pair_section;
use self::tournament::tournament_section;
