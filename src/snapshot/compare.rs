//! How a stored snapshot and a new one are compared, line by line, within tolerances.

use std::fmt;

/// How closely two numbers of a snapshot line must agree.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative to the larger magnitude.
    pub relative: f64,
    /// Absolute, for values near zero.
    pub absolute: f64,
}

impl Tolerance {
    /// `start.*` lines: figures before any ascent step.
    pub const START: Tolerance = Tolerance {
        relative: 1e-3,
        absolute: 1e-5,
    };
    /// `search.*` lines: figures after the chaotic ascent.
    pub const SEARCH: Tolerance = Tolerance {
        relative: 0.25,
        absolute: 0.05,
    };
    /// Any other line: compared as text.
    pub const EXACT: Tolerance = Tolerance {
        relative: 0.0,
        absolute: 0.0,
    };

    /// The tolerance of a line by its key.
    pub fn of_key(key: &str) -> Tolerance {
        if key.starts_with("start.") {
            Tolerance::START
        } else if key.starts_with("search.") {
            Tolerance::SEARCH
        } else {
            Tolerance::EXACT
        }
    }

    pub(super) fn holds(self, a: f64, b: f64) -> bool {
        if a == b {
            return true;
        }
        // An infinity (`1e400` in a file edited by hand) is within no
        // tolerance of another value: inf <= tolerance × inf would say so.
        if !(a.is_finite() && b.is_finite()) {
            return false;
        }
        (a - b).abs() <= self.absolute + self.relative * a.abs().max(b.abs())
    }
}

/// A line of a snapshot that differs from the stored one beyond its
/// tolerance.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// The line's key (or `(line N)` for a line without a key).
    pub key: String,
    /// The stored value (`None`: the line is new).
    pub stored: Option<String>,
    /// The new value (`None`: the line is gone).
    pub found: Option<String>,
    /// The largest relative difference of a number on the line, when the
    /// line differs by its numbers only.
    pub relative: Option<f64>,
    /// The tolerance of the line.
    pub tolerance: Tolerance,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "(none)".into());
        write!(
            f,
            "{}: {} -> {}",
            self.key,
            show(&self.stored),
            show(&self.found)
        )?;
        match self.relative {
            Some(r) => write!(
                f,
                "  (differs by {r:.1e} relative, tolerance {})",
                self.tolerance.relative
            ),
            None => Ok(()),
        }
    }
}

/// A piece of a snapshot line: a number or the text between numbers.
#[derive(Debug, PartialEq)]
pub(super) enum Token<'a> {
    Number(f64),
    Text(&'a str),
}

/// Splits `s` into numbers and text. A number starts at a digit (or a
/// minus sign before one) that does not continue a word, so `cnn_a`,
/// `bag_0` and `top-5` stay text.
pub(super) fn tokens(s: &str) -> Vec<Token<'_>> {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut text_start = 0;
    let mut i = 0;
    let continues_word = |i: usize| {
        i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || b"_-.".contains(&bytes[i - 1]))
    };
    while i < bytes.len() {
        let starts_number = (bytes[i].is_ascii_digit()
            || (bytes[i] == b'-' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)))
            && !continues_word(i);
        if !starts_number {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < bytes.len()
            && (bytes[j].is_ascii_digit()
                || bytes[j] == b'.'
                || bytes[j] == b'e'
                || ((bytes[j] == b'-' || bytes[j] == b'+') && bytes[j - 1] == b'e'))
        {
            j += 1;
        }
        // A number must not run into a word ("3d", "1st").
        let ends_word = j < bytes.len() && (bytes[j].is_ascii_alphabetic() || bytes[j] == b'_');
        match s[i..j].parse::<f64>() {
            Ok(v) if !ends_word => {
                if text_start < i {
                    out.push(Token::Text(&s[text_start..i]));
                }
                out.push(Token::Number(v));
                text_start = j;
            }
            _ => {}
        }
        i = j;
    }
    if text_start < s.len() {
        out.push(Token::Text(&s[text_start..]));
    }
    out
}

/// Whether a line's whole numbers are names, compared exactly: the classes
/// on a `start.sample.*` line (`cnn_a 1 (0.8162)`), which within 1e-3
/// relative let a prediction move between classes from 1000 on (a model of
/// 21843 classes named by number: class 5000 and 5004).
pub(super) fn integers_are_names(key: &str) -> bool {
    key.starts_with("start.sample.")
}

