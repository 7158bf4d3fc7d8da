//! Max-pooling (with each window's first maximum kept for the backward),
//! average and adaptive average pooling, and nearest-neighbour
//! upsampling, on NHWC.

use super::simd::simd_fn;
use rayon::prelude::*;

use super::Dims;
use crate::engine::pool_settings::{PoolAxis, PoolKind};
use crate::engine::Pool2dSettings;

/// The output dims of the pooling `kind` of `d` (every path's checks).
fn pooled_dims(kind: PoolKind, d: Dims, settings: &Pool2dSettings) -> candle_core::Result<Dims> {
    if !d.spatial {
        candle_core::bail!("{}: expected [B, C, H, W], got a flat value", kind.name());
    }
    let [h, w] = settings.output(kind, d.h, d.w)?;
    Ok(Dims { h, w, ..d })
}

/// Max-pooling of NHWC `x`; returns the output, its dims and each output's
/// input position (y·W + x) within its sample. The first maximum of a window
/// wins ties; a window holding a NaN pools to its first NaN, as PyTorch.
pub(crate) fn max_pool(
    x: &[f32],
    d: Dims,
    settings: &Pool2dSettings,
) -> candle_core::Result<(Vec<f32>, Dims, Vec<u32>)> {
    let o = pooled_dims(PoolKind::Max, d, settings)?;
    let (rows, cols) = (settings.axis(0), settings.axis(1));
    let c = d.c;
    let mut out = vec![0f32; o.len()];
    let mut arg = vec![0u32; o.len()];
    out.par_chunks_mut(o.w * c)
        .zip(arg.par_chunks_mut(o.w * c))
        .enumerate()
        .for_each(|(line, (out, arg))| {
            let (smp, oy) = (line / o.h, line % o.h);
            let img = &x[smp * d.per_sample()..][..d.per_sample()];
            let (y0, y1) = rows.taps(oy, d.h);
            max_pool_line(img, d, (y0, y1, rows.d), cols, out, arg);
        });
    Ok((out, o, arg))
}

simd_fn! {
    /// One output line of [`max_pool`]: rows `y0, y0 + dy, …` below `y1`
    /// of sample `img`, windows `cols` along each.
    fn max_pool_line(
        img: &[f32],
        d: Dims,
        rows: (usize, usize, usize),
        cols: PoolAxis,
        out: &mut [f32],
        arg: &mut [u32],
    ) {
        let (c, (y0, y1, dy), dx) = (d.c, rows, cols.d);
        let o_w = out.len() / c;
        for ox in 0..o_w {
            let (x0, x1) = cols.taps(ox, d.w);
            let best = &mut out[ox * c..][..c];
            let at = &mut arg[ox * c..][..c];
            let first = y0 * d.w + x0;
            best.copy_from_slice(&img[first * c..][..c]);
            at.iter_mut().for_each(|a| *a = first as u32);
            for iy in (y0..y1).step_by(dy) {
                for ix in (x0..x1).step_by(dx) {
                    let pos = iy * d.w + ix;
                    if pos == first {
                        continue;
                    }
                    let v = &img[pos * c..][..c];
                    // Selects, not branches: the loop vectorizes.
                    for ch in 0..c {
                        let b = best[ch];
                        let take = !b.is_nan() & ((v[ch] > b) | v[ch].is_nan());
                        best[ch] = if take { v[ch] } else { b };
                        at[ch] = if take { pos as u32 } else { at[ch] };
                    }
                }
            }
        }
    }
}

/// The gradient of [`max_pool`]'s input (dims `d`): each window's gradient
/// added at its maximum.
pub(crate) fn max_unpool(g: &[f32], arg: &[u32], d: Dims, o: Dims) -> Vec<f32> {
    let c = d.c;
    let mut dx = vec![0f32; d.len()];
    dx.par_chunks_mut(d.per_sample())
        .zip(
            g.par_chunks(o.per_sample())
                .zip(arg.par_chunks(o.per_sample())),
        )
        .for_each(|(img, (g, a))| {
            for (gp, ap) in g.chunks(c).zip(a.chunks(c)) {
                for (ch, (&gv, &pos)) in gp.iter().zip(ap).enumerate() {
                    img[pos as usize * c + ch] += gv;
                }
            }
        });
    dx
}

