//! Thresholds applied to a finished search: pass or fail, and why.
//!
//! A NaN never passes: every check is `value <= bound`, which is false when
//! either side is NaN, and the config refuses NaN thresholds before any
//! search runs.

use crate::config::{Statistic, Thresholds};
use crate::search::SearchOutcome;

/// How many of the worst samples a failure message lists.
pub const WORST_SHOWN: usize = 5;

/// The outcome of checking a search against its thresholds.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// The statistic `max_divergence` bounds, over the divergences after the
    /// search.
    pub statistic: f64,
    /// The search's lift.
    pub lift: f64,
    /// One line per broken threshold; empty when the search passed.
    pub failures: Vec<String>,
}

impl Verdict {
    /// Checks `outcome` against `thresholds`.
    pub fn check(outcome: &SearchOutcome, thresholds: &Thresholds) -> Verdict {
        let after: Vec<f64> = outcome.samples.iter().map(|s| s.divergence_after).collect();
        let statistic = statistic(&after, thresholds.statistic);
        let lift = outcome.lift();
        let name = outcome.config.divergence.name();
        let mut failures = Vec::new();
        if let Some(max) = thresholds.max_divergence {
            if !at_most(statistic, max) {
                failures.push(format!(
                    "{} {name} after the search is {statistic:.4}, above max_divergence = {max}",
                    describe(thresholds.statistic)
                ));
            }
        }
        if let Some(min) = thresholds.min_lift {
            if !at_most(min, lift) {
                failures.push(format!(
                    "the lift (mean {name} after the search / baseline {:.4}) is {lift:.2}, \
                     below min_lift = {min}: the search found too little",
                    outcome.baseline.mean
                ));
            }
        }
        Verdict {
            statistic,
            lift,
            failures,
        }
    }

    /// Whether every threshold held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failure message: the broken thresholds, then the worst samples
    /// (index, divergence vs threshold, each model's top prediction) and how
    /// many more samples are above the threshold.
    pub fn message(&self, outcome: &SearchOutcome, thresholds: &Thresholds) -> String {
        let mut out = self.failures.join("\n");
        let name = outcome.config.divergence.name();
        let mut order: Vec<usize> = (0..outcome.samples.len()).collect();
        order.sort_by(|&a, &b| {
            outcome.samples[b]
                .divergence_after
                .total_cmp(&outcome.samples[a].divergence_after)
        });
        let limit = thresholds.max_divergence;
        let above = match limit {
            Some(t) => order
                .iter()
                .filter(|&&i| !at_most(outcome.samples[i].divergence_after, t))
                .count(),
            None => order.len(),
        };
        let shown = above.clamp(1, WORST_SHOWN).min(order.len());
        out.push_str(&format!("\nworst samples ({name} after the search"));
        if let Some(t) = limit {
            out.push_str(&format!(" vs max_divergence {t}"));
        }
        out.push_str("):");
        for &i in &order[..shown] {
            let s = &outcome.samples[i];
            let cmp = match limit {
                Some(t) if !at_most(s.divergence_after, t) => format!(" > {t}"),
                Some(t) => format!(" <= {t}"),
                None => String::new(),
            };
            out.push_str(&format!(
                "\n  #{i:<4} {name} {:.4}{cmp}  ",
                s.divergence_after
            ));
            let preds: Vec<String> = outcome
                .model_names
                .iter()
                .zip(&s.probs_after)
                .map(|(m, p)| {
                    let (k, v) = top(p);
                    format!("{m}: {} ({v:.2})", outcome.class_names[k])
                })
                .collect();
            out.push_str(&preds.join("  "));
        }
        if above > shown {
            let what = if limit.is_some() {
                " above the threshold"
            } else {
                ""
            };
            out.push_str(&format!("\n  and {} more{what}", above - shown));
        }
        out
    }
}

/// `value <= bound`, false when either is NaN: a NaN never passes.
fn at_most(value: f64, bound: f64) -> bool {
    value <= bound
}

/// The index and probability of the most probable class.
pub(crate) fn top(p: &[f32]) -> (usize, f32) {
    let k = (0..p.len())
        .max_by(|&a, &b| p[a].total_cmp(&p[b]))
        .unwrap_or(0);
    (k, p.get(k).copied().unwrap_or(f32::NAN))
}

fn describe(s: Statistic) -> String {
    match s {
        Statistic::Max => "the max".into(),
        Statistic::Mean => "the mean".into(),
        Statistic::Quantile(q) => format!("the {q} quantile of"),
    }
}

