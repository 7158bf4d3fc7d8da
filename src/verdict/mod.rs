//! Thresholds applied to a finished search: pass or fail, and why.
//!
//! A NaN never passes: every check is `value <= bound`, which is false when
//! either side is NaN, and the config refuses NaN thresholds before any
//! search runs.

use crate::config::{EnsembleDecl, Statistic, Thresholds};
use crate::ensemble::Metrics;
use crate::search::SearchOutcome;

mod failure;

pub use self::failure::Failure;

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
    /// The statistic of the set distances after the search, when
    /// `max_set_distance` is set.
    pub set_distance: Option<f64>,
    /// The broken thresholds; empty when the search passed.
    pub failures: Vec<Failure>,
}

impl Verdict {
    /// Checks `outcome` against `thresholds`.
    pub fn check(outcome: &SearchOutcome, thresholds: &Thresholds) -> Verdict {
        let after: Vec<f64> = outcome.samples.iter().map(|s| s.divergence_after).collect();
        let statistic = statistic(&after, thresholds.statistic);
        let lift = outcome.lift();
        let divergence = outcome.config.divergence.kind();
        let mut failures = Vec::new();
        if let Some(max) = thresholds.max_divergence {
            if !at_most(statistic, max) {
                failures.push(Failure::MaxDivergence {
                    statistic: thresholds.statistic,
                    divergence,
                    value: statistic,
                    max,
                });
            }
        }
        if let Some(min) = thresholds.min_lift {
            let baseline = &outcome.baseline;
            let samples = baseline.divergences.len();
            let agree = lift.is_nan() && baseline.mean == 0.0;
            if !agree
                && (samples < gevaldi_config::MIN_BASELINE_SAMPLES
                    || !(baseline.mean > 0.0 && baseline.mean.is_finite()))
            {
                failures.push(Failure::UnusableBaseline {
                    divergence,
                    samples,
                    mean: baseline.mean,
                    min,
                });
            } else if !at_most(min, lift) {
                failures.push(Failure::MinLift {
                    divergence,
                    baseline: baseline.mean,
                    lift,
                    min,
                });
            }
        }
        let mut set_distance = None;
        if let Some(max) = thresholds.max_set_distance {
            let values = set_distances(outcome, thresholds.top_n);
            let s = self::statistic(&values, thresholds.statistic);
            set_distance = Some(s);
            if !at_most(s, max) {
                failures.push(Failure::MaxSetDistance {
                    statistic: thresholds.statistic,
                    top_n: thresholds.top_n,
                    value: s,
                    max,
                });
            }
        }
        Verdict {
            statistic,
            lift,
            set_distance,
            failures,
        }
    }

    /// Whether every threshold held.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The worst samples of the broken thresholds, each listing on lines
    /// of its own (each begins with a line break); empty when it passed.
    pub fn details(&self, outcome: &SearchOutcome, thresholds: &Thresholds) -> String {
        let mut out = String::new();
        let divergence_failed = self
            .failures
            .iter()
            .any(|f| matches!(f, Failure::MaxDivergence { .. } | Failure::MinLift { .. }));
        if divergence_failed {
            out.push_str(&self.divergence_message(outcome, thresholds));
        }
        for f in &self.failures {
            if let Failure::MaxSetDistance { top_n, max, .. } = f {
                out.push_str(&self.set_distance_message(outcome, *top_n, *max));
            }
        }
        out
    }