/// Refuses an adaptive pool to no rows or no columns (PyTorch's output
/// size must be positive).
pub(crate) fn check_adaptive(oh: usize, ow: usize) -> candle_core::Result<()> {
    if oh == 0 || ow == 0 {
        candle_core::bail!(
            "adaptive_avg_pool2d: output {oh} × {ow}, expected 1 or more rows and columns"
        );
    }
    Ok(())
}

/// PyTorch's ranges: output cell i of `o` averages `[⌊i·n/o⌋, ⌈(i+1)·n/o⌉)`
/// (also [`adaptive_avg_pool2d`](crate::zoo::adaptive_avg_pool2d)'s, on
/// candle's ops).
pub(crate) fn adaptive_range(i: usize, n: usize, o: usize) -> (usize, usize) {
    (i * n / o, ((i + 1) * n).div_ceil(o))
}

/// `AdaptiveAvgPool2d((oh, ow))` of NHWC `x`, or its input's gradient
/// (`backward`: `x` is the output's gradient, the result has dims `d`).
pub(crate) fn adaptive_avg(x: &[f32], d: Dims, oh: usize, ow: usize, backward: bool) -> Vec<f32> {
    let o = Dims { h: oh, w: ow, ..d };
    let mut out = vec![0f32; if backward { d.len() } else { o.len() }];
    let windows = Windows {
        rows: &|i| adaptive_range(i, d.h, oh),
        cols: &|j| adaptive_range(j, d.w, ow),
        // The mean of the window's pixels.
        weight: &|i, j| {
            let ((r0, r1), (c0, c1)) = (adaptive_range(i, d.h, oh), adaptive_range(j, d.w, ow));
            1.0 / ((r1 - r0) * (c1 - c0)) as f32
        },
    };
    windows.pass(x, d, o, &mut out, backward);
    out
}

/// The windows of a pooling that averages: output cell (i, j) reads rows
/// `rows(i)` and columns `cols(j)` of the input (clipped to it), each
/// times `weight(i, j)`.
struct Windows<'a> {
    rows: &'a (dyn Fn(usize) -> (usize, usize) + Sync),
    cols: &'a (dyn Fn(usize) -> (usize, usize) + Sync),
    weight: &'a (dyn Fn(usize, usize) -> f32 + Sync),
}

impl Windows<'_> {
    /// The pooling of `x` (dims `d`) into `out` (dims `o`), or with
    /// `backward` its input's gradient into `out` (dims `d`) from `x`,
    /// the output's gradient (dims `o`).
    fn pass(&self, x: &[f32], d: Dims, o: Dims, out: &mut [f32], backward: bool) {
        let c = d.c;
        let (src, dst) = if backward { (o, d) } else { (d, o) };
        out.par_chunks_mut(dst.per_sample().max(1))
            .zip(x.par_chunks(src.per_sample().max(1)))
            .for_each(|(out, x)| {
                for i in 0..o.h {
                    let (r0, r1) = (self.rows)(i);
                    for j in 0..o.w {
                        let (c0, c1) = (self.cols)(j);
                        let w = (self.weight)(i, j);
                        let cell = (i * o.w + j) * c;
                        for y in r0..r1 {
                            for xx in c0..c1 {
                                let px = (y * d.w + xx) * c;
                                if backward {
                                    let (g, dx) = (&x[cell..][..c], &mut out[px..][..c]);
                                    dx.iter_mut().zip(g).for_each(|(v, g)| *v += g * w);
                                } else {
                                    let (v, acc) = (&x[px..][..c], &mut out[cell..][..c]);
                                    acc.iter_mut().zip(v).for_each(|(a, v)| *a += v);
                                }
                            }
                        }
                        if !backward {
                            out[cell..][..c].iter_mut().for_each(|a| *a *= w);
                        }
                    }
                }
            });
    }
}