/// Compares one line's values; `Ok(())` within tolerance, else the largest
/// relative difference of its numbers (`None` when the text differs).
/// With `integers_exact`, two whole numbers must be equal.
pub(super) fn compare_values(
    stored: &str,
    found: &str,
    tolerance: Tolerance,
    integers_exact: bool,
) -> Result<(), Option<f64>> {
    if stored == found {
        return Ok(());
    }
    let (a, b) = (tokens(stored), tokens(found));
    if a.len() != b.len() {
        return Err(None);
    }
    let mut worst: Option<f64> = None;
    for (x, y) in a.iter().zip(&b) {
        match (x, y) {
            (Token::Text(x), Token::Text(y)) if x == y => {}
            (Token::Number(x), Token::Number(y)) => {
                let whole = |v: f64| v.is_finite() && v.fract() == 0.0;
                let tolerance = if integers_exact && whole(*x) && whole(*y) {
                    Tolerance::EXACT
                } else {
                    tolerance
                };
                if !tolerance.holds(*x, *y) {
                    let r = (x - y).abs() / x.abs().max(y.abs()).max(f64::MIN_POSITIVE);
                    worst = Some(worst.map_or(r, |w: f64| w.max(r)));
                }
            }
            _ => return Err(None),
        }
    }
    match worst {
        None => Ok(()),
        Some(r) => Err(Some(r)),
    }
}

pub(super) fn lines(body: &str) -> Vec<(String, String)> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| match l.split_once(": ") {
            Some((k, v)) => (k.trim().to_string(), v.trim().to_string()),
            None => (format!("(line {})", n + 1), l.trim().to_string()),
        })
        .collect()
}

/// The lines of `found` that differ from `stored` beyond their tolerance,
/// in the order of `found` (then lines only `stored` has).
pub fn compare(stored: &str, found: &str) -> Vec<Mismatch> {
    compare_allowing(stored, found, &Unsettled::default())
}

/// What the run that wrote a snapshot left undecided: figures within
/// [`Tolerance::SEARCH`] of the thresholds that decide its text lines, by
/// which those lines may differ from the stored ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unsettled {
    /// Kinds of ascent warning ([`super::unsettled_warnings`]): the
    /// `warnings` lines may differ by these.
    pub warnings: Vec<crate::search::AscentWarningKind>,
    /// A tournament's order, strongest first, and its tiers' splits
    /// ([`super::TierBoundary`]): the `search.ranking` lines may differ
    /// by the unsettled splits (empty: compared as text).
    pub ranking: Vec<super::TierBoundary>,
}

/// [`compare`], where the `warnings` and `search.ranking` lines may differ
/// by what the run that wrote `found` left `unsettled`.
pub fn compare_allowing(stored: &str, found: &str, unsettled: &Unsettled) -> Vec<Mismatch> {
    let (old, new) = (lines(stored), lines(found));
    let mut out = Vec::new();
    for (key, value) in &new {
        let tolerance = Tolerance::of_key(key);
        match old.iter().find(|(k, _)| k == key) {
            None => out.push(Mismatch {
                key: key.clone(),
                stored: None,
                found: Some(value.clone()),
                relative: None,
                tolerance,
            }),
            Some((_, was)) => {
                let unsettled_only = (key == super::warnings::KEY
                    && super::warnings::within(was, value, &unsettled.warnings))
                    || (key == super::ranking::KEY
                        && !unsettled.ranking.is_empty()
                        && super::ranking::within(was, &unsettled.ranking));
                if unsettled_only {
                    continue;
                }
                if let Err(relative) =
                    compare_values(was, value, tolerance, integers_are_names(key))
                {
                    out.push(Mismatch {
                        key: key.clone(),
                        stored: Some(was.clone()),
                        found: Some(value.clone()),
                        relative,
                        tolerance,
                    });
                }
            }
        }
    }
    for (key, was) in &old {
        if !new.iter().any(|(k, _)| k == key) {
            out.push(Mismatch {
                key: key.clone(),
                stored: Some(was.clone()),
                found: None,
                relative: None,
                tolerance: Tolerance::of_key(key),
            });
        }
    }
    out
}
