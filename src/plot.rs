//! Plots of the report, drawn as SVG with plotters (its SVG back end only:
//! text is left to the browser's fonts, so no font is bundled):
//!
//! - line plots over the ascent steps: the divergence and dz (paper fig. 3),
//!   the set distance of the top-1/3/5 predictions (paper fig. 2);
//! - the scatter of an ensemble's MDS samples by region of uncertainty over
//!   the labelled training data, on the top two principal axes (paper
//!   fig. 5).
//!
//! Non-finite values are left out of a plot rather than breaking its axes.

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;

use crate::error::{Error, Result};

/// The ten colours of the report's palette (matplotlib's "tab10"), indexed
/// by class or region.
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// The palette's colour `i` (cycled).
pub fn colour(i: usize) -> RGBColor {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    RGBColor(r, g, b)
}

/// One line of a line plot.
#[derive(Clone, Debug)]
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// Its points (x, y).
    pub points: Vec<(f64, f64)>,
}

/// Labels of a plot.
#[derive(Clone, Copy, Debug)]
pub struct Labels<'a> {
    /// The title.
    pub title: &'a str,
    /// The x axis.
    pub x: &'a str,
    /// The y axis.
    pub y: &'a str,
}

const SIZE: (u32, u32) = (560, 320);

fn finite(p: &(f64, f64)) -> bool {
    p.0.is_finite() && p.1.is_finite()
}

/// (min, max) of `values`, widened when empty or flat; `from_zero` starts it
/// at 0 when every value is ≥ 0.
fn span(values: impl Iterator<Item = f64>, from_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() || !hi.is_finite() {
        return (0.0, 1.0);
    }
    if from_zero && lo >= 0.0 {
        lo = 0.0;
    }
    if hi - lo < 1e-12 {
        hi = lo + 1.0;
    }
    let pad = 0.05 * (hi - lo);
    (
        if from_zero && lo == 0.0 {
            0.0
        } else {
            lo - pad
        },
        hi + pad,
    )
}

fn draw_error(what: &str) -> impl Fn(String) -> Error + '_ {
    move |problem| Error::Picture {
        what: what.to_string(),
        problem,
    }
}

