//! Captioned image grids, written as PNG: the samples of a search before
//! (x0) and after (x), each with every model's top prediction (paper
//! fig. 1 and 4), and example samples of an ensemble's regions.
//!
//! Samples are upscaled by an integer factor (nearest neighbour) until they
//! are at least [`MIN_CELL_WIDTH`] pixels wide, so a 28 × 28 digit is drawn
//! 4× (112 × 112). Captions are drawn in the 8 × 8 public-domain bitmap font
//! of the `font8x8` crate: ASCII only, other characters become `?`, and a
//! line too long for its cell is cut with `~`.

use std::path::Path;

use candle_core::Tensor;
use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::ensemble::MdsDataset;
use crate::error::{Error, Result};
use crate::model::argmax;
use crate::search::SearchOutcome;
use crate::verdict::top;

/// Samples narrower than this are upscaled until they are at least as wide.
pub const MIN_CELL_WIDTH: u32 = 112;

/// Space between cells and around the grid, in pixels.
const GAP: u32 = 8;
/// Height of one caption line: 8 pixels of glyph and 3 of leading.
const LINE: u32 = 11;

/// One sample as 8-bit pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Picture {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// 1 (grey) or 3 (RGB).
    pub channels: u32,
    /// Row-major pixels, `channels` values per pixel.
    pub pixels: Vec<u8>,
}

impl Picture {
    /// The RGB colour of the pixel at (x, y).
    fn rgb(&self, x: u32, y: u32) -> Rgb<u8> {
        let i = ((y * self.width + x) * self.channels) as usize;
        if self.channels == 1 {
            let v = self.pixels[i];
            Rgb([v, v, v])
        } else {
            Rgb([self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]])
        }
    }
}

/// The samples of a batch `x` as pictures, mapping `range` (the generator's
/// [`output_range`](crate::Generator::output_range)) onto 0 ..= 255.
///
/// Accepted shapes: `[B, C, H, W]` with C = 1 or 3, `[B, H, W]`, and
/// `[B, N]` with N a square (a flattened grey image).
pub fn pictures(x: &Tensor, range: (f32, f32)) -> Result<Vec<Picture>> {
    let dims = x.dims().to_vec();
    let shape_error = || Error::Shape {
        model: "generator".into(),
        what: "decoded samples, drawn as pictures".into(),
        expected: "[B, 1 or 3, H, W], [B, H, W] or [B, N] with N a square".into(),
        got: dims.clone(),
    };
    let (b, c, h, w) = match dims[..] {
        [b, c, h, w] if c == 1 || c == 3 => (b, c, h, w),
        [b, h, w] => (b, 1, h, w),
        [b, n] => {
            let side = (n as f64).sqrt().round() as usize;
            if side * side != n {
                return Err(shape_error());
            }
            (b, 1, side, side)
        }
        _ => return Err(shape_error()),
    };
    let values = x
        .flatten_all()
        .and_then(|v| v.to_dtype(candle_core::DType::F32))
        .and_then(|v| v.to_vec1::<f32>())
        .map_err(Error::tensor("read the samples to draw"))?;
    let (lo, hi) = range;
    let scale = if hi > lo { 255.0 / (hi - lo) } else { 0.0 };
    let byte = |v: f32| ((v - lo) * scale).round().clamp(0.0, 255.0) as u8;
    let plane = h * w;
    Ok((0..b)
        .map(|i| {
            let sample = &values[i * c * plane..(i + 1) * c * plane];
            // CHW -> HWC
            let pixels = (0..plane)
                .flat_map(|p| (0..c).map(move |ch| byte(sample[ch * plane + p])))
                .collect();
            Picture {
                width: w as u32,
                height: h as u32,
                channels: c as u32,
                pixels,
            }
        })
        .collect())
}

