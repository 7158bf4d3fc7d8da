//! HTML and URL helpers of the report.

use std::fmt::Write as _;
use std::path::Path;

use super::*;
use crate::error::Result;
use crate::model::LatentSupport;
use crate::search::OutsideSupport;

/// HTML-escapes text for element content and quoted attributes.
pub(super) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A relative URL path: every byte outside `A-Z a-z 0-9 - . _ ~ /`
/// percent-encoded.
pub(super) fn url(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// An element id for a trial: `pair::a-b` → `pair-a-b`.
pub(super) fn anchor(id: &TrialId) -> String {
    format!("{}-{}", id.kind, id.name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect::<String>()
        .replace("--", "-")
}

/// "3 min before this report" and the like.
pub(super) fn age(written_at: u64, now: u64) -> String {
    let s = now.saturating_sub(written_at);
    match s {
        0..=59 => format!("{s} s before this report"),
        60..=5999 => format!("{} min before this report", s / 60),
        6000..=172_799 => format!("{} h before this report", s / 3600),
        _ => format!("{} days before this report", s / 86400),
    }
}

pub(super) fn failures(list: &[String]) -> String {
    if list.is_empty() {
        return String::new();
    }
    let items: String = list
        .iter()
        .map(|f| format!("<li><pre>{}</pre></li>", esc(f)))
        .collect();
    format!("<p>What failed:</p><ul class=\"failures\">{items}</ul>")
}

/// An `<img>` of the picture `file` (relative to `dir`), or a note when the
/// trial drew none or the file is gone.
pub(super) fn picture(dir: &Path, file: Option<&str>, alt: &str, caption: &str) -> String {
    match file {
        Some(f) if dir.join(f).exists() => format!(
            "<figure><img src=\"{}\" alt=\"{}\"><figcaption>{}</figcaption></figure>",
            esc(&url(f)),
            esc(alt),
            esc(caption)
        ),
        Some(f) => format!("<p>The picture <code>{}</code> is missing; rerun the trial.</p>", esc(f)),
        None => "<p>No picture: the generator's samples are not images (expected [B, 1 or 3, H, W]).</p>"
            .into(),
    }
}

/// Writes `svg` to `dir/plots/<file>` and returns its `<img>`.
pub(super) fn plot(dir: &Path, file: &str, svg: &str, alt: &str) -> Result<String> {
    let rel = format!("plots/{file}");
    write_atomic(&dir.join(&rel), svg.as_bytes())?;
    Ok(format!(
        "<img src=\"{}\" alt=\"{}\">",
        esc(&url(&rel)),
        esc(alt)
    ))
}

pub(super) fn opt(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v}"))
}

/// A file-name stem for a trial's plots: the name with anything but
/// `A-Z a-z 0-9 - _ .` replaced by `_`.
pub(super) fn url_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What follows the generator's name where it states a support: ` at
/// truncation 0.4 (its prior's latents in the box |z| ≤ 0.8)`; empty
/// where it states none.
pub(super) fn support_text(support: Option<LatentSupport>) -> String {
    match support {
        Some(support) => match support.truncation() {
            Some(t) => format!(
                " at truncation {t} (its prior's latents in the box |z| ≤ {})",
                support.half_width()
            ),
            None => format!(" (its prior's latents in the {support})"),
        },
        None => String::new(),
    }
}

/// The note on latents left outside the generator's support, if any.
pub(super) fn outside_support_note(outside: Option<OutsideSupport>) -> String {
    match outside {
        Some(o) => format!(
            "<p class=\"outside-support\">Note: {}.</p>",
            esc(&o.to_string())
        ),
        None => String::new(),
    }
}