type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A white plot area with a title and labelled axes over the given ranges;
/// `steps` labels x as integers.
fn axes<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>,
    labels: Labels<'_>,
    x: (f64, f64),
    y: (f64, f64),
    steps: bool,
) -> std::result::Result<Chart<'a, 'b>, String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(root)
        .caption(labels.title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)
        .map_err(|e| e.to_string())?;
    // Steps are whole numbers: at most one label per step (plotters put
    // ten over a short run, at 0, 0.5, 1, …, which `{:.0}` printed as
    // "0 0 1 2 2 2 3 4 4"), and none where a label would fall between two.
    let integer = |v: &f64| {
        if v.fract() == 0.0 {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(labels.x)
        .y_desc(labels.y)
        .light_line_style(WHITE.mix(0.0));
    if steps {
        let whole = (x.1.floor() - x.0.ceil()).max(0.0) as usize + 1;
        mesh.x_labels(whole.clamp(2, 10))
            .x_label_formatter(&integer);
    }
    mesh.draw().map_err(|e| e.to_string())?;
    Ok(chart)
}

/// A line plot of `series` as an SVG document; x is a step count (labelled
/// as integers), and the y axis starts at 0 when every value is ≥ 0.
pub fn lines_svg(labels: Labels<'_>, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    draw_lines(&mut svg, labels, series).map_err(draw_error(labels.title))?;
    Ok(svg)
}

fn draw_lines(
    svg: &mut String,
    labels: Labels<'_>,
    series: &[Series],
) -> std::result::Result<(), String> {
    let points = || {
        series
            .iter()
            .flat_map(|s| s.points.iter().filter(|p| finite(p)))
    };
    let (x0, x1) = span(points().map(|p| p.0), true);
    let (y0, y1) = span(points().map(|p| p.1), true);
    let root = SVGBackend::with_string(svg, SIZE).into_drawing_area();
    let mut chart = axes(&root, labels, (x0, x1), (y0, y1), true)?;
    for (i, s) in series.iter().enumerate() {
        let c = colour(i);
        chart
            .draw_series(LineSeries::new(
                s.points.iter().copied().filter(finite),
                c.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(s.name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// Points of a scatter plot: the labelled background and the groups drawn
/// over it.
#[derive(Clone, Debug, Default)]
pub struct Scatter {
    /// Background points (x, y, class), drawn small and faint in the
    /// class's colour.
    pub background: Vec<(f64, f64, usize)>,
    /// The names of the background's classes, for the legend.
    pub classes: Vec<String>,
    /// Foreground groups (name, points), drawn as filled circles, one
    /// colour each.
    pub groups: Vec<(String, Vec<(f64, f64)>)>,
    /// Foreground points in no group, drawn as black crosses.
    pub ungrouped: Vec<(f64, f64)>,
}

/// Groups named in a scatter plot's legend (the first ones).
pub const LEGEND_GROUPS: usize = 5;

/// A scatter plot as an SVG document; the legend names the background's
/// classes and the first [`LEGEND_GROUPS`] groups.
pub fn scatter_svg(labels: Labels<'_>, scatter: &Scatter) -> Result<String> {
    let mut svg = String::new();
    draw_scatter(&mut svg, labels, scatter).map_err(draw_error(labels.title))?;
    Ok(svg)
}

fn draw_scatter(
    svg: &mut String,
    labels: Labels<'_>,
    s: &Scatter,
) -> std::result::Result<(), String> {
    let all = || {
        s.background
            .iter()
            .map(|&(x, y, _)| (x, y))
            .chain(s.groups.iter().flat_map(|(_, g)| g.iter().copied()))
            .chain(s.ungrouped.iter().copied())
            .filter(finite)
    };
    let (x0, x1) = span(all().map(|p| p.0), false);
    let (y0, y1) = span(all().map(|p| p.1), false);
    let root = SVGBackend::with_string(svg, (640, 520)).into_drawing_area();
    let mut chart = axes(&root, labels, (x0, x1), (y0, y1), false)?;
    for (class, name) in s.classes.iter().enumerate() {
        let c = colour(class);
        chart
            .draw_series(
                s.background
                    .iter()
                    .filter(|p| p.2 == class && finite(&(p.0, p.1)))
                    .map(|&(x, y, _)| Circle::new((x, y), 1, c.mix(0.35).filled())),
            )
            .map_err(|e| e.to_string())?
            .label(name.as_str())
            .legend(move |(x, y)| Circle::new((x + 8, y), 3, c.mix(0.6).filled()));
    }
    for (i, (name, points)) in s.groups.iter().enumerate() {
        // Regions cycle through the palette with a dark outline, so they
        // stand out from the faint background of the same hue.
        let c = colour(i);
        let drawn = chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| finite(p))
                    .map(|&p| Circle::new(p, 3, c.filled())),
            )
            .map_err(|e| e.to_string())?;
        if i < LEGEND_GROUPS {
            drawn
                .label(name.as_str())
                .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
        }
        chart
            .draw_series(
                points
                    .iter()
                    .filter(|p| finite(p))
                    .map(|&p| Circle::new(p, 3, BLACK.mix(0.6).stroke_width(1))),
            )
            .map_err(|e| e.to_string())?;
    }
    chart
        .draw_series(
            s.ungrouped
                .iter()
                .filter(|p| finite(p))
                .map(|&p| Cross::new(p, 2, BLACK.mix(0.7).stroke_width(1))),
        )
        .map_err(|e| e.to_string())?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_plot_is_an_svg_with_its_title_and_legend_and_no_nan() {
        let svg = lines_svg(
            Labels {
                title: "kl over the steps",
                x: "step",
                y: "mean kl",
            },
            &[
                Series {
                    name: "mean".into(),
                    points: vec![(0.0, 0.1), (1.0, f64::NAN), (2.0, 2.7)],
                },
                Series {
                    name: "max".into(),
                    points: vec![(0.0, 0.5), (2.0, 5.7)],
                },
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        for text in ["kl over the steps", "step", "mean kl", "mean", "max"] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "{text} missing"
            );
        }
        assert!(!svg.contains("NaN"));
        // Two polylines, one per series (plus the legend's paths).
        assert!(svg.matches("<polyline").count() >= 2);
    }

    /// The texts of an SVG's `<text>` elements.
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| t.split_once('>'))
            .filter_map(|(_, rest)| rest.split_once("</text>"))
            .map(|(text, _)| text.trim().to_string())
            .collect()
    }

    /// Regression: over a short search (4 steps, as a quick ImageNet run
    /// on a CPU takes) the step axis was labelled "0 0 1 2 2 2 3 4 4":
    /// ticks at every half step, printed as whole numbers.
    #[test]
    fn a_short_run_labels_each_step_once() {
        for (steps, expected) in [
            (1, vec!["0", "1"]),
            (4, vec!["0", "1", "2", "3", "4"]),
            (7, vec!["0", "1", "2", "3", "4", "5", "6", "7"]),
        ] {
            let svg = lines_svg(
                Labels {
                    title: "t",
                    x: "step",
                    y: "mean kl",
                },
                &[Series {
                    name: "mean".into(),
                    points: (0..=steps).map(|s| (s as f64, 0.5 + s as f64)).collect(),
                }],
            )
            .unwrap();
            // The y labels are printed with a decimal point.
            let x_labels: Vec<String> = texts(&svg)
                .into_iter()
                .filter(|t| !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()))
                .collect();
            assert_eq!(x_labels, expected, "{steps} steps");
        }
    }

    #[test]
    fn a_scatter_draws_every_point() {
        let svg = scatter_svg(
            Labels {
                title: "latents",
                x: "PC 1",
                y: "PC 2",
            },
            &Scatter {
                background: vec![(0.0, 0.0, 0), (1.0, 1.0, 1)],
                classes: vec!["0".into(), "1".into()],
                groups: vec![("region 1".into(), vec![(0.5, 0.5), (0.6, 0.4)])],
                ungrouped: vec![(0.2, 0.9)],
            },
        )
        .unwrap();
        // 2 background + 2 legend marks + 2 × 2 region circles (fill, outline).
        assert!(svg.matches("<circle").count() >= 8, "{svg}");
    }

    #[test]
    fn spans_start_at_zero_and_widen_flat_data() {
        assert_eq!(span([1.0, 3.0].into_iter(), true), (0.0, 3.15));
        assert_eq!(span([2.0, 2.0].into_iter(), false), (1.95, 3.05));
        assert_eq!(span(std::iter::empty(), true), (0.0, 1.0));
    }
}