/// One cell of a grid: a picture and its caption lines.
#[derive(Clone, Debug)]
pub struct Cell {
    /// The sample.
    pub picture: Picture,
    /// Lines under it.
    pub caption: Vec<String>,
    /// Draw the picture's frame in red (e.g. the models disagree).
    pub highlight: bool,
}

/// Cells laid out in rows of `columns`, each picture upscaled to at least
/// [`MIN_CELL_WIDTH`] pixels wide, with an optional title line per row.
#[derive(Clone, Debug)]
pub struct Grid {
    /// Cells per row.
    pub columns: usize,
    /// The cells, row by row.
    pub cells: Vec<Cell>,
}

impl Grid {
    /// Renders the grid: white background, black captions.
    pub fn render(&self) -> RgbImage {
        let columns = self.columns.max(1) as u32;
        let pw = self
            .cells
            .iter()
            .map(|c| c.picture.width)
            .max()
            .unwrap_or(1);
        let ph = self
            .cells
            .iter()
            .map(|c| c.picture.height)
            .max()
            .unwrap_or(1);
        let scale = MIN_CELL_WIDTH.div_ceil(pw).max(1);
        let lines = self
            .cells
            .iter()
            .map(|c| c.caption.len())
            .max()
            .unwrap_or(0) as u32;
        let cell_w = pw * scale;
        let cell_h = ph * scale + 4 + lines * LINE;
        let rows = (self.cells.len() as u32).div_ceil(columns).max(1);
        let width = GAP + columns * (cell_w + GAP);
        let height = GAP + rows * (cell_h + GAP);
        let mut img = RgbImage::from_pixel(width, height, Rgb([255, 255, 255]));
        for (i, cell) in self.cells.iter().enumerate() {
            let (col, row) = (i as u32 % columns, i as u32 / columns);
            let x0 = GAP + col * (cell_w + GAP);
            let y0 = GAP + row * (cell_h + GAP);
            let p = &cell.picture;
            for y in 0..p.height * scale {
                for x in 0..p.width * scale {
                    img.put_pixel(x0 + x, y0 + y, p.rgb(x / scale, y / scale));
                }
            }
            if cell.highlight {
                frame(&mut img, x0, y0, p.width * scale, p.height * scale);
            }
            let chars = (cell_w / 8) as usize;
            for (l, line) in cell.caption.iter().enumerate() {
                let y = y0 + ph * scale + 4 + l as u32 * LINE;
                draw_text(&mut img, x0, y, &fit(line, chars));
            }
        }
        img
    }

    /// Renders the grid and writes it as a PNG at `path` (through a
    /// temporary file in the same directory, renamed into place).
    pub fn write_png(&self, path: &Path) -> Result<()> {
        let img = self.render();
        let mut bytes = Vec::new();
        img.write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::Io {
            action: "encode as PNG",
            path: path.to_path_buf(),
            cause: std::io::Error::other(e),
        })?;
        crate::artifact::write_atomic(path, &bytes)
    }
}

/// `line` cut to `chars` characters, the last one `~` when cut.
fn fit(line: &str, chars: usize) -> String {
    if line.chars().count() <= chars {
        line.to_string()
    } else {
        let mut s: String = line.chars().take(chars.saturating_sub(1)).collect();
        s.push('~');
        s
    }
}

/// A 2-pixel red frame just inside the rectangle.
fn frame(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32) {
    let red = Rgb([220, 30, 30]);
    for t in 0..2.min(w / 2).min(h / 2) {
        for x in x0..x0 + w {
            img.put_pixel(x, y0 + t, red);
            img.put_pixel(x, y0 + h - 1 - t, red);
        }
        for y in y0..y0 + h {
            img.put_pixel(x0 + t, y, red);
            img.put_pixel(x0 + w - 1 - t, y, red);
        }
    }
}