    /// The worst samples by divergence, with every model's top prediction.
    fn divergence_message(&self, outcome: &SearchOutcome, thresholds: &Thresholds) -> String {
        let mut out = String::new();
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
            let d = s.divergence_after;
            let shown = match limit {
                Some(t) if !at_most(d, t) => format!("{} > {t}", beside(d, t, 4)),
                Some(t) => format!("{} <= {t}", beside(d, t, 4)),
                None => format!("{d:.4}"),
            };
            out.push_str(&format!("\n  #{i:<4} {name} {shown}  "));
            let preds: Vec<String> = outcome
                .model_names
                .iter()
                .zip(&s.log_probs_after)
                .map(|(m, lp)| {
                    let (k, v) = top(lp);
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

    /// The worst samples by set distance, with every model's top-n classes.
    fn set_distance_message(&self, outcome: &SearchOutcome, n: usize, limit: f64) -> String {
        let values = set_distances(outcome, n);
        let mut order: Vec<usize> = (0..values.len()).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let above = order
            .iter()
            .filter(|&&i| !at_most(values[i], limit))
            .count();
        let mut out = format!(
            "\nworst samples (set distance of the top-{n} predictions vs max_set_distance {limit}):"
        );
        for &i in order.iter().take(above.clamp(1, WORST_SHOWN)) {
            let Some(s) = outcome.samples.get(i) else {
                break;
            };
            let tops: Vec<String> = outcome
                .model_names
                .iter()
                .zip(&s.log_probs_after)
                .map(|(m, lp)| {
                    let names: Vec<&str> = crate::hierarchy::top_n(lp, n)
                        .into_iter()
                        .map(|k| outcome.class_names[k].as_str())
                        .collect();
                    format!("{m}: {}", names.join(", "))
                })
                .collect();
            out.push_str(&format!(
                "\n  #{i:<4} {}  {}",
                beside(values[i], limit, 2),
                tops.join("  |  ")
            ));
        }
        if above > WORST_SHOWN {
            out.push_str(&format!(
                "\n  and {} more above the threshold",
                above - WORST_SHOWN
            ));
        }
        out
    }
}

/// The thresholds of an `[[ensemble]]` that its metrics break (a NaN
/// metric breaks every threshold it meets).
pub fn ensemble_failures(
    decl: &EnsembleDecl,
    test: &Metrics,
    mds: &Metrics,
    regions: usize,
) -> Vec<Failure> {
    let mut out = Vec::new();
    // Each accuracy is a count over a number of samples, correctly rounded;
    // their difference is not: 469/2000 − 169/2000, a drop of exactly 300
    // samples, is 0.14999999999999997. Within rounding of a bound counts as
    // at it.
    let drop = test.accuracy - mds.accuracy;
    let rounding = 4.0 * f64::EPSILON;
    let (test, mds) = (test.accuracy, mds.accuracy);
    if let Some(min) = decl.min_mds_accuracy {
        if !at_most(min, mds) {
            out.push(Failure::MinMdsAccuracy { accuracy: mds, min });
        }
    }
    if let Some(max) = decl.max_accuracy_drop {
        if !at_most(drop - rounding, max) {
            out.push(Failure::MaxAccuracyDrop { test, mds, max });
        }
    }
    if let Some(min) = decl.min_accuracy_drop {
        if !at_most(min, drop + rounding) {
            out.push(Failure::MinAccuracyDrop { test, mds, min });
        }
    }
    if let Some(max) = decl.max_regions {
        if regions > max {
            out.push(Failure::MaxRegions { regions, max });
        }
    }
    out
}

/// The name of the set-distance measure of top-n predictions.
pub fn set_distance_name(top_n: usize) -> String {
    format!("set distance (top-{top_n})")
}

/// Each sample's set distance of the top-n predictions after the search
/// (NaN when the search did not measure it: a missing measure fails).
pub fn set_distances(outcome: &SearchOutcome, top_n: usize) -> Vec<f64> {
    let name = set_distance_name(top_n);
    match outcome.measure_names.iter().position(|n| *n == name) {
        Some(m) => outcome
            .samples
            .iter()
            .map(|s| s.measures_after[m])
            .collect(),
        None => vec![f64::NAN; outcome.samples.len().max(1)],
    }
}

/// `value <= bound`, false when either is NaN: a NaN never passes.
/// A lift as the summaries print it: `30.9x` with `decimals` digits;
/// `undefined (0 / 0)` where the divergence is 0 after the search and over
/// the baseline (the models agree everywhere), `∞ (baseline 0)` where only
/// the baseline is 0; and, over a baseline of fewer prior samples than
/// `min_lift` takes (`baseline_samples`, a batch below
/// [`MIN_BASELINE_SAMPLES`](gevaldi_config::MIN_BASELINE_SAMPLES)), with
/// how few: at batch 1 a lift of 169498.0x stood as if it meant something.
pub(crate) fn lift_text(lift: f64, decimals: usize, baseline_samples: usize) -> String {
    let few = baseline_samples < gevaldi_config::MIN_BASELINE_SAMPLES;
    let over = crate::report::count(baseline_samples, "prior sample");
    if lift.is_nan() {
        "undefined (0 / 0)".into()
    } else if lift.is_infinite() && few {
        format!("∞ (baseline 0 over {over}, too few for min_lift)")
    } else if lift.is_infinite() {
        "∞ (baseline 0)".into()
    } else if few {
        format!("{lift:.decimals$}x (baseline of {over}, too few for min_lift)")
    } else {
        format!("{lift:.decimals$}x")
    }
}

/// `value` as a message shows it beside `bound`: with `decimals`
/// decimals, or as many more as it takes for the figure shown to stand on
/// the same side of the bound as the value itself, up to 9 significant
/// digits, then the shortest form that reads back exactly. A lift of
/// 9.3479 showed as "9.35, below min_lift = 9.35", a kl of 2.408425 as
/// "2.4084 > 2.40843" (and 0.050001 as "0.0500, above max_divergence =
/// 0.05"). The bound is printed as it is (`{bound}`, exact); every "value,
/// above/below bound" of a failure message goes through here.
pub(crate) fn beside(value: f64, bound: f64, decimals: usize) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let side = value.partial_cmp(&bound);
    // Digits before the decimal point (negative: zeros after it).
    let whole = if value == 0.0 {
        1
    } else {
        value.abs().log10().floor() as i64 + 1
    };
    let most = (9 - whole).max(decimals as i64) as usize;
    (decimals..=most)
        .map(|d| format!("{value:.d$}"))
        .find(|shown| {
            shown
                .parse::<f64>()
                .ok()
                .and_then(|s| s.partial_cmp(&bound))
                == side
        })
        .unwrap_or_else(|| value.to_string())
}

fn at_most(value: f64, bound: f64) -> bool {
    value <= bound
}

/// The index and probability of the most probable class, from
/// log-probabilities.
pub(crate) fn top(log_probs: &[f32]) -> (usize, f32) {
    let k = crate::model::argmax(log_probs);
    (k, log_probs.get(k).map_or(f32::NAN, |v| v.exp()))
}

pub(crate) fn describe(s: Statistic) -> String {
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
            outside_support: None,
            divergence_before: 0.0,
            divergence_after: d,
            log_probs_before: vec![vec![0.5f32.ln(), 0.5f32.ln()]; 2],
            log_probs_after: vec![
                vec![0.9f32.ln(), 0.1f32.ln()],
                vec![0.2f32.ln(), 0.8f32.ln()],
            ],
            dz: 1.0,
            measures_before: Vec::new(),
            measures_after: Vec::new(),
        };
        let x = Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap();
        SearchOutcome {
            config: SearchConfig::default(),
            model_names: vec!["a".into(), "b".into()],
            class_names: vec!["cat".into(), "dog".into()],
            measure_names: Vec::new(),
            samples: after.iter().map(|d| sample(*d)).collect(),
            trajectory: Vec::new(),
            baseline: Baseline {
                divergences: vec![baseline; gevaldi_config::MIN_BASELINE_SAMPLES],
                mean: baseline,
                max: baseline,
            },
            steps_run: 1,
            stopped_early: false,
            latent_support: None,
            x0: x.clone(),
            x,
        }
    }

