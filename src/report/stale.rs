//! Whether a pair's record is of the trial the config declares now: a
//! record keeps its verdict under the settings, thresholds and models it
//! was run with, and `cargo gevaldi report` after an edit of the TOML
//! would show that verdict as the trial's.

use crate::artifact::PairArtifact;
use crate::config::{self, Config, PairDecl};
use crate::snapshot::Settings;

/// What differs between the pair `decl` as `config` declares it and the
/// run its record `pair` holds (`["max_divergence 0.58 -> 0.5"]`), empty
/// where nothing does.
pub(super) fn pair_differences(
    config: &Config,
    decl: &PairDecl,
    pair: &PairArtifact,
) -> Vec<String> {
    let s = &pair.summary;
    let mut out = Vec::new();
    let mut differ = |what: &str, then: String, now: String| {
        if then != now {
            out.push(format!("{what} {then} -> {now}"));
        }
    };
    differ("models", s.models.join(", "), decl.models.join(", "));
    differ("generator", s.generator.clone(), decl.generator.clone());
    if let Ok(c) = config::search_config(&decl.search.or(&config.search)) {
        differ("settings", s.settings.line(), Settings::of(&c).line());
    }
    let t = &decl.thresholds;
    let shown = |v: Option<f64>| v.map_or("~".to_string(), |v| v.to_string());
    let r = &s.thresholds;
    differ(
        "max_divergence",
        shown(r.max_divergence),
        shown(t.max_divergence),
    );
    differ(
        "statistic",
        r.statistic.to_string(),
        t.statistic.to_string(),
    );
    differ("min_lift", shown(r.min_lift), shown(t.min_lift));
    differ(
        "max_set_distance",
        shown(r.max_set_distance),
        shown(t.max_set_distance),
    );
    if let Some(d) = &s.set_distance {
        differ("top_n", d.top_n.to_string(), t.top_n.to_string());
    }
    out
}