/// Draws `text` with its top-left corner at (x, y), clipped to the image.
fn draw_text(img: &mut RgbImage, x: u32, y: u32, text: &str) {
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS
            .get(ch)
            .or_else(|| font8x8::BASIC_FONTS.get('?'))
            .unwrap_or([0; 8]);
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                // font8x8: bit 0 is the leftmost pixel.
                if bits & (1 << col) != 0 {
                    let (px, py) = (x + i as u32 * 8 + col, y + row as u32);
                    if px < img.width() && py < img.height() {
                        img.put_pixel(px, py, Rgb([0, 0, 0]));
                    }
                }
            }
        }
    }
}

/// Samples shown in a pair's grid, most divergent after the search first.
pub const GRID_SAMPLES: usize = 8;
/// Regions shown in an ensemble's grid, largest first, and examples of each.
pub const GRID_REGIONS: (usize, usize) = (5, 8);

/// The `n` samples with the largest divergence after the search, largest
/// first (NaN last).
pub(crate) fn most_divergent(outcome: &SearchOutcome, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..outcome.samples.len()).collect();
    let key = |i: usize| {
        let d = outcome.samples[i].divergence_after;
        if d.is_nan() {
            f64::NEG_INFINITY
        } else {
            d
        }
    };
    order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
    order.truncate(n);
    order
}

/// Rows of before/after cells of `samples`, captioned with the divergence
/// and every model's top class and probability; red frames where the models'
/// top classes differ. `None` when the samples cannot be drawn as images.
pub(crate) fn pair_grid(
    outcome: &SearchOutcome,
    samples: &[usize],
    range: (f32, f32),
    conditions: Option<&[usize]>,
) -> Option<Grid> {
    let pick = |x: &Tensor| -> Option<Vec<Picture>> {
        let idx = Tensor::new(
            samples.iter().map(|&i| i as u32).collect::<Vec<_>>(),
            x.device(),
        )
        .ok()?;
        pictures(&x.index_select(&idx, 0).ok()?, range).ok()
    };
    let before = pick(&outcome.x0)?;
    let after = pick(&outcome.x)?;
    let d = outcome.config.divergence.name();
    let caption = |i: usize, when: &str, div: f64, probs: &[Vec<f32>]| {
        let mut lines = vec![format!("#{i} {when} {d} {div:.2}")];
        if let Some(c) = conditions.and_then(|c| c.get(i)) {
            // The generator's class (named as the classifiers' when they
            // share the label set).
            let name = outcome
                .class_names
                .get(*c)
                .cloned()
                .unwrap_or_else(|| c.to_string());
            lines.push(format!("class {name}"));
        }
        for (name, p) in outcome.model_names.iter().zip(probs) {
            let (k, v) = top(p);
            lines.push(format!("{name} {} {v:.2}", outcome.class_names[k]));
        }
        let tops: Vec<usize> = probs.iter().map(|p| argmax(p)).collect();
        (lines, tops.windows(2).any(|w| w[0] != w[1]))
    };
    let mut cells = Vec::with_capacity(2 * samples.len());
    for (j, &i) in samples.iter().enumerate() {
        let s = &outcome.samples[i];
        for (picture, (caption, differ)) in [
            (
                &before[j],
                caption(i, "x0", s.divergence_before, &s.log_probs_before),
            ),
            (
                &after[j],
                caption(i, "x", s.divergence_after, &s.log_probs_after),
            ),
        ] {
            cells.push(Cell {
                picture: picture.clone(),
                caption,
                highlight: differ,
            });
        }
    }
    Some(Grid { columns: 8, cells })
}