/// PyTorch's `AvgPool2d` of NHWC `x` with `settings` (each window's sum
/// over its count: its size, padding included and clipped to input and
/// padding, or with `count_include_pad` false the input values it holds),
/// and its output's dims.
pub(crate) fn avg_pool(
    x: &[f32],
    d: Dims,
    settings: &Pool2dSettings,
) -> candle_core::Result<(Vec<f32>, Dims)> {
    let o = pooled_dims(PoolKind::Avg, d, settings)?;
    let mut out = vec![0f32; o.len()];
    avg_pool_pass(x, d, o, settings, &mut out, false);
    Ok((out, o))
}

/// The gradient of [`avg_pool`]'s input (dims `d`) from its output's, `g`
/// (dims `o`): each window's gradient over its count, spread over its
/// window.
pub(crate) fn avg_pool_backward(
    g: &[f32],
    d: Dims,
    o: Dims,
    settings: &Pool2dSettings,
) -> Vec<f32> {
    let mut dx = vec![0f32; d.len()];
    avg_pool_pass(g, d, o, settings, &mut dx, true);
    dx
}

/// [`avg_pool`] into `out` (dims `o`), or with `backward` its input's
/// gradient into `out` (dims `d`) from `x`, the output's gradient.
fn avg_pool_pass(
    x: &[f32],
    d: Dims,
    o: Dims,
    settings: &Pool2dSettings,
    out: &mut [f32],
    backward: bool,
) {
    let (rows, cols, pad) = (
        settings.axis(0),
        settings.axis(1),
        settings.count_include_pad,
    );
    let windows = Windows {
        rows: &|i| rows.taps(i, d.h),
        cols: &|j| cols.taps(j, d.w),
        weight: &|i, j| 1.0 / (rows.count(i, d.h, pad) * cols.count(j, d.w, pad)) as f32,
    };
    windows.pass(x, d, o, out, backward);
}

/// Refuses an upsampling factor of 0 (every path's check).
pub(crate) fn check_upsample(scale: usize) -> candle_core::Result<()> {
    if scale == 0 {
        candle_core::bail!("upsample_nearest2d: scale 0, expected 1 or more");
    }
    Ok(())
}

/// Nearest-neighbour upsampling of NHWC `x` by `scale` (each pixel
/// repeated over a `scale` × `scale` window), and its output's dims.
pub(crate) fn upsample(x: &[f32], d: Dims, scale: usize) -> candle_core::Result<(Vec<f32>, Dims)> {
    if !d.spatial {
        candle_core::bail!("upsample_nearest2d: expected [B, C, H, W], got a flat value");
    }
    check_upsample(scale)?;
    let o = Dims {
        h: d.h * scale,
        w: d.w * scale,
        ..d
    };
    let c = d.c;
    let mut out = vec![0f32; o.len()];
    // One output row per task: row oy of sample b repeats input row oy / s.
    out.par_chunks_mut((o.w * c).max(1))
        .enumerate()
        .for_each(|(line, row)| {
            let (b, oy) = (line / o.h.max(1), line % o.h.max(1));
            let src = &x[(b * d.h + oy / scale) * d.w * c..][..d.w * c];
            for (ox, px) in row.chunks_mut(c.max(1)).enumerate() {
                px.copy_from_slice(&src[(ox / scale) * c..][..c]);
            }
        });
    Ok((out, o))
}

/// The gradient of [`upsample`]'s input (dims `d`) from its output's:
/// each window's sum.
pub(crate) fn upsample_backward(g: &[f32], d: Dims, scale: usize) -> Vec<f32> {
    let c = d.c;
    let ow = d.w * scale;
    let mut dx = vec![0f32; d.len()];
    dx.par_chunks_mut((d.w * c).max(1))
        .enumerate()
        .for_each(|(line, row)| {
            let (b, iy) = (line / d.h.max(1), line % d.h.max(1));
            for oy in iy * scale..(iy + 1) * scale {
                let src = &g[(b * d.h * scale + oy) * ow * c..][..ow * c];
                for (ox, gp) in src.chunks(c.max(1)).enumerate() {
                    let px = &mut row[(ox / scale) * c..][..c];
                    px.iter_mut().zip(gp).for_each(|(v, g)| *v += g);
                }
            }
        });
    dx
}