    /// The text a failed pair shows (`TrialReport::failure_message`): the
    /// broken thresholds, then their [`Verdict::details`].
    fn message(v: &Verdict, o: &SearchOutcome, t: &Thresholds) -> String {
        let lines: Vec<String> = v.failures.iter().map(Failure::to_string).collect();
        lines.join("\n") + &v.details(o, t)
    }

    /// Regression: two identical models printed "lift NaNx".
    #[test]
    fn a_lift_of_0_over_0_reads_undefined() {
        assert_eq!(super::lift_text(30.94, 1, 64), "30.9x");
        assert_eq!(super::lift_text(f64::NAN, 1, 64), "undefined (0 / 0)");
        assert_eq!(super::lift_text(f64::INFINITY, 2, 64), "∞ (baseline 0)");
    }

    /// Regression: at batch 1 the summary read "lift 169498.0x", as if a
    /// baseline of one prior sample meant something.
    #[test]
    fn a_lift_over_too_few_prior_samples_says_so() {
        assert_eq!(super::lift_text(30.94, 1, 16), "30.9x");
        assert_eq!(
            super::lift_text(169498.0, 1, 1),
            "169498.0x (baseline of 1 prior sample, too few for min_lift)"
        );
        assert_eq!(
            super::lift_text(f64::INFINITY, 1, 4),
            "∞ (baseline 0 over 4 prior samples, too few for min_lift)"
        );
    }

    fn thresholds(max: Option<f64>, min_lift: Option<f64>) -> Thresholds {
        Thresholds {
            max_divergence: max,
            statistic: Statistic::Max,
            min_lift,
            max_set_distance: None,
            top_n: 1,
        }
    }

