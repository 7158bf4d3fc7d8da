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
//!   region over the training data's latents (paper fig. 5).
//!
//! A trial without a record ("not run yet") or whose run stopped on an
//! error is listed as such. The page has no script and loads nothing but
//! the pictures beside it, so it opens from disk without a server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::artifact::{self, artifact_dir, write_atomic, EnsembleArtifact, PairArtifact, Record};
use crate::config::Config;
use crate::error::Result;
use crate::plot::{lines_svg, scatter_svg, Labels, Scatter, Series};

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
    let mut trials: Vec<(String, PathBuf)> = config
        .pairs
        .iter()
        .map(|p| {
            (
                format!("pair::{}", p.name),
                artifact::pair_record(&dir, &p.name),
            )
        })
        .collect();
    trials.extend(config.ensembles.iter().map(|e| {
        (
            format!("ensemble::{}", e.name),
            artifact::ensemble_record(&dir, &e.name),
        )
    }));
    let now = artifact::now();
    let mut written = Written {
        index: dir.join("index.html"),
        trials: trials.len(),
        passed: 0,
        failed: 0,
        missing: 0,
    };
    let mut overview = String::new();
    let mut sections = String::new();
    for (name, path) in &trials {
        let skipped = config.skip_reason(name);
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
        let (verdict, class) = match &entry {
            Entry::Record(r) if r.passed() => ("passed", "pass"),
            Entry::Record(r) if matches!(**r, Record::Error(_)) => ("error", "fail"),
            Entry::Record(_) => ("failed", "fail"),
            Entry::Missing(..) if skipped.is_some() => ("skipped", "missing"),
            Entry::Missing(..) => ("no record", "missing"),
        };
        match class {
            "pass" => written.passed += 1,
            "fail" => written.failed += 1,
            _ => written.missing += 1,
        }
        let anchor = anchor(name);
        let body = match &entry {
            Entry::Record(r) => match r.as_ref() {
                Record::Pair(p) => pair_section(&dir, p, now)?,
                Record::Ensemble(e) => ensemble_section(&dir, e, now)?,
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
        let headline = match &entry {
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
         <p>Config <code>{config_name}</code>: {} trials, {} passed, {} failed, {} without a record (not run or skipped).</p>\n\
         <table class=\"overview\">\n<tr><th>trial</th><th>verdict</th><th>result</th></tr>\n{overview}</table>\n\
         {sections}\
         <footer>Written by gevaldi {} from the records in <code>{}</code>.</footer>\n</body>\n</html>\n",
        written.trials,
        written.passed,
        written.failed,
        written.missing,
        env!("CARGO_PKG_VERSION"),
        esc(&dir.display().to_string()),
    );
    write_atomic(&written.index, html.as_bytes())?;
    Ok(written)
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;\
padding:0 1em;color:#222}h1{margin-bottom:.2em}section.trial{border-top:2px solid #ddd;\
margin-top:2em;padding-top:.5em}table{border-collapse:collapse;margin:.5em 0}td,th{border:1px \
solid #ccc;padding:.2em .6em;text-align:left}td.num{text-align:right;font-variant-numeric:\
tabular-nums}.badge{font-size:.6em;padding:.15em .5em;border-radius:.3em;vertical-align:middle}\
.badge.pass,td.pass{background:#dff3df;color:#1a6b1a}.badge.fail,td.fail{background:#f8dcdc;\
color:#9b1c1c}.badge.missing,td.missing{background:#eee;color:#555}figure{margin:1em 0}\
figure img{max-width:100%;border:1px solid #ddd}figcaption{font-size:.9em;color:#555}\
.plots{display:flex;flex-wrap:wrap;gap:1em}.plots img{width:560px;max-width:100%}\
pre{background:#f6f6f6;padding:.6em;overflow-x:auto}ul.failures li{color:#9b1c1c}ul.warnings li{color:#8a5a00}";

/// HTML-escapes text for element content and quoted attributes.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative URL path: every byte outside `A-Z a-z 0-9 - . _ ~ /`
/// percent-encoded.
fn url(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An element id for a trial: `pair::a-b` → `pair-a-b`.
fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .replace("--", "-")
}

/// "3 min before this report" and the like.
fn age(written_at: u64, now: u64) -> String {
    let s = now.saturating_sub(written_at);
    match s {
        0..=59 => format!("{s} s before this report"),
        60..=5999 => format!("{} min before this report", s / 60),
        6000..=172_799 => format!("{} h before this report", s / 3600),
        _ => format!("{} days before this report", s / 86400),
    }
}

fn headline(r: &Record) -> String {
    match r {
        Record::Pair(p) => {
            let s = &p.summary;
            format!(
                "mean {} {:.3} → {:.3} (max {:.3}), baseline {:.3}, lift {:.1}x",
                s.settings.divergence,
                s.divergence.before.mean,
                s.divergence.after.mean,
                s.divergence.after.max,
                s.baseline.mean,
                s.lift
            )
        }
        Record::Ensemble(e) => {
            let s = &e.summary;
            format!(
                "vote accuracy {:.1}% on the test data, {:.1}% on {} MDS samples; {} regions of uncertainty",
                100.0 * s.test.accuracy,
                100.0 * s.mds.accuracy,
                s.samples,
                s.regions.count
            )
        }
        Record::Error(e) => e.message.lines().next().unwrap_or_default().to_string(),
    }
}

fn failures(list: &[String]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let items: String = list
        .iter()
        .map(|f| format!("<li><pre>{}</pre></li>", esc(f)))
        .collect();
    format!("<p>What failed:</p><ul class=\"failures\">{items}</ul>")
}

/// An `<img>` of the picture `file` (relative to `dir`), or a note when the
/// trial drew none or the file is gone.
fn picture(dir: &Path, file: Option<&str>, alt: &str, caption: &str) -> String {
    match file {
        Some(f) if dir.join(f).exists() => format!(
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            esc(&url(f)),
            esc(alt),
            esc(caption)
        ),
        Some(f) => format!("<p>The picture <code>{}</code> is missing; rerun the trial.</p>", esc(f)),
        None => "<p>No picture: the generator's samples are not images (expected [B, 1 or 3, H, W]).</p>"
            .into(),
    }
}

/// Writes `svg` to `dir/plots/<file>` and returns its `<img>`.
fn plot(dir: &Path, file: &str, svg: &str, alt: &str) -> Result<String> {
    let rel = format!("plots/{file}");
    write_atomic(&dir.join(&rel), svg.as_bytes())?;
    Ok(format!(
        "<img src=\"{}\" alt=\"{}\">",
        esc(&url(&rel)),
        esc(alt)
    ))
}

fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v}"))
}

fn pair_section(dir: &Path, p: &PairArtifact, now: u64) -> Result<String> {
    let s = &p.summary;
    let d = &s.settings.divergence;
    let name = &s.pair;
    let mut html = String::new();
    let models: Vec<String> = s
        .models
        .iter()
        .map(|m| format!("<code>{}</code>", esc(m)))
        .collect();
    let _ = write!(
        html,
        "<p>{} over <code>{}</code>; {d}, {} lr {} λ {}, batch {}, {} of {} steps, seed {}; {:.1} s, written {}.</p>",
        models.join(" vs "),
        esc(&s.generator),
        esc(&s.settings.optimizer),
        s.settings.lr,
        s.settings.lambda,
        s.settings.batch,
        s.steps_run,
        s.settings.steps,
        s.settings.seed,
        p.seconds,
        age(p.written_at, now)
    );
    html.push_str(&failures(&p.failures));
    if !s.warnings.is_empty() {
        let items: String = s
            .warnings
            .iter()
            .map(|w| format!("<li>{}</li>", esc(&w.message)))
            .collect();
        let _ = write!(
            html,
            "<p>Warnings about the ascent:</p><ul class=\"warnings\">{items}</ul>"
        );
    }
    let row = |label: &str, st: &crate::snapshot::Stats| {
        format!(
            "<tr><td>{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td></tr>",
            esc(label),
            st.mean,
            st.median,
            st.max
        )
    };
    let _ = write!(
        html,
        "<table><tr><th>{d} per sample</th><th>mean</th><th>median</th><th>max</th></tr>{}{}{}",
        row("before the search (z0)", &s.divergence.before),
        row("after the search (z)", &s.divergence.after),
        row("null baseline (fresh prior samples)", &s.baseline),
    );
    if let Some(sd) = &s.set_distance {
        html.push_str(&row(
            &format!("set distance, top-{}, before", sd.top_n),
            &sd.before,
        ));
        html.push_str(&row(
            &format!("set distance, top-{}, after", sd.top_n),
            &sd.after,
        ));
    }
    let _ = write!(
        html,
        "</table><p>Lift (mean after / baseline mean): <b>{:.2}x</b>; mean dz = ‖z − z0‖ / ‖z‖: {:.3}.</p>",
        s.lift, s.mean_dz
    );
    let t = &s.thresholds;
    let _ = write!(
        html,
        "<table><tr><th>threshold</th><th>value</th></tr>\
         <tr><td>max_divergence (on the {} {d} after the search)</td><td class=\"num\">{}</td></tr>\
         <tr><td>min_lift</td><td class=\"num\">{}</td></tr>\
         <tr><td>max_set_distance</td><td class=\"num\">{}</td></tr></table>",
        esc(&t.statistic),
        opt(t.max_divergence),
        opt(t.min_lift),
        opt(t.max_set_distance)
    );
    html.push_str(&picture(
        dir,
        p.grid.as_deref(),
        &format!("{name}: samples before and after the search"),
        &format!(
            "The {} samples with the largest {d} after the search, each as x0 = g(z0) (start) and \
             x = g(z) (end), captioned with every model's top class and probability. Red frames: \
             the models' top classes differ.",
            p.grid_samples.len()
        ),
    ));
    let steps = |f: &dyn Fn(&crate::search::StepRecord) -> f64| -> Vec<(f64, f64)> {
        p.trajectory.iter().map(|r| (r.step as f64, f(r))).collect()
    };
    let stem = url_stem(name);
    let mut plots = Vec::new();
    plots.push(plot(
        dir,
        &format!("{stem}-divergence.svg"),
        &lines_svg(
            Labels {
                title: &format!("{d} over the ascent steps"),
                x: "step",
                y: d,
            },
            &[
                Series {
                    name: "mean".into(),
                    points: steps(&|r| r.mean_divergence),
                },
                Series {
                    name: "max".into(),
                    points: steps(&|r| r.max_divergence),
                },
            ],
        )?,
        &format!("{name}: {d} over the steps"),
    )?);
    plots.push(plot(
        dir,
        &format!("{stem}-dz.svg"),
        &lines_svg(
            Labels {
                title: "dz = ‖z − z0‖ / ‖z‖ over the ascent steps",
                x: "step",
                y: "mean dz",
            },
            &[Series {
                name: "mean dz".into(),
                points: steps(&|r| r.mean_dz),
            }],
        )?,
        &format!("{name}: dz over the steps"),
    )?);
    let set: Vec<Series> = p
        .measure_names
        .iter()
        .enumerate()
        .map(|(m, n)| Series {
            name: n.clone(),
            points: steps(&|r| r.mean_measures.get(m).copied().unwrap_or(f64::NAN)),
        })
        .collect();
    if !set.is_empty() {
        plots.push(plot(
            dir,
            &format!("{stem}-set-distance.svg"),
            &lines_svg(
                Labels {
                    title: "set distance of the top-n predictions over the ascent steps",
                    x: "step",
                    y: "mean set distance",
                },
                &set,
            )?,
            &format!("{name}: set distance over the steps"),
        )?);
    }
    let _ = write!(html, "<div class=\"plots\">{}</div>", plots.join(""));
    Ok(html)
}

/// A file-name stem for a trial's plots: the name with anything but
/// `A-Z a-z 0-9 - _ .` replaced by `_`.
fn url_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn ensemble_section(dir: &Path, e: &EnsembleArtifact, now: u64) -> Result<String> {
    let s = &e.summary;
    let name = &s.ensemble;
    let mut html = String::new();
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| format!("<code>{}</code>", esc(m)))
        .collect();
    let _ = write!(
        html,
        "<p>Members {} over <code>{}</code>; {} MDS samples searched with js, {} lr {} λ {}, \
         batch {}, {} steps, seed {}; {:.1} s, written {}.</p>",
        members.join(", "),
        esc(&s.generator),
        s.samples,
        esc(&s.settings.optimizer),
        s.settings.lr,
        s.settings.lambda,
        s.settings.batch,
        s.settings.steps,
        s.settings.seed,
        e.seconds,
        age(e.written_at, now)
    );
    html.push_str(&failures(&e.failures));
    let row = |label: &str, m: &crate::snapshot::MetricsSummary| {
        format!(
            "<tr><td>{label}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{:.3}</td><td class=\"num\">{:.3}</td></tr>",
            100.0 * m.accuracy,
            m.auc,
            m.f1
        )
    };
    let _ = write!(
        html,
        "<table><tr><th>the vote on</th><th>accuracy</th><th>macro AUC</th><th>macro F1</th></tr>{}{}</table>",
        row("the test data", &s.test),
        row(&format!("the MDS dataset ({} samples)", s.samples), &s.mds)
    );
    let largest: String = s
        .regions
        .largest
        .iter()
        .enumerate()
        .map(|(i, r)| format!("<li>region {}: {}</li>", i + 1, esc(r)))
        .collect();
    let _ = write!(
        html,
        "<p>DBSCAN over the MDS latents: eps {:.3}, {} regions of uncertainty, {} samples in none.</p><ol class=\"regions\">{largest}</ol>",
        s.regions.eps, s.regions.count, s.regions.noise
    );
    let grid = e.grid.as_ref().map(|f| format!("ensemble-{name}/{f}"));
    html.push_str(&picture(
        dir,
        grid.as_deref(),
        &format!("{name}: example samples of the largest regions"),
        "Example MDS samples of the largest regions, one row per region, captioned with the \
         condition (the true label) and the ensemble's vote. Red frames: the vote is wrong.",
    ));
    if let Some(map) = &e.latent_map {
        let classes = map.train_labels.iter().copied().max().map_or(0, |m| m + 1);
        let scatter = Scatter {
            // Every k-th training point, at most BACKGROUND_POINTS: enough
            // to show the classes' shape, and the SVG stays small.
            background: map
                .train
                .iter()
                .zip(&map.train_labels)
                .step_by(map.train.len().div_ceil(BACKGROUND_POINTS).max(1))
                .map(|(p, &l)| (p[0], p.get(1).copied().unwrap_or(0.0), l))
                .collect(),
            classes: (0..classes)
                .map(|c| {
                    e.class_names
                        .get(c)
                        .cloned()
                        .unwrap_or_else(|| c.to_string())
                })
                .collect(),
            groups: e
                .regions
                .iter()
                .enumerate()
                .map(|(r, members)| {
                    (
                        format!("region {}", r + 1),
                        members
                            .iter()
                            .filter_map(|&i| map.mds.get(i))
                            .map(|p| (p[0], p.get(1).copied().unwrap_or(0.0)))
                            .collect(),
                    )
                })
                .collect(),
            ungrouped: {
                let mut in_region = vec![false; map.mds.len()];
                for &i in e.regions.iter().flatten() {
                    if let Some(f) = in_region.get_mut(i) {
                        *f = true;
                    }
                }
                map.mds
                    .iter()
                    .zip(in_region)
                    .filter(|(_, r)| !r)
                    .map(|(p, _)| (p[0], p.get(1).copied().unwrap_or(0.0)))
                    .collect()
            },
        };
        let img = plot(
            dir,
            &format!("ensemble-{}-latents.svg", url_stem(name)),
            &scatter_svg(
                Labels {
                    title: "MDS latents by region over the training data (top two principal axes)",
                    x: "principal axis 1",
                    y: "principal axis 2",
                },
                &scatter,
            )?,
            &format!("{name}: regions of uncertainty in the latent space"),
        )?;
        let _ = write!(
            html,
            "<figure>{img}<figcaption>Faint dots: the training digits' latents (the encoder's means), \
             by class; circles: MDS samples, one colour per region; crosses: MDS samples in no region.\
             </figcaption></figure>"
        );
    }
    Ok(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_and_paths_are_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(url("plots/a b#1.svg"), "plots/a%20b%231.svg");
        assert_eq!(anchor("pair::cnn_a-vs-cnn_b"), "pair-cnn_a-vs-cnn_b");
        assert_eq!(url_stem("a/b c"), "a_b_c");
    }

    #[test]
    fn ages_read_naturally() {
        assert_eq!(age(100, 130), "30 s before this report");
        assert_eq!(age(0, 180), "3 min before this report");
        assert_eq!(age(0, 7200), "2 h before this report");
    }
}
