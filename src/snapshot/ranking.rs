//! How a tournament snapshot's `search.ranking` line is compared: its
//! tiers are split where two neighbours' strengths differ by
//! [`TIER_SE`] standard errors of their difference, a figure that one
//! sample decided the other way on another machine moved by up to 0.36
//! (measured: 2.96 on gevaldi's engine, 2.75 on the generic path); so a
//! split whose figure this run left within [`Tolerance::SEARCH`] of
//! [`TIER_SE`] may be there or not without the snapshot changing. An
//! order that reverses never passes.

use serde::{Deserialize, Serialize};

use super::{Tolerance, TIER_SE};

/// The snapshot line's key.
pub(super) const KEY: &str = "search.ranking";

/// Two neighbours of a run's Bradley–Terry order, the stronger first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TierBoundary {
    /// The stronger.
    pub upper: String,
    /// The weaker.
    pub lower: String,
    /// Whether the ranking line splits them into two tiers (their
    /// strengths at least [`TIER_SE`] standard errors apart).
    pub split: bool,
    /// Whether that figure is within [`Tolerance::SEARCH`] of [`TIER_SE`]:
    /// another machine may have split them the other way.
    pub unsettled: bool,
}

impl TierBoundary {
    /// The boundary between `upper` and `lower`, whose strengths differ
    /// by `difference` with standard error `se` (split as [`super::tiers`]
    /// splits them).
    pub fn new(upper: &str, lower: &str, difference: f64, se: f64) -> Self {
        // The rule `tiers` writes the line by (`difference < TIER_SE · se`:
        // one tier), a NaN splitting them.
        let close = difference < TIER_SE * se;
        TierBoundary {
            upper: upper.to_string(),
            lower: lower.to_string(),
            split: !close,
            unsettled: Tolerance::SEARCH.holds(difference / se, TIER_SE),
        }
    }
}

/// Each model's tier on a ranking line (`a > {b, c}`: a 0, b and c 1).
fn tiers(line: &str) -> Vec<(&str, usize)> {
    line.split(" > ")
        .enumerate()
        .flat_map(|(t, group)| {
            let names = group.trim_start_matches('{').trim_end_matches('}');
            names.split(", ").map(move |name| (name, t))
        })
        .collect()
}

/// Whether the stored ranking line agrees with this run's order
/// (`boundaries`, from the strongest down) but for splits this run left
/// unsettled: for two models, this run's stronger `a` and weaker `b`, the
/// stored line must put `a` above `b` where a settled split lies between
/// them, may put them in one tier or `a` above where only unsettled
/// boundaries decide, and must put them in one tier otherwise.
pub(super) fn within(stored: &str, boundaries: &[TierBoundary]) -> bool {
    let stored = tiers(stored);
    let tier = |name: &str| stored.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
    let Some(first) = boundaries.first() else {
        return false;
    };
    let order: Vec<&str> = std::iter::once(first.upper.as_str())
        .chain(boundaries.iter().map(|b| b.lower.as_str()))
        .collect();
    if stored.len() != order.len() {
        return false;
    }
    let Some(tiers) = order
        .iter()
        .map(|m| tier(m))
        .collect::<Option<Vec<usize>>>()
    else {
        return false;
    };
    for i in 0..order.len() {
        for j in i + 1..order.len() {
            let between = &boundaries[i..j];
            let settled_split = between.iter().any(|b| b.split && !b.unsettled);
            let unsettled = between.iter().any(|b| b.unsettled);
            let agrees = match tiers[i].cmp(&tiers[j]) {
                std::cmp::Ordering::Less => settled_split || unsettled,
                std::cmp::Ordering::Equal => !settled_split,
                std::cmp::Ordering::Greater => false,
            };
            if !agrees {
                return false;
            }
        }
    }
    true
}