    #[test]
    fn set_distances_are_checked_and_listed_with_class_names() {
        let mut o = outcome(&[0.1, 0.2], 1.0);
        o.measure_names = vec![set_distance_name(1)];
        o.samples[0].measures_after = vec![0.0];
        o.samples[1].measures_after = vec![1.0];
        let t = Thresholds {
            max_set_distance: Some(0.5),
            ..thresholds(None, None)
        };
        let v = Verdict::check(&o, &t);
        assert_eq!(v.set_distance, Some(1.0));
        let m = message(&v, &o, &t);
        assert!(m.contains("the max set distance of the top-1 predictions after the search is 1.0000, above max_set_distance = 0.5"), "{m}");
        assert!(m.contains("#1    1.00  a: cat  |  b: dog"), "{m}");
        // A set distance the search did not measure never passes.
        let t = Thresholds { top_n: 3, ..t };
        assert!(!Verdict::check(&o, &t).passed());
        let t = Thresholds {
            max_set_distance: Some(1.0),
            top_n: 1,
            ..t
        };
        assert!(Verdict::check(&o, &t).passed());
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
        // Models that agree everywhere: 0 / 0, named as such.
        let o = outcome(&[0.0, 0.0], 0.0);
        let t = thresholds(None, Some(1.0));
        let v = Verdict::check(&o, &t);
        assert!(
            message(&v, &o, &t).contains(
                "the lift is undefined: kl is 0 after the search and over the baseline \
                 (the models agree on every sample), below min_lift = 1"
            ),
            "{}",
            message(&v, &o, &t)
        );
    }

