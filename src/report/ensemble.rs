//! An ensemble's section of the report.

use std::fmt::Write as _;
use std::path::Path;

use super::*;
use crate::artifact::EnsembleArtifact;
use crate::error::Result;
use crate::plot::{scatter_svg, Labels, Scatter};

pub(super) fn ensemble_section(dir: &Path, e: &EnsembleArtifact, now: u64) -> Result<String> {
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
        "<p>Members {} over <code>{}</code>{}; {} searched with js, {} lr {} λ {}, \
         batch {}, {}, seed {}; {:.1} s, written {}.</p>",
        members.join(", "),
        esc(&s.generator),
        esc(&support_text(e.latent_support)),
        super::count(s.samples, "MDS sample"),
        s.settings.optimizer,
        s.settings.lr,
        s.settings.lambda,
        s.settings.batch,
        super::count(s.settings.steps, "step"),
        s.settings.seed,
        e.seconds,
        age(e.written_at, now)
    );
    html.push_str(&failures(&e.failures));
    html.push_str(&outside_support_note(e.outside_support()));
    let row = |label: &str, m: &crate::snapshot::MetricsSummary| {
        format!(
            "<tr><td>{label}</td><td class=\"num\">{:.1}%</td><td class=\"num\">{}</td><td class=\"num\">{:.3}</td></tr>",
            100.0 * m.accuracy,
            m.auc.map_or("undefined".into(), |a| format!("{a:.3}")),
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
        "<p>DBSCAN over the MDS latents: eps {:.3}, {} of uncertainty, {} in none.</p><ol class=\"regions\">{largest}</ol>",
        s.regions.eps,
        super::count(s.regions.count, "region"),
        super::count(s.regions.noise, "sample")
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