/// A row of example samples per region, largest regions first, captioned
/// with the condition and the ensemble's vote; red frames where the vote is
/// not the condition. `None` when there is no region or the samples cannot
/// be drawn as images.
pub(crate) fn regions_grid(
    mds: &MdsDataset,
    vote: &[Vec<f32>],
    regions: &[Vec<usize>],
    class_names: &[String],
    range: (f32, f32),
) -> Option<Grid> {
    let (rows, per_row) = GRID_REGIONS;
    let chosen: Vec<(usize, usize)> = regions
        .iter()
        .take(rows)
        .enumerate()
        .flat_map(|(r, members)| members.iter().take(per_row).map(move |&i| (r, i)))
        .collect();
    if chosen.is_empty() {
        return None;
    }
    let idx = Tensor::new(
        chosen.iter().map(|&(_, i)| i as u32).collect::<Vec<_>>(),
        mds.x.device(),
    )
    .ok()?;
    let images = pictures(&mds.x.index_select(&idx, 0).ok()?, range).ok()?;
    let cells = chosen
        .iter()
        .zip(images)
        .map(|(&(r, i), picture)| {
            let (c, v) = (mds.labels[i], argmax(&vote[i]));
            Cell {
                picture,
                caption: vec![
                    format!("region {} #{i}", r + 1),
                    format!("cond {} vote {}", class_names[c], class_names[v]),
                ],
                highlight: c != v,
            }
        })
        .collect();
    Some(Grid {
        columns: per_row,
        cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn pictures_map_the_range_and_reorder_channels() {
        // One RGB 1x2 sample in [-1, 1]: pixel 0 = (-1, 0, 1), pixel 1 = (1, 1, -1).
        let x = Tensor::from_vec(
            vec![-1f32, 1.0, 0.0, 1.0, 1.0, -1.0],
            (1, 3, 1, 2),
            &Device::Cpu,
        )
        .unwrap();
        let p = &pictures(&x, (-1.0, 1.0)).unwrap()[0];
        assert_eq!((p.width, p.height, p.channels), (2, 1, 3));
        assert_eq!(p.pixels, vec![0, 128, 255, 255, 255, 0]);
    }

    #[test]
    fn flat_square_samples_are_grey_images_and_others_are_refused() {
        let x = Tensor::ones((2, 16), candle_core::DType::F32, &Device::Cpu).unwrap();
        let p = pictures(&x, (0.0, 1.0)).unwrap();
        assert_eq!((p.len(), p[0].width, p[0].height), (2, 4, 4));
        assert!(p[0].pixels.iter().all(|&v| v == 255));
        let bad = Tensor::ones((2, 15), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = pictures(&bad, (0.0, 1.0)).unwrap_err().to_string();
        assert!(err.contains("[2, 15]"), "{err}");
    }

    #[test]
    fn a_digit_is_upscaled_to_the_minimum_width_and_captioned() {
        let digit = Picture {
            width: 28,
            height: 28,
            channels: 1,
            pixels: vec![0; 784],
        };
        let grid = Grid {
            columns: 2,
            cells: vec![
                Cell {
                    picture: digit.clone(),
                    caption: vec!["cnn_a 7 (0.88)".into(), "cnn_b 8 (0.87)".into()],
                    highlight: true,
                },
                Cell {
                    picture: digit,
                    caption: vec!["x".into()],
                    highlight: false,
                },
            ],
        };
        let img = grid.render();
        // 4x: 112-pixel cells, two per row, 8-pixel gaps; two caption lines.
        assert_eq!(img.width(), 8 + 2 * (112 + 8));
        assert_eq!(img.height(), 8 + 112 + 4 + 2 * LINE + 8);
        // The highlighted frame is red; the inside of the digit is black.
        assert_eq!(img.get_pixel(8, 8), &Rgb([220, 30, 30]));
        assert_eq!(img.get_pixel(8 + 56, 8 + 56), &Rgb([0, 0, 0]));
        // The caption drew some black pixels under the first picture.
        let caption_black = (0..112)
            .flat_map(|x| (0..8).map(move |y| (x, y)))
            .filter(|&(x, y)| img.get_pixel(8 + x, 8 + 112 + 4 + y) == &Rgb([0, 0, 0]))
            .count();
        assert!(caption_black > 50, "{caption_black}");
    }

    #[test]
    fn long_captions_are_cut() {
        assert_eq!(fit("Granny Smith", 8), "Granny ~");
        assert_eq!(fit("short", 8), "short");
    }
}