    #[test]
    fn the_message_lists_the_worst_samples_then_how_many_more() {
        let after: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let o = outcome(&after, 1.0);
        let t = thresholds(Some(2.5), Some(100.0));
        let v = Verdict::check(&o, &t);
        assert_eq!(v.failures.len(), 2);
        let m = message(&v, &o, &t);
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

    /// Regression: a value just above its threshold printed with 4
    /// decimals read as the threshold ("is 0.0500, above max_divergence =
    /// 0.05"); it gets the digits that tell them apart.
    #[test]
    fn a_value_just_above_its_threshold_shows_the_difference() {
        let o = outcome(&[0.050001], 1.0);
        let t = thresholds(Some(0.05), None);
        let m = message(&Verdict::check(&o, &t), &o, &t);
        assert!(
            m.contains("the max kl after the search is 0.050001, above max_divergence = 0.05"),
            "{m}"
        );
        let o = outcome(&[2.40841], 1.0);
        let m = message(&Verdict::check(&o, &t), &o, &t);
        assert!(m.contains("is 2.4084, above max_divergence = 0.05"), "{m}");
    }

    /// Regression: figures rounded to their usual decimals read as the
    /// bound or on its wrong side: "the lift … is 9.35, below min_lift =
    /// 9.35" (9.3479), "kl 2.4084 > 2.40843" (2.4084312).
    #[test]
    fn a_value_is_shown_on_its_side_of_the_bound() {
        let o = outcome(&[2.4084312, 1.0], 1.0);
        let t = thresholds(Some(2.40843), None);
        let m = message(&Verdict::check(&o, &t), &o, &t);
        assert!(
            m.contains("the max kl after the search is 2.408431, above max_divergence = 2.40843"),
            "{m}"
        );
        assert!(m.contains("#0    kl 2.408431 > 2.40843 "), "{m}");
        // The mean divergence 9.3479 over a baseline of 1 is the lift.
        let o = outcome(&[9.3479], 1.0);
        let t = thresholds(None, Some(9.35));
        let m = message(&Verdict::check(&o, &t), &o, &t);
        assert!(m.contains("is 9.348, below min_lift = 9.35"), "{m}");
        // Just below a bound, a sample is not shown at it.
        let o = outcome(&[2.40836], 1.0);
        let t = thresholds(Some(2.4084), Some(100.0));
        let m = message(&Verdict::check(&o, &t), &o, &t);
        assert!(m.contains("kl 2.40836 <= 2.4084 "), "{m}");
        // The tournament's and the ensemble's figures.
        let rate = Failure::MinWinRate {
            model: "a".into(),
            against: "b".into(),
            rate: Some(0.49996),
            min: 0.5,
        };
        assert!(rate.to_string().contains("won 49.996% of"), "{rate}");
        let srcc = Failure::MinSrcc {
            ranking: crate::tournament::RankingMethod::Mad,
            srcc: Some(0.79951),
            min: 0.8,
        };
        assert!(srcc.to_string().contains("is 0.7995, below"), "{srcc}");
        let acc = Failure::MinMdsAccuracy {
            accuracy: 0.89999,
            min: 0.9,
        };
        assert!(acc.to_string().contains("is 0.89999, below"), "{acc}");
        // Where no width up to 9 significant digits tells them apart.
        assert_eq!(beside(0.1 + 0.2, 0.3, 4), "0.30000000000000004");
        assert_eq!(beside(f64::NAN, 0.3, 4), "NaN");
        assert_eq!(beside(1.0, 0.5, 4), "1.0000");
    }

    /// Regression: with `batch = 1` the baseline was one prior sample's
    /// divergence, 0.0000, and `min_lift = 1` passed with a lift of
    /// 169498.0x. A baseline over too few samples, of 0 or not finite
    /// fails `min_lift`, saying why, whatever the lift.
    #[test]
    fn min_lift_fails_over_an_unusable_baseline() {
        let t = thresholds(None, Some(1.0));
        let mut o = outcome(&[1.7], 1e-5);
        o.baseline.divergences.truncate(1);
        let v = Verdict::check(&o, &t);
        assert!(v.lift > 1e5, "{v:?}");
        let m = message(&v, &o, &t);
        assert!(
            m.starts_with(
                "min_lift = 1 cannot be checked: the baseline is the mean kl over 1 prior \
                 sample (one per sample of the batch), too few to mean anything; the lift \
                 needs a batch of at least 16"
            ),
            "{m}"
        );
        // 15 are too few, 16 enough.
        let mut o = outcome(&[1.7], 0.5);
        o.baseline.divergences.truncate(15);
        assert!(!Verdict::check(&o, &t).passed());
        let o = outcome(&[1.7], 0.5);
        assert!(Verdict::check(&o, &t).passed());
        // A baseline of 0 (or not finite) over enough samples.
        for (mean, shown) in [(0.0, "is 0,"), (f64::INFINITY, "is inf,")] {
            let o = outcome(&[1.7], mean);
            let m = message(&Verdict::check(&o, &t), &o, &t);
            assert!(
                m.starts_with(&format!(
                    "min_lift = 1 cannot be checked: the baseline (the mean kl over 16 prior \
                     samples) {shown} so the lift over it means nothing"
                )),
                "{m}"
            );
        }
        // Without min_lift nothing reads the baseline.
        let o = outcome(&[1.7], 0.0);
        assert!(Verdict::check(&o, &thresholds(None, None)).passed());
    }

    fn ensemble(min_drop: Option<f64>, max_drop: Option<f64>) -> EnsembleDecl {
        EnsembleDecl {
            name: "bag".into(),
            members: vec!["a".into(), "b".into()],
            generator: "cvae".into(),
            samples: 2000,
            test_data: "data".into(),
            min_samples: 10,
            search: Default::default(),
            min_mds_accuracy: None,
            max_accuracy_drop: max_drop,
            min_accuracy_drop: min_drop,
            max_regions: None,
            ignore: false,
            line: 1,
        }
    }

    /// Regression: a drop of exactly 300 of 2000 samples (469 → 169 right)
    /// is 0.14999999999999997 in f64 and failed `min_accuracy_drop =
    /// 0.15` ("drops by only 0.1500 … below 0.15"); 0.1500…02, the other
    /// way, failed `max_accuracy_drop = 0.15`.
    #[test]
    fn an_accuracy_drop_at_its_bound_holds() {
        let m = |right: u32| crate::ensemble::Metrics {
            accuracy: right as f64 / 2000.0,
            auc: Some(0.5),
            f1: 0.5,
        };
        let both = ensemble(Some(0.15), Some(0.15));
        let mut seen_below = false;
        for test in 300..2000 {
            let (t, d) = (m(test), m(test - 300));
            seen_below |= t.accuracy - d.accuracy < 0.15;
            assert!(ensemble_failures(&both, &t, &d, 0).is_empty(), "{test}");
        }
        assert!(seen_below, "no drop rounded below its bound");
        // One sample beyond a bound still breaks it.
        assert_eq!(ensemble_failures(&both, &m(469), &m(170), 0).len(), 1);
        assert_eq!(ensemble_failures(&both, &m(469), &m(168), 0).len(), 1);
        // A NaN accuracy breaks both.
        let nan = crate::ensemble::Metrics {
            accuracy: f64::NAN,
            auc: None,
            f1: 0.0,
        };
        assert_eq!(ensemble_failures(&both, &nan, &m(1), 0).len(), 2);
    }
}
