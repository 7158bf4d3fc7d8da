//! A pair's section of the report.

use std::fmt::Write as _;
use std::path::Path;

use super::*;
use crate::artifact::PairArtifact;
use crate::error::Result;
use crate::plot::{lines_svg, Labels, Series};

pub(super) fn pair_section(dir: &Path, p: &PairArtifact, now: u64) -> Result<String> {
    let s = &p.summary;
    let d = s.settings.divergence.name();
    let name = &s.pair;
    let mut html = String::new();
    let models: Vec<String> = s
        .models
        .iter()
        .map(|m| format!("<code>{}</code>", esc(m)))
        .collect();
    let support = support_text(p.latent_support);
    let _ = write!(
        html,
        "<p>{} over <code>{}</code>{}; {d}, {} lr {} λ {}, batch {}, {} of {}, seed {}; {:.1} s, written {}.</p>",
        models.join(" vs "),
        esc(&s.generator),
        esc(&support),
        s.settings.optimizer,
        s.settings.lr,
        s.settings.lambda,
        s.settings.batch,
        s.steps_run,
        super::count(s.settings.steps, "step"),
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
    html.push_str(&outside_support_note(p.outside_support()));
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
        "</table><p>Lift (mean after / baseline mean): <b>{}</b>; mean dz = ‖z − z0‖ / ‖z‖: {:.3}.</p>",
        crate::verdict::lift_text(s.lift_value(), 2, s.settings.batch),
        s.mean_dz
    );
    let t = &s.thresholds;
    let _ = write!(
        html,
        "<table><tr><th>threshold</th><th>value</th></tr>\
         <tr><td>max_divergence (on the {} {d} after the search)</td><td class=\"num\">{}</td></tr>\
         <tr><td>min_lift</td><td class=\"num\">{}</td></tr>\
         <tr><td>max_set_distance</td><td class=\"num\">{}</td></tr></table>",
        t.statistic,
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
