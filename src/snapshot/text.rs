//! How a snapshot body is written: one `key: value` line each, numbers with few significant digits.

use std::fmt::Write as _;

use super::*;

pub(super) fn opt(v: Option<f64>) -> String {
    v.map_or("~".into(), |v| v.to_string())
}

pub(super) fn warnings(w: &[WarningSummary]) -> String {
    if w.is_empty() {
        "none".into()
    } else {
        let kinds: Vec<&str> = w.iter().map(|w| w.kind.name()).collect();
        kinds.join(", ")
    }
}

/// `v` with `digits` significant digits, in plain decimal notation where
/// that is short, trailing zeros dropped; `NaN`, `inf`, `-inf` as such.
pub(super) fn sig(v: f64, digits: usize) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return "0".into();
    }
    let magnitude = v.abs().log10().floor() as i32;
    if !(-5..=9).contains(&magnitude) {
        return format!("{:.*e}", digits.saturating_sub(1), v);
    }
    let decimals = digits as i32 - 1 - magnitude;
    let s = if decimals >= 0 {
        format!("{v:.*}", decimals as usize)
    } else {
        let unit = 10f64.powi(-decimals);
        format!("{:.0}", (v / unit).round() * unit)
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    if s == "-0" {
        "0".into()
    } else {
        s
    }
}

/// A snapshot body being built.
#[derive(Default)]
pub(super) struct Body(pub(super) String);

impl Body {
    pub(super) fn text(&mut self, key: &str, value: impl AsRef<str>) {
        let _ = writeln!(self.0, "{key}: {}", value.as_ref());
    }
}
