//! A tournament's section of the report: the win rates as a heatmap in
//! ranking order, the ranking with its uncertainty, and grids of the
//! closest pairs' disagreements.

use std::fmt::Write as _;
use std::path::Path;

use super::*;
use crate::artifact::TournamentArtifact;
use crate::search::OutsideSupport;
use crate::tournament::RankingMethod;

pub(super) fn tournament_section(dir: &Path, t: &TournamentArtifact, now: u64) -> String {
    let s = &t.summary;
    let o = &t.outcome;
    let bt = &o.bradley_terry;
    let mut html = String::new();
    let n = o.models.len();
    let _ = write!(
        html,
        "<p>{n} models over <code>{}</code>{}: {} × {}, searched with {}, \
         {} lr {} λ {}, {}, seed {}; {:.1} s, written {}.</p>",
        esc(&s.generator),
        esc(&support_text(t.latent_support)),
        pairs_searched(o),
        super::count(s.samples, "MDS sample"),
        s.settings.divergence,
        s.settings.optimizer,
        s.settings.lr,
        s.settings.lambda,
        super::count(s.settings.steps, "step"),
        s.settings.seed,
        t.seconds,
        age(t.written_at, now)
    );
    html.push_str(&failures(&t.failures));
    html.push_str(&outside_support_note(
        t.outside_support.clone().and_then(OutsideSupport::noted),
    ));
    // The ranking with θ ± 1.96 SE, drawn as bars on a common scale.
    let lo = (0..n)
        .map(|i| bt.theta[i] - 1.96 * bt.se[i])
        .fold(f64::INFINITY, f64::min);
    let hi = (0..n)
        .map(|i| bt.theta[i] + 1.96 * bt.se[i])
        .fold(f64::NEG_INFINITY, f64::max);
    let span = (hi - lo).max(1e-9);
    let x = |v: f64| 10.0 + 280.0 * (v - lo) / span;
    let mut rows = String::new();
    // Places, not positions in the order: models whose scores are equal
    // within rounding share theirs (`2–3`), as the verdict and the
    // headline read them.
    let places = |i: usize, method| o.places(i, method).to_string();
    for &i in &bt.order {
        let (th, se) = (bt.theta[i], bt.se[i]);
        let bar = format!(
            "<svg width=\"300\" height=\"14\" role=\"img\" aria-label=\"θ {th:.2} ± {:.2}\">\
             <line x1=\"{:.1}\" x2=\"{:.1}\" y1=\"7\" y2=\"7\" stroke=\"#555\" stroke-width=\"2\"/>\
             <circle cx=\"{:.1}\" cy=\"7\" r=\"4\" fill=\"#1a4f9b\"/></svg>",
            1.96 * se,
            x(th - 1.96 * se),
            x(th + 1.96 * se),
            x(th)
        );
        let test = o
            .test_accuracy
            .as_ref()
            .map_or("–".into(), |a| format!("{:.2}%", 100.0 * a[i]));
        let _ = write!(
            rows,
            "<tr><td class=\"num\">{}</td><td><code>{}</code></td><td class=\"num\">{:+.2} ± {:.2}</td>\
             <td>{bar}</td><td class=\"num\">#{}</td><td class=\"num\">{:.3}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{:.1}%</td><td class=\"num\">{}</td></tr>",
            places(i, RankingMethod::BradleyTerry),
            esc(&o.models[i]),
            th,
            1.96 * se,
            places(i, RankingMethod::Mad),
            o.power.scores[i],
            test,
            100.0 * o.mds_accuracy[i],
            o.wins.total_wins(i)
        );
    }
    let srcc = |v: Option<f64>| match v {
        Some(s) => format!("{s:.3}"),
        None if o.test_accuracy.is_none() => "none (no test_data given)".into(),
        None => "undefined".into(),
    };
    let _ = write!(
        html,
        "<table class=\"ranking\"><caption>Bradley–Terry ranking, θ ± 1.96 SE (Σθ = 0{}); SRCC with \
         test accuracy: MAD {}, Bradley–Terry {}</caption><tr><th>#</th><th>model</th><th>θ ± 1.96 SE</th>\
         <th></th><th>MAD rank</th><th>MAD score</th><th>test accuracy</th><th>accuracy on its MDS sets</th>\
         <th>wins</th></tr>{rows}</table>",
        if bt.pseudo_wins > 0.0 {
            format!(", {} pseudo-wins per ordered pair: the MLE does not exist", bt.pseudo_wins)
        } else {
            String::new()
        },
        srcc(o.srcc_power),
        srcc(o.srcc_bradley_terry)
    );
    // The heatmap: the row model's share of the samples decided between
    // the two, in ranking order, with the counts.
    let mut heat = String::from("<tr><th>row beats column</th>");
    for &j in &bt.order {
        let _ = write!(heat, "<th><code>{}</code></th>", esc(&o.models[j]));
    }
    heat.push_str("</tr>");
    for &i in &bt.order {
        let _ = write!(heat, "<tr><th><code>{}</code></th>", esc(&o.models[i]));
        for &j in &bt.order {
            if i == j {
                heat.push_str("<td class=\"self\"></td>");
                continue;
            }
            let (w, l) = (o.wins.get(i, j), o.wins.get(j, i));
            match o.wins.win_rate(i, j) {
                Some(r) => {
                    // Red (0) through white (0.5) to blue (1).
                    let (red, blue) = if r < 0.5 {
                        (255, (255.0 * 2.0 * r) as u8)
                    } else {
                        ((255.0 * 2.0 * (1.0 - r)) as u8, 255)
                    };
                    let green = red.min(blue);
                    let _ = write!(
                        heat,
                        "<td class=\"num\" style=\"background:rgb({red},{green},{blue})\" \
                         title=\"{} vs {}\">{:.0}%<br><small>{w}:{l}</small></td>",
                        esc(&o.models[i]),
                        esc(&o.models[j]),
                        100.0 * r
                    );
                }
                None => heat.push_str(
                    "<td class=\"num\" style=\"background:#ddd\">–<br><small>0:0</small></td>",
                ),
            }
        }
        heat.push_str("</tr>");
    }
    let _ = write!(
        html,
        "<table class=\"heatmap\" data-models=\"{n}\"><caption>Win rates where exactly one model \
         was right (both orders of each pair; one under a symmetric divergence), rows and columns in ranking order; counts \
         wins:losses</caption>{heat}</table>"
    );
    let folder = format!("tournament-{}", s.tournament);
    for (pair, file) in &t.grids {
        let rel = format!("{folder}/{file}");
        html.push_str(&picture(
            dir,
            Some(&rel),
            &format!("disagreements of {pair}"),
            &format!(
                "{pair}, one of the closest pairs: the samples of both orders (one under a \
                 symmetric divergence) where the two disagree; the condition, each model's top class and confidence; red frame: \
                 the higher-ranked model is wrong"
            ),
        ));
    }
    html
}

/// The pairs searched, as the section's first line counts them: every
/// ordered pair, or under a divergence symmetric in its two models one
/// search for both orders of each (whose samples count once).
fn pairs_searched(o: &crate::tournament::TournamentOutcome) -> String {
    let searches = o.searches();
    match o.pairs.first() {
        Some(p) if searches < o.pairs.len() => format!(
            "{} (one for both orders of each: {} is symmetric in the two models)",
            super::count(searches, "pair"),
            p.divergence.kind()
        ),
        _ => super::count(searches, "ordered pair"),
    }
}