/// The statistic of `values` (NaN if any value is NaN or there are none).
pub fn statistic(values: &[f64], s: Statistic) -> f64 {
    if values.is_empty() || values.iter().any(|v| v.is_nan()) {
        return f64::NAN;
    }
    match s {
        Statistic::Max => values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        Statistic::Mean => values.iter().sum::<f64>() / values.len() as f64,
        Statistic::Quantile(q) => {
            let mut v = values.to_vec();
            v.sort_by(f64::total_cmp);
            let pos = q * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{Baseline, SampleRecord, SearchConfig};
    use candle_core::{DType, Device, Tensor};

    fn outcome(after: &[f64], baseline: f64) -> SearchOutcome {
        let sample = |d: f64| SampleRecord {
            z0: vec![0.0],
            z: vec![1.0],
            divergence_before: 0.0,
            divergence_after: d,
            probs_before: vec![vec![0.5, 0.5]; 2],
            probs_after: vec![vec![0.9, 0.1], vec![0.2, 0.8]],
            dz: 1.0,
        };
        let x = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        SearchOutcome {
            config: SearchConfig::default(),
            model_names: vec!["a".into(), "b".into()],
            class_names: vec!["cat".into(), "dog".into()],
            samples: after.iter().map(|d| sample(*d)).collect(),
            trajectory: Vec::new(),
            baseline: Baseline {
                divergences: vec![baseline],
                mean: baseline,
                max: baseline,
            },
            steps_run: 1,
            stopped_early: false,
            x0: x.clone(),
            x,
        }
    }

    fn thresholds(max: Option<f64>, min_lift: Option<f64>) -> Thresholds {
        Thresholds {
            max_divergence: max,
            statistic: Statistic::Max,
            min_lift,
        }
    }

    #[test]
    fn a_nan_never_passes() {
        // A NaN divergence fails max_divergence and min_lift.
        let o = outcome(&[0.1, f64::NAN], 1.0);
        let v = Verdict::check(&o, &thresholds(Some(10.0), None));
        assert!(!v.passed(), "{v:?}");
        let v = Verdict::check(&o, &thresholds(None, Some(0.0)));
        assert!(!v.passed(), "{v:?}");
        // A NaN threshold fails too (the config refuses them first).
        let o = outcome(&[0.1, 0.2], 1.0);
        assert!(!Verdict::check(&o, &thresholds(Some(f64::NAN), None)).passed());
        assert!(!Verdict::check(&o, &thresholds(None, Some(f64::NAN))).passed());
        // A NaN baseline makes the lift NaN: min_lift fails.
        let o = outcome(&[0.1, 0.2], f64::NAN);
        assert!(!Verdict::check(&o, &thresholds(None, Some(1.0))).passed());
        // No thresholds: nothing to fail.
        assert!(Verdict::check(&o, &thresholds(None, None)).passed());
    }

    #[test]
    fn the_message_lists_the_worst_samples_then_how_many_more() {
        let after: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let o = outcome(&after, 1.0);
        let t = thresholds(Some(2.5), Some(100.0));
        let v = Verdict::check(&o, &t);
        assert_eq!(v.failures.len(), 2);
        let m = v.message(&o, &t);
        assert!(
            m.contains("the max kl after the search is 8.0000, above max_divergence = 2.5"),
            "{m}"
        );
        assert!(m.contains("below min_lift = 100"), "{m}");
        assert!(
            m.contains("#8    kl 8.0000 > 2.5  a: cat (0.90)  b: dog (0.80)"),
            "{m}"
        );
        assert!(m.contains("and 1 more above the threshold"), "{m}");
        assert_eq!(m.matches(" > 2.5 ").count(), WORST_SHOWN, "{m}");
    }

    #[test]
    fn statistics_match_their_definitions() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(statistic(&v, Statistic::Max), 4.0);
        assert_eq!(statistic(&v, Statistic::Mean), 2.5);
        assert_eq!(statistic(&v, Statistic::Quantile(0.0)), 1.0);
        assert_eq!(statistic(&v, Statistic::Quantile(1.0)), 4.0);
        assert_eq!(statistic(&v, Statistic::Quantile(0.5)), 2.5);
        assert!(statistic(&[1.0, f64::NAN], Statistic::Max).is_nan());
        assert!(statistic(&[], Statistic::Mean).is_nan());
    }
}
