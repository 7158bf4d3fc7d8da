//! How a snapshot's `warnings` line is compared: each ascent warning is
//! decided by figures of the search (the mean objective and divergence at
//! the end, the share of samples that ran away), which another machine's
//! rounding moves as much as it moves the `search.*` lines; so a warning
//! whose figure sat within [`Tolerance::SEARCH`] of its threshold may come
//! or go between machines without the snapshot changing.

use crate::search::{AscentWarningKind, WarningFigures, DIVERGENCE_FALL};

use super::Tolerance;

/// The snapshot line's key.
pub(super) const KEY: &str = "warnings";

/// The kinds of warning whose figure this search left within
/// [`Tolerance::SEARCH`] of its threshold, raised or not: where another
/// machine may have decided the other way.
///
/// - `objective fell`: the mean objective at the end within the tolerance
///   of its value at step 0;
/// - `divergence fell`: the mean divergence at the end within the
///   tolerance of 1 − [`DIVERGENCE_FALL`] of its mean at z0, or below it
///   while `objective fell` is itself unsettled (that warning, when
///   raised, stands in for this one);
/// - `z ran away`: the share of samples that ran away within the
///   tolerance of one half.
pub fn unsettled(figures: &WarningFigures) -> Vec<AscentWarningKind> {
    let near = |value: f64, threshold: f64| Tolerance::SEARCH.holds(value, threshold);
    let mut out = Vec::new();
    let objective = figures
        .objective
        .is_some_and(|(start, end)| near(end, start));
    if objective {
        out.push(AscentWarningKind::ObjectiveFell);
    }
    if let Some((start, end)) = figures.divergence {
        let threshold = (1.0 - DIVERGENCE_FALL) * start;
        if near(end, threshold) || (objective && end < threshold) {
            out.push(AscentWarningKind::DivergenceFell);
        }
    }
    let (ran_away, batch) = figures.ran_away;
    if batch > 0 && near(ran_away as f64 / batch as f64, 0.5) {
        out.push(AscentWarningKind::RanAway);
    }
    out
}

/// The names on a `warnings` line (`none`: no names).
fn names(line: &str) -> Vec<&str> {
    if line == "none" {
        Vec::new()
    } else {
        line.split(", ").collect()
    }
}

/// Whether two `warnings` lines differ only by warnings in `unsettled`.
pub(super) fn within(stored: &str, found: &str, unsettled: &[AscentWarningKind]) -> bool {
    let (stored, found) = (names(stored), names(found));
    let unsettled_name = |name: &str| unsettled.iter().any(|k| k.name() == name);
    let differing = stored
        .iter()
        .filter(|n| !found.contains(n))
        .chain(found.iter().filter(|n| !stored.contains(n)));
    differing.into_iter().all(|n| unsettled_name(n))
}
